package evidence

import (
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden canonical encoding (never for a released format)")

// fullRecord has every field set.
func fullRecord() *Record {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	return &Record{
		ID: "01M8EEGE75048W02ZYF3AQ760D", Time: t0, RequestID: "req-1", StreamID: "1001", TraceID: "95fad1fde15e1130606d999688275b28", Replica: "mp-0",
		Source: Peer{Address: "10.42.0.49", Port: 45090, Principal: "spiffe://cluster.local/ns/mtls-pg/sa/sleep",
			SPIFFE: &SPIFFEID{ID: "spiffe://cluster.local/ns/mtls-pg/sa/sleep", TrustDomain: "cluster.local", Path: "/ns/mtls-pg/sa/sleep", Namespace: "mtls-pg", ServiceAccount: "sleep"},
			Certificate: &Certificate{SHA256: "0fd8a6", Serial: "1f", Subject: "O=x", Issuer: "O=ca", NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour),
				URISANs: []string{"spiffe://cluster.local/ns/mtls-pg/sa/sleep"}, DNSSANs: []string{"sleep"}, Error: "e"}},
		Destination: Peer{Address: "10.42.1.17", Port: 80, Principal: "spiffe://cluster.local/ns/mtls-pg/sa/default"},
		TLS:         TLS{SNI: "httpbin"},
		XFCC: &XFCC{Raw: `By=a;URI=b`, Elements: []XFCCElement{{By: []string{"a"}, Hash: "h", Subject: `CN=x\,y`, URI: []string{""}, DNS: []string{"d1", "d2"},
			CertSHA256: "c", Other: map[string][]string{"Issuer": {"i"}, "Z": {}}}}, Error: "none"},
		Request:   Request{Method: "GET", Host: "httpbin:8000", Path: "/headers", Protocol: "HTTP/1.1"},
		Headers:   map[string]string{"x-b": "2", "x-a": "1"},
		Verdict:   MTLS,
		Reasons:   []string{"client certificate presented", "xfcc agrees with connection"},
		Decision:  Decision{Allowed: true, HTTPStatus: 403, DecisionID: "d", PolicyRevision: "sha256:abc", DryRun: true, Reason: "ok", Error: "err"},
		Truncated: true,
		Chain:     Chain{Seq: 7, PrevHash: "p", Hash: "h"},
	}
}

// TestCanonicalGolden pins the canonical encoding, version 1: if this fails,
// every stored chain would stop verifying. Change the format only with a new
// version and a migration, never by updating the golden file.
func TestCanonicalGolden(t *testing.T) {
	got := fullRecord().Canonical()
	const golden = "testdata/canonical-v1.golden"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("canonical encoding changed:\ngot  %s\nwant %s", got, want)
	}
	const wantHash = "869bcdee3feabc333a4c9b4bf8c4b2d4cad08fec74a3d49c29030b411e8821a6"
	if h := ChainHash("", fullRecord()); h != wantHash && !*update {
		t.Fatalf("chain hash %s, want %s", h, wantHash)
	}
}

func TestCanonicalProperties(t *testing.T) {
	r := fullRecord()
	base := string(r.Canonical())

	// The chain fields are not hashed.
	r.Chain = Chain{Seq: 99, PrevHash: "x", Hash: "y"}
	if string(r.Canonical()) != base {
		t.Error("chain fields changed the encoding")
	}
	// A JSON round trip (what every store does) keeps the encoding.
	b, _ := json.Marshal(fullRecord())
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if string(back.Canonical()) != base {
		t.Errorf("JSON round trip changed the encoding:\n%s\n%s", back.Canonical(), base)
	}
	amended := fullRecord()
	amended.Amends = &Amends{ID: "01M8EEGE75048W02ZYF3AQ760C", Allowed: true}
	b, _ = json.Marshal(amended)
	back = Record{}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if string(back.Canonical()) != string(amended.Canonical()) {
		t.Errorf("JSON round trip changed an amendment's encoding:\n%s\n%s", back.Canonical(), amended.Canonical())
	}
	if a, b := amended.Canonical(), []byte(base); string(a[:len(b)]) != base || string(a[len(b):]) != ".6:amends{.2:ids26:01M8EEGE75048W02ZYF3AQ760C.7:allowedt}" {
		t.Errorf("amends encoded as %q after the rest", a[len(b):])
	}
	// Every field matters.
	for name, change := range map[string]func(*Record){
		"id": func(r *Record) { r.ID += "x" }, "time": func(r *Record) { r.Time = r.Time.Add(1) },
		"verdict":  func(r *Record) { r.Verdict = Plaintext },
		"allowed":  func(r *Record) { r.Decision.Allowed = false },
		"header":   func(r *Record) { r.Headers["x-a"] = "3" },
		"reason":   func(r *Record) { r.Reasons[0] += "!" },
		"xfcc uri": func(r *Record) { r.XFCC.Elements[0].URI = nil },
		"port":     func(r *Record) { r.Source.Port++ },
		"cert":     func(r *Record) { r.Source.Certificate.NotAfter = time.Time{} },
		// Length prefixes keep field boundaries: moving a byte across two
		// adjacent fields changes the encoding.
		"boundary": func(r *Record) { r.RequestID, r.StreamID = "req-11", "001" },
		// Amends, added after the golden file: absent, it leaves the
		// encoding (and every stored hash) as it was.
		"amends":         func(r *Record) { r.Amends = &Amends{ID: "01M8EEGE75048W02ZYF3AQ760C"} },
		"amends allowed": func(r *Record) { r.Amends = &Amends{ID: "01M8EEGE75048W02ZYF3AQ760C", Allowed: true} },
	} {
		r := fullRecord()
		change(r)
		if string(r.Canonical()) == base {
			t.Errorf("changing %s did not change the encoding", name)
		}
	}
}

func TestLinkChains(t *testing.T) {
	var head Link
	recs := []*Record{fullRecord(), fullRecord(), fullRecord()}
	recs[1].ID += "x"
	for _, r := range recs {
		head = head.Link(r)
	}
	for i, r := range recs {
		if r.Chain.Seq != uint64(i+1) || r.Chain.PrevHash != "" || r.Chain.Version != CanonicalV2 ||
			r.Chain.Hash != LeafHashHex(r.CanonicalJSON()) {
			t.Fatalf("record %d: chain %+v, want seq %d, the leaf hash of its canonical bytes, version 2", i, r.Chain, i+1)
		}
	}
	if head != (Link{Seq: 3, Hash: recs[2].Chain.Hash}) || recs[0].Chain.Hash == recs[1].Chain.Hash {
		t.Fatalf("bad head %+v, or different records with one hash", head)
	}
}

func TestLinkV1Chains(t *testing.T) {
	var head Link
	recs := []*Record{fullRecord(), fullRecord(), fullRecord()}
	for _, r := range recs {
		head = head.LinkV1(r)
	}
	if recs[0].Chain.Seq != 1 || recs[0].Chain.PrevHash != "" || recs[2].Chain.Seq != 3 ||
		recs[1].Chain.PrevHash != recs[0].Chain.Hash || recs[2].Chain.PrevHash != recs[1].Chain.Hash ||
		head != (Link{Seq: 3, Hash: recs[2].Chain.Hash}) {
		t.Fatalf("bad chain: %+v %+v %+v head %+v", recs[0].Chain, recs[1].Chain, recs[2].Chain, head)
	}
	if recs[0].Chain.Hash == recs[1].Chain.Hash {
		t.Fatal("identical records at different places must hash differently")
	}
}
