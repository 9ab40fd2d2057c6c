package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

const reportUsage = `Reports on the mTLS evidence, from the API of a running meshproof serve.

Usage:
  meshproof report tls-check        [flags]   per destination, which clients reached it over mTLS and which did not
  meshproof report strict-readiness [flags]   can a destination go to PeerAuthentication STRICT? (exit 0 ready, 3 not)

Run "meshproof report <report> --help" for its flags.
`

// errNotReady makes strict-readiness exit 3 once it has printed its answer.
var errNotReady = errors.New("not ready for STRICT")

// runReport is `meshproof report`.
func runReport(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return reportCommand(ctx, args, stdout)
}

func reportCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("which report? tls-check or strict-readiness\n\n" + reportUsage)}
	}
	switch args[0] {
	case "tls-check":
		return tlsCheck(ctx, args[1:], stdout)
	case "strict-readiness":
		return strictReadiness(ctx, args[1:], stdout)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, reportUsage)
		return nil
	}
	return usageError{fmt.Errorf("unknown report %q\n\n%s", args[0], reportUsage)}
}

// reportOptions are the flags the reports share.
type reportOptions struct {
	remote       remoteOptions
	since, until string
	destination  string
	output       string
}

func (o *reportOptions) flags(fs *flag.FlagSet, since, destinationDoc string) {
	o.remote.flags(fs)
	o.since, o.output = since, "table"
	fs.StringVar(&o.since, "since", o.since, "traffic from this `time` on: RFC 3339, or a duration back from now (90s, 1h, 7d, 1d12h)")
	fs.StringVar(&o.until, "until", o.until, "traffic before this `time` (RFC 3339 or a duration back from now); now when unset")
	fs.StringVar(&o.destination, "destination", o.destination, destinationDoc)
	fs.StringVar(&o.output, "output", o.output, "output `format`: table or json")
}

// parse reads the command line of a report.
func (o *reportOptions) parse(fs *flag.FlagSet, args []string) (*client.Client, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("%s takes no arguments, got %q", fs.Name(), fs.Args())}
	}
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return nil, err
	}
	return o.remote.client()
}

// tlsCheckFlags is the command line of `meshproof report tls-check`.
func tlsCheckFlags(o *reportOptions) *flag.FlagSet {
	fs := newFlagSet("report tls-check", `Per destination (host:port as in :authority), which clients reached it over mTLS and
which did not, from the traffic meshproof saw: the successor of istioctl authn tls-check.

STATUS is OK (every request mTLS), PLAINTEXT (some without a client certificate) or
SUSPECT (some mtls_mismatch or xfcc_unverified). SERVER is the modes the destination
accepted: mTLS, HTTP or HTTP/mTLS. One line per client: its mTLS share, requests and
last request.`)
	o.flags(fs, "24h", "only this destination: host:port as in :authority, or a destination principal (with the hosts it served)")
	return fs
}

func tlsCheck(ctx context.Context, args []string, stdout io.Writer) error {
	var o reportOptions
	fs := tlsCheckFlags(&o)
	c, err := o.parse(fs, args)
	if err != nil {
		return err
	}
	rep, err := c.TLSCheck(ctx, o.since, o.until, o.destination, "")
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" {
		return writeJSON(stdout, rep)
	}
	return writeTLSCheck(stdout, rep, clock())
}

// writeTLSCheck prints the report as istioctl authn tls-check's table,
// with a line per client of each destination.
func writeTLSCheck(w io.Writer, rep report.TLSCheckReport, now time.Time) error {
	window := fmt.Sprintf("from %s to %s", when(rep.Since, now), when(rep.Until, now))
	if len(rep.Rows) == 0 {
		_, err := fmt.Fprintf(w, "No traffic seen %s.\n", window)
		return err
	}
	tw := newTable(w)
	writeRows(tw, []string{"HOST:PORT", "STATUS", "SERVER", "CLIENT", "PRINCIPAL", "MTLS", "REQUESTS", "LAST SEEN"})
	statuses := map[string]int{}
	for _, row := range rep.Rows {
		statuses[row.Status]++
		for i, cl := range row.Clients {
			dest := []string{row.Destination, row.Status, row.Server}
			principal := dash(row.DestinationPrincipal)
			if i > 0 { // the destination's other clients: indented under CLIENT
				dest, principal = []string{"", "", ""}, ""
			}
			writeRows(tw, append(dest, dash(cl.Client), principal, share(cl.Counts[evidence.MTLS], cl.Total),
				fmt.Sprint(cl.Total), dash(when(cl.LastSeen, now))))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s: %d OK, %d PLAINTEXT, %d SUSPECT; traffic %s.\n",
		plural(len(rep.Rows), "destination"), statuses[report.StatusOK], statuses[report.StatusPlaintext], statuses[report.StatusSuspect], window)
	return err
}

// readinessFlags is the command line of `meshproof report strict-readiness`.
func readinessFlags(o *reportOptions) *flag.FlagSet {
	fs := newFlagSet("report strict-readiness", `Can this destination's PeerAuthentication go to STRICT without breaking a client?
READY only when traffic was seen and every request was mTLS; otherwise the clients
that would break, or look suspect. Exit status: 0 ready, 3 not ready (with --output
json too), 1 when the question could not be answered, 2 for a wrong command line.`)
	o.flags(fs, "7d", "the destination (required): host:port as in :authority, or its principal (which takes in every host it served)")
	return fs
}

func strictReadiness(ctx context.Context, args []string, stdout io.Writer) error {
	var o reportOptions
	fs := readinessFlags(&o)
	c, err := o.parse(fs, args)
	if err != nil {
		return err
	}
	if o.destination == "" {
		return usageError{errors.New("--destination is required: a host:port as in :authority, or a destination principal")}
	}
	rep, err := c.StrictReadiness(ctx, o.destination, o.since, o.until)
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" {
		err = writeJSON(stdout, rep)
	} else {
		err = writeReadiness(stdout, rep, clock())
	}
	if err == nil && !rep.Ready {
		return errNotReady
	}
	return err
}

// writeReadiness prints the verdict, then the clients that block STRICT.
func writeReadiness(w io.Writer, rep report.StrictReadinessReport, now time.Time) error {
	verdict := "READY"
	if !rep.Ready {
		verdict = "NOT READY"
	}
	fmt.Fprintf(w, "%s: %s\n", verdict, cell(rep.Reason))
	dest := dash(cell(rep.Destination))
	if len(rep.Hosts) > 0 && (len(rep.Hosts) > 1 || rep.Hosts[0] != rep.Destination) {
		dest += " (hosts: " + cell(strings.Join(rep.Hosts, ", ")) + ")"
	}
	fmt.Fprintf(w, "destination %s, traffic from %s to %s: %s\n", dest, when(rep.Since, now), when(rep.Until, now),
		verdictCounts(rep.Total, rep.Counts, true))
	if len(rep.Blocking) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	writeRows(tw, []string{"CLIENT", "VERDICTS", "REQUESTS", "LAST SEEN", "EXAMPLE ID"})
	for _, b := range rep.Blocking {
		writeRows(tw, []string{dash(b.Client.Client), verdictCounts(b.Count, b.Counts, false), fmt.Sprint(b.Total), dash(when(b.LastSeen, now)), dash(b.ExampleID)})
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nSee an example: meshproof query --id %s\n", cell(shellQuote(rep.Blocking[0].ExampleID)))
	return err
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
