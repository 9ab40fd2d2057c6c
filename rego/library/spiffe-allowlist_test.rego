package envoy.authz_test

import data.envoy.authz
import data.meshproof.fixtures
import rego.v1

prod_api := "spiffe://cluster.local/ns/prod/sa/api"

# The domain's mTLS example: sleep calls default in mtls-pg.
test_mtls_example_allowed_by_entry if {
	allowlist := {fixtures.default_id: [fixtures.sleep_id]}
	authz.allow with input as fixtures.mtls_example with data.meshproof.allowlist as allowlist
	count(authz.deny_reasons) == 0 with input as fixtures.mtls_example with data.meshproof.allowlist as allowlist
	authz.decision == {
		"allowed": true,
		"http_status": 403,
		"headers": {"x-meshproof-policy": "spiffe-allowlist"},
		"reason": "allowed",
	} with input as fixtures.mtls_example with data.meshproof.allowlist as allowlist
}

test_allowed[name] if {
	some name, c in {
		"namespace prefix": {
			"input": fixtures.mtls_example,
			"allowlist": {fixtures.default_id: ["spiffe://cluster.local/ns/mtls-pg"]},
		},
		"trailing slash prefix": {
			"input": fixtures.mtls_example,
			"allowlist": {fixtures.default_id: ["spiffe://cluster.local/ns/mtls-pg/"]},
		},
		"star entry": {
			"input": fixtures.mtls_example,
			"allowlist": {"*": ["spiffe://cluster.local/ns/mtls-pg/sa/sleep"]},
		},
		"star entry adds to the destination's": {
			"input": fixtures.mtls_example,
			"allowlist": {fixtures.default_id: [prod_api], "*": ["spiffe://cluster.local/ns/mtls-pg"]},
		},
		"second prefix in the list": {
			"input": fixtures.mtls_example,
			"allowlist": {fixtures.default_id: ["", prod_api, fixtures.sleep_id]},
		},
		"a single string instead of a list": {
			"input": fixtures.mtls_example,
			"allowlist": {fixtures.default_id: fixtures.sleep_id},
		},
		"prod prefix matches the prod namespace": {
			"input": fixtures.mtls(prod_api, fixtures.default_id),
			"allowlist": {fixtures.default_id: ["spiffe://cluster.local/ns/prod"]},
		},
	}
	authz.allow with input as c.input with data.meshproof.allowlist as c.allowlist
	count(authz.deny_reasons) == 0 with input as c.input with data.meshproof.allowlist as c.allowlist
}

# Plaintext has no identity: no allowlist, however wide, lets it through
# (ISTIO-SECURITY-2021-004).
test_plaintext_denied[name] if {
	some name, allowlist in {
		"trust domain prefix under *": {"*": ["spiffe://cluster.local/"]},
		"empty prefix under *": {"*": [""]},
		"every wide prefix under *": {"*": ["", "spiffe://", "spiffe:///", "/", "spiffe://cluster.local/", "spiffe://cluster.local"]},
		"empty destination key": {"": ["", "spiffe://cluster.local/"]},
		"no allowlist": null,
	}
	not authz.allow with input as fixtures.plaintext with data.meshproof.allowlist as allowlist
	authz.deny_reasons == {"verdict plaintext: plaintext connection, the caller presented no certificate"} with input as fixtures.plaintext with data.meshproof.allowlist as allowlist
	d := authz.decision with input as fixtures.plaintext with data.meshproof.allowlist as allowlist
	d.allowed == false
	d.http_status == 403
	d.headers == {"x-meshproof-policy": "spiffe-allowlist"}
}

test_production_not_matched_by_prod_prefix if {
	allowlist := {fixtures.default_id: ["spiffe://cluster.local/ns/prod"]}
	inp := fixtures.mtls("spiffe://cluster.local/ns/production/sa/api", fixtures.default_id)
	not authz.allow with input as inp with data.meshproof.allowlist as allowlist
	authz.deny_reasons == {"source spiffe://cluster.local/ns/production/sa/api is not allowlisted for destination spiffe://cluster.local/ns/mtls-pg/sa/default"} with input as inp with data.meshproof.allowlist as allowlist
}

# Denials for callers that the allowlist would otherwise let in: the
# identity itself is not trusted.
test_untrusted_source_denied_even_if_listed[name] if {
	wide := {"*": ["spiffe://cluster.local/", "spiffe://other.example/", ""]}
	some name, c in {
		"forged xfcc over plaintext": {"input": fixtures.forged_xfcc, "reason": "verdict xfcc_unverified: "},
		"mtls_mismatch": {
			"input": fixtures.mismatch(fixtures.sleep_id, fixtures.default_id, "spiffe://cluster.local/ns/kube-system/sa/admin"),
			"reason": "verdict mtls_mismatch: ",
		},
		"tls_server_only": {"input": fixtures.tls_server_only, "reason": "verdict tls_server_only: "},
		"non-spiffe principal": {"input": fixtures.not_spiffe_mtls, "reason": "is not a SPIFFE ID"},
		"untrusted trust domain": {
			"input": fixtures.mtls("spiffe://other.example/ns/mtls-pg/sa/sleep", fixtures.default_id),
			"reason": "trust domain \"other.example\" is not in data.meshproof.trust_domains",
		},
		"no meshproof input": {"input": fixtures.without_meshproof, "reason": "no mTLS verdict"},
	}
	not authz.allow with input as c.input with data.meshproof.allowlist as wide
	reasons := authz.deny_reasons with input as c.input with data.meshproof.allowlist as wide
	count(reasons) == 1
	some r in reasons
	contains(r, c.reason)
}

test_allowlist_denied[name] if {
	some name, c in {
		"no allowlist configured": {
			"allowlist": null,
			"reason": "no allowlist configured in data.meshproof.allowlist",
		},
		"allowlist is not an object": {
			"allowlist": ["spiffe://cluster.local/"],
			"reason": "no allowlist configured in data.meshproof.allowlist",
		},
		"empty allowlist": {
			"allowlist": {},
			"reason": "destination spiffe://cluster.local/ns/mtls-pg/sa/default has no allowlist entry and there is no \"*\" entry",
		},
		"only other destinations": {
			"allowlist": {"spiffe://cluster.local/ns/prod/sa/db": ["spiffe://cluster.local/"]},
			"reason": "destination spiffe://cluster.local/ns/mtls-pg/sa/default has no allowlist entry and there is no \"*\" entry",
		},
		"destination entry is empty": {
			"allowlist": {fixtures.default_id: []},
			"reason": "destination spiffe://cluster.local/ns/mtls-pg/sa/default has no allowlist entry and there is no \"*\" entry",
		},
		"source not in the destination's entry": {
			"allowlist": {fixtures.default_id: [prod_api, "spiffe://cluster.local/ns/mtls-pg/sa/sleepy"]},
			"reason": "source spiffe://cluster.local/ns/mtls-pg/sa/sleep is not allowlisted for destination spiffe://cluster.local/ns/mtls-pg/sa/default",
		},
		"source not in the star entry": {
			"allowlist": {"*": ["spiffe://cluster.local/ns/prod/"]},
			"reason": "source spiffe://cluster.local/ns/mtls-pg/sa/sleep is not allowlisted for destination spiffe://cluster.local/ns/mtls-pg/sa/default",
		},
		"destination key matched exactly": {
			"allowlist": {"spiffe://cluster.local/ns/mtls-pg": [fixtures.sleep_id]},
			"reason": "has no allowlist entry",
		},
		"only wildcard-looking prefixes": {
			"allowlist": {fixtures.default_id: ["", "spiffe://", "/", "*"]},
			"reason": "source spiffe://cluster.local/ns/mtls-pg/sa/sleep is not allowlisted",
		},
	}
	not authz.allow with input as fixtures.mtls_example with data.meshproof.allowlist as c.allowlist
	reasons := authz.deny_reasons with input as fixtures.mtls_example with data.meshproof.allowlist as c.allowlist
	count(reasons) == 1
	some r in reasons
	contains(r, c.reason)
	d := authz.decision with input as fixtures.mtls_example with data.meshproof.allowlist as c.allowlist
	d.body == r
}

# Without a destination SPIFFE ID only the "*" entry applies; an empty
# destination never selects the "" key.
test_destination_without_spiffe_id if {
	inp := json.patch(fixtures.mtls_example, [{
		"op": "replace", "path": "/meshproof/destination",
		"value": {"principal": "CN=gateway", "error": "scheme is missing or invalid"},
	}])
	authz.allow with input as inp with data.meshproof.allowlist as {"*": [fixtures.sleep_id]}
	not authz.allow with input as inp with data.meshproof.allowlist as {"": [fixtures.sleep_id], "CN=gateway": [fixtures.sleep_id]}
	authz.deny_reasons == {"destination \"CN=gateway\" has no allowlist entry and there is no \"*\" entry"} with input as inp with data.meshproof.allowlist as {"": [fixtures.sleep_id]}
}

test_trust_domains_apply if {
	allowlist := {"*": ["spiffe://prod.example/"]}
	inp := fixtures.mtls("spiffe://prod.example/ns/a/sa/b", fixtures.default_id)
	not authz.allow with input as inp with data.meshproof.allowlist as allowlist
	authz.allow with input as inp with data.meshproof.allowlist as allowlist with data.meshproof.trust_domains as ["cluster.local", "prod.example"]
}

# The example in README.md.
readme_allowlist := {
	"spiffe://cluster.local/ns/mtls-pg/sa/default": ["spiffe://cluster.local/ns/mtls-pg/sa/sleep"],
	"spiffe://cluster.local/ns/payments/sa/api": ["spiffe://cluster.local/ns/checkout"],
	"*": ["spiffe://cluster.local/ns/monitoring/"],
}

test_readme_example[name] if {
	payments := "spiffe://cluster.local/ns/payments/sa/api"
	some name, c in {
		"sleep to default": {"src": fixtures.sleep_id, "dst": fixtures.default_id, "allow": true},
		"checkout to payments": {"src": "spiffe://cluster.local/ns/checkout/sa/web", "dst": payments, "allow": true},
		"checkout-v2 to payments": {"src": "spiffe://cluster.local/ns/checkout-v2/sa/web", "dst": payments, "allow": false},
		"checkout to default": {"src": "spiffe://cluster.local/ns/checkout/sa/web", "dst": fixtures.default_id, "allow": false},
		"monitoring to payments": {"src": "spiffe://cluster.local/ns/monitoring/sa/prometheus", "dst": payments, "allow": true},
		"monitoring to an unlisted destination": {"src": "spiffe://cluster.local/ns/monitoring/sa/prometheus", "dst": "spiffe://cluster.local/ns/x/sa/y", "allow": true},
		"other to an unlisted destination": {"src": fixtures.sleep_id, "dst": "spiffe://cluster.local/ns/x/sa/y", "allow": false},
	}
	allowed := allowed_with(fixtures.mtls(c.src, c.dst), readme_allowlist)
	allowed == c.allow
}

allowed_with(inp, allowlist) if {
	authz.allow with input as inp with data.meshproof.allowlist as allowlist
} else := false
