package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// Checked is one day Verify checked.
type Checked struct {
	Replica  string `json:"replica"`
	Date     string `json:"date"`
	Records  int64  `json:"records"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Origin and CheckpointSize: the signed checkpoint the day is proven
	// against.
	Origin         string `json:"origin"`
	CheckpointSize int64  `json:"checkpoint_size"`
}

// Problem is the first thing Verify found wrong, with where.
type Problem struct {
	Path   string `json:"path"` // the day's directory or file, or the archive's
	Detail string `json:"detail"`
}

func (p *Problem) Error() string { return p.Path + ": " + p.Detail }

// Verify checks the archive in dir offline: each day's files against the
// SHA-256 its manifest gives, each record rebuilt from its row and hashed,
// the day's leaves proven against its signed checkpoint (whose signature
// one of verifiers must check, and whose origin must name the replica),
// and the days of each replica following one another with no seq missing.
// It stops at the first problem, returned as a *Problem; checked lists the
// days that passed before it.
func Verify(ctx context.Context, dir string, verifiers note.Verifiers) (checked []Checked, err error) {
	if verifiers == nil {
		return nil, errors.New("archive: verify needs the verifier key (--public-key)")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	reps, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var days int
	for _, re := range reps {
		name, ok := strings.CutPrefix(re.Name(), "replica=")
		if !re.IsDir() || !ok {
			continue
		}
		replica, err := url.PathUnescape(name)
		if err != nil || PathEscape(replica) != name {
			return checked, &Problem{filepath.Join(dir, re.Name()), "not a replica directory this archive writes (bad escape)"}
		}
		repDir := filepath.Join(dir, re.Name())
		entries, err := os.ReadDir(repDir)
		if err != nil {
			return checked, err
		}
		var dates []string
		for _, e := range entries {
			if d, ok := strings.CutPrefix(e.Name(), "date="); ok && e.IsDir() {
				if _, err := time.Parse(time.DateOnly, d); err != nil {
					return checked, &Problem{filepath.Join(repDir, e.Name()), "not a date (YYYY-MM-DD)"}
				}
				dates = append(dates, d)
			}
		}
		sort.Strings(dates)
		var prev *Manifest
		for _, date := range dates {
			if err := ctx.Err(); err != nil {
				return checked, err
			}
			dayDir := filepath.Join(repDir, "date="+date)
			m, c, err := verifyDay(dayDir, replica, date, verifiers)
			if err != nil {
				return checked, err
			}
			if prev != nil {
				switch {
				case m.LogBase != prev.LogBase:
					return checked, &Problem{dayDir, fmt.Sprintf("log base %d, the day before (%s) has %d", m.LogBase, prev.Date, prev.LogBase)}
				case m.LeafStart > prev.LeafEnd:
					return checked, &Problem{dayDir, fmt.Sprintf("a day is missing: seqs %d..%d are in no archived day (between %s, which ends at seq %d, and %s)",
						prev.LastSeq+1, m.FirstSeq-1, prev.Date, prev.LastSeq, date)}
				case m.LeafStart < prev.LeafEnd:
					return checked, &Problem{dayDir, fmt.Sprintf("starts at seq %d, within the day before (%s, up to seq %d)", m.FirstSeq, prev.Date, prev.LastSeq)}
				}
			}
			prev = m
			checked = append(checked, c)
			days++
		}
	}
	if days == 0 {
		return nil, &Problem{dir, "no archived day (replica=*/date=*/" + ManifestFile + ")"}
	}
	return checked, nil
}

// verifyDay checks one day.
func verifyDay(dayDir, replica, date string, verifiers note.Verifiers) (*Manifest, Checked, error) {
	fail := func(format string, a ...any) (*Manifest, Checked, error) {
		return nil, Checked{}, &Problem{dayDir, fmt.Sprintf(format, a...)}
	}
	m, err := ReadManifest(dayDir)
	if err != nil {
		return fail("manifest: %v", err)
	}
	if m.Replica != replica || m.Date != date {
		return fail("the manifest is of replica %q, date %s: the day was moved or swapped", m.Replica, m.Date)
	}
	// Every file the manifest names, as it was written.
	want := map[string]bool{RecordsFile: false, CheckpointFile: false}
	for _, f := range m.Files {
		if _, ok := want[f.Name]; !ok || want[f.Name] {
			return fail("the manifest lists file %q", f.Name)
		}
		want[f.Name] = true
		got, err := fileDigest(filepath.Join(dayDir, f.Name))
		if err != nil {
			return fail("%s: %v", f.Name, err)
		}
		if got.SHA256 != f.SHA256 || got.Bytes != f.Bytes {
			return fail("%s: SHA-256 %s (%d bytes), the manifest says %s (%d bytes): the file was changed or swapped", f.Name, got.SHA256, got.Bytes, f.SHA256, f.Bytes)
		}
	}
	for name, ok := range want {
		if !ok {
			return fail("the manifest does not list %s", name)
		}
	}
	signed, err := os.ReadFile(filepath.Join(dayDir, CheckpointFile))
	if err != nil {
		return fail("%v", err)
	}
	c, err := evidence.OpenCheckpoint(signed, verifiers, replica)
	if err != nil {
		return fail("%s: %v", CheckpointFile, err)
	}
	base, _, err := c.Base()
	if err != nil {
		return fail("%s: %v", CheckpointFile, err)
	}
	if c.Size != m.CheckpointSize || base != m.LogBase {
		return fail("the checkpoint is of %d leaves from seq %d, the manifest says %d from seq %d", c.Size, base+1, m.CheckpointSize, m.LogBase+1)
	}
	if m.LeafStart < 0 || m.LeafEnd <= m.LeafStart || m.LeafEnd > c.Size {
		return fail("leaves %d..%d do not fit a checkpoint of %d leaves", m.LeafStart, m.LeafEnd, c.Size)
	}
	if m.FirstSeq != m.LogBase+uint64(m.LeafStart)+1 || m.LastSeq != m.LogBase+uint64(m.LeafEnd) {
		return fail("seqs %d..%d are not leaves %d..%d", m.FirstSeq, m.LastSeq, m.LeafStart, m.LeafEnd-1)
	}
	front, err := newFrontier(m.LeafStart, m.StartFrontier)
	if err != nil {
		return fail("start_frontier: %v", err)
	}
	// The leaves, in seq order: the rows and the quarantined records.
	quar := m.Quarantined
	next := m.FirstSeq
	leafQuarantined := func(upTo uint64) error {
		for len(quar) > 0 && quar[0].Seq < upTo {
			q := quar[0]
			quar = quar[1:]
			if q.Seq != next {
				return fmt.Errorf("quarantined record at seq %d, the day is at seq %d", q.Seq, next)
			}
			h, err := parseHash(q.Hash)
			if err != nil {
				return fmt.Errorf("quarantined seq %d: %v", q.Seq, err)
			}
			if len(q.Record) > 0 {
				var r evidence.Record
				if err := json.Unmarshal(q.Record, &r); err != nil {
					return fmt.Errorf("quarantined seq %d: its record does not decode: %v", q.Seq, err)
				}
				if got := tlog.RecordHash(r.CanonicalJSON()); got != h {
					return fmt.Errorf("quarantined seq %d: its record hashes to %x, its hash is %s", q.Seq, got, q.Hash)
				}
			}
			front.add(h)
			next++
		}
		return nil
	}
	f, err := os.Open(filepath.Join(dayDir, RecordsFile))
	if err != nil {
		return fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fail("%v", err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return fail("%s: %v", RecordsFile, err)
	}
	if pf.NumRows() != m.Records {
		return fail("%s has %d rows, the manifest says %d", RecordsFile, pf.NumRows(), m.Records)
	}
	day, _ := time.Parse(time.DateOnly, date)
	dayEnd := day.AddDate(0, 0, 1)
	_, withWorkloads := pf.Schema().Lookup("source_workload")
	rd := parquet.NewGenericReader[Row](f)
	defer rd.Close()
	var shapes Shapes
	buf := make([]Row, 1024)
	var rows int64
	for {
		n, rerr := rd.Read(buf)
		for i := range buf[:n] {
			row := &buf[i]
			if err := leafQuarantined(uint64(row.Seq)); err != nil {
				return fail("%v", err)
			}
			if uint64(row.Seq) != next {
				return fail("%s: row %d is seq %d, want seq %d", RecordsFile, rows, row.Seq, next)
			}
			rec, err := shapes.Record(row)
			if err != nil {
				return fail("%s: row %d: %v", RecordsFile, rows, err)
			}
			if err := checkColumns(row, rec, withWorkloads); err != nil {
				return fail("%s: row %d (seq %d): %v", RecordsFile, rows, row.Seq, err)
			}
			if !rec.Time.Before(dayEnd) || rows == 0 && rec.Time.Before(day) && m.LeafStart > 0 {
				return fail("%s: record %s (seq %d) is of %s, not of the day %s", RecordsFile, rec.ID, row.Seq, rec.Time.Format(time.RFC3339Nano), date)
			}
			h, err := parseHash(rec.Chain.Hash)
			if err != nil {
				return fail("%v", err)
			}
			front.add(h)
			next++
			rows++
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail("%s: %v", RecordsFile, rerr)
		}
	}
	if err := leafQuarantined(m.LastSeq + 1); err != nil {
		return fail("%v", err)
	}
	if len(quar) > 0 {
		return fail("quarantined record at seq %d is past the day's last seq %d", quar[0].Seq, m.LastSeq)
	}
	if rows != m.Records || next != m.LastSeq+1 {
		return fail("the day holds seqs %d..%d (%d rows), the manifest says %d..%d (%d rows)", m.FirstSeq, next-1, rows, m.FirstSeq, m.LastSeq, m.Records)
	}
	if !equalStrings(front.hex(), m.EndFrontier) {
		return fail("the records do not hash to the manifest's end_frontier: a record was changed")
	}
	proof, err := parseHashes(m.Consistency)
	if err != nil {
		return fail("consistency: %v", err)
	}
	if err := tlog.CheckTree(proof, c.Size, c.Root, m.LeafEnd, front.root()); err != nil {
		return fail("the day's records are not leaves %d..%d of the signed checkpoint of %d leaves (%s): %v", m.LeafStart, m.LeafEnd-1, c.Size, CheckpointFile, err)
	}
	return m, Checked{Replica: replica, Date: date, Records: m.Records, FirstSeq: m.FirstSeq, LastSeq: m.LastSeq, Origin: c.Origin, CheckpointSize: c.Size}, nil
}

// checkColumns holds the query columns to the record they stand beside:
// an analyst's answer must be the record's. A file written before the
// workload columns (withWorkloads false) has none, and its namespaces are
// the SPIFFE IDs' only, as they were then.
func checkColumns(row *Row, rec *evidence.Record, withWorkloads bool) error {
	if row.Rest != nil && (row.ID != nil || row.RequestID != nil || row.TraceID != nil || row.StreamID != nil || row.SourcePort != 0) {
		return errors.New("a row rebuilt from its rest has values in id, request_id, trace_id, stream_id or source_port")
	}
	want := MakeRowColumns(rec)
	if !withWorkloads {
		want.SourceWorkload, want.DestinationWorkload = "", ""
		want.SourceNamespace, want.DestinationNamespace = "", ""
		if s := rec.Source.SPIFFE; s != nil {
			want.SourceNamespace = s.Namespace
		}
		if s := rec.Destination.SPIFFE; s != nil {
			want.DestinationNamespace = s.Namespace
		}
	}
	got := *row
	if got.Time != want.Time || got.Seq != want.Seq || got.Path != want.Path || got.Verdict != want.Verdict ||
		got.Allowed != want.Allowed || got.DryRun != want.DryRun || got.HTTPStatus != want.HTTPStatus ||
		got.Method != want.Method || got.Host != want.Host || got.SourcePrincipal != want.SourcePrincipal ||
		got.SourceNamespace != want.SourceNamespace ||
		got.DestinationPrincipal != want.DestinationPrincipal || got.DestinationNamespace != want.DestinationNamespace ||
		got.SourceWorkload != want.SourceWorkload || got.DestinationWorkload != want.DestinationWorkload {
		return fmt.Errorf("its columns (%s) do not say what its record does (%s)", columnsText(got), columnsText(want))
	}
	return nil
}

func columnsText(r Row) string {
	return fmt.Sprintf("time %s, verdict %s, allowed %t, dry_run %t, status %d, %s %s%s, %s (%s, workload %q) -> %s (%s, workload %q)",
		time.Unix(0, r.Time).UTC().Format(time.RFC3339Nano), r.Verdict, r.Allowed, r.DryRun, r.HTTPStatus, r.Method, r.Host, r.Path,
		r.SourcePrincipal, r.SourceNamespace, r.SourceWorkload, r.DestinationPrincipal, r.DestinationNamespace, r.DestinationWorkload)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal([]byte(a[i]), []byte(b[i])) {
			return false
		}
	}
	return true
}
