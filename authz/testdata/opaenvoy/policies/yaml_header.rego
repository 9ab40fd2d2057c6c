package envoy.authz

# Parses the x-yaml header as YAML (OPA's yaml.unmarshal).
allow := {"allowed": true, "dynamic_metadata": {"yaml": yaml.unmarshal(input.attributes.request.http.headers["x-yaml"])}}

default allow := {"allowed": true, "dynamic_metadata": {"yaml": "absent"}}
