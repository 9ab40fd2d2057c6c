package envoy.authz

# A function with two outputs for one input: a runtime error.
f(_) := 1

f(_) := 2

allow if f(input.attributes.request.http.method) == 1
