# Package meshproof.lib holds what meshproof's builtin policies share: the
# caller's identity as meshproof parsed it, whether that identity can be
# trusted, the SPIFFE ID prefix match and the OPA-Envoy decision object.
# meshproof loads this module with every builtin policy.
#
# Everything here reads facts: meshproof's view of the request from the
# meshproof.facts() built-in, or input.meshproof where that is absent (a
# test's fixture, or a setup that puts it in the input). Every rule has a
# value even when neither is there (a policy run outside meshproof), and that
# value never trusts the caller.
package meshproof.lib

import rego.v1

# facts is meshproof.facts() under meshproof, else input.meshproof, else {}.
default facts := {}

facts := f if {
	f := meshproof.facts()
} else := f if {
	f := input.meshproof
	is_object(f)
}

# verdict is meshproof's mTLS verdict for this request: "mtls",
# "mtls_mismatch", "tls_server_only", "xfcc_unverified" or "plaintext". It is
# "" when the facts carry none.
default verdict := ""

verdict := v if {
	v := facts.verdict
	is_string(v)
}

# source is meshproof's parse of attributes.source.principal ({} if absent).
default source := {}

source := s if {
	s := facts.source
	is_object(s)
}

# destination is meshproof's parse of attributes.destination.principal.
default destination := {}

destination := d if {
	d := facts.destination
	is_object(d)
}

# source_id is the caller's SPIFFE ID, "" when it has none. Policies compare
# against this, never against the raw principal, so that an empty or
# non-SPIFFE principal cannot match anything (ISTIO-SECURITY-2021-004).
default source_id := ""

source_id := spiffe_id(source)

# destination_id is the SPIFFE ID of the proxy that received the request.
default destination_id := ""

destination_id := spiffe_id(destination)

spiffe_id(peer) := id if {
	id := peer.id
	is_string(id)
	id != ""
}

# trust_domains is data.meshproof.trust_domains (a list, or one string) as a
# lower-case set; {"cluster.local"}, Istio's default, when that is absent. An
# empty list trusts nothing.
default trust_domains := {"cluster.local"}

trust_domains := {lower(td) | some td in configured; is_string(td)} if {
	configured := data.meshproof.trust_domains
	not is_string(configured)
}

trust_domains := {lower(configured)} if {
	configured := data.meshproof.trust_domains
	is_string(configured)
}

# source_trusted holds when the caller proved, over mTLS, a SPIFFE ID in a
# trusted trust domain. Its negation is explained by untrusted_source_reasons.
source_trusted if {
	verdict == "mtls"
	source_id != ""
	source.trust_domain in trust_domains
}

# suspect_verdicts mark an x-forwarded-client-cert header that cannot be
# believed: sent without a verified client certificate, or contradicting it.
suspect_verdicts := {"xfcc_unverified", "mtls_mismatch"}

# suspect holds when the request carries a forged or contradicted XFCC header.
suspect if verdict in suspect_verdicts

# suspect_reasons explains suspect (empty when not suspect).
suspect_reasons contains verdict_message(verdict) if suspect

# missing_verdict_reason is given when the facts carry no verdict.
missing_verdict_reason := "no mTLS verdict (meshproof.verdict()): is the policy running under meshproof?"

verdict_text := {
	"plaintext": "plaintext connection, the caller presented no certificate",
	"tls_server_only": "TLS without a client certificate, the caller has no identity",
	"xfcc_unverified": "x-forwarded-client-cert header on a connection without a verified client certificate (possible forgery)",
	"mtls_mismatch": "x-forwarded-client-cert header contradicts the mTLS connection's principals",
}

verdict_message(v) := sprintf("verdict %s: %s", [v, verdict_text[v]])

verdict_message(v) := sprintf("verdict %s: not mutual TLS", [v]) if not verdict_text[v]

# untrusted_source_reasons says why source_trusted does not hold; it is empty
# exactly when it does.
untrusted_source_reasons contains missing_verdict_reason if verdict == ""

untrusted_source_reasons contains verdict_message(verdict) if {
	verdict != ""
	verdict != "mtls"
}

untrusted_source_reasons contains msg if {
	verdict == "mtls"
	source_id == ""
	msg := not_spiffe_message(source)
}

untrusted_source_reasons contains msg if {
	verdict == "mtls"
	source_id != ""
	not source.trust_domain in trust_domains
	msg := sprintf(
		"source %s: trust domain %q is not in data.meshproof.trust_domains",
		[source_id, object.get(source, "trust_domain", "")],
	)
}

not_spiffe_message(peer) := "source has no principal" if not principal(peer)

not_spiffe_message(peer) := sprintf("source principal %q is not a SPIFFE ID: %s", [principal(peer), peer.error]) if {
	is_string(peer.error)
}

not_spiffe_message(peer) := sprintf("source principal %q is not a SPIFFE ID", [principal(peer)]) if {
	not is_string(peer.error)
}

principal(peer) := p if {
	p := peer.principal
	is_string(p)
	p != ""
}

# spiffe_id_has_prefix holds when id equals prefix or lies below it on a path
# segment boundary: "spiffe://td/ns/prod" matches "spiffe://td/ns/prod" and
# "spiffe://td/ns/prod/sa/x" but not "spiffe://td/ns/production"; a prefix
# ending in "/" matches anything below it. Comparison is exact (case
# sensitive). An empty id never matches, and neither does a prefix that is not
# "spiffe://" followed by a trust domain, so "" and "spiffe://" are never
# wildcards.
spiffe_id_has_prefix(id, prefix) if {
	comparable_prefix(id, prefix)
	id == prefix
}

spiffe_id_has_prefix(id, prefix) if {
	comparable_prefix(id, prefix)
	not endswith(prefix, "/")
	startswith(id, concat("", [prefix, "/"]))
}

spiffe_id_has_prefix(id, prefix) if {
	comparable_prefix(id, prefix)
	endswith(prefix, "/")
	startswith(id, prefix)
}

comparable_prefix(id, prefix) if {
	is_string(id)
	id != ""
	is_string(prefix)
	startswith(prefix, "spiffe://")
	not startswith(prefix, "spiffe:///")
	prefix != "spiffe://"
}

# decision builds the OPA-Envoy response object for the policy called name.
decision(name, allowed, _) := allow_decision(name, "allowed") if allowed == true

decision(name, allowed, reasons) := deny_decision(name, reasons) if allowed != true

# allow_decision is an allowing OPA-Envoy response with the given reason.
allow_decision(name, reason) := {
	"allowed": true,
	"http_status": 403,
	"headers": {"x-meshproof-policy": name},
	"reason": reason,
}

# deny_decision is a denying OPA-Envoy response whose body and reason list the
# deny reasons, sorted, joined with "; ".
deny_decision(name, reasons) := {
	"allowed": false,
	"http_status": 403,
	"body": text,
	"headers": {"x-meshproof-policy": name},
	"reason": text,
} if {
	text := deny_text(name, reasons)
}

deny_text(_, reasons) := concat("; ", reasons) if count(reasons) > 0

deny_text(name, reasons) := sprintf("denied by %s", [name]) if count(reasons) == 0
