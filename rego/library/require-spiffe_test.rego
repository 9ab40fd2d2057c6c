package envoy.authz_test

import data.envoy.authz
import data.meshproof.fixtures
import rego.v1

test_mtls_example_allowed if {
	authz.allow with input as fixtures.mtls_example
	count(authz.deny_reasons) == 0 with input as fixtures.mtls_example
	authz.decision == {
		"allowed": true,
		"http_status": 403,
		"headers": {"x-meshproof-policy": "require-spiffe"},
		"reason": "allowed",
	} with input as fixtures.mtls_example
}

# Plaintext: both principals empty, no XFCC.
test_plaintext_denied if {
	not authz.allow with input as fixtures.plaintext
	authz.deny_reasons == {"verdict plaintext: plaintext connection, the caller presented no certificate"} with input as fixtures.plaintext
	authz.decision == {
		"allowed": false,
		"http_status": 403,
		"body": "verdict plaintext: plaintext connection, the caller presented no certificate",
		"headers": {"x-meshproof-policy": "require-spiffe"},
		"reason": "verdict plaintext: plaintext connection, the caller presented no certificate",
	} with input as fixtures.plaintext
}

# Each way of not proving a trusted SPIFFE identity, with the reason given.
test_denied[name] if {
	some name, c in {
		"plaintext, trust domains configured": {
			"input": fixtures.plaintext, "trust_domains": ["cluster.local", ""],
			"reason": "verdict plaintext: ",
		},
		"tls_server_only": {
			"input": fixtures.tls_server_only, "trust_domains": ["cluster.local"],
			"reason": "verdict tls_server_only: ",
		},
		"forged xfcc over plaintext": {
			"input": fixtures.forged_xfcc, "trust_domains": ["cluster.local"],
			"reason": "verdict xfcc_unverified: x-forwarded-client-cert header on a connection without a verified client certificate",
		},
		"mtls_mismatch": {
			"input": fixtures.mismatch(fixtures.sleep_id, fixtures.default_id, "spiffe://cluster.local/ns/kube-system/sa/admin"),
			"trust_domains": ["cluster.local"],
			"reason": "verdict mtls_mismatch: x-forwarded-client-cert header contradicts",
		},
		"non-spiffe principal": {
			"input": fixtures.not_spiffe_mtls, "trust_domains": ["cluster.local"],
			"reason": "source principal \"CN=legacy-client,O=Acme\" is not a SPIFFE ID",
		},
		"untrusted trust domain": {
			"input": fixtures.mtls_example, "trust_domains": ["prod.example"],
			"reason": "source spiffe://cluster.local/ns/mtls-pg/sa/sleep: trust domain \"cluster.local\" is not in data.meshproof.trust_domains",
		},
		"no trust domains": {
			"input": fixtures.mtls_example, "trust_domains": [],
			"reason": "trust domain \"cluster.local\" is not in data.meshproof.trust_domains",
		},
		"no meshproof input": {
			"input": fixtures.without_meshproof, "trust_domains": ["cluster.local"],
			"reason": "no mTLS verdict (meshproof.verdict())",
		},
	}
	denied_with(c.input, c.trust_domains, c.reason)
}

denied_with(inp, trust_domains, reason) if {
	not authz.allow with input as inp with data.meshproof.trust_domains as trust_domains
	reasons := authz.deny_reasons with input as inp with data.meshproof.trust_domains as trust_domains
	count(reasons) == 1
	some r in reasons
	contains(r, reason)
	d := authz.decision with input as inp with data.meshproof.trust_domains as trust_domains
	d.allowed == false
	d.body == r
}

test_default_trust_domain_is_cluster_local if {
	not authz.allow with input as fixtures.mtls("spiffe://prod.example/ns/a/sa/b", fixtures.default_id)
}

test_trust_domains_from_data if {
	inp := fixtures.mtls("spiffe://prod.example/ns/a/sa/b", fixtures.default_id)
	authz.allow with input as inp with data.meshproof.trust_domains as ["cluster.local", "prod.example"]
	authz.allow with input as inp with data.meshproof.trust_domains as "prod.example"
	not authz.allow with input as fixtures.mtls_example with data.meshproof.trust_domains as ["prod.example"]
}

# A principal that only names a trusted trust domain without being a SPIFFE
# ID (no id field from meshproof) is not a SPIFFE identity.
test_raw_principal_is_not_trusted if {
	inp := object.union(fixtures.not_spiffe_mtls, {"meshproof": {"source": {
		"principal": "spiffe://cluster.local/ns/a/sa/b/",
		"error": "path cannot have a trailing slash",
	}}})
	not authz.allow with input as inp
}
