# spiffe-allowlist requires everything require-spiffe does, and then that the
# caller's SPIFFE ID is allowlisted for the destination in
# data.meshproof.allowlist:
#
#   {"<destination SPIFFE ID>" | "*": ["<source SPIFFE ID prefix>", ...]}
#
# The destination key is matched exactly; "*" applies to every destination,
# in addition to the destination's own entry. Prefixes match on path segment
# boundaries (see lib.spiffe_id_has_prefix). A destination with neither its
# own entry nor a "*" entry is denied.
package envoy.authz

import data.meshproof.lib
import rego.v1

default allow := false

allow if {
	lib.source_trusted
	source_allowlisted
	count(deny_reasons) == 0
}

deny_reasons contains reason if some reason in lib.untrusted_source_reasons

# The allowlist is only consulted for a trusted caller: for anyone else it
# has nothing to add to why they were denied.
deny_reasons contains reason if {
	lib.source_trusted
	some reason in allowlist_reasons
}

decision := lib.decision("spiffe-allowlist", allow, deny_reasons)

# allowlist_prefixes are the source prefixes that apply to this destination.
allowlist_prefixes contains prefix if {
	lib.destination_id != ""
	some prefix in entries(data.meshproof.allowlist[lib.destination_id])
}

allowlist_prefixes contains prefix if {
	some prefix in entries(data.meshproof.allowlist["*"])
}

source_allowlisted if {
	some prefix in allowlist_prefixes
	lib.spiffe_id_has_prefix(lib.source_id, prefix)
}

allowlist_reasons contains "no allowlist configured in data.meshproof.allowlist" if {
	not is_object(data.meshproof.allowlist)
}

allowlist_reasons contains msg if {
	is_object(data.meshproof.allowlist)
	count(allowlist_prefixes) == 0
	msg := sprintf("destination %s has no allowlist entry and there is no \"*\" entry", [destination_name])
}

allowlist_reasons contains msg if {
	count(allowlist_prefixes) > 0
	not source_allowlisted
	msg := sprintf("source %s is not allowlisted for destination %s", [lib.source_id, destination_name])
}

# entries accepts a single prefix as well as a list of them.
entries(v) := [v] if is_string(v)

entries(v) := v if not is_string(v)

default destination_name := "(no destination principal)"

destination_name := lib.destination_id if lib.destination_id != ""

destination_name := sprintf("%q", [p]) if {
	lib.destination_id == ""
	p := lib.destination.principal
	is_string(p)
	p != ""
}
