package envoy.authz

# Returns the input document's top-level keys, as a policy that counts,
# lists or forwards the whole input sees them.
allow := {"allowed": true, "dynamic_metadata": {
	"input_keys": object.keys(input),
	"attribute_keys": object.keys(object.get(input, "attributes", {})),
}}
