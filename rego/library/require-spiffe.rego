# require-spiffe allows a request only when meshproof's verdict is "mtls" and
# the caller's SPIFFE ID is in a trust domain listed in
# data.meshproof.trust_domains (default {"cluster.local"}). Plaintext, TLS
# without a client certificate, non-SPIFFE principals and forged or
# contradicted x-forwarded-client-cert headers are denied.
package envoy.authz

import data.meshproof.lib
import rego.v1

default allow := false

allow if {
	lib.source_trusted
	count(deny_reasons) == 0
}

deny_reasons contains reason if some reason in lib.untrusted_source_reasons

decision := lib.decision("require-spiffe", allow, deny_reasons)
