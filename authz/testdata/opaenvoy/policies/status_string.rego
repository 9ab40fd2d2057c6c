package envoy.authz

allow := {"allowed": false, "http_status": "404", "body": "status as string"}
