package report

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Query asks for a tls-check report.
type Query struct {
	Since, Until time.Time // Until zero: now
	// Destination narrows the report to one destination: a host:port as in
	// :authority, or a destination principal (widened to the hosts it
	// served, see StrictReadiness).
	Destination string
	// Namespace narrows the report to the destinations of one namespace,
	// placed as StrictReadinessByNamespace places them; not with Destination.
	Namespace string
	// Config, when set, puts the configured modes beside each row
	// (AuthnPolicy, DestinationRule, CONFLICT) and names each client's
	// workload; nil leaves the report as it was without one.
	Config Configuration
}

// Statuses of a TLSCheck row.
const (
	StatusOK        = "OK"        // every request was mTLS
	StatusPlaintext = "PLAINTEXT" // some plaintext, or TLS without a client certificate
	StatusSuspect   = "SUSPECT"   // some mtls_mismatch or xfcc_unverified: the evidence contradicts itself
	// StatusConflict (with a Configuration only) replaces PLAINTEXT when
	// the destination is configured STRICT.
)

// Server modes observed inbound, as istioctl authn tls-check printed them.
const (
	ServerMTLS  = "mTLS"
	ServerHTTP  = "HTTP"
	ServerMixed = "HTTP/mTLS"
)

// TLSCheckReport is the tls-check report: one row per destination.
type TLSCheckReport struct {
	Since time.Time     `json:"since,omitzero"`
	Until time.Time     `json:"until"`
	Rows  []TLSCheckRow `json:"rows"`
}

// TLSCheckRow is the traffic to one destination host.
type TLSCheckRow struct {
	// Destination is the host:port the clients addressed (:authority).
	Destination string `json:"destination"`
	// DestinationPrincipal is the identity that served it over TLS; when
	// several did, they are listed sorted, separated by ", ". Plaintext
	// requests carry none.
	DestinationPrincipal string `json:"destination_principal,omitempty"`
	// Namespace and Workload place the row as the namespace reports place
	// a destination: by its first principal, else by its host's name
	// (attribution). Namespace "" is the unknown namespace. With a
	// Configuration, Workload is the destination's Kubernetes workload
	// (WorkloadName) where the row's example record resolved one.
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Status    string `json:"status"`
	// Server is the modes the destination accepted: mTLS (mtls and
	// mtls_mismatch connections), HTTP (everything else), or both.
	Server    string   `json:"server"`
	MTLSShare float64  `json:"mtls_share"`
	Total     int64    `json:"total"`
	Counts    Counts   `json:"counts"`
	Clients   []Client `json:"clients"`
	// AuthnPolicy is the PeerAuthentication mode the destination's
	// workload is configured for on the port it was reached on, and the
	// policy that decided (no name: Istio's default PERMISSIVE); only
	// with a Configuration. The package doc says which workload and port.
	AuthnPolicy *Setting `json:"authn_policy,omitempty"`
	// DestinationRule is the TLS clients in the destination's namespace
	// are configured to originate to it (no name and no mode: no rule,
	// auto mTLS); each client has its own. Only with a Configuration.
	DestinationRule *Setting `json:"destination_rule,omitempty"`
}

// TLSCheck reports, per destination host, which clients reached it over
// mTLS and which did not, from the rollups of [q.Since, q.Until).
func TLSCheck(ctx context.Context, r evidence.Reader, q Query) (TLSCheckReport, error) {
	if q.Destination != "" && q.Namespace != "" {
		return TLSCheckReport{}, &evidence.FilterError{Field: "namespace", Msg: "give destination or namespace, not both"}
	}
	if err := checkNamespace(q.Namespace); err != nil {
		return TLSCheckReport{}, err
	}
	since, until := window(q.Since, q.Until)
	groups, _, err := traffic(ctx, r, q.Since, until, q.Destination)
	if err != nil {
		return TLSCheckReport{}, err
	}
	if q.Namespace != "" {
		attr := newAttribution(groups)
		groups = slices.DeleteFunc(groups, func(g evidence.Group) bool { return !attr.in(g, q.Namespace) })
	}
	type acc struct {
		row        TLSCheckRow
		principals []string
		clients    clients
	}
	byHost := map[string]*acc{}
	for _, g := range groups {
		key := cmp.Or(g.DestinationHost, g.DestinationPrincipal)
		a, ok := byHost[key]
		if !ok {
			a = &acc{row: TLSCheckRow{Destination: key, Counts: newCounts()}, clients: clients{}}
			byHost[key] = a
		}
		if g.DestinationPrincipal != "" {
			a.principals = append(a.principals, g.DestinationPrincipal)
		}
		a.row.Counts[g.Verdict] += g.Count
		a.row.Total += g.Count
		a.clients.add(g)
	}
	rep := TLSCheckReport{Since: since, Until: until, Rows: make([]TLSCheckRow, 0, len(byHost))}
	for _, a := range byHost {
		row := a.row
		slices.Sort(a.principals)
		row.DestinationPrincipal = strings.Join(slices.Compact(a.principals), ", ")
		if len(a.principals) > 0 {
			row.Namespace, row.Workload = principalNamespace(a.principals[0])
		} else {
			row.Namespace, row.Workload = hostNamespace(row.Destination)
		}
		row.Status, row.Server = judge(row.Counts)
		// A client whose SPIFFE ID is not its pod's makes the row SUSPECT
		// too, whatever its verdicts: its mTLS proves another identity.
		if a.clients.mismatched() {
			row.Status = StatusSuspect
		}
		if row.Total > 0 {
			row.MTLSShare = float64(row.Counts[evidence.MTLS]) / float64(row.Total)
		}
		row.Clients = a.clients.sorted()
		rep.Rows = append(rep.Rows, row)
	}
	slices.SortFunc(rep.Rows, func(a, b TLSCheckRow) int {
		return cmp.Or(strings.Compare(a.Destination, b.Destination), strings.Compare(a.DestinationPrincipal, b.DestinationPrincipal))
	})
	ex := &examples{r: r}
	if err := describeSuspects(ctx, ex, rep.Rows); err != nil {
		return TLSCheckReport{}, err
	}
	if q.Config != nil {
		if err := configure(ctx, ex, q.Config, rep.Rows); err != nil {
			return TLSCheckReport{}, err
		}
	}
	return rep, nil
}

// describeSuspects says of every client that makes its row SUSPECT why
// (Client.Suspect), from its example record: one Get per such client.
func describeSuspects(ctx context.Context, ex *examples, rows []TLSCheckRow) error {
	for i := range rows {
		for j := range rows[i].Clients {
			c := &rows[i].Clients[j]
			verdict := suspectVerdict(c)
			if !c.IdentityMismatch && verdict == "" {
				continue
			}
			rec, err := ex.get(ctx, c.ExampleID)
			if err != nil {
				return err
			}
			var reasons []string
			if rec != nil {
				reasons = rec.Reasons
			}
			switch kind, why := evidence.MismatchCaseOf(reasons); {
			case kind != "":
				c.Suspect, c.SuspectReason = kind, why
			case c.IdentityMismatch:
				c.Suspect = evidence.CaseIdentityMismatch // the record is gone
			default:
				c.Suspect, c.SuspectReason = string(verdict), strings.Join(reasons, "; ")
			}
		}
	}
	return nil
}

// suspectVerdict is the suspect verdict c sent: its example's (the most
// severe group's), else the suspect verdict it sent most; "" for none.
func suspectVerdict(c *Client) evidence.Verdict {
	if suspect(c.example.Verdict) {
		return c.example.Verdict
	}
	var best evidence.Verdict
	for _, v := range evidence.Verdicts {
		if suspect(v) && c.Counts[v] > 0 && (best == "" || c.Counts[v] > c.Counts[best]) {
			best = v
		}
	}
	return best
}

// judge gives a row's status and server mode from its counts. SUSPECT wins
// over PLAINTEXT: contradictory evidence needs looking at before anything.
func judge(c Counts) (status, server string) {
	var mtls, other, susp, plain bool
	for v, n := range c {
		if n == 0 {
			continue
		}
		if mutual(v) {
			mtls = true
		} else {
			other = true
		}
		switch {
		case suspect(v):
			susp = true
		case v != evidence.MTLS:
			plain = true
		}
	}
	switch {
	case susp:
		status = StatusSuspect
	case plain:
		status = StatusPlaintext
	default:
		status = StatusOK
	}
	switch {
	case mtls && other:
		server = ServerMixed
	case mtls:
		server = ServerMTLS
	default:
		server = ServerHTTP
	}
	return status, server
}
