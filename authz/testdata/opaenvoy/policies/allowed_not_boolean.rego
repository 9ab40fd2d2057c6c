package envoy.authz

allow := {"allowed": "true", "headers": {"x-a": "a"}}
