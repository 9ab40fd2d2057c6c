package envoy.authz

# Non-string keys in headers and query_parameters_to_set.
allow := {
	"allowed": true,
	"headers": {1: "one", "x-a": "a"},
	"response_headers_to_add": {true: "t"},
	"query_parameters_to_set": {2: "two", "q": "v"},
} if input.attributes.request.http.method != "POST"

allow := {"allowed": false, "http_status": 401, "headers": {1: "one", [1, 2]: "list"}} if input.attributes.request.http.method == "POST"
