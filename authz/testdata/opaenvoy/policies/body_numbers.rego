package envoy.authz

# Reads a number from a JSON body (huge exponents are where OPA versions
# differ; comparing 1e1000000000 with a number panics in OPA 1.19.1, so this
# policy does not).
default allow := {"allowed": true, "dynamic_metadata": {"n": "absent"}}

allow := {"allowed": true, "dynamic_metadata": {
	"n_is_number": is_number(input.parsed_body.n),
	"n_text": sprintf("%v", [input.parsed_body.n]),
}} if {
	"n" in object.keys(input.parsed_body)
}
