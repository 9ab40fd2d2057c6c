package envoy.authz

# Object decision using every field OPA-Envoy maps: allowed unless POST.
default allow := {"allowed": false, "http_status": 401, "body": "denied by object_full", "headers": {"www-authenticate": "Bearer", "x-deny": ["d1", "d2"]}, "dynamic_metadata": {"rule": "deny", "n": 2}}

allow := {
	"allowed": true,
	"headers": [{"x-policy": "object_full", "x-multi": ["m1", "m2"]}, {"x-multi": "m3"}],
	"response_headers_to_add": {"x-resp": "r1"},
	"request_headers_to_remove": {"x-remove-b", "x-remove-a"},
	"query_parameters_to_set": {"added": "1", "list": ["l1", "l2"]},
	"query_parameters_to_remove": ["secret"],
	"dynamic_metadata": {"rule": "allow", "nested": {"a": [1, 2.5, true, null]}},
} if {
	input.attributes.request.http.method != "POST"
}
