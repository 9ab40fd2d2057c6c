package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// CheckpointInfo is a replica's latest signed checkpoint, as listed.
type CheckpointInfo struct {
	Replica string    `json:"replica"`
	Size    int64     `json:"size"`
	Time    time.Time `json:"time"`
}

// proof answers a record's inclusion proof against the latest signed
// checkpoint of its replica's log.
func (s *Server) proof(w http.ResponseWriter, r *http.Request) error {
	id, err := s.recordID(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	p, err := ProveRecord(ctx, s.store, id)
	if err != nil {
		return proofError(err)
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// errNotYet: the record is newer than the latest signed checkpoint.
var errNotYet = errors.New("not in a signed checkpoint yet")

func proofError(err error) error {
	switch {
	case errors.Is(err, evidence.ErrNoLog):
		return &apiError{kind: notFound, err: err,
			msg: "the record has no transparency-log proof: it was written before the log (canonical encoding v1), and is covered by its hash chain only"}
	case errors.Is(err, errNotYet):
		return &apiError{kind: notFound, err: err,
			msg: "the record is not in a signed checkpoint yet: the server signs one every --checkpoint-interval (is --signing-key set?); try again then"}
	}
	return err
}

// ProveRecord builds the inclusion proof of the record id in its replica's
// log, against the latest signed checkpoint that holds it.
func ProveRecord(ctx context.Context, store evidence.Reader, id string) (*evidence.Proof, error) {
	rec, err := store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Chain.Version != evidence.CanonicalV2 {
		return nil, evidence.ErrNoLog
	}
	th, ok, err := store.TreeHead(ctx, rec.Replica)
	if err != nil {
		return nil, err
	}
	if !ok || rec.Chain.Seq <= th.Base {
		return nil, evidence.ErrNoLog
	}
	leaf := th.Leaf(rec.Chain.Seq)
	cps, err := store.Checkpoints(ctx, rec.Replica, 0, 1)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 || cps[0].Size <= leaf {
		return nil, errNotYet
	}
	cp := cps[0]
	p, err := tlog.ProveRecord(cp.Size, leaf, evidence.StoredHashReader(ctx, store, rec.Replica))
	if err != nil {
		return nil, err
	}
	return &evidence.Proof{Replica: rec.Replica, LeafIndex: leaf, TreeSize: cp.Size,
		Leaf: base64.StdEncoding.EncodeToString(rec.CanonicalJSON()), Proof: hashes(p), Checkpoint: string(cp.Note)}, nil
}

func hashes(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// checkpoints lists each replica's latest signed checkpoint.
func (s *Server) checkpoints(w http.ResponseWriter, r *http.Request) error {
	if _, err := parseQuery(r.URL.RawQuery, s.now(), nil); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	replicas, err := s.store.Replicas(ctx)
	if err != nil {
		return err
	}
	out := struct {
		Checkpoints []CheckpointInfo `json:"checkpoints"`
	}{Checkpoints: []CheckpointInfo{}}
	for _, replica := range replicas {
		cps, err := s.store.Checkpoints(ctx, replica, 0, 1)
		if err != nil {
			return err
		}
		if len(cps) > 0 {
			out.Checkpoints = append(out.Checkpoints, CheckpointInfo{Replica: replica, Size: cps[0].Size, Time: cps[0].Time})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkpoint answers a replica's latest signed checkpoint, the note text
// exactly.
func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) error {
	if _, err := parseQuery(r.URL.RawQuery, s.now(), nil); err != nil {
		return err
	}
	replica := r.PathValue("replica")
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	cps, err := s.store.Checkpoints(ctx, replica, 0, 1)
	if err != nil {
		return err
	}
	if len(cps) == 0 {
		return &apiError{kind: notFound, msg: "no signed checkpoint of that replica (is --signing-key set?)"}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(cps[0].Note)))
	w.WriteHeader(http.StatusOK)
	w.Write(cps[0].Note)
	return nil
}

// consistency answers the RFC 6962 proof that the replica's log of from
// leaves is a prefix of its log of to leaves (to: the latest checkpoint's
// size when not given).
func (s *Server) consistency(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), consistencyParams)
	if err != nil {
		return err
	}
	replica := r.PathValue("replica")
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	th, ok, err := s.store.TreeHead(ctx, replica)
	if err != nil {
		return err
	}
	if !ok {
		return &apiError{kind: notFound, msg: "that replica has no transparency log"}
	}
	from, err := q.size("from", -1)
	if err != nil {
		return err
	}
	to, err := q.size("to", th.Size)
	if err != nil {
		return err
	}
	switch {
	case from < 0:
		return &apiError{kind: badParam, param: "from", msg: "from: required, a tree size"}
	case from == 0:
		// tlog.ProveTree refuses it: every log extends the empty one.
		return &apiError{kind: badParam, param: "from", msg: "from: at least 1 (there is no proof from the empty log)"}
	case from > to:
		return &apiError{kind: badParam, param: "from", msg: "from: larger than to"}
	case to > th.Size:
		return &apiError{kind: badParam, param: "to", msg: "to: larger than the log (" + strconv.FormatInt(th.Size, 10) + " leaves)"}
	}
	p, err := tlog.ProveTree(to, from, evidence.StoredHashReader(ctx, s.store, replica))
	if err != nil {
		if errors.Is(err, evidence.ErrNotFound) {
			return &apiError{kind: notFound, err: err, msg: "the hashes of that part of the log were removed with its records (retention)"}
		}
		return err
	}
	writeJSON(w, http.StatusOK, evidence.ConsistencyProof{Replica: replica, From: from, To: to, Proof: hashes(p)})
	return nil
}
