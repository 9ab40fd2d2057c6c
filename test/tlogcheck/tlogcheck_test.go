// Package tlogcheck checks meshproof's transparency-log proofs as a third
// party would: it imports nothing of meshproof, only the Go checksum
// database's tlog and note packages (and gRPC with Envoy's ext_authz types
// to make some evidence). It runs the real binary on loopback.
package tlogcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// build compiles meshproof into dir.
func build(t *testing.T, dir string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "meshproof")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshproof")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// server is a running meshproof serve.
type server struct {
	grpcAddr, httpAddr string
	cmd                *exec.Cmd
}

// serve starts meshproof serve and waits for its "meshproof serving" log
// line, which names the ports it bound.
func serve(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan map[string]any)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case lines <- m:
				default:
				}
			}
		}
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-lines:
			if m["message"] == "meshproof serving" {
				s.grpcAddr, s.httpAddr = m["grpc_addr"].(string), m["http_addr"].(string)
				return s
			}
		case <-deadline:
			t.Fatal("meshproof serve did not start within 60s")
		}
	}
}

// check sends one Check over mTLS-shaped attributes and returns the
// evidence id meshproof answered with.
func check(t *testing.T, c authv3.AuthorizationClient, i int) string {
	t.Helper()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/shop/sa/frontend",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/payments/sa/ledger"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: strconv.Itoa(i), Method: "GET", Host: "ledger.payments:8443", Path: "/api/v1/items/" + strconv.Itoa(i), Protocol: "HTTP/2",
			Headers: map[string]string{"x-request-id": fmt.Sprintf("req-%d", i)},
		}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-meshproof-evidence-id" {
			return h.GetHeader().GetValue()
		}
	}
	t.Fatalf("no evidence id in the answer %v", resp)
	return ""
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// proof is the API's answer, as a third party reads it.
type proof struct {
	Replica    string   `json:"replica"`
	LeafIndex  int64    `json:"leaf_index"`
	TreeSize   int64    `json:"tree_size"`
	Leaf       string   `json:"leaf"`
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

// waitProof polls for the record's proof: it exists once a checkpoint
// covering the record is signed.
func waitProof(t *testing.T, s *server, id string) proof {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := get(t, "http://"+s.httpAddr+"/v1/evidence/"+id+"/proof")
		if code == http.StatusOK {
			var p proof
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			return p
		}
		if code != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("GET proof of %s: %d %s", id, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openCheckpoint checks a signed checkpoint with note alone and reads the
// C2SP tlog-checkpoint body: origin, size, root.
func openCheckpoint(t *testing.T, signed string, v note.Verifier) (origin string, size int64, root tlog.Hash) {
	t.Helper()
	n, err := note.Open([]byte(signed), note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v\n%s", err, signed)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		t.Fatalf("checkpoint body %q: want origin, size, root", n.Text)
	}
	size, err = strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint size %q: %v", lines[1], err)
	}
	r, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(r) != tlog.HashSize {
		t.Fatalf("checkpoint root %q: %v", lines[2], err)
	}
	copy(root[:], r)
	return lines[0], size, root
}

func decodeHashes(t *testing.T, ss []string) []tlog.Hash {
	t.Helper()
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			t.Fatalf("hash %q: %v", s, err)
		}
		copy(out[i][:], b)
	}
	return out
}

// TestProofWithTlogAndNoteOnly: records made through the ext_authz API, a
// proof of each fetched from the evidence API, checked with note.Open and
// tlog.CheckRecord only; a changed leaf fails; a later checkpoint is proved
// consistent with an earlier one with tlog.CheckTree.
func TestProofWithTlogAndNoteOnly(t *testing.T) {
	dir := t.TempDir()
	bin := build(t, dir)
	key := filepath.Join(dir, "signer.key")
	if out, err := exec.Command(bin, "keygen", "--name", "meshproof.test", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, bin, "--store", "sqlite:"+filepath.Join(dir, "evidence.db"), "--replica", "r1",
		"--signing-key", key, "--checkpoint-interval", "100ms", "--evidence-durability", "sync")
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)

	// Across a tile boundary (256 leaves), so that the proofs use stored
	// tiles and the records' own hashes both.
	var ids []string
	for i := range 300 {
		ids = append(ids, check(t, c, i))
	}
	var first proof
	for _, i := range []int{0, 1, 255, 256, 299} {
		p := waitProof(t, s, ids[i])
		origin, size, root := openCheckpoint(t, p.Checkpoint, verifier)
		if origin != "meshproof.test/r1" || size != p.TreeSize || p.Replica != "r1" || p.LeafIndex != int64(i) {
			t.Fatalf("record %d: origin %q size %d, proof %+v", i, origin, size, p)
		}
		leaf, err := base64.StdEncoding.DecodeString(p.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(leaf, []byte(`"id":"`+ids[i]+`"`)) {
			t.Fatalf("record %d: the leaf is not record %s: %s", i, ids[i], leaf)
		}
		path := decodeHashes(t, p.Proof)
		if err := tlog.CheckRecord(path, p.TreeSize, root, p.LeafIndex, tlog.RecordHash(leaf)); err != nil {
			t.Fatalf("record %d: tlog.CheckRecord: %v", i, err)
		}
		forged := bytes.Replace(leaf, []byte(`"allowed":true`), []byte(`"allowed":false`), 1)
		if bytes.Equal(forged, leaf) {
			t.Fatalf("record %d: no decision in the leaf %s", i, leaf)
		}
		if tlog.CheckRecord(path, p.TreeSize, root, p.LeafIndex, tlog.RecordHash(forged)) == nil {
			t.Fatalf("record %d: an edited leaf passed tlog.CheckRecord", i)
		}
		if i == 0 {
			first = p
		}
	}

	// More records, a later checkpoint: the log only grew.
	_, oldSize, oldRoot := openCheckpoint(t, first.Checkpoint, verifier)
	for i := 300; i < 700; i++ {
		ids = append(ids, check(t, c, i))
	}
	last := waitProof(t, s, ids[len(ids)-1])
	_, newSize, newRoot := openCheckpoint(t, last.Checkpoint, verifier)
	code, body := get(t, fmt.Sprintf("http://%s/v1/checkpoints/r1/consistency?from=%d&to=%d", s.httpAddr, oldSize, newSize))
	if code != http.StatusOK {
		t.Fatalf("consistency: %d %s", code, body)
	}
	var cons struct {
		From, To int64
		Proof    []string
	}
	if err := json.Unmarshal(body, &cons); err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(decodeHashes(t, cons.Proof), newSize, newRoot, oldSize, oldRoot); err != nil {
		t.Fatalf("tlog.CheckTree from %d to %d: %v", oldSize, newSize, err)
	}
	var wrong tlog.Hash
	wrong[0] = 1
	if tlog.CheckTree(decodeHashes(t, cons.Proof), newSize, newRoot, oldSize, wrong) == nil {
		t.Fatal("a consistency proof held for another old root")
	}
	// The latest checkpoint as served: the note text exactly.
	code, body = get(t, "http://"+s.httpAddr+"/v1/checkpoints/r1")
	if code != http.StatusOK {
		t.Fatalf("checkpoint: %d %s", code, body)
	}
	if _, size, _ := openCheckpoint(t, string(body), verifier); size < newSize {
		t.Fatalf("the latest checkpoint is of %d leaves, an earlier proof's of %d", size, newSize)
	}
}
