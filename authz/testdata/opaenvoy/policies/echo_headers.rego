package envoy.authz

# Returns the request's headers and header_map in dynamic metadata, and the
# content-type it saw upstream.
content_type := input.attributes.request.http.headers["content-type"]

default content_type := "none"

header_map := input.attributes.request.http.header_map

default header_map := "absent"

allow := {
	"allowed": true,
	"headers": {"x-seen-content-type": content_type},
	"dynamic_metadata": {
		"headers": object.get(input.attributes.request.http, "headers", "absent"),
		"header_map": header_map,
		"source_principal": object.get(input, "source_principal", "absent"),
	},
}
