package envoy.authz

# A complete rule with two values: an eval_conflict_error at run time.
allow := true if input.attributes

allow := false if input.attributes
