package envoy.authz

# A wrong type in a field: which field depends on the method.
allow := {"allowed": true, "request_headers_to_remove": "x-a"} if input.attributes.request.http.method == "GET"

allow := {"allowed": false, "body": 5} if input.attributes.request.http.method == "POST"

allow := {"allowed": true, "headers": {"x-a": 1}} if not input.attributes.request.http.method in {"GET", "POST"}
