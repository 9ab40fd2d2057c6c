package ui_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// The known evidence: httpbin reached by sleep over mTLS and by a legacy
// client in plaintext (PERMISSIVE mode: neither side has a principal then),
// ledger reached by frontend over mTLS only, and reviews reached by
// productpage with some requests whose XFCC contradicts the connection.
const (
	httpbin     = "httpbin.mtls-pg:8000"
	httpbinID   = "spiffe://cluster.local/ns/mtls-pg/sa/default"
	sleepID     = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	legacy      = "10.42.0.99"
	ledger      = "ledger.payments:8443"
	ledgerID    = "spiffe://cluster.local/ns/payments/sa/ledger"
	frontendID  = "spiffe://cluster.local/ns/shop/sa/frontend"
	reviews     = "reviews.bookinfo:9080"
	reviewsID   = "spiffe://cluster.local/ns/bookinfo/sa/reviews"
	productpgID = "spiffe://cluster.local/ns/bookinfo/sa/productpage"
)

// edge is a run of alike requests from one client to one destination.
type edge struct {
	srcPrincipal, srcAddr string
	host, dstPrincipal    string
	verdict               evidence.Verdict
	n                     int
	path                  string
}

var edges = []edge{
	{sleepID, "10.42.0.12", httpbin, httpbinID, evidence.MTLS, 40, "/headers"},
	{"", legacy, httpbin, "", evidence.Plaintext, 7, "/get"},
	{frontendID, "10.42.1.5", ledger, ledgerID, evidence.MTLS, 12, "/api/v1/transfers"},
	{productpgID, "10.42.2.7", reviews, reviewsID, evidence.MTLS, 5, "/reviews/1"},
	{productpgID, "10.42.2.7", reviews, reviewsID, evidence.MTLSMismatch, 2, "/reviews/2"},
}

// fill stores the known evidence in a fresh SQLite file, in one replica's
// chain, over the last twenty minutes, and returns the records by id.
func fill(t *testing.T) (*sqlite.Store, map[string]*evidence.Record) {
	t.Helper()
	return fillWith(t, edges)
}

// fillWith stores the requests of edges, spread 15 s apart up to a
// minute ago.
func fillWith(t *testing.T, edges []edge) (*sqlite.Store, map[string]*evidence.Record) {
	t.Helper()
	return fillEdited(t, edges, nil)
}

// fillEdited is fillWith with each record passed to edit (when not nil)
// before it is stored.
func fillEdited(t *testing.T, edges []edge, edit func(*evidence.Record)) (*sqlite.Store, map[string]*evidence.Record) {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })

	var recs []*evidence.Record
	for _, e := range edges {
		for range e.n {
			r := record(e)
			if edit != nil {
				edit(r)
			}
			recs = append(recs, r)
		}
	}
	// Interleave the edges in time, oldest first, as traffic would be.
	now := time.Now().Add(-time.Minute)
	var head evidence.Link
	byID := map[string]*evidence.Record{}
	ordered := interleave(recs)
	for i, r := range ordered {
		r.Time = now.Add(-time.Duration(len(ordered)-i) * 15 * time.Second).UTC()
		r.ID = ulid.MustNew(ulid.Timestamp(r.Time), rand.Reader).String()
		r.RequestID = "req-" + strings.ToLower(r.ID[20:])
		head = head.Link(r)
		byID[r.ID] = r
	}
	if err := store.Append(ctx, ordered); err != nil {
		t.Fatalf("Append: %v", err)
	}
	// A signed checkpoint, so that the page has proofs to check.
	skey, _, err := evidence.GenerateSigningKey("meshproof.ui-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.NewCheckpointer(store, signer, time.Hour, zerolog.Nop(), nil).SignAll(ctx); err != nil {
		t.Fatalf("signing a checkpoint: %v", err)
	}
	return store, byID
}

// interleave orders recs round-robin by edge.
func interleave(recs []*evidence.Record) []*evidence.Record {
	groups := map[string][]*evidence.Record{}
	var keys []string
	for _, r := range recs {
		k := evidence.SourceKey(r) + " " + r.Request.Host + " " + string(r.Verdict)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []*evidence.Record
	for len(out) < len(recs) {
		for _, k := range keys {
			if g := groups[k]; len(g) > 0 {
				out, groups[k] = append(out, g[0]), g[1:]
			}
		}
	}
	return out
}

func record(e edge) *evidence.Record {
	r := &evidence.Record{
		Replica:     "replica-a",
		Source:      peer(e.srcPrincipal, e.srcAddr, 40000),
		Destination: peer(e.dstPrincipal, "10.42.0.20", 8000),
		Request:     evidence.Request{Method: "GET", Host: e.host, Path: e.path, Protocol: "HTTP/1.1"},
		Verdict:     e.verdict,
		Decision:    evidence.Decision{Allowed: true, DecisionID: "dec-1", PolicyRevision: "rev-1"},
	}
	switch e.verdict {
	case evidence.Plaintext:
		r.Reasons = []string{"no TLS identity on either side"}
	case evidence.MTLS, evidence.MTLSMismatch:
		// The reasons evidence.Judge gives.
		r.Reasons = []string{"client certificate presented", "xfcc hash matches peer certificate", "xfcc agrees with connection"}
		uri := e.srcPrincipal
		if e.verdict == evidence.MTLSMismatch {
			uri = "spiffe://cluster.local/ns/bookinfo/sa/someone-else"
			r.Reasons = []string{"client certificate presented", "xfcc uri differs from source principal: " + uri, "xfcc hash matches peer certificate"}
		}
		hash := r.Source.Certificate.SHA256
		r.XFCC = &evidence.XFCC{
			Raw:      "By=" + e.dstPrincipal + ";Hash=" + hash + ";Subject=\"\";URI=" + uri,
			Elements: []evidence.XFCCElement{{By: []string{e.dstPrincipal}, Hash: hash, URI: []string{uri}}},
		}
	}
	return r
}

func peer(principal, addr string, port uint32) evidence.Peer {
	p := evidence.Peer{Address: addr, Port: port, Principal: principal}
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return p
	}
	td, path, _ := strings.Cut(rest, "/")
	p.SPIFFE = &evidence.SPIFFEID{ID: principal, TrustDomain: td, Path: "/" + path}
	if parts := strings.Split(path, "/"); len(parts) == 4 && parts[0] == "ns" && parts[2] == "sa" {
		p.SPIFFE.Namespace, p.SPIFFE.ServiceAccount = parts[1], parts[3]
	}
	sum := sha256.Sum256([]byte(principal))
	p.Certificate = &evidence.Certificate{
		SHA256: hex.EncodeToString(sum[:]), Serial: "0x" + hex.EncodeToString(sum[:4]),
		Issuer:    "O=cluster.local",
		NotBefore: time.Now().Add(-time.Hour).UTC().Truncate(time.Second),
		NotAfter:  time.Now().Add(23 * time.Hour).UTC().Truncate(time.Second),
		URISANs:   []string{principal},
	}
	return p
}
