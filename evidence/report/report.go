// Package report answers the operators' questions about mTLS from the
// evidence rollups: which clients reach a destination without mTLS
// (TLSCheck, the traffic-based successor of istioctl authn tls-check),
// whether a destination can go to PeerAuthentication STRICT without
// breaking one of them (StrictReadiness), the same for every destination
// of a namespace (StrictReadinessByNamespace), and the mTLS share and
// plaintext requests of each destination over time (TimeseriesOf).
// Reports read Reader.Aggregate, not the records: their cost follows the
// number of edges, not the traffic. The exceptions are one Get per client
// named below: tls-check reads each SUSPECT client's example record for
// its reason (Client.Suspect), and, with a Configuration, every client's.
//
// PeerAuthentication is applied per namespace or workload, so the
// namespace reports place each destination in a namespace:
//   - A destination is its principal when mTLS traffic gave one: an Istio
//     SPIFFE ID, spiffe://TD/ns/NS/sa/SA, is workload SA of namespace NS
//     (any other ID has namespace "", workload the ID). Else it is its
//     host, the :authority.
//   - Plaintext carries no destination principal: a host that served mTLS
//     for a principal in the period read (since known_since, for
//     StrictReadinessByNamespace) belongs to that principal's destination,
//     to each of them when several served it.
//   - A host that never served mTLS is placed by its name, as Kubernetes'
//     DNS names services: svc.NS, svc.NS.svc and svc.NS.svc.cluster.local
//     (any cluster domain, any port) are workload svc of namespace NS. A
//     bare name, an IP address or any other name has namespace "": the
//     unknown namespace. (So does the rule place example.com in namespace
//     com: a two-label name is a service of a namespace to Kubernetes.)
//
// With a Configuration (serve --kubernetes), TLSCheck and StrictReadiness
// set the configured modes beside the traffic. The rollups keep no
// workloads or ports, so each is taken from one record, read by id (one
// Get per client): an approximation where several workloads or ports
// serve one host.
//   - The destination (AUTHN POLICY) is that of the example of the row's
//     most telling client (suspect, then plaintext, then the latest):
//     its Destination.Workload (namespace, and the labels its current pods
//     carry, which the Configuration looks up) and its destination
//     address's port, the container port PeerAuthentication's
//     portLevelMtls names. A record without a workload (none resolved, or
//     recorded without --kubernetes) or removed by retention leaves the
//     row's namespace alone: namespace and mesh policies only, no port.
//   - DESTINATION RULE is looked up for the host as a client named it in
//     :authority, completed as Kubernetes' DNS would (svc.NS[.svc] is
//     svc.NS.svc.cluster.local, a bare name a service of the
//     destination's namespace), and the port it gave (80 when none): the
//     row's from the destination's namespace, each client's from its own
//     (its workload's, else its SPIFFE ID's, else the destination's).
//   - CONFLICT is PLAINTEXT where the destination is configured STRICT:
//     the plaintext reached a port or a sidecar the policy does not cover
//     (or the workload taken is not the one that got it). SUSPECT stays
//     first.
//   - Clients are named by the workload of their example's source
//     (Source.Workload), and a blocking client whose workload runs
//     without a sidecar is marked: it will break under STRICT.
//   - A destination's Workload (tls-check's rows, the namespace
//     report's destinations) is its example's Destination.Workload, by
//     WorkloadName, where that record has one: a SPIFFE ID's service
//     account is no workload's name (Istio's "default" is every
//     workload's that sets none). A namespace report's destination takes
//     the latest record addressed to its principal (plaintext is only
//     placed there by its host), else the latest.
package report

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Counts are requests by verdict. Every verdict has a key, zero or not, so
// that tables and scripts need no special case for a missing one.
type Counts map[evidence.Verdict]int64

func newCounts() Counts {
	c := make(Counts, len(evidence.Verdicts))
	for _, v := range evidence.Verdicts {
		c[v] = 0
	}
	return c
}

// suspect reports whether a verdict means the evidence of the hop cannot
// be trusted: a client certificate contradicted by XFCC, or XFCC without one.
func suspect(v evidence.Verdict) bool {
	return v == evidence.MTLSMismatch || v == evidence.XFCCUnverified
}

// mutual reports whether the connection was mutual TLS, whatever XFCC said.
func mutual(v evidence.Verdict) bool { return v == evidence.MTLS || v == evidence.MTLSMismatch }

// severity orders verdicts by how much an operator wants to see an example
// of them: suspect first, then no mTLS, then mTLS.
func severity(v evidence.Verdict) int {
	switch {
	case suspect(v):
		return 2
	case v != evidence.MTLS:
		return 1
	}
	return 0
}

// Client is the traffic of one source identity (its principal, or its
// address when it had none) to one destination.
type Client struct {
	// Client is the source's key (evidence.SourceKey): its principal, its
	// workload (workload:NAMESPACE/KIND/NAME) when it had no principal, or
	// its address when neither was known.
	Client string `json:"client"`
	// Name is the client as reports print it (SourceKeyParts.Display):
	// its workload (legacy/deployment/sleep), "WORKLOAD as PRINCIPAL" for
	// a mismatched identity, else its principal or address.
	Name string `json:"name"`
	// IdentityMismatch: the client's SPIFFE ID names another namespace or
	// service account than its pod runs as (a workload presenting
	// another's identity, or stale address data); its row is SUSPECT.
	IdentityMismatch bool `json:"identity_mismatch"`
	// Suspect says why the client makes its tls-check row SUSPECT ("" when
	// it does not): for an identity that is not its pod's, which case its
	// example record's reason names (evidence.CaseStaleAddress,
	// CaseBorrowedIdentity, or CaseIdentityMismatch when the record does
	// not say or is gone); else the suspect verdict it sent (mtls_mismatch,
	// xfcc_unverified). SuspectReason is that record's reason for it (the
	// identity reason, or the verdict's reasons); "" when the record is
	// gone.
	Suspect       string `json:"suspect,omitempty"`
	SuspectReason string `json:"suspect_reason,omitempty"`

	Counts    Counts    `json:"counts"`
	Total     int64     `json:"total"`
	Allowed   int64     `json:"allowed"`
	Denied    int64     `json:"denied"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// ExampleID is one record of the client's most telling traffic: a
	// suspect request if any, else one without mTLS if any, else the latest
	// group's.
	ExampleID string `json:"example_id"`
	// Workload is the client's workload, from the example record (only
	// with a Configuration; nil when that record resolved none).
	Workload *evidence.Workload `json:"workload,omitempty"`
	// DestinationRule is the TLS the client is configured to originate
	// to the destination, looked up from its namespace (only with a
	// Configuration; in strict-readiness for blocking clients, to the
	// host their example asked for).
	DestinationRule *Setting `json:"destination_rule,omitempty"`

	example evidence.Group // the group ExampleID comes from
}

// add counts one group in c.
func (c *Client) add(g evidence.Group) {
	if c.Counts == nil {
		c.Counts = newCounts()
	}
	c.Counts[g.Verdict] += g.Count
	c.Total += g.Count
	if g.Allowed {
		c.Allowed += g.Count
	} else {
		c.Denied += g.Count
	}
	if c.FirstSeen.IsZero() || g.FirstSeen.Before(c.FirstSeen) {
		c.FirstSeen = g.FirstSeen
	}
	if g.LastSeen.After(c.LastSeen) {
		c.LastSeen = g.LastSeen
	}
	if c.ExampleID == "" || betterExample(g, c.example) {
		c.example, c.ExampleID = g, g.ExampleID
	}
}

func betterExample(g, than evidence.Group) bool {
	if s, t := severity(g.Verdict), severity(than.Verdict); s != t {
		return s > t
	}
	return g.LastSeen.After(than.LastSeen)
}

// clients accumulates groups per client.
type clients map[string]*Client

func (cs clients) add(g evidence.Group) {
	c, ok := cs[g.Source]
	if !ok {
		k := evidence.ParseSourceKey(g.Source)
		c = &Client{Client: g.Source, Name: k.Display(), IdentityMismatch: k.Mismatch}
		cs[g.Source] = c
	}
	c.add(g)
}

// mismatched says whether any client's identity is not its workload's.
func (cs clients) mismatched() bool {
	for _, c := range cs {
		if c.IdentityMismatch {
			return true
		}
	}
	return false
}

// sorted lists the clients by name.
func (cs clients) sorted() []Client {
	out := make([]Client, 0, len(cs))
	for _, c := range cs {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Client) int { return strings.Compare(a.Client, b.Client) })
	return out
}

// groupKey identifies a group, to merge the answers of several queries.
type groupKey struct {
	source, host, principal string
	verdict                 evidence.Verdict
	allowed                 bool
}

// traffic returns the groups of the traffic to destination ("" for all)
// in [since, until), and the destination hosts they cover, sorted.
//
// A destination principal is widened to the hosts it served: in PERMISSIVE
// mode a plaintext request carries no destination principal, so asking by
// principal alone would hide exactly the traffic the reports are for.
// (One more Aggregate over every destination does it: the rollups are read
// by time range either way.) Plaintext sent to a host name that never saw
// mTLS in the window cannot be tied to the principal from the rollups.
func traffic(ctx context.Context, r evidence.Reader, since, until time.Time, destination string) ([]evidence.Group, []string, error) {
	q := evidence.AggregateQuery{Since: since, Until: until, Destination: destination}
	if err := q.Validate(); err != nil {
		return nil, nil, err
	}
	groups, err := r.Aggregate(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("report: %w", err)
	}
	served := map[string]bool{}
	for _, g := range groups {
		if g.DestinationHost != destination && g.DestinationHost != "" {
			served[g.DestinationHost] = true
		}
	}
	if destination == "" || len(served) == 0 {
		return groups, hostsOf(groups), nil
	}
	seen := map[groupKey]bool{}
	for _, g := range groups {
		seen[keyOf(g)] = true
	}
	q.Destination = ""
	all, err := r.Aggregate(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("report: %w", err)
	}
	for _, g := range all {
		if served[g.DestinationHost] && !seen[keyOf(g)] {
			groups = append(groups, g)
		}
	}
	return groups, hostsOf(groups), nil
}

func keyOf(g evidence.Group) groupKey {
	return groupKey{g.Source, g.DestinationHost, g.DestinationPrincipal, g.Verdict, g.Allowed}
}

func hostsOf(groups []evidence.Group) []string {
	var hosts []string
	for _, g := range groups {
		hosts = append(hosts, g.DestinationHost)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// window resolves a zero until to now, so that a report says which window
// it covers.
func window(since, until time.Time) (time.Time, time.Time) {
	if until.IsZero() {
		until = time.Now()
	}
	return since.UTC(), until.UTC()
}

// plural is "1 client" or "2 clients".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func byCountDesc(a, b BlockingClient) int {
	return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Client.Client, b.Client.Client))
}
