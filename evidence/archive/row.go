// Package archive seals whole UTC days of a replica's evidence into Parquet
// files that any engine reads (DuckDB, Trino, Spark, Athena, BigQuery), each
// day with the signed checkpoint that covers it and a manifest that proves
// the day's records against that checkpoint, and checks such an archive
// offline (Verify).
//
// Layout: DIR/replica=<replica>/date=<YYYY-MM-DD>/records.parquet, beside it
// manifest.json (Manifest) and checkpoint (the signed note). The replica
// name is escaped for a path (PathEscape); Hive-style readers take replica
// and date as columns.
//
// A row holds the columns analysts query (time, verdict, principals,
// namespaces, workloads, host, method, path, decision, request id, ...) and what
// rebuilds the record byte for byte: its shape (evidence/compact: the
// record with its per-request fields blanked, the same bytes on every
// request of an edge, so dictionary-encoded) and the per-request fields in
// fixed-width binary columns. A record whose per-request fields do not take
// those forms (an amendment, an id that is not a ULID, ...) keeps its
// compact rest in the column rest instead, and is rebuilt from it.
package archive

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// Row is one record in a day's Parquet file. The column names are the
// archive's interface: keep them stable.
type Row struct {
	// Time is the record's time (UTC, nanoseconds).
	Time int64 `parquet:"time,timestamp(nanosecond:utc),delta"`
	// Seq is the record's place in its replica's chain.
	Seq int64 `parquet:"seq,delta"`
	// ID is the random part of the record's id (the last 10 bytes of its
	// ULID), null with Rest: the ULID's time is the record's time in
	// milliseconds, as meshproof makes ids.
	ID *[10]byte `parquet:"id_random,optional"`
	// RequestID is x-request-id as a UUID (null when the record has none).
	RequestID *uuid.UUID `parquet:"request_id,optional"`
	// TraceID is the W3C trace id, 16 bytes (null when none).
	TraceID *[16]byte `parquet:"trace_id,optional"`
	// StreamID is Envoy's stream id (null when none).
	StreamID   *uint64 `parquet:"stream_id,optional"`
	SourcePort int32   `parquet:"source_port"`
	Path       string  `parquet:"path,delta"`

	// The edge's columns: the same on most requests of an edge, dictionary
	// encoded. They repeat what the shape holds, for queries.
	Verdict              string `parquet:"verdict,dict"`
	Allowed              bool   `parquet:"allowed"`
	DryRun               bool   `parquet:"dry_run"`
	HTTPStatus           int32  `parquet:"http_status,dict"`
	Method               string `parquet:"method,dict"`
	Host                 string `parquet:"host,dict"`
	SourcePrincipal      string `parquet:"source_principal,dict"`
	SourceNamespace      string `parquet:"source_namespace,dict"`
	DestinationPrincipal string `parquet:"destination_principal,dict"`
	DestinationNamespace string `parquet:"destination_namespace,dict"`
	// SourceWorkload and DestinationWorkload are the peers' Kubernetes
	// workloads as the API's filters name them, NAMESPACE/NAME
	// (evidence.WorkloadRef; the kind is in the shape), "" when not
	// resolved. Archives written before them lack both columns: readers
	// get "", and Verify checks them only where present (workloadColumns).
	SourceWorkload      string `parquet:"source_workload,dict"`
	DestinationWorkload string `parquet:"destination_workload,dict"`

	// Shape is compact's shape of the record: its canonical JSON with the
	// per-request fields blanked.
	Shape []byte `parquet:"shape,dict"`
	// Rest is compact's rest of a record whose per-request fields do not
	// fit the columns above (then null: id); null otherwise.
	Rest []byte `parquet:"rest,optional"`
}

// emptyRest is a compact rest with every per-request field empty: Join of
// a shape and it is the shape as a record.
var emptyRest = []byte{compact.Version, 0, 0, 0, 0, 0, 0, 0}

// MakeRow is rec's row. rec must be a record of a replica's log (canonical
// encoding v2).
func MakeRow(rec *evidence.Record) (Row, error) {
	shape, rest, err := compact.Split(rec)
	if err != nil {
		return Row{}, fmt.Errorf("record %s: %w", rec.ID, err)
	}
	r := MakeRowColumns(rec)
	r.Shape = shape
	if !fast(rec, &r) {
		r.ID, r.RequestID, r.TraceID, r.StreamID, r.SourcePort = nil, nil, nil, nil, 0
		r.Rest = rest
	}
	return r, nil
}

// MakeRowColumns is rec's row without its shape and per-request binary
// columns (id, request_id, trace_id, stream_id, source_port, rest).
func MakeRowColumns(rec *evidence.Record) Row {
	r := Row{
		Time: rec.Time.UnixNano(), Seq: int64(rec.Chain.Seq),
		Path:                 rec.Request.Path,
		Verdict:              string(rec.Verdict),
		Allowed:              rec.Decision.Allowed,
		DryRun:               rec.Decision.DryRun,
		HTTPStatus:           int32(rec.Decision.HTTPStatus),
		Method:               rec.Request.Method,
		Host:                 rec.Request.Host,
		SourcePrincipal:      rec.Source.Principal,
		DestinationPrincipal: rec.Destination.Principal,
	}
	// The namespaces and workloads as the stores index them
	// (evidence.Columns: a namespace is the SPIFFE ID's, else the
	// workload's).
	c := evidence.ColumnsOf(rec)
	r.SourceNamespace, r.DestinationNamespace = c.SourceNamespace, c.DestinationNamespace
	r.SourceWorkload, r.DestinationWorkload = c.SourceWorkload, c.DestinationWorkload
	return r
}

// fast fills r's per-request columns from rec and reports whether they
// give rec's fields back exactly.
func fast(rec *evidence.Record, r *Row) bool {
	if rec.Chain.Version != evidence.CanonicalV2 || rec.Chain.PrevHash != "" || rec.Amends != nil ||
		rec.Decision.DecisionID != rec.ID || rec.Time.IsZero() || rec.Chain.Seq > 1<<63-1 ||
		!time.Unix(0, rec.Time.UnixNano()).Equal(rec.Time) || rec.Source.Port > 1<<31-1 {
		return false
	}
	id, err := ulid.ParseStrict(rec.ID)
	if err != nil || id.String() != rec.ID || rec.Time.Before(time.Unix(0, 0)) || id.Time() != ulid.Timestamp(rec.Time) {
		return false
	}
	r.ID = (*[10]byte)(id[6:])
	r.SourcePort = int32(rec.Source.Port)
	if rec.RequestID != "" {
		u, ok := parseUUID(rec.RequestID)
		if !ok {
			return false
		}
		r.RequestID = (*uuid.UUID)(&u)
	}
	if rec.TraceID != "" {
		var t [16]byte
		if len(rec.TraceID) != 32 || !lowerHex(rec.TraceID) {
			return false
		}
		hex.Decode(t[:], []byte(rec.TraceID))
		r.TraceID = &t
	}
	if rec.StreamID != "" {
		n, err := strconv.ParseUint(rec.StreamID, 10, 64)
		if err != nil || strconv.FormatUint(n, 10) != rec.StreamID {
			return false
		}
		r.StreamID = &n
	}
	return true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// parseUUID reads a lowercase 8-4-4-4-12 UUID.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if !lowerHex(h) {
		return u, false
	}
	hex.Decode(u[:], []byte(h))
	return u, true
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Shapes decodes shapes once: a bounded cache of decoded shapes by their
// bytes. Safe for concurrent use.
type Shapes struct {
	mu sync.Mutex
	m  map[string]*evidence.Record
}

// maxShapes bounds the cache; past it, it starts again.
const maxShapes = 1 << 16

func (s *Shapes) get(shape []byte) (*evidence.Record, error) {
	s.mu.Lock()
	rec, ok := s.m[string(shape)]
	s.mu.Unlock()
	if ok {
		return rec, nil
	}
	rec, err := compact.Join(shape, emptyRest)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.m == nil || len(s.m) >= maxShapes {
		s.m = map[string]*evidence.Record{}
	}
	s.m[string(shape)] = rec
	s.mu.Unlock()
	return rec, nil
}

// Record rebuilds the record of r. The record shares the shape's slices and
// pointers with other records of the same shape: treat it as read-only.
// Its chain hash is its leaf hash, recomputed.
func (s *Shapes) Record(r *Row) (*evidence.Record, error) {
	if r.Seq <= 0 {
		return nil, fmt.Errorf("row with seq %d", r.Seq)
	}
	var rec *evidence.Record
	if r.Rest != nil {
		var err error
		if rec, err = compact.Join(r.Shape, r.Rest); err != nil {
			return nil, fmt.Errorf("seq %d: %w", r.Seq, err)
		}
	} else {
		base, err := s.get(r.Shape)
		if err != nil {
			return nil, fmt.Errorf("seq %d: %w", r.Seq, err)
		}
		if r.ID == nil {
			return nil, fmt.Errorf("seq %d: neither an id nor a rest", r.Seq)
		}
		c := *base
		rec = &c
		rec.Time = time.Unix(0, r.Time).UTC()
		if r.Time < 0 {
			return nil, fmt.Errorf("seq %d: an id_random with a time before 1970", r.Seq)
		}
		var id ulid.ULID
		if err := id.SetTime(ulid.Timestamp(rec.Time)); err != nil {
			return nil, fmt.Errorf("seq %d: %w", r.Seq, err)
		}
		copy(id[6:], r.ID[:])
		rec.ID = id.String()
		rec.Decision.DecisionID = rec.ID
		if r.SourcePort < 0 {
			return nil, fmt.Errorf("seq %d: source port %d", r.Seq, r.SourcePort)
		}
		rec.Source.Port = uint32(r.SourcePort)
		rec.Request.Path = r.Path
		if r.RequestID != nil {
			rec.RequestID = formatUUID(*r.RequestID)
		}
		if r.TraceID != nil {
			rec.TraceID = hex.EncodeToString(r.TraceID[:])
		}
		if r.StreamID != nil {
			rec.StreamID = strconv.FormatUint(*r.StreamID, 10)
		}
		rec.Chain = evidence.Chain{Seq: uint64(r.Seq), Version: evidence.CanonicalV2}
	}
	if rec.Chain.Seq != uint64(r.Seq) || rec.Chain.Version != evidence.CanonicalV2 {
		return nil, fmt.Errorf("seq %d: the rest holds seq %d version %d", r.Seq, rec.Chain.Seq, rec.Chain.Version)
	}
	rec.Chain.Hash = evidence.LeafHashHex(rec.CanonicalJSON())
	return rec, nil
}

var errStop = errors.New("archive: stop")
