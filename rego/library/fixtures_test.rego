# Package meshproof.fixtures builds the inputs the policy tests share: what
# meshproof hands OPA for each kind of connection, shaped as in the OPA-Envoy
# input (protojson lowerCamel names) plus input.meshproof.
package meshproof.fixtures

import rego.v1

# The mTLS example from Istio's sidecar: sleep calls default in mtls-pg.
sleep_id := "spiffe://cluster.local/ns/mtls-pg/sa/sleep"

default_id := "spiffe://cluster.local/ns/mtls-pg/sa/default"

cert_hash := "9ba61d2425d1a4a5d0c2c0d6f0d1d62c0b5a5e7c1e6b7f4b8e3c2a1d0f9e8d7c"

# peer is input.meshproof.source or .destination for a valid SPIFFE ID.
peer(id) := object.union(
	{"principal": id, "id": id, "trust_domain": td, "path": path},
	istio_names(path),
) if {
	rest := trim_prefix(id, "spiffe://")
	td := split(rest, "/")[0]
	path := substring(rest, count(td), -1)
}

istio_names(path) := {"namespace": m[1], "service_account": m[2]} if {
	[m] := regex.find_all_string_submatch_n(`^/ns/([^/]+)/sa/([^/]+)$`, path, 1)
} else := {}

# not_spiffe is a peer whose certificate carries no SPIFFE URI SAN.
not_spiffe(principal) := {"principal": principal, "error": "scheme is missing or invalid"}

xfcc_header(by, uri) := sprintf(`By=%s;Hash=%s;Subject="";URI=%s`, [by, cert_hash, uri])

xfcc_element(by, uri) := {"by": [by], "hash": cert_hash, "subject": "", "uri": [uri]}

request(headers) := {
	"method": "GET",
	"host": "default.mtls-pg.svc.cluster.local:8000",
	"path": "/orders?limit=1",
	"scheme": "http",
	"protocol": "HTTP/1.1",
	"headers": object.union(
		{
			":authority": "default.mtls-pg.svc.cluster.local:8000",
			":method": "GET",
			":path": "/orders?limit=1",
			"x-request-id": "4f1c2e1a-8d1b-4c53-9a55-0d7d1c7a0b11",
		},
		headers,
	),
}

attributes(src, dst, headers) := {
	"source": object.union(
		{"address": {"socketAddress": {"address": "10.244.0.12", "portValue": 48712}}},
		principal_field(src),
	),
	"destination": object.union(
		{"address": {"socketAddress": {"address": "10.244.0.15", "portValue": 8000}}},
		principal_field(dst),
	),
	"request": {"http": request(headers)},
}

# protojson omits empty fields, so an empty principal is absent.
principal_field(p) := {"principal": p} if p != ""

principal_field(p) := {} if p == ""

envoy(src, dst, headers) := {
	"attributes": attributes(src, dst, headers),
	"parsed_path": ["orders"],
	"parsed_query": {"limit": ["1"]},
	"version": {"ext_authz": "v3", "encoding": "protojson"},
}

# mtls is an mTLS request from src to dst whose XFCC agrees with both.
mtls(src, dst) := object.union(envoy(src, dst, {"x-forwarded-client-cert": xfcc_header(dst, src)}), {
	"source_principal": src,
	"meshproof": {
		"source": peer(src),
		"destination": peer(dst),
		"xfcc": [xfcc_element(dst, src)],
		"verdict": "mtls",
		"reasons": ["client certificate verified", "x-forwarded-client-cert matches the connection"],
	},
})

# The domain's mTLS example.
mtls_example := mtls(sleep_id, default_id)

# plaintext: both principals empty, no XFCC (PERMISSIVE mode, no sidecar).
plaintext := object.union(envoy("", "", {}), {"meshproof": {
	"source": {},
	"destination": {},
	"verdict": "plaintext",
	"reasons": ["no source principal", "no destination principal"],
}})

# tls_server_only: TLS without a client certificate.
tls_server_only := object.union(envoy("", default_id, {}), {"meshproof": {
	"source": {},
	"destination": peer(default_id),
	"verdict": "tls_server_only",
	"reasons": ["no client certificate"],
}})

# forged_xfcc: a plaintext client sends an XFCC header claiming to be sleep.
forged_xfcc := object.union(envoy("", "", {"x-forwarded-client-cert": xfcc_header(default_id, sleep_id)}), {"meshproof": {
	"source": {},
	"destination": {},
	"xfcc": [xfcc_element(default_id, sleep_id)],
	"verdict": "xfcc_unverified",
	"reasons": ["x-forwarded-client-cert present without a client certificate"],
}})

# mismatch: mTLS from src, but the XFCC header names someone else.
mismatch(src, dst, claimed) := object.union(mtls(src, dst), {
	"attributes": {"request": {"http": {"headers": {"x-forwarded-client-cert": xfcc_header(dst, claimed)}}}},
	"meshproof": {
		"xfcc": [xfcc_element(dst, claimed)],
		"verdict": "mtls_mismatch",
		"reasons": ["x-forwarded-client-cert URI does not match the source principal"],
	},
})

# not_spiffe_mtls: mTLS with a certificate that has no SPIFFE URI SAN.
not_spiffe_mtls := object.union(envoy("CN=legacy-client,O=Acme", default_id, {}), {"meshproof": {
	"source": not_spiffe("CN=legacy-client,O=Acme"),
	"destination": peer(default_id),
	"verdict": "mtls",
	"reasons": ["client certificate verified"],
}})

# without_meshproof is what plain OPA-Envoy would pass: no input.meshproof.
without_meshproof := object.remove(mtls_example, ["meshproof"])

# with_verdict replaces the verdict of an input.
with_verdict(inp, verdict) := object.union(inp, {"meshproof": {"verdict": verdict}})
