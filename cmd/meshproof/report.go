package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

const reportUsage = `Reports on the mTLS evidence, from the API of a running meshproof serve.

Usage:
  meshproof report tls-check        [flags]   per destination, which clients reached it over mTLS and which did not
  meshproof report strict-readiness [flags]   can a destination, or a namespace, go to PeerAuthentication STRICT? (exit 0 ready, 3 not)

Run "meshproof report <report> --help" for its flags.
`

// errNotReady makes strict-readiness exit 3 once it has printed its answer.
var errNotReady = errors.New("not ready for STRICT")

// reportCommand is `meshproof report`.
func reportCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report REPORT",
		Short: "tls-check, or strict-readiness (exit 3 when not ready), from a running serve's API",
		Long:  "Reports on the mTLS evidence, from the API of a running meshproof serve.",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageError{errors.New("which report? tls-check or strict-readiness\n\n" + reportUsage)}
			case args[0] == "help":
				return cmd.Help()
			}
			return usageError{fmt.Errorf("unknown report %q\n\n%s", args[0], reportUsage)}
		},
	}
	cmd.AddCommand(tlsCheckCommand(stdout), readinessCommand(stdout))
	return cmd
}

// reportOptions are the flags the reports share.
type reportOptions struct {
	remote        remoteOptions
	since, until  string
	destination   string
	namespace     string
	allNamespaces bool
	output        string
}

func (o *reportOptions) flags(fs *pflag.FlagSet, since, destinationDoc string) {
	o.remote.flags(fs)
	o.since = since
	fs.StringVar(&o.since, "since", o.since, "traffic from this `time` on: RFC 3339, or a duration back from now (90s, 1h, 7d, 1d12h)")
	fs.StringVar(&o.until, "until", o.until, "traffic before this `time` (RFC 3339 or a duration back from now); now when unset")
	fs.StringVar(&o.destination, "destination", o.destination, destinationDoc)
	fs.StringVarP(&o.namespace, "namespace", "n", o.namespace, "the destinations of this `namespace`: its SPIFFE namespace, or the NS of a host svc.NS[.svc[.cluster.local]] that served no mTLS (not with --destination)")
	fs.BoolVarP(&o.allNamespaces, "all-namespaces", "A", o.allNamespaces, "every namespace (not with --destination or --namespace)")
	outputFlag(fs, &o.output, "table", reportOutputs...)
}

// reportOutputs are the reports' -o values; wide is the table.
var reportOutputs = []string{"table", "wide", "json", "yaml"}

// client checks the options of a report and returns its API client.
func (o *reportOptions) client() (*client.Client, error) {
	given := 0
	for _, set := range []bool{o.destination != "", o.namespace != "", o.allNamespaces} {
		if set {
			given++
		}
	}
	if given > 1 {
		return nil, usageError{errors.New("give one of --destination, -n/--namespace and -A/--all-namespaces")}
	}
	return o.remote.client()
}

const tlsCheckDoc = `Per destination (host:port as in :authority), which clients reached it over mTLS and
which did not, from the traffic meshproof saw: the successor of istioctl authn tls-check.

STATUS is OK (every request mTLS), PLAINTEXT (some without a client certificate) or
SUSPECT (some mtls_mismatch or xfcc_unverified, or a client whose SPIFFE ID is not its
pod's). SERVER is the modes the destination accepted: mTLS, HTTP or HTTP/mTLS. One line
per client: its mTLS share, requests and last request; a client that makes the row
SUSPECT says why in STATUS: stale_address (its address changed hands: stale data),
borrowed_identity (its pod presented another workload's identity), identity_mismatch
(either; serve could not tell), or the verdict it sent (mtls_mismatch, xfcc_unverified).
Their example records' reasons follow the table.

When the server runs with --kubernetes, the table starts with istioctl authn tls-check's
columns: HOST:PORT, STATUS, SERVER, CLIENT (what the DestinationRule makes clients send;
on a client's line, what it sent), AUTHN POLICY (name.namespace/MODE of the
PeerAuthentication that decides, -/PERMISSIVE for Istio's default) and DESTINATION RULE
(name.namespace/MODE, auto for auto mTLS; on a client's line, its own where it differs).
STATUS gains CONFLICT: configured STRICT, yet plaintext seen (a port or sidecar outside
the policy). Clients are named by workload (namespace/kind/name).`

// tlsCheckCommand is `meshproof report tls-check`.
func tlsCheckCommand(stdout io.Writer) *cobra.Command {
	var o reportOptions
	cmd := leaf("tls-check", "per destination, which clients reached it over mTLS and which did not", tlsCheckDoc,
		func(cmd *cobra.Command) error { return tlsCheck(cmd.Context(), &o, stdout) })
	o.flags(cmd.Flags(), "24h", "only this destination: its principal (spiffe://..., with the hosts it served), or its host as in :authority (host:port)")
	return cmd
}

func tlsCheck(ctx context.Context, o *reportOptions, stdout io.Writer) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	rep, err := c.TLSCheck(ctx, o.since, o.until, o.destination, o.namespace)
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		return writeStructured(stdout, o.output, rep)
	}
	return writeTLSCheck(stdout, rep, o.output == "wide", clock())
}

// writeTLSCheck prints the report as istioctl authn tls-check's table:
// a line per destination, with its identity (the principal that served
// it), then a line per client, indented under it, with the client's.
// Wide adds the first request and the denied ones.
func writeTLSCheck(w io.Writer, rep report.TLSCheckReport, wide bool, now time.Time) error {
	window := fmt.Sprintf("between %s and %s", stamp(rep.Since), stamp(rep.Until))
	if len(rep.Rows) == 0 {
		_, err := fmt.Fprintf(w, "No traffic seen %s.\n", window)
		return err
	}
	var total int64
	var first, last time.Time
	for _, row := range rep.Rows {
		total += row.Total
		for _, cl := range row.Clients {
			if first.IsZero() || cl.FirstSeen.Before(first) {
				first = cl.FirstSeen
			}
			if cl.LastSeen.After(last) {
				last = cl.LastSeen
			}
		}
	}
	fmt.Fprintf(w, "%s to %s seen, the first at %s, the last at %s (asked %s).\n\n",
		plural(int(total), "request"), plural(len(rep.Rows), "destination"), stamp(first), when(last, now), window)
	tw := newTable(w)
	configured := slices.ContainsFunc(rep.Rows, func(r report.TLSCheckRow) bool { return r.AuthnPolicy != nil })
	header := []string{"DESTINATION / CLIENT", "PRINCIPAL", "STATUS", "SERVER", "MTLS", "REQUESTS", "LAST SEEN"}
	if configured {
		// istioctl authn tls-check's columns first, then the traffic's.
		header = []string{"HOST:PORT / CLIENT", "STATUS", "SERVER", "CLIENT", "AUTHN POLICY", "DESTINATION RULE", "PRINCIPAL", "MTLS", "REQUESTS", "LAST SEEN"}
	}
	if wide {
		header = append(header, "FIRST SEEN", "DENIED")
	}
	writeRows(tw, header)
	statuses := map[string]int{}
	for _, row := range rep.Rows {
		statuses[row.Status]++
		var rowFirst, rowLast time.Time
		var mtls, denied int64
		for _, cl := range row.Clients {
			if rowFirst.IsZero() || cl.FirstSeen.Before(rowFirst) {
				rowFirst = cl.FirstSeen
			}
			if cl.LastSeen.After(rowLast) {
				rowLast = cl.LastSeen
			}
			mtls += cl.Counts[evidence.MTLS]
			denied += cl.Denied
		}
		line := []string{row.Destination, dash(row.DestinationPrincipal), row.Status, row.Server,
			share(mtls, row.Total), fmt.Sprint(row.Total), dash(when(rowLast, now))}
		if configured {
			line = []string{row.Destination, row.Status, row.Server, clientMode(row.DestinationRule), authnCell(row.AuthnPolicy), ruleCell(row.DestinationRule),
				dash(row.DestinationPrincipal), share(mtls, row.Total), fmt.Sprint(row.Total), dash(when(rowLast, now))}
		}
		if wide {
			line = append(line, dash(when(rowFirst, now)), fmt.Sprint(denied))
		}
		writeRows(tw, line)
		for _, cl := range row.Clients { // the destination's clients, indented under it
			// A client's STATUS is why it makes the row SUSPECT, if it does.
			line := []string{"  " + dash(clientName(cl)), "", cl.Suspect, "", share(cl.Counts[evidence.MTLS], cl.Total),
				fmt.Sprint(cl.Total), dash(when(cl.LastSeen, now))}
			if configured {
				// The client by its workload, what it sent, and its own
				// DestinationRule where it is not the row's.
				rule := ""
				if cl.DestinationRule != nil && (row.DestinationRule == nil || *cl.DestinationRule != *row.DestinationRule) {
					rule = ruleCell(cl.DestinationRule)
				}
				line = []string{"  " + dash(configuredClientName(cl)), cl.Suspect, "", sentModes(cl.Counts), "", rule,
					clientPrincipal(cl), share(cl.Counts[evidence.MTLS], cl.Total), fmt.Sprint(cl.Total), dash(when(cl.LastSeen, now))}
			}
			if wide {
				line = append(line, dash(when(cl.FirstSeen, now)), fmt.Sprint(cl.Denied))
			}
			writeRows(tw, line)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeSuspects(w, rep.Rows, configured)
	conflicts := ""
	if configured {
		conflicts = fmt.Sprintf(", %d CONFLICT", statuses[report.StatusConflict])
	}
	_, err := fmt.Fprintf(w, "\n%s: %d OK, %d PLAINTEXT, %d SUSPECT%s.\n",
		plural(len(rep.Rows), "destination"), statuses[report.StatusOK], statuses[report.StatusPlaintext], statuses[report.StatusSuspect], conflicts)
	return err
}

// configuredClientName is a client as the table with configured modes
// names it: by its workload, else its key.
func configuredClientName(cl report.Client) string {
	return cmp.Or(report.WorkloadName(cl.Workload), cl.Client)
}

// writeSuspects says, below the table, why each SUSPECT client is: its
// example record's reason, after the case its line's STATUS names.
func writeSuspects(w io.Writer, rows []report.TLSCheckRow, configured bool) {
	first := true
	for _, row := range rows {
		for _, cl := range row.Clients {
			if cl.Suspect == "" {
				continue
			}
			if first {
				fmt.Fprintln(w, "\nSuspect clients (from an example record's reasons):")
				first = false
			}
			name := clientName(cl)
			if configured {
				name = configuredClientName(cl)
			}
			why := cmp.Or(cl.SuspectReason, "no reason at hand (the example record is gone)")
			fmt.Fprintf(w, "  %s to %s: %s: %s\n", cell(dash(name)), cell(row.Destination), cl.Suspect, cell(why))
		}
	}
}

// authnCell is AUTHN POLICY: name.namespace/MODE, "-" for Istio's default.
func authnCell(s *report.Setting) string {
	if s == nil {
		return "-"
	}
	return dash(cell(s.Name)) + "/" + dash(s.Mode)
}

// ruleCell is DESTINATION RULE: name.namespace/MODE, "auto" for a rule
// that sets no TLS (auto mTLS), "-/auto" for no rule.
func ruleCell(s *report.Setting) string {
	if s == nil {
		return "-"
	}
	return dash(cell(s.Name)) + "/" + cmp.Or(s.Mode, "auto")
}

// clientMode is istioctl's CLIENT column: what the DestinationRule makes
// clients send (auto: mTLS when the server has a sidecar).
func clientMode(s *report.Setting) string {
	if s == nil {
		return "-"
	}
	switch s.Mode {
	case "ISTIO_MUTUAL", "MUTUAL":
		return report.ServerMTLS
	case "SIMPLE":
		return "TLS"
	case "DISABLE":
		return report.ServerHTTP
	}
	return "auto"
}

// sentModes is what a client sent, as the row's SERVER says what the
// destination accepted: mTLS (mtls, mtls_mismatch), HTTP (the rest), or
// HTTP/mTLS.
func sentModes(c report.Counts) string {
	var mtls, other bool
	for v, n := range c {
		switch {
		case n == 0:
		case v == evidence.MTLS || v == evidence.MTLSMismatch:
			mtls = true
		default:
			other = true
		}
	}
	switch {
	case mtls && other:
		return report.ServerMixed
	case mtls:
		return report.ServerMTLS
	case other:
		return report.ServerHTTP
	}
	return "-"
}

// clientPrincipal is the client's principal, or its address, when the
// line names it by workload: what its key holds besides the workload (a
// client without a principal is keyed by its workload alone, see
// evidence.SourceKey).
func clientPrincipal(cl report.Client) string {
	if cl.Workload == nil {
		return "-"
	}
	k := evidence.ParseSourceKey(cl.Client)
	return dash(cmp.Or(k.Principal, k.Address))
}

const readinessDoc = `Can this destination's PeerAuthentication go to STRICT without breaking a client?
READY only when traffic was seen and every request was mTLS; otherwise the clients
that would break, or look suspect. Exit status: 0 ready, 3 not ready (with --output
json too), 1 when the question could not be answered, 2 for a wrong command line.

-n NS asks it of a namespace (PeerAuthentication is applied per namespace), -A of
every namespace, not-ready first: per namespace a verdict, what it is based on,
a line per workload (destination) and the clients that block it. A namespace is
ready only when every destination known in it (traffic in the last 30 days) had
traffic in the window, all of it mTLS: a destination with no traffic is not
ready. Exit 3 when any namespace shown is not ready.

When the server runs with --kubernetes, blocking clients are named by workload, and
those without a sidecar are marked: they will break under STRICT (no DestinationRule
can make them send mTLS).

Examples:
  meshproof report strict-readiness --destination httpbin.mtls-pg:8000
  meshproof report strict-readiness -n mtls-pg --since 24h
  meshproof report strict-readiness -A -o json`

// readinessCommand is `meshproof report strict-readiness`.
func readinessCommand(stdout io.Writer) *cobra.Command {
	var o reportOptions
	cmd := leaf("strict-readiness", "can a destination, or a namespace, go to PeerAuthentication STRICT? (exit 0 ready, 3 not)", readinessDoc,
		func(cmd *cobra.Command) error { return strictReadiness(cmd.Context(), &o, stdout) })
	o.flags(cmd.Flags(), "7d", "the destination: its principal (spiffe://..., which takes in every host it served), or its host as in :authority (host:port); or give -n or -A")
	return cmd
}

func strictReadiness(ctx context.Context, o *reportOptions, stdout io.Writer) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	if o.namespace != "" || o.allNamespaces {
		return namespaceReadiness(ctx, c, o, stdout)
	}
	if o.destination == "" {
		return usageError{errors.New("which destination? --destination (a principal, or a host:port as in :authority), -n NAMESPACE or -A (every namespace)")}
	}
	rep, err := c.StrictReadiness(ctx, o.destination, o.since, o.until)
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		err = writeStructured(stdout, o.output, rep)
	} else {
		err = writeReadiness(stdout, rep, o.remote.hint(), clock())
	}
	if err == nil && !rep.Ready {
		return errNotReady
	}
	return err
}

// writeReadiness prints the verdict, then the clients that block STRICT.
// hint is the flags a printed command needs to reach the same server.
func writeReadiness(w io.Writer, rep report.StrictReadinessReport, hint string, now time.Time) error {
	verdict := "READY"
	if !rep.Ready {
		verdict = "NOT READY"
	}
	fmt.Fprintf(w, "%s: %s\n", verdict, cell(rep.Reason))
	dest := dash(cell(rep.Destination))
	if len(rep.Hosts) > 0 && (len(rep.Hosts) > 1 || rep.Hosts[0] != rep.Destination) {
		dest += " (hosts: " + cell(strings.Join(rep.Hosts, ", ")) + ")"
	}
	fmt.Fprintf(w, "destination %s, between %s and %s: %s\n", dest, stamp(rep.Since), stamp(rep.Until),
		verdictCounts(rep.Total, rep.Counts, true))
	if len(rep.Blocking) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	writeBlocking(tw, "", "CLIENT", rep.Blocking, now)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nSee an example: %s\n", exampleCommand(rep.Blocking[0].ExampleID, hint))
	return err
}

// writeBlocking writes the blocking clients' table; with workloads known
// (serve --kubernetes) each is named by its workload and says whether it
// runs a sidecar: one without will break under STRICT.
func writeBlocking(tw *tabwriter.Writer, indent, title string, bs []report.BlockingClient, now time.Time) {
	named := slices.ContainsFunc(bs, func(b report.BlockingClient) bool { return b.Workload != nil })
	header := []string{indent + title, "VERDICTS", "REQUESTS", "LAST SEEN", "EXAMPLE ID"}
	if named {
		header = []string{indent + title, "WORKLOAD", "SIDECAR", "VERDICTS", "REQUESTS", "LAST SEEN", "EXAMPLE ID"}
	}
	writeRows(tw, header)
	for _, b := range bs {
		line := []string{indent + dash(clientName(b.Client)), verdictCounts(b.Count, b.Counts, false), fmt.Sprint(b.Total), dash(when(b.LastSeen, now)), dash(b.ExampleID)}
		if named {
			sidecar := "-"
			switch {
			case b.NoSidecar:
				sidecar = "no: breaks under STRICT"
			case b.Workload != nil:
				sidecar = "yes"
			}
			line = slices.Insert(line, 1, dash(cell(report.WorkloadName(b.Workload))), sidecar)
		}
		writeRows(tw, line)
	}
}

// exampleCommand is the command that prints the record id, from the server
// hint's flags name.
func exampleCommand(id, hint string) string {
	return cell("meshproof query " + hint + "--id " + shellQuote(id))
}

// namespaceReadiness is strict-readiness -n NS or -A.
func namespaceReadiness(ctx context.Context, c *client.Client, o *reportOptions, stdout io.Writer) error {
	rep, err := c.NamespaceReadiness(ctx, o.namespace, o.allNamespaces, o.since, o.until)
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		err = writeStructured(stdout, o.output, rep)
	} else {
		err = writeNamespaceReadiness(stdout, rep, o.remote.hint(), clock())
	}
	if err != nil {
		return err
	}
	for _, ns := range rep.Namespaces {
		if !ns.Ready {
			return errNotReady
		}
	}
	if len(rep.Namespaces) == 0 {
		return errNotReady // nothing seen: unknown is not ready
	}
	return nil
}

// writeNamespaceReadiness prints per namespace, not ready first: the
// verdict, what it is based on, a line per workload and the blocking
// clients, with a command for an example record.
func writeNamespaceReadiness(w io.Writer, rep report.NamespaceReadinessReport, hint string, now time.Time) error {
	fmt.Fprintf(w, "%s, between %s and %s (destinations known since %s).\n", cell(rep.Summary), stamp(rep.Since), stamp(rep.Until), stamp(rep.KnownSince))
	if len(rep.Namespaces) == 0 {
		_, err := fmt.Fprintln(w, "No destination seen: nothing is known to be ready.")
		return err
	}
	for _, ns := range rep.Namespaces {
		name := ns.Namespace
		if name == "" {
			name = "(unknown namespace)"
		}
		verdict := "READY: " + strings.TrimPrefix(ns.Verdict, "ready: ")
		if !ns.Ready {
			verdict = "NOT READY: " + strings.TrimPrefix(ns.Verdict, "not ready: ")
		}
		fmt.Fprintf(w, "\nnamespace %s: %s\n", cell(name), cell(verdict))
		fmt.Fprintf(w, "  based on %s\n", cell(ns.BasedOn))
		if len(ns.Workloads) > 0 {
			fmt.Fprintln(w)
			tw := newTable(w)
			writeRows(tw, []string{"  WORKLOAD", "STATUS", "REQUESTS", "CLIENTS", "MTLS", "LAST SEEN", "DESTINATION"})
			for _, d := range ns.Workloads {
				writeRows(tw, []string{"  " + dash(d.Workload), strings.ToUpper(strings.ReplaceAll(d.Status, "_", " ")), fmt.Sprint(d.Total), fmt.Sprint(d.Clients),
					share(d.Counts[evidence.MTLS], d.Total), dash(when(d.LastSeen, now)), dash(d.Destination)})
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(ns.Blocking) > 0 {
			fmt.Fprintln(w)
			tw := newTable(w)
			writeBlocking(tw, "  ", "BLOCKING CLIENT", ns.Blocking, now)
			if err := tw.Flush(); err != nil {
				return err
			}
			if id := ns.Blocking[0].ExampleID; id != "" {
				fmt.Fprintf(w, "  See an example: %s\n", exampleCommand(id, hint))
			}
		}
	}
	return nil
}

// verdictCounts is "plaintext 7, tls_server_only 2": the verdicts counted,
// mtls among them when withMTLS; "none" for none.
func verdictCounts(total int64, counts report.Counts, withMTLS bool) string {
	var parts []string
	for _, v := range evidence.Verdicts {
		if n := counts[v]; n > 0 && (withMTLS || v != evidence.MTLS) {
			parts = append(parts, fmt.Sprintf("%s %d", v, n))
		}
	}
	if total == 0 || len(parts) == 0 {
		return "no requests"
	}
	if withMTLS {
		return plural(int(total), "request") + " (" + strings.Join(parts, ", ") + ")"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// clientName is a report's client as tables print it: its workload
// (legacy/deployment/sleep) where its key names one, else its principal
// or address (report.Client.Name; the key itself from an older server).
func clientName(c report.Client) string {
	if c.Name != "" {
		return c.Name
	}
	return c.Client
}
