package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
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
  meshproof report strict-readiness [flags]   can a destination go to PeerAuthentication STRICT? (exit 0 ready, 3 not)

Run "meshproof report <report> --help" for its flags.
`

// errNotReady makes strict-readiness exit 3 once it has printed its answer.
var errNotReady = errors.New("not ready for STRICT")

// reportCommand is `meshproof report`.
func reportCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report REPORT",
		Short: "tls-check, or strict-readiness (exit 3 when not ready), from a running serve's API",
		Long:  reportUsage,
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
	remote       remoteOptions
	since, until string
	destination  string
	output       string
}

func (o *reportOptions) flags(fs *pflag.FlagSet, since, destinationDoc string) {
	o.remote.flags(fs)
	o.since = since
	fs.StringVar(&o.since, "since", o.since, "traffic from this `time` on: RFC 3339, or a duration back from now (90s, 1h, 7d, 1d12h)")
	fs.StringVar(&o.until, "until", o.until, "traffic before this `time` (RFC 3339 or a duration back from now); now when unset")
	fs.StringVar(&o.destination, "destination", o.destination, destinationDoc)
	outputFlag(fs, &o.output, "table", reportOutputs...)
}

// reportOutputs are the reports' -o values; wide is the table.
var reportOutputs = []string{"table", "wide", "json", "yaml"}

// client checks the options of a report and returns its API client.
func (o *reportOptions) client() (*client.Client, error) {
	if err := checkOutput(o.output, reportOutputs...); err != nil {
		return nil, err
	}
	return o.remote.client()
}

const tlsCheckDoc = `Per destination (host:port as in :authority), which clients reached it over mTLS and
which did not, from the traffic meshproof saw: the successor of istioctl authn tls-check.

STATUS is OK (every request mTLS), PLAINTEXT (some without a client certificate) or
SUSPECT (some mtls_mismatch or xfcc_unverified). SERVER is the modes the destination
accepted: mTLS, HTTP or HTTP/mTLS. One line per client: its mTLS share, requests and
last request.`

// tlsCheckCommand is `meshproof report tls-check`.
func tlsCheckCommand(stdout io.Writer) *cobra.Command {
	var o reportOptions
	cmd := leaf("tls-check", "per destination, which clients reached it over mTLS and which did not", tlsCheckDoc,
		func(cmd *cobra.Command) error { return tlsCheck(cmd.Context(), &o, stdout) })
	o.flags(cmd.Flags(), "24h", "only this destination: host:port as in :authority, or a destination principal (with the hosts it served)")
	return cmd
}

func tlsCheck(ctx context.Context, o *reportOptions, stdout io.Writer) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	rep, err := c.TLSCheck(ctx, o.since, o.until, o.destination, "")
	if err != nil {
		return o.remote.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		return writeStructured(stdout, o.output, rep)
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

const readinessDoc = `Can this destination's PeerAuthentication go to STRICT without breaking a client?
READY only when traffic was seen and every request was mTLS; otherwise the clients
that would break, or look suspect. Exit status: 0 ready, 3 not ready (with --output
json too), 1 when the question could not be answered, 2 for a wrong command line.`

// readinessCommand is `meshproof report strict-readiness`.
func readinessCommand(stdout io.Writer) *cobra.Command {
	var o reportOptions
	cmd := leaf("strict-readiness", "can a destination go to PeerAuthentication STRICT? (exit 0 ready, 3 not)", readinessDoc,
		func(cmd *cobra.Command) error { return strictReadiness(cmd.Context(), &o, stdout) })
	o.flags(cmd.Flags(), "7d", "the destination (required): host:port as in :authority, or its principal (which takes in every host it served)")
	return cmd
}

func strictReadiness(ctx context.Context, o *reportOptions, stdout io.Writer) error {
	c, err := o.client()
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
	if o.output == "json" || o.output == "yaml" {
		err = writeStructured(stdout, o.output, rep)
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
