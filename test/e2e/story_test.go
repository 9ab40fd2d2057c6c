package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
	"github.com/meshproof/meshproof/internal/meshsim"
)

// story is the permissive-mode story of issue 5 running against the real
// binary: the simulated namespace mtls-pg, meshproof serve, its API.
type story struct {
	t      *testing.T
	ctx    context.Context
	serve  *server
	url    string // serve's --http-addr as a URL
	api    *client.Client
	mesh   *meshsim.Mesh
	mu     sync.Mutex
	access []meshsim.Entry // the sidecar's access log
}

// TestStory: the user's investigation, made a standing answer. In
// PERMISSIVE mode sleep's mTLS, the legacy client's plaintext and a forged
// XFCC header each leave the evidence they should, and curl's TLS without
// an Istio ALPN never reaches meshproof; tls-check and strict-readiness
// say so; once the legacy client moves to mTLS, strict-readiness says
// ready, and in STRICT mode plaintext is reset and every request is mTLS.
//
// Reports count whole minutes, so the window after the move starts at the
// next minute: the test waits for it (up to a minute, alongside the other
// tests).
func TestStory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &story{t: t, ctx: ctx}
	s.serve = startServe(t, "--policy", "builtin:deny-suspect", "--decision", "envoy/authz/decision", "--replica", "story")
	s.url = "http://" + s.serve.HTTPAddr
	var err error
	if s.api, err = client.New(s.url, client.Options{Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	cfg := meshsim.DefaultConfig()
	cfg.AuthzAddr = s.serve.GRPCAddr
	cfg.Timeout = 5 * time.Second // Envoy's 200 ms is tight under the race detector
	cfg.AccessLog = func(e meshsim.Entry) {
		s.mu.Lock()
		s.access = append(s.access, e)
		s.mu.Unlock()
	}
	if s.mesh, err = meshsim.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.mesh.Close(); err != nil {
			t.Errorf("closing the mesh: %v", err)
		}
	})

	start := time.Now().UTC().Truncate(time.Second)
	s.permissive()
	s.permissiveReports(start)
	// The move: legacy gets an SVID and a sidecar. The window after it
	// starts at the next minute, once plaintext is over.
	moved := time.Now().UTC().Truncate(time.Minute).Add(time.Minute)
	legacy, err := s.mesh.NewClient(meshsim.ClientConfig{Name: "legacy", Transport: meshsim.IstioMTLS, ID: meshsim.LegacyID, LocalIP: s.mesh.Legacy.LocalIP()})
	if err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(moved.Add(100 * time.Millisecond)) {
		s.get(s.mesh.Sleep, "/headers", http.StatusOK)
		s.get(legacy, "/headers", http.StatusOK)
		time.Sleep(time.Second)
	}
	// One more after it, whose record (and rollup) is stored.
	_, echoed := s.get(legacy, "/headers", http.StatusOK)
	if r := s.record(echoed["X-Meshproof-Evidence-Id"]); r.Verdict != evidence.MTLS || r.Source.Principal != meshsim.LegacyID || r.Time.Before(moved) {
		t.Errorf("legacy after the move: %s", asJSON(r))
	}
	s.readyAfterMove(moved)
	s.strict(legacy, moved)
}

// permissive runs the four clients of the story against the PERMISSIVE
// sidecar and checks each request's evidence.
func (s *story) permissive() {
	t, m := s.t, s.mesh
	for range 3 {
		resp, echoed := s.get(m.Sleep, "/headers", http.StatusOK)
		r := s.record(echoed["X-Meshproof-Evidence-Id"])
		el := lastElement(t, r)
		sum := m.Sleep.Identity().SHA256()
		if r.Verdict != evidence.MTLS || r.Source.Principal != meshsim.SleepID || r.Destination.Principal != meshsim.ServerID ||
			!r.Decision.Allowed || r.RequestID != resp.RequestID || r.Source.Certificate == nil ||
			r.Source.Certificate.SHA256 != sum || el.Hash != sum || !slices.Equal(el.URI, []string{meshsim.SleepID}) || !slices.Equal(el.By, []string{meshsim.ServerID}) {
			t.Errorf("sleep's evidence: %s", asJSON(r))
		}
		if want := "By=" + meshsim.ServerID + ";Hash=" + sum + `;Subject="";URI=` + meshsim.SleepID; echoed["X-Forwarded-Client-Cert"] != want || r.XFCC.Raw != want {
			t.Errorf("XFCC: app got %q, evidence %q, want %q", echoed["X-Forwarded-Client-Cert"], r.XFCC.Raw, want)
		}
		if echoed["X-Meshproof-Policy"] != "deny-suspect" {
			t.Errorf("the policy's header did not reach the app: %v", echoed)
		}
		s.checkStreamID(r)
	}
	for range 2 {
		_, echoed := s.get(m.Legacy, "/headers", http.StatusOK)
		r := s.record(echoed["X-Meshproof-Evidence-Id"])
		if r.Verdict != evidence.Plaintext || r.Source.Principal != "" || r.Destination.Principal != "" || r.XFCC != nil ||
			!r.Decision.Allowed || r.Source.Address != m.Legacy.LocalIP() || r.RequestID == "" || r.RequestID != echoed["X-Request-Id"] {
			t.Errorf("legacy's evidence: %s (the app got %v)", asJSON(r), echoed)
		}
		s.checkStreamID(r)
	}

	// curl with a client certificate, no Istio ALPN: exit code 35, and
	// meshproof never hears of it.
	before := m.Sidecar.Stats()
	if _, err := m.Curl.Get(s.ctx, "/headers"); !isHandshakeError(err) {
		t.Errorf("curl without an Istio ALPN: %v, want its TLS handshake to fail", err)
	}
	if after := m.Sidecar.Stats(); after.Checks != before.Checks || after.TLSOnPlaintext != before.TLSOnPlaintext+1 {
		t.Errorf("curl's attempt: stats %+v, then %+v", before, after)
	}

	// The forger, through a sidecar that lets a client's XFCC through.
	m.Sidecar.SetForwardClientCert(meshsim.AlwaysForwardOnly)
	resp, err := m.Forger.Get(s.ctx, "/headers")
	m.Sidecar.SetForwardClientCert(meshsim.AppendForward)
	if err != nil || resp.Status != http.StatusForbidden || !strings.Contains(string(resp.Body), "xfcc") {
		t.Fatalf("forger: %v %+v, want a 403 saying why", err, resp)
	}
	e := s.lastAccess()
	r := s.record(e.EvidenceID)
	if r.Verdict != evidence.XFCCUnverified || e.Verdict != string(evidence.XFCCUnverified) || r.Decision.Allowed ||
		r.Decision.HTTPStatus != http.StatusForbidden || r.Source.Principal != "" || r.XFCC == nil || r.XFCC.Raw != meshsim.ForgedXFCC ||
		r.Source.Address != m.Forger.LocalIP() || r.Decision.Reason != string(resp.Body) {
		t.Errorf("forger's evidence: %s (answer %q)", asJSON(r), resp.Body)
	}
}

// permissiveReports asks the CLI what PERMISSIVE looked like since start.
func (s *story) permissiveReports(start time.Time) {
	t, since := s.t, start.Format(time.RFC3339)
	var page evidence.RecordPage
	s.cli(0, &page, "query", "--source", meshsim.SleepID, "--since", since, "--output", "json")
	if len(page.Records) != 3 {
		t.Errorf("query --source sleep: %d records, want 3", len(page.Records))
	}
	s.cli(0, &page, "query", "--mtls=false", "--since", since, "--output", "json")
	verdicts := map[evidence.Verdict]int{}
	for _, r := range page.Records {
		verdicts[r.Verdict]++
	}
	if len(page.Records) != 3 || verdicts[evidence.Plaintext] != 2 || verdicts[evidence.XFCCUnverified] != 1 {
		t.Errorf("query --mtls=false: %v", verdicts)
	}

	var tc report.TLSCheckReport
	s.cli(0, &tc, "report", "tls-check", "--since", since, "--output", "json")
	row := onlyRow(t, tc)
	legacy := clientOf(row, s.mesh.Legacy.LocalIP())
	sleep := clientOf(row, meshsim.SleepID)
	if row.Server != report.ServerMixed || row.DestinationPrincipal != meshsim.ServerID || legacy == nil || legacy.Counts[evidence.Plaintext] != 2 ||
		sleep == nil || sleep.Counts[evidence.MTLS] != 3 || sleep.Total != 3 {
		t.Errorf("tls-check in PERMISSIVE: %s", asJSON(tc))
	}

	var rr report.StrictReadinessReport
	s.cli(3, &rr, "report", "strict-readiness", "--destination", meshsim.Host, "--since", since, "--output", "json")
	blocking := false
	for _, b := range rr.Blocking {
		blocking = blocking || b.Client.Client == s.mesh.Legacy.LocalIP() && b.Counts[evidence.Plaintext] == 2
	}
	if rr.Ready || !blocking {
		t.Errorf("strict-readiness while legacy talks plaintext: %s", asJSON(rr))
	}
}

// readyAfterMove: the traffic since the move is all mTLS.
func (s *story) readyAfterMove(moved time.Time) {
	var rr report.StrictReadinessReport
	s.cli(0, &rr, "report", "strict-readiness", "--destination", meshsim.Host, "--since", moved.Format(time.RFC3339), "--output", "json")
	if !rr.Ready || rr.Total == 0 || rr.Counts[evidence.MTLS] != rr.Total || len(rr.Blocking) != 0 {
		s.t.Errorf("strict-readiness after the move: %s", asJSON(rr))
	}
	out := s.cli(0, nil, "report", "strict-readiness", "--destination", meshsim.Host, "--since", moved.Format(time.RFC3339))
	if !strings.HasPrefix(out, "READY: every request was mTLS") {
		s.t.Errorf("strict-readiness table:\n%s", out)
	}
}

// strict switches the sidecar to STRICT: sleep, the moved legacy client and
// curl without an Istio ALPN work; plaintext is reset before any Check.
func (s *story) strict(legacy *meshsim.Client, since time.Time) {
	t, m := s.t, s.mesh
	m.Sidecar.SetMode(meshsim.Strict)
	s.get(m.Sleep, "/headers", http.StatusOK)
	s.get(legacy, "/headers", http.StatusOK)
	_, echoed := s.get(m.Curl, "/headers", http.StatusOK)
	if r := s.record(echoed["X-Meshproof-Evidence-Id"]); r.Verdict != evidence.MTLS || r.Source.Principal != meshsim.CurlID {
		t.Errorf("curl in STRICT: %s", asJSON(r))
	}
	for _, c := range []*meshsim.Client{m.Legacy, m.Forger} {
		before := m.Sidecar.Stats()
		if resp, err := c.Get(s.ctx, "/headers"); err == nil {
			t.Errorf("%s over plaintext in STRICT: %d, want the connection reset", c.Name(), resp.Status)
		}
		if after := m.Sidecar.Stats(); after.Checks != before.Checks || after.Resets != before.Resets+1 {
			t.Errorf("%s's plaintext in STRICT: stats %+v, then %+v", c.Name(), before, after)
		}
	}
	var tc report.TLSCheckReport
	s.cli(0, &tc, "report", "tls-check", "--since", since.Format(time.RFC3339), "--output", "json")
	row := onlyRow(t, tc)
	if row.Server != report.ServerMTLS || row.Status != report.StatusOK || clientOf(row, meshsim.CurlID) == nil || clientOf(row, meshsim.LegacyID) == nil {
		t.Errorf("tls-check since the move, STRICT included: %s", asJSON(tc))
	}
}

// get sends GET path, wants status, and returns the answer and, for
// /headers, the headers the app got.
func (s *story) get(c *meshsim.Client, path string, status int) (*meshsim.Response, map[string]string) {
	s.t.Helper()
	resp, err := c.Get(s.ctx, path)
	if err != nil || resp.Status != status {
		s.t.Fatalf("%s GET %s: %v %+v, want %d", c.Name(), path, err, resp, status)
	}
	if path != "/headers" {
		return resp, nil
	}
	h, err := resp.Headers()
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, h
}

// record fetches one record through the API, waiting for the async writer.
func (s *story) record(id string) *evidence.Record {
	s.t.Helper()
	if id == "" {
		s.t.Fatal("no evidence id")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := s.api.Get(s.ctx, id)
		var ae *client.Error
		switch {
		case err == nil:
			return r
		case !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || time.Now().After(deadline):
			s.t.Fatalf("record %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkStreamID: the record's stream id is the sidecar's, not x-request-id.
func (s *story) checkStreamID(r *evidence.Record) {
	s.t.Helper()
	for _, e := range s.accessLog() {
		if e.EvidenceID == r.ID {
			if r.StreamID != e.StreamID || r.StreamID == r.RequestID {
				s.t.Errorf("stream id %q, request id %q; the sidecar's stream id %q", r.StreamID, r.RequestID, e.StreamID)
			}
			return
		}
	}
	s.t.Errorf("record %s not in the sidecar's access log", r.ID)
}

func (s *story) accessLog() []meshsim.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.access)
}

func (s *story) lastAccess() meshsim.Entry {
	s.t.Helper()
	log := s.accessLog()
	if len(log) == 0 {
		s.t.Fatal("empty access log")
	}
	return log[len(log)-1]
}

// cli runs meshproof against serve's API, wants exit code want, decodes
// JSON output into v (when not nil) and returns the output.
func (s *story) cli(want int, v any, args ...string) string {
	s.t.Helper()
	args = append(args[:len(args):len(args)], "--server", s.url)
	res := meshproof(s.t, nil, args...)
	if res.code != want {
		s.t.Fatalf("meshproof %s: %s", strings.Join(args, " "), res)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(res.stdout), v); err != nil {
			s.t.Fatalf("meshproof %s: %v\n%s", strings.Join(args, " "), err, res)
		}
	}
	return res.stdout
}

func onlyRow(t *testing.T, tc report.TLSCheckReport) report.TLSCheckRow {
	t.Helper()
	if len(tc.Rows) != 1 || tc.Rows[0].Destination != meshsim.Host {
		t.Fatalf("tls-check: want one row for %s, got %s", meshsim.Host, asJSON(tc))
	}
	return tc.Rows[0]
}

// clientOf is row's client named name (principal, or address), or nil.
func clientOf(row report.TLSCheckRow, name string) *report.Client {
	for i := range row.Clients {
		if row.Clients[i].Client == name {
			return &row.Clients[i]
		}
	}
	return nil
}

func lastElement(t *testing.T, r *evidence.Record) evidence.XFCCElement {
	t.Helper()
	if r.XFCC == nil || len(r.XFCC.Elements) == 0 {
		t.Fatalf("record %s has no XFCC element: %s", r.ID, asJSON(r))
	}
	return r.XFCC.Elements[len(r.XFCC.Elements)-1]
}

func isHandshakeError(err error) bool {
	var he *meshsim.HandshakeError
	return errors.As(err, &he)
}

func asJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
