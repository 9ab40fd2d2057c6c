package envoy.authz

# Boolean decision: GET and HEAD pass, everything else is denied.
default allow := false

allow if input.attributes.request.http.method in {"GET", "HEAD"}
