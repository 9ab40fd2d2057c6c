package report

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// The story's workloads as serve --kubernetes records them: sleep and
// httpbin with sidecars in mtls-pg, a legacy client without one in legacy.
var (
	httpbinW = &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "httpbin", Pod: "httpbin-5d9f-abcde", ServiceAccount: "httpbin", App: "httpbin", Sidecar: true}
	sleepW   = &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "sleep", Pod: "sleep-7f8c-fghij", ServiceAccount: "sleep", App: "sleep", Sidecar: true}
	legacyW  = &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "legacy", Pod: "legacy-6b7d-klmno", ServiceAccount: "default", App: "legacy"}
)

// fixedConfig is a cluster's configuration as a table: httpbin's workload
// in mtls-pg is served in mode (by policy), on container port 8000 only;
// clients in mtls-pg see DestinationRule httpbin.mtls-pg (ISTIO_MUTUAL) for
// httpbin's service, others none. It records what it was asked.
type fixedConfig struct {
	policy, mode string
	asked        []string
}

func (c *fixedConfig) PeerAuthentication(ns string, w *evidence.Workload, port uint32) Setting {
	name := "-"
	if w != nil {
		name = w.Name
	}
	c.asked = append(c.asked, fmt.Sprintf("peer %s %s %d", ns, name, port))
	if ns == "mtls-pg" && w != nil && w.App == "httpbin" && port == 8000 {
		return Setting{Name: c.policy, Mode: c.mode}
	}
	return Setting{Mode: "PERMISSIVE"}
}

func (c *fixedConfig) DestinationRule(clientNS, host string, port uint32) Setting {
	c.asked = append(c.asked, fmt.Sprintf("rule %s %s %d", clientNS, host, port))
	if clientNS == "mtls-pg" && host == "httpbin.mtls-pg.svc.cluster.local" && port == 8000 {
		return Setting{Name: "httpbin.mtls-pg", Mode: "ISTIO_MUTUAL"}
	}
	return Setting{}
}

// workloadRecord is storyRecord with the workloads a --kubernetes serve
// records (resolved: false leaves them out, as without --kubernetes).
func workloadRecord(i int, at time.Time, legacyClient, resolved bool, head *evidence.Link) *evidence.Record {
	r := storyRecord(i, at, legacyClient, &evidence.Link{})
	if resolved {
		r.Destination.Workload = httpbinW
		r.Source.Workload = sleepW
		if legacyClient {
			r.Source.Workload = legacyW
		}
	}
	r.Chain = evidence.Chain{}
	*head = head.Link(r)
	return r
}

// TestConfiguredReports runs tls-check and strict-readiness over a real
// store with and without a fixed configuration: day one has sleep's mTLS
// and legacy's plaintext, day two sleep's mTLS only.
func TestConfiguredReports(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, resolved bool) evidence.Store {
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		var head evidence.Link
		var batch []*evidence.Record
		for i := range 60 {
			batch = append(batch, workloadRecord(i, t0.Add(time.Duration(i)*time.Minute), i%3 == 0, resolved, &head))
		}
		for i := range 30 {
			batch = append(batch, workloadRecord(100+i, t0.Add(24*time.Hour+time.Duration(i)*time.Minute), false, resolved, &head))
		}
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
		return s
	}
	day1, day2, day3 := t0, t0.Add(24*time.Hour), t0.Add(48*time.Hour)
	strict := func() *fixedConfig { return &fixedConfig{policy: "default.mtls-pg", mode: "STRICT"} }
	auto := &Setting{}
	mutual := &Setting{Name: "httpbin.mtls-pg", Mode: "ISTIO_MUTUAL"}
	for _, tc := range []struct {
		name      string
		resolved  bool
		cfg       *fixedConfig // nil: no Configuration
		since     time.Time
		until     time.Time
		status    string
		authn     *Setting
		rule      *Setting
		legacy    *evidence.Workload // the legacy client's, in tls-check
		legacyDR  *Setting
		sleepDR   *Setting
		noSidecar bool   // strict-readiness marks the blocking client
		reason    string // strict-readiness's
		asked     string // the configuration's first question
	}{
		{name: "no configuration", resolved: true, since: day1, until: day2, status: StatusPlaintext,
			reason: "1 client still sends plaintext"},
		{name: "STRICT with plaintext is CONFLICT", resolved: true, cfg: strict(), since: day1, until: day2,
			status: StatusConflict, authn: &Setting{Name: "default.mtls-pg", Mode: "STRICT"}, rule: mutual,
			legacy: legacyW, legacyDR: auto, sleepDR: mutual, noSidecar: true,
			reason: "1 client still sends plaintext; 1 client (legacy/deployment/legacy) runs without a sidecar and will break under STRICT",
			asked:  "peer mtls-pg httpbin 8000"},
		{name: "PERMISSIVE with plaintext stays PLAINTEXT", resolved: true, cfg: &fixedConfig{policy: "default.mtls-pg", mode: "PERMISSIVE"},
			since: day1, until: day2, status: StatusPlaintext, authn: &Setting{Name: "default.mtls-pg", Mode: "PERMISSIVE"}, rule: mutual,
			legacy: legacyW, legacyDR: auto, sleepDR: mutual, noSidecar: true,
			reason: "1 client still sends plaintext; 1 client (legacy/deployment/legacy) runs without a sidecar and will break under STRICT",
			asked:  "peer mtls-pg httpbin 8000"},
		{name: "STRICT with mTLS only is OK", resolved: true, cfg: strict(), since: day2, until: day3,
			status: StatusOK, authn: &Setting{Name: "default.mtls-pg", Mode: "STRICT"}, rule: mutual, sleepDR: mutual,
			asked: "peer mtls-pg httpbin 8000"},
		// Records without workloads: the row's namespace from its host,
		// no labels, so the workload policy cannot be matched; clients'
		// namespaces from their SPIFFE IDs (legacy has none: the
		// destination's).
		{name: "unresolved records", resolved: false, cfg: strict(), since: day1, until: day2,
			status: StatusPlaintext, authn: &Setting{Mode: "PERMISSIVE"}, rule: mutual, legacyDR: mutual, sleepDR: mutual,
			reason: "1 client still sends plaintext", asked: "peer mtls-pg - 8000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, tc.resolved)
			var cfg Configuration
			if tc.cfg != nil {
				cfg = tc.cfg
			}
			rep, err := TLSCheck(ctx, s, Query{Since: tc.since, Until: tc.until, Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Rows) != 1 {
				t.Fatalf("rows = %+v, want httpbin's", rep.Rows)
			}
			row := rep.Rows[0]
			if row.Status != tc.status || !sameSetting(row.AuthnPolicy, tc.authn) || !sameSetting(row.DestinationRule, tc.rule) {
				t.Errorf("row: status %s, authn %+v, rule %+v; want %s, %+v, %+v", row.Status, row.AuthnPolicy, row.DestinationRule, tc.status, tc.authn, tc.rule)
			}
			for _, c := range row.Clients {
				wantW, wantDR := sleepW, tc.sleepDR
				// Resolved, legacy (no principal) is keyed by its workload.
				if c.Client == legacy || c.Client == "workload:legacy/Deployment/legacy" {
					wantW, wantDR = tc.legacy, tc.legacyDR
				}
				if tc.cfg == nil || !tc.resolved {
					wantW = nil
				}
				if !sameWorkload(c.Workload, wantW) || !sameSetting(c.DestinationRule, wantDR) {
					t.Errorf("client %s: workload %+v, rule %+v; want %+v, %+v", c.Client, c.Workload, c.DestinationRule, wantW, wantDR)
				}
			}
			// The destination is named by its workload where the records
			// have one and a configuration is given, else by its SPIFFE
			// ID's service account.
			wantName := "httpbin"
			if tc.cfg != nil && tc.resolved {
				wantName = "mtls-pg/deployment/httpbin"
			}
			if row.Workload != wantName {
				t.Errorf("row's workload %q, want %q", row.Workload, wantName)
			}
			if tc.cfg != nil && (len(tc.cfg.asked) == 0 || tc.cfg.asked[0] != tc.asked) {
				t.Errorf("configuration asked %q, want %q first", tc.cfg.asked, tc.asked)
			}
			if tc.cfg == nil {
				b, err := json.Marshal(rep)
				if err != nil {
					t.Fatal(err)
				}
				for _, field := range []string{"authn_policy", "destination_rule", "workload\":{"} {
					if strings.Contains(string(b), field) {
						t.Errorf("without a configuration the report has %s: %s", field, b)
					}
				}
			}

			for _, dest := range []string{httpbin, httpbinID} {
				sr, err := StrictReadiness(ctx, s, dest, tc.since, tc.until, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if tc.reason == "" {
					if !sr.Ready || len(sr.Blocking) != 0 {
						t.Errorf("%s: %+v, want ready", dest, sr)
					}
				} else if sr.Ready || len(sr.Blocking) != 1 || sr.Reason != tc.reason || sr.Blocking[0].NoSidecar != tc.noSidecar {
					t.Errorf("%s: ready %v, reason %q, blocking %+v; want reason %q, no_sidecar %v", dest, sr.Ready, sr.Reason, sr.Blocking, tc.reason, tc.noSidecar)
				} else if want := tc.legacy; !sameWorkload(sr.Blocking[0].Workload, want) || !sameSetting(sr.Blocking[0].DestinationRule, tc.legacyDR) {
					t.Errorf("%s: blocking client's workload %+v, rule %+v; want %+v, %+v", dest, sr.Blocking[0].Workload, sr.Blocking[0].DestinationRule, want, tc.legacyDR)
				}
				if tc.cfg == nil && sr.AuthnPolicy != nil || tc.cfg != nil && sr.AuthnPolicy == nil {
					t.Errorf("%s: authn policy %+v with configuration %v", dest, sr.AuthnPolicy, tc.cfg != nil)
				}
			}

			// strict-readiness -n mtls-pg: the namespace's verdict and its
			// destination's reason say the same of the blocking client.
			nr, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{Namespace: "mtls-pg", Since: tc.since, Until: tc.until, Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if len(nr.Namespaces) != 1 || len(nr.Namespaces[0].Workloads) != 1 {
				t.Fatalf("namespace report %+v, want mtls-pg with httpbin", nr)
			}
			ns, d := nr.Namespaces[0], nr.Namespaces[0].Workloads[0]
			if d.Workload != wantName {
				t.Errorf("namespace report's destination named %q, want %q", d.Workload, wantName)
			}
			breaks := "; 1 client (legacy/deployment/legacy) runs without a sidecar and will break under STRICT"
			if got := strings.HasSuffix(ns.Verdict, breaks) && strings.HasSuffix(d.Reason, breaks); got != tc.noSidecar {
				t.Errorf("namespace verdict %q, destination reason %q: says legacy will break %v, want %v", ns.Verdict, d.Reason, got, tc.noSidecar)
			}
			if tc.reason != "" && (len(ns.Blocking) != 1 || !sameWorkload(ns.Blocking[0].Workload, tc.legacy) || ns.Blocking[0].NoSidecar != tc.noSidecar ||
				!sameWorkload(d.Blocking[0].Workload, tc.legacy)) {
				t.Errorf("namespace blocking %+v, destination blocking %+v; want legacy's workload %+v", ns.Blocking, d.Blocking, tc.legacy)
			}
		})
	}
}

// TestConfiguredReportsRetention: an example record that retention
// removed leaves the row to its namespace (no workload, no port).
func TestConfiguredReportsRetention(t *testing.T) {
	ctx := context.Background()
	r := goneReader{&groupsReader{groups: []evidence.Group{
		{Source: legacy, DestinationHost: httpbin, Verdict: evidence.Plaintext, Allowed: true, Count: 3, FirstSeen: t0, LastSeen: t0, ExampleID: "gone"},
	}}}
	cfg := &fixedConfig{policy: "default.mtls-pg", mode: "STRICT"}
	rep, err := TLSCheck(ctx, r, Query{Since: t0, Until: t0.Add(time.Hour), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Status != StatusPlaintext || rep.Rows[0].Clients[0].Workload != nil {
		t.Fatalf("rows %+v", rep.Rows)
	}
	if want := "peer mtls-pg - 0"; cfg.asked[0] != want {
		t.Errorf("asked %q, want %q first", cfg.asked, want)
	}
}

func TestServiceHost(t *testing.T) {
	for _, tc := range []struct {
		authority, ns, host string
		port                uint32
	}{
		{"httpbin.mtls-pg:8000", "", "httpbin.mtls-pg.svc.cluster.local", 8000},
		{"httpbin.mtls-pg.svc:8000", "x", "httpbin.mtls-pg.svc.cluster.local", 8000},
		{"httpbin.mtls-pg.svc.cluster.local", "", "httpbin.mtls-pg.svc.cluster.local", 80},
		{"HTTPBIN:9080", "mtls-pg", "httpbin.mtls-pg.svc.cluster.local", 9080},
		{"httpbin", "", "httpbin", 80},
		{"10.0.0.1:8080", "mtls-pg", "10.0.0.1", 8080},
		{"[fd00::1]:8443", "mtls-pg", "fd00::1", 8443},
		{"api.example.co.uk:443", "mtls-pg", "api.example.co.uk", 443},
		{"httpbin:notaport", "mtls-pg", "httpbin.mtls-pg.svc.cluster.local", 80},
	} {
		host, port := serviceHost(tc.authority, tc.ns)
		if host != tc.host || port != tc.port {
			t.Errorf("serviceHost(%q, %q) = %q, %d; want %q, %d", tc.authority, tc.ns, host, port, tc.host, tc.port)
		}
	}
}

// goneReader has no records any more: retention removed them.
type goneReader struct{ *groupsReader }

func (goneReader) Get(_ context.Context, id string) (*evidence.Record, error) {
	return nil, fmt.Errorf("record %s: %w", id, evidence.ErrNotFound)
}

func sameWorkload(a, b *evidence.Workload) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameSetting(a, b *Setting) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
