package envoy.authz

# Returns what OPA-Envoy parsed from the request in dynamic metadata.
allow := {
	"allowed": true,
	"dynamic_metadata": {
		"parsed_path": input.parsed_path,
		"parsed_query": input.parsed_query,
		"parsed_body": input.parsed_body,
		"truncated_body": input.truncated_body,
		"version": input.version,
	},
}
