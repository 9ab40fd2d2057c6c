# deny-suspect is for PERMISSIVE-mode rollouts: it allows plaintext and mTLS
# alike and denies only requests whose x-forwarded-client-cert header is
# forged or contradicted (verdicts "xfcc_unverified" and "mtls_mismatch"). A
# request without a meshproof verdict is denied too: the check that this
# policy exists for cannot have been made.
package envoy.authz

import data.meshproof.lib
import rego.v1

default allow := false

allow if {
	lib.verdict != ""
	not lib.suspect
	count(deny_reasons) == 0
}

deny_reasons contains reason if some reason in lib.suspect_reasons

deny_reasons contains lib.missing_verdict_reason if lib.verdict == ""

decision := lib.decision("deny-suspect", allow, deny_reasons)
