// Package evidence is meshproof's domain: the per-request evidence Record,
// the mTLS Verdict and its reasons, and (in sub-packages) XFCC and SPIFFE
// parsing and the stores.
package evidence

import "time"

// Record is the evidence of one Check: who talked to whom, over what kind of
// connection, what the policy decided, and its place in the hash chain. Its
// JSON form is the one every API and export uses.
type Record struct {
	ID          string            `json:"id"`
	Time        time.Time         `json:"time"`
	RequestID   string            `json:"request_id,omitempty"`
	StreamID    string            `json:"stream_id,omitempty"`
	TraceID     string            `json:"trace_id,omitempty"`
	Replica     string            `json:"replica,omitempty"`
	Source      Peer              `json:"source"`
	Destination Peer              `json:"destination"`
	TLS         TLS               `json:"tls"`
	XFCC        *XFCC             `json:"xfcc,omitempty"`
	Request     Request           `json:"request"`
	Headers     map[string]string `json:"headers,omitempty"`
	Verdict     Verdict           `json:"verdict"`
	Reasons     []string          `json:"reasons"`
	Decision    Decision          `json:"decision"`
	Truncated   bool              `json:"truncated,omitempty"`
	// Amends is set only on an amendment record (see Amendment).
	Amends *Amends `json:"amends,omitempty"`
	Chain  Chain   `json:"chain"`
}

// Amends marks an amendment record: a record of the same replica chain that
// corrects an earlier one, which stays stored unchanged (its hash covers it).
// meshproof writes one when a sync-durability Check stopped waiting for its
// record's commit (its deadline passed) and so was not answered as the record
// says: the record was queued saying "allowed", the request was denied, or the
// ext_authz call failed at Envoy. The amendment has the id
// AmendmentID(amended id), the amended record's time, request and identities,
// and in its Decision what the client actually got; its Decision.Error says
// why. The amended record's effective outcome is the amendment's decision.
type Amends struct {
	// ID is the id of the amended record.
	ID string `json:"id"`
	// Allowed is the amended record's decision.allowed: the rollups move
	// its count from that outcome to the amendment's (see RollupDeltas).
	Allowed bool `json:"allowed,omitempty"`
}

// AmendmentSuffix ends the id of an amendment record: its id is the
// amended record's followed by this, so that a record's amendment is found
// by id, with no index of its own. A record has at most one amendment (a
// Check gives up waiting once).
const AmendmentSuffix = ".amended"

// AmendmentID is the id the amendment of the record with id has.
func AmendmentID(id string) string { return id + AmendmentSuffix }

// Effective is what a record's request actually got, as the API shows it:
// the record's own decision, or its amendment's.
type Effective struct {
	Allowed    bool   `json:"allowed"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Error      string `json:"error,omitempty"`
	// AmendedBy is the id of the amendment that says so, "" when the record
	// itself does.
	AmendedBy string `json:"amended_by,omitempty"`
}

// EffectiveOf is the outcome of r's request: let through (allowed, or
// denied by the policy in dry run) or denied, corrected by amendment when
// that is r's valid amendment (nil when it has none).
func EffectiveOf(r, amendment *Record) Effective {
	if amendment != nil && amendment.Amends != nil && amendment.Amends.ID == r.ID &&
		amendment.ID == AmendmentID(r.ID) && amendment.Chain.Seq > r.Chain.Seq && amendment.Replica == r.Replica {
		d := amendment.Decision
		return Effective{Allowed: d.Allowed || d.DryRun, HTTPStatus: d.HTTPStatus, Error: d.Error, AmendedBy: amendment.ID}
	}
	d := r.Decision
	return Effective{Allowed: d.Allowed || d.DryRun, HTTPStatus: d.HTTPStatus, Error: d.Error}
}

// Amendment builds the amendment of orig (as stored: bounded, chained) saying
// that its request got sent instead, for the reason why. Its Decision keeps
// orig's decision id and policy revision.
func Amendment(orig *Record, sent Decision, why string) *Record {
	sent.DecisionID, sent.PolicyRevision = orig.Decision.DecisionID, orig.Decision.PolicyRevision
	if sent.Error == "" {
		sent.Error = why
	}
	return &Record{
		ID:          AmendmentID(orig.ID),
		Time:        orig.Time,
		RequestID:   orig.RequestID,
		StreamID:    orig.StreamID,
		TraceID:     orig.TraceID,
		Replica:     orig.Replica,
		Source:      orig.Source,
		Destination: orig.Destination,
		TLS:         orig.TLS,
		Request:     orig.Request,
		Verdict:     orig.Verdict,
		Reasons:     orig.Reasons,
		Decision:    sent,
		Amends:      &Amends{ID: orig.ID, Allowed: orig.Decision.Allowed},
	}
}

// Peer is one end of the hop.
type Peer struct {
	Address     string       `json:"address,omitempty"`
	Port        uint32       `json:"port,omitempty"`
	Principal   string       `json:"principal,omitempty"`
	SPIFFE      *SPIFFEID    `json:"spiffe,omitempty"`
	Certificate *Certificate `json:"certificate,omitempty"`
	// Workload is the Kubernetes workload the address belonged to when
	// the Check was recorded (serve --kubernetes): pod IPs are reused
	// within minutes, so a later lookup could name another workload. Nil
	// when not resolved; the record's reasons say why.
	Workload *Workload `json:"workload,omitempty"`
}

// Workload is a Kubernetes workload in the cluster's own names: the top
// owner of the pod that had the address (a Deployment through its
// ReplicaSet, a CronJob through its Job; Kind Pod for a pod no controller
// owns). Records share one Workload: treat it as read-only.
type Workload struct {
	Namespace      string `json:"namespace"`
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Pod            string `json:"pod,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
	App            string `json:"app,omitempty"`
	Version        string `json:"version,omitempty"`
	// Sidecar: the pod runs Istio's proxy (an istio-proxy container or
	// native sidecar); a client without one breaks under STRICT.
	Sidecar bool `json:"sidecar"`
}

// SPIFFEID is a principal that parsed as a SPIFFE ID. Namespace and
// ServiceAccount are set for Istio-style IDs.
type SPIFFEID struct {
	ID             string `json:"id"`
	TrustDomain    string `json:"trust_domain"`
	Path           string `json:"path,omitempty"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
}

// Certificate describes the peer's leaf certificate, when Envoy sent it
// (include_peer_certificate).
type Certificate struct {
	SHA256    string    `json:"sha256"`
	Serial    string    `json:"serial,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	URISANs   []string  `json:"uri_sans,omitempty"`
	DNSSANs   []string  `json:"dns_sans,omitempty"`
	// Error says why the certificate could not be parsed; SHA256 is then
	// the hash of what was sent, if anything decoded.
	Error string `json:"error,omitempty"`
}

// TLS holds what Envoy reports of the TLS session (include_tls_session).
type TLS struct {
	SNI string `json:"sni,omitempty"`
}

// XFCC is the x-forwarded-client-cert header as received and as parsed.
type XFCC struct {
	Raw      string        `json:"raw"`
	Elements []XFCCElement `json:"elements,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// XFCCElement is one hop's element; Cert and Chain are summarised by the
// certificate's hash rather than stored.
type XFCCElement struct {
	By         []string            `json:"by,omitempty"`
	Hash       string              `json:"hash,omitempty"`
	Subject    string              `json:"subject,omitempty"`
	URI        []string            `json:"uri,omitempty"`
	DNS        []string            `json:"dns,omitempty"`
	CertSHA256 string              `json:"cert_sha256,omitempty"`
	Other      map[string][]string `json:"other,omitempty"`
}

// Request is the HTTP request line, as Envoy saw it.
type Request struct {
	Method   string `json:"method,omitempty"`
	Host     string `json:"host,omitempty"`
	Path     string `json:"path,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// Decision is what the policy decided and what was done with it.
type Decision struct {
	Allowed bool `json:"allowed"`
	// HTTPStatus is the status Envoy sends downstream when denied (0 when
	// allowed).
	HTTPStatus     int    `json:"http_status,omitempty"`
	DecisionID     string `json:"decision_id,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`
	// DryRun is set when the request was let through whatever the policy
	// said; Allowed is the policy's own answer.
	DryRun bool `json:"dry_run,omitempty"`
	// Reason is the policy's explanation, when it gives one (a "reason"
	// key, or the denial body, in an object decision).
	Reason string `json:"reason,omitempty"`
	// Error is set when no decision could be made (bad input, policy
	// error); the request was then denied (fail closed), or, for a policy
	// error under --on-policy-error=error, answered with a gRPC error, and
	// Envoy's failure mode decided (HTTPStatus is then 0).
	Error string `json:"error,omitempty"`
}

// Chain places a record in its replica's log. Version says which canonical
// encoding Hash covers: 0 (absent) for version 1, where Hash chains the
// record to PrevHash (ChainHash); CanonicalV2, where Hash is the record's
// RFC 6962 leaf hash in the replica's transparency log (leaf Seq-1 less the
// log's base), PrevHash is empty, and the order is the log's.
type Chain struct {
	Seq      uint64 `json:"seq"`
	PrevHash string `json:"prev_hash,omitempty"`
	Hash     string `json:"hash,omitempty"`
	Version  int    `json:"version,omitempty"`
}
