package report

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

func TestStrictReadiness(t *testing.T) {
	type blocker struct {
		client  string
		count   int64
		example string
	}
	tests := []struct {
		name     string
		dest     string
		groups   []evidence.Group
		ready    bool
		reason   string
		total    int64
		hosts    []string
		blocking []blocker
	}{
		{
			name: "no traffic is not ready", dest: httpbin,
			groups: []evidence.Group{g(sleepID, "other:80", "", evidence.MTLS, true, 1, 0, 1, "x")},
			reason: "no traffic to httpbin.mtls-pg:8000 since 2025-06-01T12:00:00Z", hosts: []string{},
		},
		{
			name: "every request mTLS", dest: httpbin, ready: true, total: 12, hosts: []string{httpbin},
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 10, 0, 1, "a"),
				g("spiffe://cluster.local/ns/x/sa/y", httpbin, httpbinID, evidence.MTLS, false, 2, 0, 1, "b"),
			},
			reason: "every request was mTLS: 12 requests from 2 clients",
		},
		{
			name: "plaintext clients block, most requests first", dest: httpbin, total: 19, hosts: []string{httpbin},
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 10, 0, 1, "a"),
				g("10.0.0.1", httpbin, "", evidence.Plaintext, true, 2, 0, 1, "p1"),
				g("10.0.0.2", httpbin, "", evidence.Plaintext, true, 5, 0, 1, "p2"),
				g("10.0.0.2", httpbin, httpbinID, evidence.MTLS, true, 2, 0, 9, "m2"),
			},
			reason:   "2 clients still send plaintext",
			blocking: []blocker{{"10.0.0.2", 5, "p2"}, {"10.0.0.1", 2, "p1"}},
		},

		{
			name: "TLS without a client certificate blocks", dest: httpbin, total: 1, hosts: []string{httpbin},
			groups:   []evidence.Group{g("10.0.0.3", httpbin, httpbinID, evidence.TLSServerOnly, true, 1, 0, 1, "t")},
			reason:   "1 client still sends TLS without a client certificate",
			blocking: []blocker{{"10.0.0.3", 1, "t"}},
		},
		{
			name: "suspect requests block", dest: httpbin, total: 3, hosts: []string{httpbin},
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLSMismatch, true, 1, 0, 1, "mm"),
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "ok"),
				g("10.0.0.4", httpbin, httpbinID, evidence.XFCCUnverified, false, 1, 0, 1, "xu"),
			},
			reason:   "2 clients sent suspect requests (mtls_mismatch or xfcc_unverified)",
			blocking: []blocker{{"10.0.0.4", 1, "xu"}, {sleepID, 1, "mm"}},
		},
		{
			name: "plaintext and suspect", dest: httpbin, total: 2, hosts: []string{httpbin},
			groups: []evidence.Group{
				g("10.0.0.1", httpbin, "", evidence.Plaintext, true, 1, 0, 1, "p"),
				g("10.0.0.4", httpbin, httpbinID, evidence.XFCCUnverified, true, 1, 0, 1, "xu"),
			},
			reason:   "1 client still sends plaintext, and 1 client sent suspect requests",
			blocking: []blocker{{"10.0.0.1", 1, "p"}, {"10.0.0.4", 1, "xu"}},
		},
		{
			// In PERMISSIVE mode plaintext carries no destination principal:
			// asked by principal, the report must still see it.
			name: "a principal is widened to its hosts", dest: httpbinID, total: 4, hosts: []string{httpbin},
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 3, 0, 1, "a"),
				g(legacy, httpbin, "", evidence.Plaintext, true, 1, 0, 1, "p"),
				g(legacy, "elsewhere:80", "", evidence.Plaintext, true, 9, 0, 1, "q"),
			},
			reason:   "1 client still sends plaintext",
			blocking: []blocker{{legacy, 1, "p"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := StrictReadiness(context.Background(), &groupsReader{groups: tc.groups}, tc.dest, t0, t0.Add(time.Hour), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []blocker
			for _, b := range rep.Blocking {
				got = append(got, blocker{b.Client.Client, b.Count, b.ExampleID})
			}
			if rep.Ready != tc.ready || !strings.HasPrefix(rep.Reason, tc.reason) || rep.Total != tc.total ||
				!slices.Equal(rep.Hosts, tc.hosts) || !slices.Equal(got, tc.blocking) {
				t.Errorf("got ready=%v reason=%q total=%d hosts=%q blocking=%+v\nwant ready=%v reason=%q... total=%d hosts=%q blocking=%+v",
					rep.Ready, rep.Reason, rep.Total, rep.Hosts, got, tc.ready, tc.reason, tc.total, tc.hosts, tc.blocking)
			}
			if rep.Destination != tc.dest || !rep.Since.Equal(t0) || !rep.Until.Equal(t0.Add(time.Hour)) || rep.Blocking == nil {
				t.Errorf("report header = %q %s..%s blocking nil: %v", rep.Destination, rep.Since, rep.Until, rep.Blocking == nil)
			}
		})
	}
}

func TestStrictReadinessInput(t *testing.T) {
	r := &groupsReader{}
	if _, err := StrictReadiness(context.Background(), r, "", t0, time.Time{}, nil); !errors.Is(err, ErrNoDestination) {
		t.Errorf("no destination: %v, want ErrNoDestination", err)
	}
	var fe *evidence.FilterError
	if _, err := StrictReadiness(context.Background(), r, "a\x00b", t0, time.Time{}, nil); !errors.As(err, &fe) || fe.Field != "destination" {
		t.Errorf("NUL destination: %v, want a FilterError on destination", err)
	}
	if _, err := TLSCheck(context.Background(), r, Query{Since: t0, Until: t0}); !errors.As(err, &fe) || fe.Field != "until" {
		t.Errorf("empty window: %v, want a FilterError on until", err)
	}
	if len(r.queries) != 0 {
		t.Errorf("invalid queries reached the store: %+v", r.queries)
	}
	// A zero until is now, and the report says so.
	rep, err := StrictReadiness(context.Background(), r, httpbin, t0, time.Time{}, nil)
	if err != nil || time.Since(rep.Until) > time.Minute {
		t.Errorf("until = %s, %v; want about now", rep.Until, err)
	}
}

// TestBlockingClientTimes: a blocking client's first and last seen and its
// example are those of its blocking requests ("has it stopped?"), its
// counts and total all of its requests.
func TestBlockingClientTimes(t *testing.T) {
	r := &groupsReader{groups: []evidence.Group{
		g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 2, 30, 50, "later-mtls"),
		g(sleepID, httpbin, httpbinID, evidence.MTLSMismatch, false, 1, 10, 20, "mismatch"),
	}}
	rep, err := StrictReadiness(context.Background(), r, httpbin, t0, t0.Add(time.Hour), nil)
	if err != nil || len(rep.Blocking) != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	b := rep.Blocking[0]
	if b.Count != 1 || b.Total != 3 || b.Allowed != 2 || b.Denied != 1 || !equalCounts(b.Counts, counts(evidence.MTLS, 2, evidence.MTLSMismatch, 1)) ||
		!b.FirstSeen.Equal(t0.Add(10*time.Minute)) || !b.LastSeen.Equal(t0.Add(20*time.Minute)) || b.ExampleID != "mismatch" {
		t.Errorf("blocking client = %+v", b)
	}
}

// TestWidening: a host is one Aggregate; a principal that served other
// hosts is one more, over every destination, of which only those hosts
// are kept.
func TestWidening(t *testing.T) {
	groups := []evidence.Group{
		g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 3, 0, 1, "a"),
		g(legacy, httpbin, "", evidence.Plaintext, true, 1, 0, 1, "b"),
		g(legacy, "other:80", "", evidence.Plaintext, true, 7, 0, 1, "c"),
	}
	for _, tc := range []struct {
		dest    string
		queries []string
		total   int64
	}{
		{httpbin, []string{httpbin}, 4},
		{httpbinID, []string{httpbinID, ""}, 4},
		{"spiffe://cluster.local/ns/nobody/sa/none", []string{"spiffe://cluster.local/ns/nobody/sa/none"}, 0},
	} {
		r := &groupsReader{groups: groups}
		rep, err := StrictReadiness(context.Background(), r, tc.dest, t0, t0.Add(time.Hour), nil)
		var asked []string
		for _, q := range r.queries {
			asked = append(asked, q.Destination)
		}
		if err != nil || rep.Total != tc.total || !slices.Equal(asked, tc.queries) {
			t.Errorf("%s: total %d, queries %q, %v; want %d, %q", tc.dest, rep.Total, asked, err, tc.total, tc.queries)
		}
	}
}
