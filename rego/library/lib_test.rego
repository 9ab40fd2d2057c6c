package meshproof.lib_test

import data.meshproof.fixtures
import data.meshproof.lib
import rego.v1

prefix_cases := {
	"exact id": {"id": "spiffe://td/ns/prod", "prefix": "spiffe://td/ns/prod", "want": true},
	"child segment": {"id": "spiffe://td/ns/prod/sa/x", "prefix": "spiffe://td/ns/prod", "want": true},
	"longer segment is not a child": {"id": "spiffe://td/ns/production", "prefix": "spiffe://td/ns/prod", "want": false},
	"longer segment below is not a child": {"id": "spiffe://td/ns/production/sa/x", "prefix": "spiffe://td/ns/prod", "want": false},
	"trailing slash matches below": {"id": "spiffe://td/ns/prod/sa/x", "prefix": "spiffe://td/ns/prod/", "want": true},
	"trailing slash does not match the parent": {"id": "spiffe://td/ns/prod", "prefix": "spiffe://td/ns/prod/", "want": false},
	"trailing slash does not match a sibling": {"id": "spiffe://td/ns/production/sa/x", "prefix": "spiffe://td/ns/prod/", "want": false},
	"trust domain prefix": {"id": "spiffe://td/ns/a/sa/b", "prefix": "spiffe://td", "want": true},
	"trust domain is a segment too": {"id": "spiffe://td.evil.example/ns/a", "prefix": "spiffe://td", "want": false},
	"trust domain with slash": {"id": "spiffe://td/ns/a/sa/b", "prefix": "spiffe://td/", "want": true},
	"other trust domain": {"id": "spiffe://other/ns/prod/sa/x", "prefix": "spiffe://td/ns/prod", "want": false},
	"case sensitive": {"id": "spiffe://td/ns/Prod/sa/x", "prefix": "spiffe://td/ns/prod", "want": false},
	"parent is not below child": {"id": "spiffe://td/ns/prod", "prefix": "spiffe://td/ns/prod/sa/x", "want": false},
	"empty id, slash prefix": {"id": "", "prefix": "spiffe://td/", "want": false},
	"empty id, empty prefix": {"id": "", "prefix": "", "want": false},
	"empty prefix": {"id": "spiffe://td/ns/prod", "prefix": "", "want": false},
	"scheme-only prefix": {"id": "spiffe://td/ns/prod", "prefix": "spiffe://", "want": false},
	"scheme and slash prefix": {"id": "spiffe://td/ns/prod", "prefix": "spiffe:///", "want": false},
	"slash prefix": {"id": "spiffe://td/ns/prod", "prefix": "/", "want": false},
	"not a spiffe prefix": {"id": "spiffe://td/ns/prod", "prefix": "spiffe", "want": false},
	"non-spiffe principal": {"id": "CN=client", "prefix": "CN=client", "want": false},
	"non-string id": {"id": null, "prefix": "spiffe://td/", "want": false},
	"non-string prefix": {"id": "spiffe://td/ns/prod", "prefix": ["spiffe://td/"], "want": false},
}

test_spiffe_id_has_prefix[name] if {
	some name, c in prefix_cases
	c.want == has_prefix(c.id, c.prefix)
}

has_prefix(id, prefix) if {
	lib.spiffe_id_has_prefix(id, prefix)
} else := false

# trust domains

test_trust_domains_default if {
	lib.trust_domains == {"cluster.local"}
}

test_trust_domains_from_data_list if {
	lib.trust_domains == {"cluster.local", "prod.example"} with data.meshproof.trust_domains as ["Cluster.Local", "prod.example"]
}

test_trust_domains_from_data_string if {
	lib.trust_domains == {"prod.example"} with data.meshproof.trust_domains as "prod.example"
}

test_trust_domains_empty_list_trusts_nothing if {
	lib.trust_domains == set() with data.meshproof.trust_domains as []
}

# source_trusted and its reasons, one case per kind of connection

trust_cases := {
	"mtls": {"input": fixtures.mtls_example, "trusted": true, "reason": ""},
	"plaintext": {"input": fixtures.plaintext, "trusted": false, "reason": "verdict plaintext"},
	"tls_server_only": {"input": fixtures.tls_server_only, "trusted": false, "reason": "verdict tls_server_only"},
	"xfcc_unverified": {"input": fixtures.forged_xfcc, "trusted": false, "reason": "possible forgery"},
	"mtls_mismatch": {
		"input": fixtures.mismatch(fixtures.sleep_id, fixtures.default_id, "spiffe://cluster.local/ns/kube-system/sa/admin"),
		"trusted": false, "reason": "contradicts",
	},
	"non-spiffe principal": {"input": fixtures.not_spiffe_mtls, "trusted": false, "reason": "\"CN=legacy-client,O=Acme\" is not a SPIFFE ID: scheme"},
	"mtls verdict without source": {"input": fixtures.with_verdict(fixtures.plaintext, "mtls"), "trusted": false, "reason": "source has no principal"},
	"foreign trust domain": {
		"input": fixtures.mtls("spiffe://other.example/ns/a/sa/b", fixtures.default_id),
		"trusted": false, "reason": "trust domain \"other.example\" is not in data.meshproof.trust_domains",
	},
	"unknown verdict": {"input": fixtures.with_verdict(fixtures.mtls_example, "quantum"), "trusted": false, "reason": "verdict quantum: not mutual TLS"},
	"no meshproof input": {"input": fixtures.without_meshproof, "trusted": false, "reason": "no mTLS verdict"},
	"empty input": {"input": {}, "trusted": false, "reason": "no mTLS verdict"},
}

test_source_trusted[name] if {
	some name, c in trust_cases
	reasons := lib.untrusted_source_reasons with input as c.input
	trusted := is_trusted with input as c.input
	trusted == c.trusted
	reasons_fit(reasons, c)
}

is_trusted if {
	lib.source_trusted
} else := false

reasons_fit(reasons, c) if {
	c.trusted
	count(reasons) == 0
}

reasons_fit(reasons, c) if {
	not c.trusted
	count(reasons) == 1
	some r in reasons
	contains(r, c.reason)
}

test_source_id_never_from_raw_principal if {
	lib.source_id == "" with input as fixtures.not_spiffe_mtls
	lib.source_id == "" with input as fixtures.forged_xfcc
	lib.source_id == fixtures.sleep_id with input as fixtures.mtls_example
}

# suspect

test_suspect[name] if {
	some name, c in {
		"xfcc_unverified": {"input": fixtures.forged_xfcc, "suspect": true},
		"mtls_mismatch": {"input": fixtures.with_verdict(fixtures.mtls_example, "mtls_mismatch"), "suspect": true},
		"mtls": {"input": fixtures.mtls_example, "suspect": false},
		"plaintext": {"input": fixtures.plaintext, "suspect": false},
		"tls_server_only": {"input": fixtures.tls_server_only, "suspect": false},
		"no meshproof input": {"input": fixtures.without_meshproof, "suspect": false},
	}
	got := is_suspect with input as c.input
	got == c.suspect
	reasons := lib.suspect_reasons with input as c.input
	explained := count(reasons) > 0
	explained == c.suspect
}

is_suspect if {
	lib.suspect
} else := false

# decision objects

test_allow_decision if {
	lib.decision("p", true, set()) == {
		"allowed": true,
		"http_status": 403,
		"headers": {"x-meshproof-policy": "p"},
		"reason": "allowed",
	}
}

test_deny_decision_joins_sorted_reasons if {
	lib.decision("p", false, {"b: second", "a: first"}) == {
		"allowed": false,
		"http_status": 403,
		"body": "a: first; b: second",
		"headers": {"x-meshproof-policy": "p"},
		"reason": "a: first; b: second",
	}
}

test_deny_decision_never_has_empty_reason if {
	d := lib.decision("p", false, set())
	d.body == "denied by p"
	d.reason == "denied by p"
}

# Under meshproof the facts come from meshproof.facts(), and win over an
# input.meshproof a caller might send.
test_facts_from_the_builtin if {
	lib.verdict == "mtls" with meshproof.facts as {"verdict": "mtls"}
		with input as {"meshproof": {"verdict": "plaintext"}}
	lib.source == {"principal": "x"} with meshproof.facts as {"source": {"principal": "x"}}
	lib.verdict == "" with meshproof.facts as {"verdict": 7}
}
