package evidence

import (
	"net/netip"
	"strings"
	"time"
)

// Columns are the values stores index a record by, derived from it the same
// way by every backend (and by Verify's check that the columns still match
// the record).
type Columns struct {
	TimeNS                                    int64
	ID                                        string
	Replica                                   string
	Seq                                       int64
	SourcePrincipal                           string
	DestinationPrincipal                      string
	SourceTrustDomain, DestinationTrustDomain string
	// SourceNamespace and DestinationNamespace are the peer's namespace:
	// its Istio SPIFFE ID's, else its workload's (a plaintext client has no
	// SPIFFE ID but its pod has a namespace, so a filter on namespace
	// legacy finds legacy's plaintext clients). A source whose SPIFFE ID
	// names another namespace than its pod keeps the ID's: the identity is
	// what the destination saw; its SourceKey marks the difference.
	SourceNamespace, DestinationNamespace string
	// SourceWorkload and DestinationWorkload are the peer's workload as
	// NAMESPACE/NAME (WorkloadRef), "" when the record has none: what the
	// source_workload and destination_workload filters compare.
	SourceWorkload, DestinationWorkload string
	// SourceKey is the source identity for reports (see SourceKey).
	SourceKey string
	Verdict   string
	Allowed   bool
	Method    string
	Host      string
	Path      string
	RequestID string
}

// ColumnsOf derives a record's index columns.
func ColumnsOf(r *Record) Columns {
	c := Columns{
		TimeNS: Nanos(r.Time), ID: r.ID, Replica: r.Replica, Seq: int64(r.Chain.Seq),
		SourcePrincipal: r.Source.Principal, DestinationPrincipal: r.Destination.Principal,
		SourceKey: SourceKey(r),
		Verdict:   string(r.Verdict), Allowed: r.Decision.Allowed,
		Method: r.Request.Method, Host: r.Request.Host, Path: r.Request.Path, RequestID: r.RequestID,
	}
	if s := r.Source.SPIFFE; s != nil {
		c.SourceTrustDomain, c.SourceNamespace = s.TrustDomain, s.Namespace
	}
	if s := r.Destination.SPIFFE; s != nil {
		c.DestinationTrustDomain, c.DestinationNamespace = s.TrustDomain, s.Namespace
	}
	if w := r.Source.Workload; w != nil {
		c.SourceNamespace = cmpOr(c.SourceNamespace, w.Namespace)
		c.SourceWorkload = WorkloadRef(w)
	}
	if w := r.Destination.Workload; w != nil {
		c.DestinationNamespace = cmpOr(c.DestinationNamespace, w.Namespace)
		c.DestinationWorkload = WorkloadRef(w)
	}
	return c
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// WorkloadRef is how filters name a workload: NAMESPACE/NAME, the form
// kubectl's namespace and name take (the kind is left out: a Deployment
// and a StatefulSet of one name in one namespace are both found). "" for
// nil, or a workload without a namespace or name.
func WorkloadRef(w *Workload) string {
	if w == nil || w.Namespace == "" || w.Name == "" {
		return ""
	}
	return w.Namespace + "/" + w.Name
}

// WorkloadKeyPrefix begins a source key that names a workload (see
// SourceKey).
const WorkloadKeyPrefix = "workload:"

// SourceKey is who sent the request, for reports and their rollups, in the
// cluster's names where the record has them:
//
//   - PRINCIPAL: the source principal, when the connection carried one and
//     its SPIFFE ID agrees with the source's workload (or either is
//     unknown);
//   - PRINCIPAL workload:NAMESPACE/KIND/NAME: an Istio SPIFFE ID whose
//     namespace or service account is not its pod's (a workload presenting
//     another's identity, or stale address data): the principal first, then
//     one space and the pod's workload, so that reports can mark it;
//   - workload:NAMESPACE/KIND/NAME: no principal, and the address belonged
//     to that workload when the Check was recorded (pod IPs are reused
//     within minutes; the workload is what stays);
//   - ADDRESS: no principal and no workload (as every record was keyed
//     before records carried workloads).
//
// A record without a workload has exactly the key it had before workloads
// existed (principal, else address), so stored rollups, their seals and
// verify stay valid. ParseSourceKey reads a key back. A workload is only
// keyed when its namespace, kind and name are set and hold no '/' or
// space (Kubernetes' own names never do); any other is left out of the key.
func SourceKey(r *Record) string {
	p := &r.Source
	switch {
	case p.Principal != "" && IdentityMismatch(p):
		return p.Principal + " " + WorkloadKeyPrefix + p.Workload.Namespace + "/" + p.Workload.Kind + "/" + p.Workload.Name
	case p.Principal != "":
		return p.Principal
	case keyable(p.Workload):
		return WorkloadKeyPrefix + p.Workload.Namespace + "/" + p.Workload.Kind + "/" + p.Workload.Name
	}
	return p.Address
}

// How serve --kubernetes words an identity that is not its workload's in a
// record's reasons (authz's addWorkload, cluster/workload's CheckIdentity):
// SIDE + ReasonIdentityNotWorkload + ": " + which side differs + "; " + the
// case it most likely is, which begins with MismatchStaleAddress,
// MismatchBorrowedIdentity, or MismatchEither when it cannot say.
// MismatchCaseOf reads the source's back.
const (
	ReasonIdentityNotWorkload = " identity is not its workload's"
	MismatchStaleAddress      = "stale address data"
	MismatchBorrowedIdentity  = "a workload presenting another's identity"
	MismatchEither            = MismatchBorrowedIdentity + ", or " + MismatchStaleAddress
)

// The cases of a source identity that is not its workload's, as
// MismatchCaseOf names them.
const (
	// CaseStaleAddress: the address changed hands (another pod that held
	// it runs as the identity, or the holder is minutes old): stale
	// address data, not an attack.
	CaseStaleAddress = "stale_address"
	// CaseBorrowedIdentity: the pod that holds the address presented
	// another workload's identity.
	CaseBorrowedIdentity = "borrowed_identity"
	// CaseIdentityMismatch: either; the record does not say which (serve
	// could not tell, or the record is older than the distinction).
	CaseIdentityMismatch = "identity_mismatch"
)

// MismatchCaseOf finds, among a record's reasons, the one that says its
// source's identity is not its workload's, and returns which case it
// names (CaseStaleAddress, CaseBorrowedIdentity, CaseIdentityMismatch)
// and that reason; "" and "" when there is none.
func MismatchCaseOf(reasons []string) (kind, reason string) {
	prefix := "source" + ReasonIdentityNotWorkload + ": "
	for _, r := range reasons {
		rest, ok := strings.CutPrefix(r, prefix)
		if !ok {
			continue
		}
		which := rest[strings.LastIndex(rest, "; ")+1:]
		which = strings.TrimPrefix(which, " ")
		switch {
		case strings.HasPrefix(which, MismatchEither):
			return CaseIdentityMismatch, r
		case strings.HasPrefix(which, MismatchStaleAddress):
			return CaseStaleAddress, r
		case strings.HasPrefix(which, MismatchBorrowedIdentity):
			return CaseBorrowedIdentity, r
		}
		return CaseIdentityMismatch, r
	}
	return "", ""
}

// IdentityMismatch reports whether p's Istio SPIFFE ID names another
// namespace or service account than p's workload runs as: what
// serve --kubernetes records as "source identity is not its workload's".
// False when either side is unknown, or the workload cannot be keyed.
func IdentityMismatch(p *Peer) bool {
	id, w := p.SPIFFE, p.Workload
	if id == nil || id.Namespace == "" || id.ServiceAccount == "" || !keyable(w) {
		return false
	}
	return id.Namespace != w.Namespace || id.ServiceAccount != w.ServiceAccount
}

// keyable reports whether a key can name w unambiguously: its namespace,
// kind and name set and free of '/' and spaces.
func keyable(w *Workload) bool {
	if w == nil {
		return false
	}
	for _, v := range [...]string{w.Namespace, w.Kind, w.Name} {
		if v == "" || strings.ContainsAny(v, "/ ") {
			return false
		}
	}
	return true
}

// SourceKeyParts is a SourceKey read back.
type SourceKeyParts struct {
	// Principal is the source principal, "" when the key has none.
	Principal string
	// Namespace, Kind and Name are the source's workload, when the key
	// names one.
	Namespace, Kind, Name string
	// Address is the source address of a key that is one.
	Address string
	// Mismatch: the principal's SPIFFE ID is not its workload's.
	Mismatch bool
}

// Workload reports whether the key names a workload.
func (k SourceKeyParts) Workload() bool { return k.Name != "" }

// String is the key again: SourceKey's form.
func (k SourceKeyParts) String() string {
	w := ""
	if k.Workload() {
		w = WorkloadKeyPrefix + k.Namespace + "/" + k.Kind + "/" + k.Name
	}
	switch {
	case k.Principal != "" && w != "":
		return k.Principal + " " + w
	case k.Principal != "":
		return k.Principal
	case w != "":
		return w
	}
	return k.Address
}

// WorkloadName is how tables and reports print a workload:
// NAMESPACE/KIND/NAME with the kind in lower case (legacy/deployment/sleep),
// as kubectl names an object (deployment/sleep) with its namespace in
// front, "-" for none; "" for nil.
func WorkloadName(w *Workload) string {
	if w == nil {
		return ""
	}
	return workloadName(w.Namespace, w.Kind, w.Name)
}

func workloadName(ns, kind, name string) string {
	if ns == "" {
		ns = "-"
	}
	return ns + "/" + strings.ToLower(kind) + "/" + name
}

// Display is how reports print the source a key names: its workload
// (WorkloadName's form) where the key has one, "WORKLOAD as PRINCIPAL"
// for a mismatched identity (the workload presented that principal),
// else the principal or the address.
func (k SourceKeyParts) Display() string {
	switch {
	case k.Workload() && k.Principal != "":
		return workloadName(k.Namespace, k.Kind, k.Name) + " as " + k.Principal
	case k.Workload():
		return workloadName(k.Namespace, k.Kind, k.Name)
	case k.Principal != "":
		return k.Principal
	}
	return k.Address
}

// ParseSourceKey reads a SourceKey. A key is read as a workload key when it
// begins with "workload:" and the rest is NAMESPACE/KIND/NAME, as a
// mismatched principal when it ends with " workload:NAMESPACE/KIND/NAME"
// after a principal without spaces (an Istio SPIFFE ID has none), as an
// address when it parses as an IP address, and as a principal otherwise.
// (A principal that itself looks like a workload key is read as one: no
// certificate meshproof has seen names itself so.)
func ParseSourceKey(key string) SourceKeyParts {
	if rest, ok := strings.CutPrefix(key, WorkloadKeyPrefix); ok {
		if ns, kind, name, ok := splitWorkload(rest); ok {
			return SourceKeyParts{Namespace: ns, Kind: kind, Name: name}
		}
	}
	if i := strings.LastIndex(key, " "+WorkloadKeyPrefix); i > 0 && !strings.ContainsAny(key[:i], " ") {
		if ns, kind, name, ok := splitWorkload(key[i+1+len(WorkloadKeyPrefix):]); ok {
			return SourceKeyParts{Principal: key[:i], Namespace: ns, Kind: kind, Name: name, Mismatch: true}
		}
	}
	if isAddress(key) {
		return SourceKeyParts{Address: key}
	}
	return SourceKeyParts{Principal: key}
}

// splitWorkload splits NAMESPACE/KIND/NAME, each part set and without a
// space.
func splitWorkload(s string) (ns, kind, name string, ok bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	for _, p := range parts {
		if p == "" || strings.Contains(p, " ") {
			return "", "", "", false
		}
	}
	return parts[0], parts[1], parts[2], true
}

// isAddress reports whether s is an IP address, as Envoy gives a socket's.
func isAddress(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// RollupKey is the per-minute rollup a record counts in.
type RollupKey struct {
	Minute               int64 // Unix minutes
	Replica              string
	Source               string // SourceKey
	DestinationHost      string
	DestinationPrincipal string
	Verdict              string
	Allowed              bool
}

// RollupOf is the rollup key of a record.
func RollupOf(r *Record) RollupKey {
	return RollupKey{
		Minute: minuteOf(r.Time), Replica: r.Replica, Source: SourceKey(r),
		DestinationHost: r.Request.Host, DestinationPrincipal: r.Destination.Principal,
		Verdict: string(r.Verdict), Allowed: r.Decision.Allowed,
	}
}

// RollupDeltas calls fn with each rollup key r's arrival changes, and by
// how much, so that the rollups count each request once, with its
// effective outcome: a record adds one to RollupOf(r); an amendment that
// changes the amended record's decision.allowed adds one to its own key and
// takes one from the amended record's (the same minute, edge and verdict:
// the amendment carries them); an amendment that does not change it counts
// nothing. The amendment has its amended record's time, so both deltas land
// in the same minute and no range of whole minutes sees a negative count.
func RollupDeltas(r *Record, fn func(k RollupKey, delta int64)) {
	k := RollupOf(r)
	if r.Amends == nil {
		fn(k, 1)
		return
	}
	if r.Amends.Allowed == k.Allowed {
		return
	}
	fn(k, 1)
	k.Allowed = r.Amends.Allowed
	fn(k, -1)
}

// MinuteTime is the start of a rollup minute, for a minute an int64
// nanosecond time can fall in (a stored minute beyond is read as the
// nearest such).
func MinuteTime(minute int64) time.Time {
	return time.Unix(min(max(minute, minMinute), maxMinute)*60, 0).UTC()
}
