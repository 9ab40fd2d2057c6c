package envoy.authz

allow := {"headers": {"x-a": "a"}, "http_status": 401}
