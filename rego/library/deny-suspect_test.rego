package envoy.authz_test

import data.envoy.authz
import data.meshproof.fixtures
import rego.v1

# PERMISSIVE mode: plaintext and mTLS both get through.
test_allowed[name] if {
	some name, inp in {
		"mtls": fixtures.mtls_example,
		"plaintext": fixtures.plaintext,
		"tls_server_only": fixtures.tls_server_only,
		"non-spiffe mtls": fixtures.not_spiffe_mtls,
		"foreign trust domain": fixtures.mtls("spiffe://other.example/ns/a/sa/b", fixtures.default_id),
	}
	authz.allow with input as inp
	count(authz.deny_reasons) == 0 with input as inp
	d := authz.decision with input as inp
	d.allowed == true
	d.reason == "allowed"
	d.headers == {"x-meshproof-policy": "deny-suspect"}
}

# A plaintext client that writes its own XFCC header claiming to be sleep.
test_forged_xfcc_over_plaintext_denied if {
	not authz.allow with input as fixtures.forged_xfcc
	authz.deny_reasons == {"verdict xfcc_unverified: x-forwarded-client-cert header on a connection without a verified client certificate (possible forgery)"} with input as fixtures.forged_xfcc
	authz.decision == {
		"allowed": false,
		"http_status": 403,
		"body": "verdict xfcc_unverified: x-forwarded-client-cert header on a connection without a verified client certificate (possible forgery)",
		"headers": {"x-meshproof-policy": "deny-suspect"},
		"reason": "verdict xfcc_unverified: x-forwarded-client-cert header on a connection without a verified client certificate (possible forgery)",
	} with input as fixtures.forged_xfcc
}

test_mtls_mismatch_denied if {
	inp := fixtures.mismatch(fixtures.sleep_id, fixtures.default_id, "spiffe://cluster.local/ns/kube-system/sa/admin")
	not authz.allow with input as inp
	some reason in authz.deny_reasons with input as inp
	startswith(reason, "verdict mtls_mismatch: ")
	authz.decision.allowed == false with input as inp
}

# Without a verdict the XFCC check this policy stands on was never made.
test_missing_verdict_denied[name] if {
	some name, inp in {
		"no meshproof input": fixtures.without_meshproof,
		"empty input": {},
	}
	not authz.allow with input as inp
	authz.deny_reasons == {"no mTLS verdict (meshproof.verdict()): is the policy running under meshproof?"} with input as inp
}
