package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/api/params"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
)

const queryDoc = `Print evidence records from the API of a running meshproof serve (newest first).

Without --all, one page of --limit records, and in table output the command for
the next page. --all prints every matching record; --follow keeps printing new
ones, oldest first, until interrupted. Times in tables are RFC 3339 in UTC, with
how long ago. Output (-o): table; wide (the table, the path whole, and the
replica, x-request-id and reasons); json (one page: the API's {"records",
"next_cursor"}; --all: an array); yaml (the JSON as YAML); ndjson (one record
per line). --count prints how many records match, not the records.

--destination names the destination by principal (spiffe://...) or by host
(name or name:port, as in :authority; a name without a port matches it on
any port), as the reports take it. -n/--namespace matches the source's or
the destination's namespace (--source-namespace, --destination-namespace:
one side).

Examples:
  meshproof query --since 1h --mtls false
  meshproof query --destination spiffe://cluster.local/ns/shop/sa/cart --all -o ndjson > cart.ndjson
  meshproof query --destination httpbin.mtls-pg:8000 --count
  meshproof query --follow --verdict plaintext --verdict tls_server_only
  meshproof query --id 01JNB8C3W7X0K6R2M4T9Y5Z1QH --output json`

// queryOptions is the command line of `meshproof query`.
type queryOptions struct {
	remote      remoteOptions
	filter      client.Filter // Since and Until as given; resolve fixes them
	output      string
	limit       int
	cursor      string
	id          string
	proof       bool
	keys        []string
	all, follow bool
	count       bool
	interval    time.Duration
	// destination is --destination: a principal or a host, which resolve
	// puts into the filter's Destination or Host.
	destination   string
	allNamespaces bool
}

// queryOutputs are query's -o values.
var queryOutputs = []string{"table", "wide", "json", "yaml", "ndjson"}

func (o *queryOptions) flags(fs *pflag.FlagSet) {
	o.remote.flags(fs)
	f := &o.filter
	f.Since, o.interval = "1h", 2*time.Second
	o.filterFlags(fs)
	outputFlag(fs, &o.output, "table", queryOutputs...)
	fs.BoolVar(&o.count, "count", o.count, "print the number of matching records (counted by the server), not the records")
	fs.IntVar(&o.limit, "limit", o.limit, "records per page, 1 to 1000 (default 100; with --all, 1000 per request)")
	fs.StringVar(&o.cursor, "cursor", o.cursor, "continue after a previous page (the cursor its next-page hint or next_cursor gave)")
	fs.StringVar(&o.id, "id", o.id, "print this one record (the x-meshproof-evidence-id; filters do not apply)")
	fs.BoolVar(&o.proof, "proof", o.proof, "with --id: also fetch the record's transparency-log proof and check it against the latest signed checkpoint (--output json: the proof itself, for meshproof verify-proof)")
	fs.Var(newListFlag(&o.keys), "public-key", "with --proof: verifier key file (FILE.pub of meshproof keygen) that checks the checkpoint's signature, repeatable")
	fs.BoolVar(&o.all, "all", o.all, "print every matching record, page after page (ndjson: one streamed export)")
	fs.BoolVar(&o.follow, "follow", o.follow, "keep printing new records as they arrive, oldest first, until interrupted (table or ndjson)")
	fs.DurationVar(&o.interval, "interval", o.interval, "with --follow, how often to ask for new records")
}

// filterFlags registers a flag for each of the API's filter parameters
// (package params' table), writing into f.
func filterFlags(fs *pflag.FlagSet, f *client.Filter) {
	for _, p := range params.Table {
		fs.VarP(p.Value(f), p.Flag, filterShorthands[p.Flag], p.Usage())
	}
}

// filterShorthands are the filter flags with a letter, as kubectl's.
var filterShorthands = map[string]string{"namespace": "n"}

// filterFlags registers the filter flags of query and export: the table's,
// but --destination, which takes a principal or a host, and -A.
func (o *queryOptions) filterFlags(fs *pflag.FlagSet) {
	for _, p := range params.Table {
		if p.Flag == "destination" {
			fs.StringVar(&o.destination, "destination", o.destination, "the `destination`: its principal (spiffe://...), or its host as in :authority (name or name:port; without a port, any port)")
			continue
		}
		fs.VarP(p.Value(&o.filter), p.Flag, filterShorthands[p.Flag], p.Usage())
	}
	fs.BoolVarP(&o.allNamespaces, "all-namespaces", "A", o.allNamespaces, "every namespace (the default; not with --namespace)")
}

// destinationFilter puts --destination into the filter: a principal into
// Destination, a host into Host.
func (o *queryOptions) destinationFilter() error {
	switch {
	case o.allNamespaces && o.filter.Namespace != "":
		return errors.New("--all-namespaces and --namespace: give one")
	case o.destination == "":
		return nil
	case strings.HasPrefix(o.destination, "spiffe://"):
		o.filter.Destination = o.destination
	case o.filter.Host != "" && o.filter.Host != o.destination:
		return fmt.Errorf("--destination %s is a host, and --host %s another: give one", o.destination, o.filter.Host)
	default:
		o.filter.Host = o.destination
	}
	return nil
}

// queryCommand is `meshproof query`.
func queryCommand(stdout, stderr io.Writer) *cobra.Command {
	var o queryOptions
	cmd := leaf("query", "print evidence records from a running serve's API (--follow: as they arrive)", queryDoc,
		func(cmd *cobra.Command) error { return o.run(cmd.Context(), cmd.Flags(), stdout, stderr) })
	o.flags(cmd.Flags())
	return cmd
}

// runQuery is `meshproof query`, stopped by SIGINT or SIGTERM.
func runQuery(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return query(ctx, args, stdout, stderr)
}

func query(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return execute(ctx, queryCommand(stdout, stderr), args)
}

func (o *queryOptions) run(ctx context.Context, fs *pflag.FlagSet, stdout, stderr io.Writer) error {
	now := clock()
	since, err := o.resolve(now)
	if err != nil {
		return usageError{err}
	}
	c, err := o.remote.client()
	if err != nil {
		return err
	}
	switch {
	case o.count:
		err = o.countRecords(ctx, c, stdout)
	case o.id != "":
		err = o.one(ctx, c, stdout)
	case o.follow:
		err = o.followRecords(ctx, c, since, stdout, stderr)
	case o.all:
		err = o.every(ctx, c, since, stdout)
	default:
		err = o.page(ctx, c, fs, since, stdout)
	}
	return o.remote.explain(err)
}

// resolve checks the options and fixes a relative --since and --until on
// this machine's clock, so that every page of a listing, and the next-page
// command, cover one window.
func (o *queryOptions) resolve(now time.Time) (since time.Time, err error) {
	if err := o.destinationFilter(); err != nil {
		return since, err
	}
	switch {
	case o.count && (o.id != "" || o.follow || o.cursor != "" || o.all):
		return since, errors.New("--count counts every matching record: not with --id, --follow, --cursor or --all")
	case o.count && o.output == "ndjson":
		return since, errors.New("--count prints one number: -o table, json or yaml")
	case o.follow && o.output == "yaml":
		return since, errors.New("--follow never ends a YAML document: use --output ndjson")
	case o.limit < 0 || o.limit > evidence.MaxLimit:
		return since, fmt.Errorf("--limit %d: want 1 to %d", o.limit, evidence.MaxLimit)
	case o.interval <= 0:
		return since, errors.New("--interval must be positive")
	case o.id != "" && (o.all || o.follow || o.cursor != ""):
		return since, errors.New("--id prints one record: not with --all, --follow or --cursor")
	case (o.proof || len(o.keys) > 0) && o.id == "":
		return since, errors.New("--proof and --public-key are about one record: give its --id")
	case o.follow && (o.all || o.cursor != "" || o.filter.Until != ""):
		return since, errors.New("--follow prints what arrives from now on: not with --all, --cursor or --until")
	case o.follow && o.output == "json":
		return since, errors.New("--follow never ends a JSON document: use --output ndjson")
	case o.all && o.cursor != "":
		return since, errors.New("--all starts at the newest record: not with --cursor")
	}
	// The API's own checks, on this machine's clock; the flags are
	// named as the table names them.
	ef, err := o.filter.Resolve(now)
	if err != nil {
		var fe *evidence.FilterError
		if errors.As(err, &fe) {
			if p, ok := params.Lookup(fe.Field); ok {
				return since, fmt.Errorf("--%s: %s", p.Flag, fe.Msg)
			}
		}
		return since, err
	}
	since = ef.Since
	o.filter.Since = client.Time(since)
	if o.filter.Until != "" {
		o.filter.Until = client.Time(ef.Until)
	}
	return since, nil
}

// page prints one page, and in a table the command for the next.
func (o *queryOptions) page(ctx context.Context, c *client.Client, fs *pflag.FlagSet, since time.Time, stdout io.Writer) error {
	p, err := c.List(ctx, o.filter, o.cursor, o.limit)
	if err != nil {
		return err
	}
	if p.Records == nil {
		p.Records = []*evidence.Record{}
	}
	switch o.output {
	case "json", "yaml":
		return writeStructured(stdout, o.output, p)
	case "ndjson":
		return (&ndjsonSink{w: stdout}).write(p.Records)
	}
	now := clock()
	if len(p.Records) == 0 {
		fmt.Fprintf(stdout, "No records match since %s.\n", when(since, now))
		return nil
	}
	header, row := recordHeader, recordRow
	if o.output == "wide" {
		header, row = recordWideHeader, recordWideRow
	}
	tw := newTable(stdout)
	writeRows(tw, header)
	for _, r := range p.Records {
		writeRows(tw, row(r, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.Next != "" {
		fmt.Fprintf(stdout, "\nNext page: %s\n", cell(nextPageCommand(fs, o.filter.Since, p.Next)))
	}
	return nil
}

// nextPageCommand is the command line that continues at cursor: the flags
// given, --since fixed to the time this listing started from.
func nextPageCommand(fs *pflag.FlagSet, since, cursor string) string {
	args := []string{"meshproof", "query", "--since=" + shellQuote(since)}
	fs.Visit(func(f *pflag.Flag) {
		if f.Name != "since" && f.Name != "cursor" {
			args = append(args, "--"+f.Name+"="+shellQuote(f.Value.String()))
		}
	})
	return strings.Join(append(args, "--cursor="+shellQuote(cursor)), " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// every prints every matching record: ndjson and json from one export
// stream, table and yaml page after page.
func (o *queryOptions) every(ctx context.Context, c *client.Client, since time.Time, stdout io.Writer) error {
	if o.output == "ndjson" {
		w := bufio.NewWriterSize(stdout, 64<<10)
		err := c.ExportLines(ctx, o.filter, func(line []byte) error {
			w.Write(line)
			return w.WriteByte('\n') // a bufio.Writer keeps its first error
		})
		return errors.Join(err, w.Flush())
	}
	if o.output == "json" {
		sink := &jsonArraySink{w: bufio.NewWriterSize(stdout, 64<<10)}
		err := c.Export(ctx, o.filter, func(r *evidence.Record) error { return sink.write([]*evidence.Record{r}) })
		if err != nil {
			return err
		}
		return sink.close()
	}
	var sink recordSink = newTableSink(stdout, o.output == "wide")
	switch o.output {
	case "yaml":
		sink = &yamlListSink{w: stdout}
	}
	limit, cursor, n := o.limit, "", 0
	if limit == 0 {
		limit = evidence.MaxLimit
	}
	for {
		p, err := c.List(ctx, o.filter, cursor, limit)
		if err != nil {
			return err
		}
		if len(p.Records) > 0 {
			if err := sink.write(p.Records); err != nil {
				return err
			}
		}
		n += len(p.Records)
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if n == 0 && (o.output == "table" || o.output == "wide") {
		fmt.Fprintf(stdout, "No records match since %s.\n", when(since, clock()))
	}
	return sink.close()
}

// one prints the record --id names.
func (o *queryOptions) one(ctx context.Context, c *client.Client, stdout io.Writer) error {
	if o.proof {
		return o.oneProof(ctx, c, stdout)
	}
	r, err := c.Get(ctx, o.id)
	if err != nil {
		return err
	}
	switch o.output {
	case "json", "yaml":
		return writeStructured(stdout, o.output, r)
	case "ndjson":
		return (&ndjsonSink{w: stdout}).write([]*evidence.Record{r})
	}
	return writeDetail(stdout, r, clock())
}

// oneProof prints the record --id names with its proof, checked: the
// inclusion always, the checkpoint's signature with --public-key.
func (o *queryOptions) oneProof(ctx context.Context, c *client.Client, stdout io.Writer) error {
	var verifiers note.Verifiers
	if len(o.keys) > 0 {
		v, err := evidence.LoadVerifiers(o.keys)
		if err != nil {
			return usageError{err}
		}
		verifiers = v
	}
	p, err := c.Proof(ctx, o.id)
	if err != nil {
		return err
	}
	switch o.output {
	case "json", "ndjson":
		return writeJSON(stdout, p)
	case "yaml":
		return writeStructured(stdout, o.output, p)
	}
	cp, r, err := p.Check(verifiers)
	if err != nil {
		fmt.Fprintf(stdout, "Proof of %s: FAILS: %v\n", o.id, err)
		return errBroken
	}
	if err := writeDetail(stdout, r, clock()); err != nil {
		return err
	}
	signature := "its signature NOT checked (give --public-key FILE.pub)"
	if verifiers != nil {
		signature = "whose signature the key given verifies"
	}
	fmt.Fprintf(stdout, "\nProof: holds. Leaf %d of %s, in the checkpoint of %d leaves, %s.\n", p.LeafIndex, cp.Origin, cp.Size, signature)
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// countRecords prints how many records match, as the server's store
// counts them (/v1/evidence/count): one small answer, whatever the count.
func (o *queryOptions) countRecords(ctx context.Context, c *client.Client, stdout io.Writer) error {
	n, err := c.Count(ctx, o.filter)
	if err != nil {
		return err
	}
	if o.output == "table" || o.output == "wide" {
		_, err := fmt.Fprintln(stdout, n)
		return err
	}
	return writeStructured(stdout, o.output, map[string]int64{"count": n})
}

// yamlListSink streams records as one YAML list: the lists of its chunks,
// written one after the other, are one list.
type yamlListSink struct {
	w io.Writer
	n int
}

func (s *yamlListSink) write(recs []*evidence.Record) error {
	s.n += len(recs)
	return writeStructured(s.w, "yaml", recs)
}

func (s *yamlListSink) close() error {
	if s.n == 0 {
		_, err := io.WriteString(s.w, "[]\n")
		return err
	}
	return nil
}

const exportDoc = `Stream every matching record from the API of a running meshproof serve (its
/v1/export), newest first: one JSON record per line (-o ndjson, the default),
or one JSON array (-o json). The filters are query's.

Examples:
  meshproof export --since 7d -n shop > shop.ndjson
  meshproof export --destination httpbin.mtls-pg:8000 --mtls=false -o json`

// exportOutputs are export's -o values.
var exportOutputs = []string{"ndjson", "json"}

// exportCommand is `meshproof export`.
func exportCommand(stdout io.Writer) *cobra.Command {
	var o queryOptions
	cmd := leaf("export", "stream every matching evidence record (NDJSON) from a running serve's API", exportDoc,
		func(cmd *cobra.Command) error { return o.export(cmd.Context(), cmd.Flags(), stdout) })
	fs := cmd.Flags()
	o.remote.flags(fs)
	o.filter.Since = "1h"
	o.filterFlags(fs)
	outputFlag(fs, &o.output, "ndjson", exportOutputs...)
	return cmd
}

func (o *queryOptions) export(ctx context.Context, fs *pflag.FlagSet, stdout io.Writer) error {
	o.all, o.interval = true, time.Second
	return o.run(ctx, fs, stdout, io.Discard)
}
