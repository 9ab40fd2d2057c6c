# observe allows every request. meshproof still records the evidence for each
# one, so this is the policy for measuring how much traffic is mTLS before
# enforcing anything.
package envoy.authz

import data.meshproof.lib
import rego.v1

allow := true

deny_reasons := set()

decision := lib.allow_decision("observe", "observe: allow all")
