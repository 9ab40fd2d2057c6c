package envoy.authz_test

import data.envoy.authz
import data.meshproof.fixtures
import rego.v1

test_allows_everything[name] if {
	some name, inp in {
		"mtls": fixtures.mtls_example,
		"plaintext": fixtures.plaintext,
		"tls_server_only": fixtures.tls_server_only,
		"forged xfcc": fixtures.forged_xfcc,
		"mtls_mismatch": fixtures.mismatch(fixtures.sleep_id, fixtures.default_id, "spiffe://cluster.local/ns/x/sa/y"),
		"no meshproof input": fixtures.without_meshproof,
		"empty input": {},
	}
	authz.allow with input as inp
	count(authz.deny_reasons) == 0 with input as inp
	authz.decision.allowed with input as inp
}

test_decision if {
	authz.decision == {
		"allowed": true,
		"http_status": 403,
		"headers": {"x-meshproof-policy": "observe"},
		"reason": "observe: allow all",
	} with input as fixtures.forged_xfcc
}
