package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/meshproof/meshproof/evidence"
)

// Tables are for people: times are RFC 3339 UTC and relative (when), values that could
// disturb a terminal are quoted, long paths are cut. JSON output keeps
// everything as the API sent it.

// newTable returns a tabwriter for a table known in full.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeRows writes tab-separated rows, each cell made safe.
func writeRows(w io.Writer, rows ...[]string) {
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = cell(c)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
}

// cell is s as a table shows it: quoted with Go escapes when it holds a
// tab, a control or format character (a terminal escape sequence, a bidi
// override) or invalid UTF-8. Evidence holds what clients sent: it must
// not be able to rewrite the operator's screen.
func cell(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsGraphic(r) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

// clipRunes cuts s to at most n runes, marking the cut.
func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// clock is the time the CLI measures "ago" and relative flags from; tests
// pin it to their fixture's, so that what they print does not depend on
// how long they take.
var clock = time.Now

// when is a time as people read it, in every table and line the CLI
// prints: RFC 3339 in UTC, to the second, and how long ago:
// "2026-12-06T14:03:12Z (3m ago)". One format, the API's and the logs':
// a time read off a table can be pasted into --since or --until, and
// means the same to a reader in another time zone.
func when(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return stamp(t) + " (" + ago(now.Sub(t)) + ")"
}

// stamp is t in RFC 3339, UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ago is a duration back from now, coarse: "12s ago", "3m ago", "5h ago",
// "2d ago"; a time ahead of now (another clock) is "in 2s".
func ago(d time.Duration) string {
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, ""
		if d >= time.Second {
			return "in " + coarse(d)
		}
	}
	if d < time.Second {
		return "just now"
	}
	return coarse(d) + suffix
}

func coarse(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// share is part of total as a whole percentage, rounded down so that 100%
// means all and 0% means none: 999 of 1000 is 99%, 1 of 1000 is <1%.
func share(part, total int64) string {
	if total <= 0 {
		return ""
	}
	p := part * 100 / total
	if p == 0 && part > 0 {
		return "<1%"
	}
	return strconv.FormatInt(p, 10) + "%"
}

// recordHeader and recordRow are the columns of query's table. The
// workloads are the peers' as serve --kubernetes recorded them,
// NAMESPACE/KIND/NAME (evidence.WorkloadName), "-" when not resolved.
var recordHeader = []string{"TIME", "VERDICT", "SOURCE", "DESTINATION", "SOURCE WORKLOAD", "DESTINATION WORKLOAD",
	"METHOD", "HOST", "PATH", "DECISION", "ID"}

// recordPath is the PATH column's index.
const recordPath = 8

// recordWidths are the widths a streamed record table starts with, so that
// its columns seldom move: TIME, the longest verdict, the workloads'
// headers, a ULID.
var recordWidths = []int{len("2006-01-02T15:04:05Z (just now)"), len(evidence.XFCCUnverified), 0, 0,
	len("SOURCE WORKLOAD"), len("DESTINATION WORKLOAD"), len("DELETE"), 0, 0, len("dry-run"), 26}

// recordWideHeader and recordWideRow are -o wide's: the path whole, and
// the replica, the x-request-id and the reasons.
var recordWideHeader = append(slices.Clone(recordHeader), "REPLICA", "REQUEST ID", "REASONS")

func recordWideRow(r *evidence.Record, now time.Time) []string {
	row := recordRow(r, now)
	row[recordPath] = dash(r.Request.Path)
	return append(row, dash(r.Replica), dash(r.RequestID), dash(strings.Join(r.Reasons, ",")))
}

func recordRow(r *evidence.Record, now time.Time) []string {
	row := []string{
		when(r.Time, now), string(r.Verdict), peerName(r.Source), peerName(r.Destination),
		evidence.WorkloadName(r.Source.Workload), evidence.WorkloadName(r.Destination.Workload), r.Request.Method, r.Request.Host, clipRunes(r.Request.Path, 64), decision(r.Decision), r.ID,
	}
	for i := range row {
		row[i] = dash(row[i])
	}
	return row
}

// dash is s, or "-" for a value that is missing: a cell left empty would
// shift the columns of anyone reading the table with awk.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// peerName is a peer's principal, or its address when it had none.
func peerName(p evidence.Peer) string {
	if p.Principal != "" {
		return p.Principal
	}
	return p.Address
}

// decision is what was done with the request: allowed, denied, dry-run
// (let through although the policy denied it) or error (no decision could
// be made; denied).
func decision(d evidence.Decision) string {
	switch {
	case d.Error != "":
		return "error"
	case d.DryRun && !d.Allowed:
		return "dry-run"
	case d.Allowed:
		return "allowed"
	}
	return "denied"
}

// columns aligns a table that arrives a chunk at a time (--all, --follow),
// where a tabwriter would have to hold all of it: widths start at the
// given ones and grow to the widest cell seen so far, so a column only
// ever widens.
type columns struct {
	w      io.Writer
	widths []int
}

func (c *columns) write(rows ...[]string) error {
	safe := make([][]string, len(rows))
	for i, row := range rows {
		safe[i] = make([]string, len(row))
		for j, s := range row {
			safe[i][j] = cell(s)
			for len(c.widths) <= j {
				c.widths = append(c.widths, 0)
			}
			c.widths[j] = max(c.widths[j], utf8.RuneCountInString(safe[i][j]))
		}
	}
	var b strings.Builder
	for _, row := range safe {
		for j, s := range row {
			b.WriteString(s)
			if j < len(row)-1 {
				b.WriteString(strings.Repeat(" ", c.widths[j]-utf8.RuneCountInString(s)+2))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(c.w, b.String())
	return err
}

// writeDetail prints one record, a field a line.
func writeDetail(w io.Writer, r *evidence.Record, now time.Time) error {
	tw := newTable(w)
	field := func(name, value string) {
		if value != "" {
			writeRows(tw, []string{name, value})
		}
	}
	field("ID", r.ID)
	field("TIME", r.Time.UTC().Format(time.RFC3339Nano)+" ("+ago(now.Sub(r.Time))+")")
	field("VERDICT", string(r.Verdict))
	field("REASONS", strings.Join(r.Reasons, "; "))
	for _, p := range []struct {
		name string
		peer evidence.Peer
	}{{"SOURCE", r.Source}, {"DESTINATION", r.Destination}} {
		field(p.name, peerName(p.peer))
		if p.peer.Address != "" && p.peer.Principal != "" {
			field("  address", fmt.Sprintf("%s:%d", p.peer.Address, p.peer.Port))
		}
		if w := p.peer.Workload; w != nil {
			field("  workload", evidence.WorkloadName(w))
			field("  pod", w.Pod)
			field("  service account", w.ServiceAccount)
			if !w.Sidecar {
				field("  sidecar", "none (no istio-proxy)")
			}
		}
		if c := p.peer.Certificate; c != nil {
			field("  certificate", "sha256 "+c.SHA256)
			if !c.NotAfter.IsZero() {
				field("  not after", stamp(c.NotAfter))
			}
			field("  certificate error", c.Error)
		}
	}
	field("SNI", r.TLS.SNI)
	if r.XFCC != nil {
		field("XFCC", r.XFCC.Raw)
		field("  error", r.XFCC.Error)
	}
	field("REQUEST", strings.Join([]string{r.Request.Method, r.Request.Host + r.Request.Path, r.Request.Protocol}, " "))
	field("REQUEST ID", r.RequestID)
	field("DECISION", decision(r.Decision))
	field("  reason", r.Decision.Reason)
	field("  error", r.Decision.Error)
	field("  policy revision", r.Decision.PolicyRevision)
	field("REPLICA", r.Replica)
	field("CHAIN", fmt.Sprintf("seq %d, hash %s", r.Chain.Seq, r.Chain.Hash))
	return tw.Flush()
}
