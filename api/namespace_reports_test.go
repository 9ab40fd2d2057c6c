package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence/report"
)

// TestNamespaceReportsTellTheStory: the story's namespace is not ready
// while the legacy client sent plaintext, ready since; the client's
// methods read the same answers.
func TestNamespaceReportsTellTheStory(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Minute)
	store := openStore(t)
	appendChained(t, store, storyRecords(now))
	ts := newTestServer(t, store, Config{}, now)
	c, err := client.New(ts.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var nr report.NamespaceReadinessReport
	resp := ts.get(t, "/v1/reports/strict-readiness?namespace=mtls-pg&since=2d&until=1d", "")
	resp.decode(t, &nr)
	if resp.status != http.StatusOK || len(nr.Namespaces) != 1 || nr.Namespaces[0].Ready || len(nr.Namespaces[0].Workloads) != 1 ||
		nr.Namespaces[0].Workloads[0].Workload != "httpbin" || nr.Namespaces[0].Workloads[0].Status != report.DestinationNotReady ||
		nr.Namespaces[0].Verdict != "not ready: 1 client still sends plaintext to 1 of 1 destination" {
		t.Errorf("two days ago: %d %s", resp.status, resp.body)
	}
	nr, err = c.NamespaceReadiness(ctx, "", true, "1d", "")
	if err != nil || len(nr.Namespaces) != 1 || !nr.Namespaces[0].Ready || nr.Summary != "1 of 1 destination ready in 1 namespace" ||
		!nr.KnownSince.Equal(now.Add(-report.DefaultKnown)) || nr.Namespaces[0].Total != 60 {
		t.Errorf("the last day, every namespace: %+v, %v", nr, err)
	}
	tc, err := c.TLSCheck(ctx, "2d", "", "", "mtls-pg")
	if err != nil || len(tc.Rows) != 1 || tc.Rows[0].Total != 150 {
		t.Errorf("tls-check of mtls-pg: %+v, %v", tc, err)
	}
	if tc, err := c.TLSCheck(ctx, "2d", "", "", "legacy"); err != nil || len(tc.Rows) != 0 {
		t.Errorf("tls-check of legacy (a source namespace only): %+v, %v", tc, err)
	}

	series, err := c.Timeseries(ctx, client.TimeseriesQuery{Since: "2d", Step: "1h"})
	if err != nil || len(series.Series) != 1 || series.StepSeconds != 3600 || series.Truncated {
		t.Fatalf("timeseries: %+v, %v", series, err)
	}
	s := series.Series[0]
	var total, plain, mtls int64
	for _, p := range s.Points {
		total, plain, mtls = total+p.Total, plain+p.Plaintext, mtls+p.MTLS
	}
	if s.Destination != httpbinID || s.Namespace != "mtls-pg" || s.Workload != "httpbin" || total != 150 || plain != 30 || mtls != 120 ||
		len(s.Points) != 48+min(1, int(now.Sub(now.Truncate(time.Hour)))) {
		t.Errorf("timeseries: %s %s %s: %d points, %d requests, %d plaintext, %d mtls", s.Destination, s.Namespace, s.Workload,
			len(s.Points), total, plain, mtls)
	}
	if ts, err := c.Timeseries(ctx, client.TimeseriesQuery{Namespace: "legacy"}); err != nil || len(ts.Series) != 0 || ts.StepSeconds != 15*60 {
		t.Errorf("timeseries of legacy: %+v, %v", ts, err)
	}
}

// TestReportInputErrors: every bad input of the reports is a 400 that
// names the parameter at fault.
func TestReportInputErrors(t *testing.T) {
	ts := newTestServer(t, openStore(t), Config{}, time.Time{})
	long := strings.Repeat("n", report.MaxNamespace+1)
	for target, param := range map[string]string{
		"strict-readiness":                                      "destination",
		"strict-readiness?all_namespaces=false":                 "destination",
		"strict-readiness?destination=x&namespace=y":            "destination",
		"strict-readiness?destination=x&all_namespaces=true":    "destination",
		"strict-readiness?namespace=y&all_namespaces=true":      "namespace",
		"strict-readiness?all_namespaces=yes":                   "all_namespaces",
		"strict-readiness?namespace=" + long:                    "namespace",
		"strict-readiness?namespace=a%00":                       "namespace",
		"strict-readiness?namespace=a&since=1h&until=2h":        "until",
		"strict-readiness?namespace=a&since=1h&known_since=30m": "known_since",
		"strict-readiness?namespace=a&known_since=yesterday":    "known_since",
		"strict-readiness?destination=x&known_since=30d":        "known_since",
		"strict-readiness?namespace=a&namespace=b":              "namespace",
		"tls-check?destination=x&namespace=y":                   "namespace",
		"tls-check?namespace=" + long:                           "namespace",
		"timeseries?destination=x&namespace=y":                  "namespace",
		"timeseries?namespace=" + long:                          "namespace",
		"timeseries?since=1h&until=2h":                          "until",
		"timeseries?since=30d&step=1m":                          "step",
		"timeseries?step=30s":                                   "step",
		"timeseries?step=90s":                                   "step",
		"timeseries?step=bogus":                                 "step",
		"timeseries?step=-1h":                                   "step",
		"timeseries?since=20000d":                               "since",
		"timeseries?destination=a%00":                           "destination",
		"timeseries?bogus=1":                                    "bogus",
	} {
		resp := ts.get(t, "/v1/reports/"+target, "")
		if e := resp.errorOf(t); resp.status != http.StatusBadRequest || e.Parameter != param {
			t.Errorf("%.80s: %d %s, want 400 naming %s", target, resp.status, resp.body, param)
		}
	}
	resp := ts.get(t, "/v1/reports/strict-readiness", "")
	if msg := resp.errorOf(t).Error; !strings.Contains(msg, "namespace") || !strings.Contains(msg, "all_namespaces") {
		t.Errorf("no parameter: %q does not name all three", msg)
	}
}
