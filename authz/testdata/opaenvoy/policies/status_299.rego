package envoy.authz

allow := {"allowed": false, "http_status": 299, "body": "status 299"}
