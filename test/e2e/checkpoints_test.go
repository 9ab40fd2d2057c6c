package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// signedServe makes a key pair and starts serve signing checkpoints every
// 50ms into a SQLite store of its own; it returns the server, the store's
// file and the key's files.
func signedServe(t *testing.T, replica string) (s *server, db, key string) {
	t.Helper()
	dir := t.TempDir()
	key = filepath.Join(dir, "signer.key")
	if r := meshproof(t, nil, "keygen", "--name", "meshproof.e2e", "--out", key); r.code != 0 {
		t.Fatalf("keygen: %s", r)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signer key %v, mode %v: want 0600", err, fi.Mode())
	}
	db = filepath.Join(dir, "evidence.db")
	s = startServe(t, "--store", "sqlite:"+db, "--replica", replica, "--signing-key", key,
		"--checkpoint-interval", "50ms", "--evidence-durability", "sync")
	return s, db, key
}

// waitCheckpoint waits until the replica's latest checkpoint has at least
// size leaves.
func waitCheckpoint(t *testing.T, s *server, replica string, size int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := httpGet("http://" + s.HTTPAddr + "/v1/checkpoints")
		if err != nil || code != http.StatusOK {
			t.Fatalf("/v1/checkpoints: %d %s %v", code, body, err)
		}
		var list struct {
			Checkpoints []struct {
				Replica string
				Size    int64
			}
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		for _, c := range list.Checkpoints {
			if c.Replica == replica && c.Size >= size {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of %d leaves of %s within 30s: %s", size, replica, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// storedLeaves are the leaf hashes (chain hashes) of replica's records up
// to seq upTo, as the store reads them back (schema 6 keeps no hash: it
// is the leaf hash of the record's canonical bytes).
func storedLeaves(t *testing.T, path, replica string, upTo uint64) []string {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, evidence.Options{Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []string
	if err := s.Walk(context.Background(), replica, func(r *evidence.Record, _ evidence.Stored) error {
		if r.Chain.Seq <= upTo {
			out = append(out, r.Chain.Hash)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sqlExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestSignedCheckpoints: serve signs checkpoints; a record's proof checks
// with the CLI, from the API and from a file, with no store; checkpoints
// saved outside the store catch a tail cut that rewrote every head, root
// and stored checkpoint; signed times catch a head cut dressed up as
// retention.
func TestSignedCheckpoints(t *testing.T) {
	t.Parallel()
	s, db, key := signedServe(t, "r1")
	conn := dial(t, s.GRPCAddr, nil)
	var ids []string
	for range 300 {
		id, ok := header(check(t, conn, benchRequest(t)), "x-meshproof-evidence-id")
		if !ok {
			t.Fatal("no evidence id")
		}
		ids = append(ids, id)
	}
	waitCheckpoint(t, s, "r1", 300)
	server := "http://" + s.HTTPAddr

	// A proof, checked by query with the key, and by verify-proof from
	// the JSON alone.
	r := meshproof(t, nil, "query", "--server", server, "--id", ids[7], "--proof", "--public-key", key+".pub")
	if r.code != 0 || !strings.Contains(r.stdout, "Proof: holds. Leaf 7 of meshproof.e2e/r1") {
		t.Fatalf("query --proof: %s", r)
	}
	r = meshproof(t, nil, "query", "--server", server, "--id", ids[7], "--proof", "--output", "json")
	if r.code != 0 {
		t.Fatalf("query --proof --output json: %s", r)
	}
	proof := r.stdout
	if r := meshproof(t, strings.NewReader(proof), "verify-proof", "--public-key", key+".pub"); r.code != 0 || !strings.Contains(r.stdout, "proof holds: record "+ids[7]) {
		t.Fatalf("verify-proof: %s", r)
	}
	forged := strings.Replace(proof, `"leaf_index": 7`, `"leaf_index": 8`, 1)
	if r := meshproof(t, strings.NewReader(forged), "verify-proof", "--public-key", key+".pub"); r.code != 1 || !strings.Contains(r.stdout, "FAILS") {
		t.Fatalf("verify-proof of a proof moved to another leaf: %s", r)
	}
	other := filepath.Join(t.TempDir(), "other.key")
	if r := meshproof(t, nil, "keygen", "--name", "meshproof.e2e", "--out", other); r.code != 0 {
		t.Fatal(r)
	}
	if r := meshproof(t, strings.NewReader(proof), "verify-proof", "--public-key", other+".pub"); r.code != 1 {
		t.Fatalf("verify-proof with another key of the same name: %s", r)
	}

	// Checkpoints kept outside, as cron would.
	saved := t.TempDir()
	if r := meshproof(t, nil, "checkpoint", "save", "--server", server, "--out", saved); r.code != 0 || !strings.Contains(r.stdout, "r1: ") {
		t.Fatalf("checkpoint save: %s", r)
	}
	s.stop()
	cp := filepath.Join(saved, "r1.checkpoint")
	if r := meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--public-key", key+".pub", "--checkpoint", cp); r.code != 0 {
		t.Fatalf("verify of the untouched store: %s", r)
	}
	if r := meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--checkpoint", cp); r.code != 2 {
		t.Fatalf("verify --checkpoint without --public-key: %s", r)
	}

	// The attack: the last ten records removed, and everything that
	// would say so rewritten: the head, the log's root (recomputed from
	// the remaining records), the stored checkpoints.
	const keep = 290
	hexes := storedLeaves(t, db, "r1", keep)
	var leaves []tlog.Hash
	for _, h := range hexes {
		leaves = append(leaves, tlog.Hash(hexBytes(h)))
	}
	root := rootOf(t, leaves)
	d := openDB(t, db)
	sqlExec(t, d, `DELETE FROM records WHERE rep = (SELECT num FROM replicas WHERE name = 'r1') AND seq > ?`, keep)
	sqlExec(t, d, `DELETE FROM tlog_checkpoints WHERE replica = 'r1' AND size > ?`, keep)
	sqlExec(t, d, `UPDATE chain_heads SET seq = ?, hash = ?, root = ? WHERE replica = 'r1'`, keep, hexes[keep-1], root[:])
	d.Close()
	r = meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--public-key", key+".pub", "--checkpoint", cp)
	if r.code != 1 || !strings.Contains(r.stdout, "300 leaves") || !strings.Contains(r.stdout, "r1") {
		t.Fatalf("verify after a tail cut with rewritten heads, against the saved checkpoint: %s", r)
	}
}

func hexBytes(h string) []byte {
	out := make([]byte, len(h)/2)
	for i := range out {
		v, _ := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		out[i] = byte(v)
	}
	return out
}

// rootOf is the RFC 6962 root of leaves, with tlog.
func rootOf(t *testing.T, leaves []tlog.Hash) tlog.Hash {
	t.Helper()
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, h := range leaves {
		hs, err := tlog.StoredHashesForRecordHash(int64(i), h, reader)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	root, err := tlog.TreeHash(int64(len(leaves)), reader)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestHeadCutWithFakeCheckpoint: the oldest records removed and a
// retention mark written where they end, as retention would have: the
// signed checkpoint that lacks the last of them was signed moments ago,
// within the retention window, so verify says they were removed too early.
func TestHeadCutWithFakeCheckpoint(t *testing.T) {
	t.Parallel()
	s, db, key := signedServe(t, "r2")
	conn := dial(t, s.GRPCAddr, nil)
	for range 5 {
		check(t, conn, benchRequest(t))
	}
	waitCheckpoint(t, s, "r2", 5)
	for range 45 {
		check(t, conn, benchRequest(t))
	}
	waitCheckpoint(t, s, "r2", 50)
	s.stop()
	if r := meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--public-key", key+".pub"); r.code != 0 {
		t.Fatalf("verify of the untouched store: %s", r)
	}
	// As retention would: the part of the bottom tile the removed records
	// end in is kept, so that the log above them still rebuilds.
	var part []byte
	for _, h := range storedLeaves(t, db, "r2", 10) {
		part = append(part, hexBytes(h)...)
	}
	d := openDB(t, db)
	sqlExec(t, d, `INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES ('r2', 0, 0, ?)`, part)
	sqlExec(t, d, `DELETE FROM records WHERE rep = (SELECT num FROM replicas WHERE name = 'r2') AND seq <= 10`)
	sqlExec(t, d, `INSERT INTO chain_checkpoints (replica, seq, hash) VALUES ('r2', 10, ?)`, strings.Repeat("0", 64))
	d.Close()
	r := meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--public-key", key+".pub")
	if r.code != 1 || !strings.Contains(r.stdout, "removed too early") {
		t.Fatalf("verify after a head cut with a fake retention mark: %s", r)
	}
	// Judged with no retention window, the same cut passes for retention.
	if r := meshproof(t, nil, "verify", "--store", "sqlite:"+db, "--public-key", key+".pub", "--retention", "0"); r.code != 0 {
		t.Fatalf("verify --retention 0: %s", r)
	}
}
