package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/evidence"
)

// StatusConflict is a tls-check row whose destination is configured STRICT
// yet received plaintext (or TLS without a client certificate): the
// request reached a port or a sidecar the policy does not cover.
const StatusConflict = "CONFLICT"

// Configuration is the mTLS the cluster is configured for, to set beside
// the traffic: serve --kubernetes hands the reports one built from Istio's
// PeerAuthentications and DestinationRules (cluster/istio) and the pods'
// labels. A nil Configuration leaves every report as it was.
type Configuration interface {
	// PeerAuthentication is the mode the destination's sidecar enforces
	// on port: namespace is the destination's, w its workload (nil when the
	// record resolved none: then only namespace and mesh policies can
	// match), port the destination address's (0 when unknown: no
	// port-level setting applies).
	PeerAuthentication(namespace string, w *evidence.Workload, port uint32) Setting
	// DestinationRule is the TLS a client in clientNamespace is configured
	// to originate to host (fully qualified, as Istio names services) on
	// service port port.
	DestinationRule(clientNamespace, host string, port uint32) Setting
}

// Setting is one configured mode and the object that decided it.
type Setting struct {
	// Name is "name.namespace" of the PeerAuthentication or
	// DestinationRule that decided; "" when none did (Istio's default:
	// PERMISSIVE for a server, auto mTLS for a client).
	Name string `json:"name,omitempty"`
	// Mode is STRICT, PERMISSIVE or DISABLE for a PeerAuthentication;
	// DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL for a DestinationRule, ""
	// when it sets no TLS for the port (auto mTLS).
	Mode string `json:"mode,omitempty"`
}

// examples reads the records that clients' ExampleIDs name, once each. A
// record no longer stored (retention) is nil.
type examples struct {
	r    evidence.Reader
	read map[string]*evidence.Record
}

func (e *examples) get(ctx context.Context, id string) (*evidence.Record, error) {
	if id == "" {
		return nil, nil
	}
	if rec, ok := e.read[id]; ok {
		return rec, nil
	}
	rec, err := e.r.Get(ctx, id)
	switch {
	case errors.Is(err, evidence.ErrNotFound):
		rec = nil
	case err != nil:
		return nil, fmt.Errorf("report: example record %s: %w", id, err)
	}
	if e.read == nil {
		e.read = map[string]*evidence.Record{}
	}
	e.read[id] = rec
	return rec, nil
}

// configuredDestination is where a row's configuration is looked up: the
// destination workload, namespace and port of rec (the example of the
// row's most telling client), else the namespace the row was placed in.
func configuredDestination(rec *evidence.Record, placed string) (ns string, w *evidence.Workload, port uint32) {
	ns = placed
	if rec == nil {
		return ns, nil, 0
	}
	w = rec.Destination.Workload
	if w != nil && w.Namespace != "" {
		ns = w.Namespace
	}
	return ns, w, rec.Destination.Port
}

// clientNamespace is the namespace a client's DestinationRules are looked
// up from: its workload's, else its SPIFFE ID's, else (unknown) the
// destination's own, as for a client beside it.
func clientNamespace(rec *evidence.Record, destNS string) string {
	if rec != nil {
		if w := rec.Source.Workload; w != nil && w.Namespace != "" {
			return w.Namespace
		}
		if id := rec.Source.SPIFFE; id != nil && id.Namespace != "" {
			return id.Namespace
		}
	}
	return destNS
}

// serviceHost turns a destination as in :authority into the fully
// qualified host and service port DestinationRules are matched against:
// svc, svc.NS and svc.NS.svc become svc.NS.svc.cluster.local (a bare svc
// in namespace ns, the destination's); an address or any other name is
// taken as written. No port means 80.
func serviceHost(authority, ns string) (host string, port uint32) {
	port = 80
	var p string
	switch {
	case strings.HasPrefix(authority, "["):
		if end := strings.IndexByte(authority, ']'); end > 0 {
			p, _ = strings.CutPrefix(authority[end+1:], ":")
		}
	case strings.Count(authority, ":") == 1:
		p = authority[strings.IndexByte(authority, ':')+1:]
	}
	if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
		port = uint32(n)
	}
	name := strings.ToLower(strings.TrimSuffix(hostName(authority), "."))
	if _, err := netip.ParseAddr(name); err == nil {
		return name, port
	}
	if svcNS, svc := hostNamespace(name); svcNS != "" {
		return svc + "." + svcNS + ".svc.cluster.local", port
	}
	if !strings.Contains(name, ".") && name != "" && ns != "" {
		return name + "." + ns + ".svc.cluster.local", port
	}
	return name, port
}

// configure sets each row's configured modes, its clients' workloads and
// DestinationRules, and CONFLICT where STRICT met plaintext.
func configure(ctx context.Context, ex *examples, cfg Configuration, rows []TLSCheckRow) error {
	for i := range rows {
		row := &rows[i]
		rec, err := ex.get(ctx, mostTelling(row.Clients))
		if err != nil {
			return err
		}
		if w := destinationWorkload(rec); w != "" {
			row.Workload = w
		}
		ns, w, port := configuredDestination(rec, row.Namespace)
		authn := cfg.PeerAuthentication(ns, w, port)
		row.AuthnPolicy = &authn
		host, svcPort := serviceHost(row.Destination, ns)
		dr := cfg.DestinationRule(ns, host, svcPort)
		row.DestinationRule = &dr
		for j := range row.Clients {
			c := &row.Clients[j]
			crec, err := ex.get(ctx, c.ExampleID)
			if err != nil {
				return err
			}
			if crec != nil {
				c.Workload = crec.Source.Workload
			}
			d := cfg.DestinationRule(clientNamespace(crec, ns), host, svcPort)
			c.DestinationRule = &d
		}
		if row.Status == StatusPlaintext && authn.Mode == "STRICT" {
			row.Status = StatusConflict
		}
	}
	return nil
}

// mostTelling is the ExampleID of the clients' most severe example (then
// the latest): the request whose destination the row's configuration is
// looked up for.
func mostTelling(cs []Client) string {
	var best *Client
	for i := range cs {
		if best == nil || betterExample(cs[i].example, best.example) {
			best = &cs[i]
		}
	}
	if best == nil {
		return ""
	}
	return best.ExampleID
}

// configureReadiness describes the blocking clients (describeBlocking)
// and sets the destination's configured mode.
func configureReadiness(ctx context.Context, ex *examples, cfg Configuration, rep *StrictReadinessReport) error {
	if err := describeBlocking(ctx, ex, cfg, rep.Blocking); err != nil {
		return err
	}
	worst := make([]Client, 0, len(rep.Blocking))
	for _, b := range rep.Blocking {
		worst = append(worst, b.Client)
	}
	rec, err := ex.get(ctx, mostTelling(worst))
	if err != nil {
		return err
	}
	placed := ""
	if rec == nil {
		placed, _ = hostNamespace(rep.Destination)
		if strings.HasPrefix(rep.Destination, "spiffe://") {
			placed, _ = principalNamespace(rep.Destination)
		}
	}
	ns, w, port := configuredDestination(rec, placed)
	if rec != nil || ns != "" {
		authn := cfg.PeerAuthentication(ns, w, port)
		rep.AuthnPolicy = &authn
	}
	rep.Reason += noSidecarClause(rep.Blocking)
	return nil
}

// configureNamespaces describes the blocking clients of every namespace
// and destination, and says in their verdicts and reasons which will break
// under STRICT.
func configureNamespaces(ctx context.Context, ex *examples, cfg Configuration, rep *NamespaceReadinessReport) error {
	for i := range rep.Namespaces {
		ns := &rep.Namespaces[i]
		if err := describeBlocking(ctx, ex, cfg, ns.Blocking); err != nil {
			return err
		}
		ns.Verdict += noSidecarClause(ns.Blocking)
		for j := range ns.Workloads {
			d := &ns.Workloads[j]
			if err := describeBlocking(ctx, ex, cfg, d.Blocking); err != nil {
				return err
			}
			d.Reason += noSidecarClause(d.Blocking)
			rec, err := ex.get(ctx, d.example)
			if err != nil {
				return err
			}
			if w := destinationWorkload(rec); w != "" {
				d.Workload = w
			}
		}
		sortDestinations(ns.Workloads)
	}
	return nil
}

// destinationWorkload is the name of rec's destination workload
// (WorkloadName), "" when rec is nil (removed by retention) or resolved
// none: a destination is named by its Kubernetes workload where the
// record has one, not by the service account of its SPIFFE ID, which
// several workloads may share (Istio's "default").
func destinationWorkload(rec *evidence.Record) string {
	if rec == nil || rec.Destination.Workload == nil {
		return ""
	}
	return WorkloadName(rec.Destination.Workload)
}

// describeBlocking names each blocking client's workload from its example
// record's source, marks those without a sidecar, and gives the
// DestinationRule TLS it is configured to send with to the host it asked
// for (the example's :authority).
func describeBlocking(ctx context.Context, ex *examples, cfg Configuration, bs []BlockingClient) error {
	for i := range bs {
		b := &bs[i]
		rec, err := ex.get(ctx, b.ExampleID)
		if err != nil {
			return err
		}
		if rec == nil {
			continue // removed by retention: nothing to say
		}
		if w := rec.Source.Workload; w != nil {
			b.Workload, b.NoSidecar = w, !w.Sidecar
		}
		ns, _, _ := configuredDestination(rec, "")
		if ns == "" {
			ns, _ = hostNamespace(rec.Request.Host)
		}
		host, port := serviceHost(rec.Request.Host, ns)
		d := cfg.DestinationRule(clientNamespace(rec, ns), host, port)
		b.DestinationRule = &d
	}
	return nil
}

// noSidecarClause is "; " and the sentence naming the clients of bs
// without a sidecar, "" when there are none.
func noSidecarClause(bs []BlockingClient) string {
	if n := countNoSidecar(bs); n > 0 {
		return "; " + noSidecarSentence(bs, n)
	}
	return ""
}

func countNoSidecar(bs []BlockingClient) int {
	n := 0
	for _, b := range bs {
		if b.NoSidecar {
			n++
		}
	}
	return n
}

// noSidecarSentence names the blocking clients without a sidecar: they
// cannot send mTLS at all, so STRICT refuses them whatever their
// DestinationRule says.
func noSidecarSentence(bs []BlockingClient, n int) string {
	var names []string
	for _, b := range bs {
		if b.NoSidecar {
			names = append(names, WorkloadName(b.Workload))
		}
	}
	verb := " run"
	if n == 1 {
		verb = " runs"
	}
	return fmt.Sprintf("%s (%s)%s without a sidecar and will break under STRICT", plural(n, "client", "clients"), strings.Join(names, ", "), verb)
}

// WorkloadName is how reports name a workload, as kubectl would with its
// namespace in front: namespace/kind/name (kind in lower case). "" for none.
func WorkloadName(w *evidence.Workload) string {
	if w == nil {
		return ""
	}
	return cmp.Or(w.Namespace, "-") + "/" + strings.ToLower(w.Kind) + "/" + w.Name
}
