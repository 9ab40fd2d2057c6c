package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// Options configure Seal.
type Options struct {
	// Dir is the archive's directory (made if missing).
	Dir string
	// Before: the days that end at or before it (UTC midnights) are sealed.
	Before time.Time
	// Signer, when set, signs a checkpoint of a replica's log when the
	// store has none that covers the days to seal, and saves it in the
	// store when the store keeps checkpoints.
	Signer note.Signer
	// RowGroup is the rows per Parquet row group (0: DefaultRowGroup).
	RowGroup int64
}

// DefaultRowGroup is the rows per row group unless told.
const DefaultRowGroup = 1 << 20

// Day is one sealed day.
type Day struct {
	Replica string `json:"replica"`
	Date    string `json:"date"`
	Records int64  `json:"records"`
	// Bytes is the size of its Parquet file.
	Bytes int64 `json:"bytes"`
	// Existing: it was sealed before (left as it is).
	Existing bool `json:"existing,omitempty"`
}

// Result is what Seal did.
type Result struct {
	Days []Day `json:"days"`
	// Safe is, per replica of the store, the time before which every
	// record of the replica is sealed in the archive: retention may remove
	// the records before it (Writer.DeleteBefore with t at most Safe's
	// least). A replica missing from it (or the zero time) has nothing
	// sealed that retention may remove.
	Safe map[string]time.Time `json:"safe"`
	// Errors are the replicas that could not be sealed (their Safe stops
	// at the first day not sealed), by replica.
	Errors map[string]string `json:"errors,omitempty"`
}

// SafeBefore is the least of r.Safe over replicas: the time before which
// retention may remove records of every one of them. Zero when a replica
// has none.
func (r Result) SafeBefore(replicas []string) time.Time {
	var out time.Time
	for i, rep := range replicas {
		t, ok := r.Safe[rep]
		if !ok || t.IsZero() {
			return time.Time{}
		}
		if i == 0 || t.Before(out) {
			out = t
		}
	}
	return out
}

// Day is a UTC day's date.
func dateOf(t time.Time) string { return t.UTC().Format(time.DateOnly) }

func startOfDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Source is what Seal reads: a store's query side; a store that also keeps
// checkpoints gets the ones Options.Signer signs.
type Source interface {
	evidence.Reader
}

// Seal writes every whole UTC day before o.Before of every replica of s
// that is not in o.Dir yet, each in its own directory written aside and
// renamed into place when complete. A day is sealed only once a later
// record of its replica has been written (the day is over in the chain)
// and a signed checkpoint covers it.
func Seal(ctx context.Context, s Source, o Options) (Result, error) {
	res := Result{Safe: map[string]time.Time{}, Errors: map[string]string{}}
	if o.Dir == "" {
		return res, errors.New("archive: no directory")
	}
	before := startOfDay(o.Before)
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return res, err
	}
	release, err := claim(o.Dir)
	if err != nil {
		return res, err
	}
	defer release()
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return res, err
	}
	for _, rep := range replicas {
		safe, days, err := sealReplica(ctx, s, o, rep, before)
		res.Days = append(res.Days, days...)
		res.Safe[rep] = safe
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Errors[rep] = err.Error()
		}
	}
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	return res, nil
}

// sealer is one replica's run.
type sealer struct {
	ctx     context.Context
	s       Source
	o       Options
	replica string
	head    evidence.TreeHead
	cp      []byte // the signed checkpoint
	cpSize  int64
	hashes  tlog.HashReader
	quar    []evidence.Quarantined
	// front is the log's frontier before the next leaf, nil when unknown
	// (not computed over a day sealed before); next is that leaf.
	front   *frontier
	next    int64
	started bool
	day     *dayWriter
	days    []Day
}

func sealReplica(ctx context.Context, s Source, o Options, replica string, before time.Time) (safe time.Time, days []Day, err error) {
	head, ok, err := s.TreeHead(ctx, replica)
	if err != nil {
		return time.Time{}, nil, err
	}
	if !ok {
		return time.Time{}, nil, fmt.Errorf("replica %s has no transparency log (canonical encoding v1): its days cannot be proven, and are not archived", replica)
	}
	z := &sealer{ctx: ctx, s: s, o: o, replica: replica, head: head, hashes: evidence.StoredHashReader(ctx, s, replica)}
	if z.quar, err = s.Quarantined(ctx, replica); err != nil {
		return time.Time{}, nil, err
	}
	if err := z.checkpoint(); err != nil {
		return time.Time{}, nil, err
	}
	// safe moves to each sealed day's end; a replica with nothing before
	// the cut is safe up to it.
	safe = before
	var cur string // the current day
	var curEnd time.Time
	var started bool
	var v1 time.Time // the day of the first record before the log
	defer func() {
		if !v1.IsZero() && !safe.IsZero() && v1.Before(safe) {
			safe = v1
			if err == nil {
				err = fmt.Errorf("replica %s has records from %s written before its transparency log (canonical encoding v1): no checkpoint proves them, so they are not archived and retention keeps them", replica, v1.Format(time.DateOnly))
			}
		}
	}()
	werr := s.Walk(ctx, replica, func(r *evidence.Record, st evidence.Stored) error {
		if st.Err != nil {
			return fmt.Errorf("record at seq %d does not decode: %w", r.Chain.Seq, st.Err)
		}
		if r.Chain.Version != evidence.CanonicalV2 {
			// Before the log (canonical v1): no checkpoint proves it, so it
			// is not archived, and retention must keep it.
			if v1.IsZero() && r.Time.Before(before) {
				v1 = startOfDay(r.Time)
			}
			return nil
		}
		if !started || !r.Time.Before(curEnd) {
			if started {
				if err := z.closeDay(); err != nil {
					return err
				}
				safe = curEnd
			}
			if !r.Time.Before(before) {
				return errStop
			}
			started = true
			day := startOfDay(r.Time)
			cur, curEnd = dateOf(day), day.AddDate(0, 0, 1)
			safe = day
			if err := z.openDay(cur, r); err != nil {
				return err
			}
		}
		return z.add(r)
	})
	if errors.Is(werr, errStop) {
		werr = nil
	} else if started {
		// The chain ends within the day: it is not over.
		z.abort()
	}
	if werr != nil {
		z.abort()
		if !started {
			safe = time.Time{}
		}
		return safe, z.days, werr
	}
	return safe, z.days, nil
}

// checkpoint picks the replica's latest signed checkpoint, or signs one.
func (z *sealer) checkpoint() error {
	cps, err := z.s.Checkpoints(z.ctx, z.replica, 0, 1)
	if err != nil {
		return err
	}
	// The latest stored checkpoint: the days due are older than it
	// (serve signs every few seconds). Sign one only when there is none.
	if len(cps) > 0 {
		z.cp, z.cpSize = cps[0].Note, cps[0].Size
		return nil
	}
	if z.o.Signer == nil {
		return fmt.Errorf("replica %s has no signed checkpoint: run serve with --signing-key (or give archive one)", z.replica)
	}
	note, err := evidence.SignCheckpoint(z.o.Signer, z.replica, z.head, time.Now())
	if err != nil {
		return err
	}
	if cs, ok := z.s.(evidence.CheckpointStore); ok {
		if err := cs.SaveCheckpoint(z.ctx, evidence.SignedCheckpoint{Replica: z.replica, Size: z.head.Size, Time: time.Now().UTC(), Note: note}); err != nil {
			return err
		}
	}
	z.cp, z.cpSize = note, z.head.Size
	return nil
}

func (z *sealer) leaf(seq uint64) int64 { return int64(seq - z.head.Base - 1) }

// openDay starts the day of first (the record that begins it, or the
// quarantined records just before it).
func (z *sealer) openDay(date string, first *evidence.Record) error {
	if z.front == nil {
		// The first day of the walk, or the one after a day sealed before.
		start := z.leaf(first.Chain.Seq)
		if z.started {
			start = z.next
		}
		if err := z.frontierAt(start); err != nil {
			return fmt.Errorf("day %s: %w", date, err)
		}
		z.next, z.started = start, true
	}
	dir := DayDir(z.o.Dir, z.replica, date)
	if m, err := ReadManifest(dir); err == nil {
		// Sealed before: go on from its end.
		if m.LeafStart != z.next {
			return fmt.Errorf("day %s is in the archive from leaf %d, the store has it from leaf %d: another store's archive?", date, m.LeafStart, z.next)
		}
		z.day = &dayWriter{existing: m, date: date}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	w, err := newDayWriter(z.o, z.replica, date, z.front)
	if err != nil {
		return err
	}
	z.day = w
	return nil
}

// frontierAt finds the frontier of the log of size leaves: from the
// store's hashes, else from an archived day that ends there.
func (z *sealer) frontierAt(size int64) error {
	if size == 0 {
		z.front = &frontier{}
		return nil
	}
	hs, err := z.hashes.ReadHashes(frontierIndexes(size))
	if err == nil {
		f, err := newFrontier(size, hexHashes(hs))
		if err != nil {
			return err
		}
		z.front = f
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(z.o.Dir, "replica="+PathEscape(z.replica), "date=*"))
	for _, d := range dirs {
		if m, err := ReadManifest(d); err == nil && m.LeafEnd == size && m.Replica == z.replica {
			if f, err := newFrontier(size, m.EndFrontier); err == nil {
				z.front = f
				return nil
			}
		}
	}
	return fmt.Errorf("%w (leaf %d): %v", errNoFrontier, size, err)
}

// add adds a record (and the quarantined ones before it) to the day.
func (z *sealer) add(r *evidence.Record) error {
	for len(z.quar) > 0 && z.quar[0].Seq < r.Chain.Seq {
		q := z.quar[0]
		z.quar = z.quar[1:]
		if q.Seq <= z.head.Base || z.leaf(q.Seq) < z.next {
			continue
		}
		if err := z.addLeaf(q.Seq, q.Hash, nil, &q); err != nil {
			return err
		}
	}
	return z.addLeaf(r.Chain.Seq, "", r, nil)
}

func (z *sealer) addLeaf(seq uint64, hash string, r *evidence.Record, q *evidence.Quarantined) error {
	if got := z.leaf(seq); got != z.next {
		return fmt.Errorf("seq %d is leaf %d, the day's log is at leaf %d: a hole in the chain", seq, got, z.next)
	}
	if got := z.leaf(seq); got >= z.cpSize {
		return fmt.Errorf("seq %d is not in the latest signed checkpoint (%d leaves) yet", seq, z.cpSize)
	}
	z.next++
	d := z.day
	if d.existing != nil {
		return nil
	}
	var h tlog.Hash
	if r != nil {
		h = tlog.RecordHash(r.CanonicalJSON())
	} else {
		var err error
		if h, err = parseHash(hash); err != nil {
			return fmt.Errorf("quarantined seq %d: %w", seq, err)
		}
	}
	z.front.add(h)
	if d.m.Records == 0 && len(d.m.Quarantined) == 0 {
		d.m.FirstSeq = seq
	}
	d.m.LastSeq = seq
	if q != nil {
		d.m.Quarantined = append(d.m.Quarantined, Quarantined{Seq: q.Seq, ID: q.ID, Hash: q.Hash, Reason: q.Reason, Record: q.Record})
		return nil
	}
	return d.write(r)
}

// closeDay finishes the day: its proof, its files, and the rename.
func (z *sealer) closeDay() error {
	d := z.day
	z.day = nil
	if d == nil {
		return nil
	}
	if d.existing != nil {
		if d.existing.LeafEnd != z.next {
			return fmt.Errorf("day %s is in the archive up to leaf %d, the store has it up to leaf %d: another store's archive?", d.date, d.existing.LeafEnd, z.next)
		}
		z.front = nil
		z.days = append(z.days, Day{Replica: z.replica, Date: d.date, Records: d.existing.Records, Existing: true})
		return nil
	}
	m := &d.m
	m.LogBase, m.LeafEnd, m.EndFrontier, m.CheckpointSize = z.head.Base, z.front.size, z.front.hex(), z.cpSize
	proof, err := tlog.ProveTree(z.cpSize, m.LeafEnd, z.hashes)
	if err != nil {
		d.abort()
		return fmt.Errorf("day %s: the proof of leaves %d..%d in the checkpoint of %d leaves: %w", d.date, m.LeafStart, m.LeafEnd, z.cpSize, err)
	}
	m.Consistency = hexHashes(proof)
	n, err := d.finish(z.cp)
	if err != nil {
		d.abort()
		return fmt.Errorf("day %s: %w", d.date, err)
	}
	z.days = append(z.days, Day{Replica: z.replica, Date: d.date, Records: m.Records, Bytes: n})
	return nil
}

func (z *sealer) abort() {
	if z.day != nil {
		z.day.abort()
		z.day = nil
	}
}

// dayWriter writes one day aside.
type dayWriter struct {
	date     string
	existing *Manifest // the day is sealed already
	m        Manifest
	tmp      string // the directory written aside
	final    string
	f        *os.File
	w        *parquet.GenericWriter[Row]
	rows     []Row
}

func newDayWriter(o Options, replica, date string, front *frontier) (*dayWriter, error) {
	final := DayDir(o.Dir, replica, date)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), ".date="+date+".tmp-")
	if err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(tmp, RecordsFile))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	rg := o.RowGroup
	if rg <= 0 {
		rg = DefaultRowGroup
	}
	w := parquet.NewGenericWriter[Row](f,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedBetterCompression}),
		parquet.MaxRowsPerRowGroup(rg),
		parquet.CreatedBy("meshproof", "", ""),
		parquet.KeyValueMetadata("meshproof.format", Format),
		parquet.KeyValueMetadata("meshproof.replica", replica),
		parquet.KeyValueMetadata("meshproof.date", date),
	)
	d := &dayWriter{date: date, tmp: tmp, final: final, f: f, w: w}
	d.m = Manifest{Format: Format, Replica: replica, Date: date, LeafStart: front.size, StartFrontier: front.hex()}
	return d, nil
}

const writeBatch = 4096

func (d *dayWriter) write(r *evidence.Record) error {
	row, err := MakeRow(r)
	if err != nil {
		return err
	}
	if d.m.Records == 0 {
		d.m.First = r.Time.UTC()
	}
	d.m.Last = r.Time.UTC()
	d.m.Records++
	d.rows = append(d.rows, row)
	if len(d.rows) >= writeBatch {
		return d.flush()
	}
	return nil
}

func (d *dayWriter) flush() error {
	if len(d.rows) == 0 {
		return nil
	}
	_, err := d.w.Write(d.rows)
	clear(d.rows)
	d.rows = d.rows[:0]
	return err
}

// finish writes the Parquet file, the checkpoint and the manifest, syncs
// them and renames the directory into place; it returns the Parquet
// file's size.
func (d *dayWriter) finish(checkpoint []byte) (int64, error) {
	if err := d.flush(); err != nil {
		return 0, err
	}
	if err := d.w.Close(); err != nil {
		return 0, err
	}
	if err := d.f.Sync(); err != nil {
		return 0, err
	}
	if err := d.f.Close(); err != nil {
		return 0, err
	}
	d.f = nil
	if err := os.WriteFile(filepath.Join(d.tmp, CheckpointFile), checkpoint, 0o644); err != nil {
		return 0, err
	}
	var size int64
	for _, name := range []string{RecordsFile, CheckpointFile} {
		f, err := fileDigest(filepath.Join(d.tmp, name))
		if err != nil {
			return 0, err
		}
		f.Name = name
		if name == RecordsFile {
			size = f.Bytes
		}
		d.m.Files = append(d.m.Files, f)
	}
	b, err := marshalManifest(&d.m)
	if err != nil {
		return 0, err
	}
	if err := writeSynced(filepath.Join(d.tmp, ManifestFile), b); err != nil {
		return 0, err
	}
	if err := syncDir(d.tmp); err != nil {
		return 0, err
	}
	if err := os.Rename(d.tmp, d.final); err != nil {
		return 0, err
	}
	return size, syncDir(filepath.Dir(d.final))
}

func (d *dayWriter) abort() {
	if d.existing != nil {
		return
	}
	if d.f != nil {
		d.f.Close()
	}
	os.RemoveAll(d.tmp)
}

func fileDigest(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, err
	}
	return File{Name: filepath.Base(path), Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// sortDays orders days by replica then date.
func sortDays(days []Day) {
	sort.Slice(days, func(i, j int) bool {
		if days[i].Replica != days[j].Replica {
			return days[i].Replica < days[j].Replica
		}
		return days[i].Date < days[j].Date
	})
}
