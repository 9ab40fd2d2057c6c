package report

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// benchMesh is a day of traffic over a few hundred edges: 20 namespaces
// of 10 services, each called over mTLS by its namespace's frontend every
// 10 minutes, one in three also in plaintext by a legacy client, and one
// in ten by a second client.
func benchMesh(w0 time.Time) *mesh {
	m := &mesh{}
	for step := range 24 * 6 {
		at := w0.Add(time.Duration(step) * 10 * time.Minute)
		for ns := range 20 {
			for svc := range 10 {
				host := fmt.Sprintf("svc%d.ns%d:8080", svc, ns)
				principal := fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/svc%d", ns, svc)
				m.send(1, at, fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/frontend", ns), host, principal, evidence.MTLS)
				if svc%3 == 0 {
					m.send(1, at.Add(time.Second), fmt.Sprintf("10.1.%d.%d", ns, svc), host, "", evidence.Plaintext)
				}
				if svc%10 == 0 {
					m.send(1, at.Add(2*time.Second), "spiffe://cluster.local/ns/batch/sa/job", host, principal, evidence.MTLS)
				}
			}
		}
	}
	return m
}

// BenchmarkReports reads the namespace report of every namespace and the
// time series of a day over a store of a few hundred edges, in both
// stores (PostgreSQL with MESHPROOF_TEST_POSTGRES).
func BenchmarkReports(b *testing.B) {
	ctx := context.Background()
	w0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	w1 := w0.Add(24 * time.Hour)
	m := benchMesh(w0)
	for name, open := range realStores() {
		b.Run(name, func(b *testing.B) {
			s := open(b)
			for i := 0; i < len(m.batch); i += 1000 {
				if err := s.Append(ctx, m.batch[i:min(i+1000, len(m.batch))]); err != nil {
					b.Fatal(err)
				}
			}
			groups, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: w0, Until: w1})
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%d records, %d groups", len(m.batch), len(groups))
			b.Run("namespaces-all", func(b *testing.B) {
				cpu := cpuTime()
				for b.Loop() {
					if _, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{All: true, Since: w0.Add(12 * time.Hour), Until: w1}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu)/time.Microsecond)/float64(b.N)/1000, "cpu-ms/op")
			})
			// tls-check of the day, and with a configuration: one Get
			// per client for the example records (the configuration's
			// own answers are a table lookup here).
			for name, cfg := range map[string]Configuration{"tls-check": nil, "tls-check-configured": &fixedConfig{policy: "default.ns0", mode: "STRICT"}} {
				b.Run(name, func(b *testing.B) {
					cpu := cpuTime()
					for b.Loop() {
						if f, ok := cfg.(*fixedConfig); ok {
							f.asked = f.asked[:0]
						}
						if _, err := TLSCheck(ctx, s, Query{Since: w0, Until: w1, Config: cfg}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64((cpuTime()-cpu)/time.Microsecond)/float64(b.N)/1000, "cpu-ms/op")
				})
			}
			for _, tc := range []struct {
				name         string
				since, until time.Time
			}{
				{"timeseries-day", w0, w1},                  // 96 points of 15 minutes
				{"timeseries-hour", w1.Add(-time.Hour), w1}, // 60 points of a minute
			} {
				b.Run(tc.name, func(b *testing.B) {
					cpu := cpuTime()
					for b.Loop() {
						if _, err := TimeseriesOf(ctx, s, TimeseriesQuery{Since: tc.since, Until: tc.until}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64((cpuTime()-cpu)/time.Microsecond)/float64(b.N)/1000, "cpu-ms/op")
				})
				// The reads alone: AggregateSeries, and the other way,
				// Aggregate once per point.
				step, err := chooseStep(tc.since, tc.until, 0)
				if err != nil {
					b.Fatal(err)
				}
				sq := evidence.SeriesQuery{Since: tc.since, Until: tc.until, Step: step}
				b.Run(tc.name+"-read-series", func(b *testing.B) {
					cpu := cpuTime()
					for b.Loop() {
						if _, err := s.AggregateSeries(ctx, sq); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64((cpuTime()-cpu)/time.Microsecond)/float64(b.N)/1000, "cpu-ms/op")
				})
				b.Run(tc.name+"-read-aggregate-per-point", func(b *testing.B) {
					cpu := cpuTime()
					bounds := sq.Boundaries()
					for b.Loop() {
						for i := range len(bounds) - 1 {
							if _, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: bounds[i], Until: bounds[i+1]}); err != nil {
								b.Fatal(err)
							}
						}
					}
					b.ReportMetric(float64((cpuTime()-cpu)/time.Microsecond)/float64(b.N)/1000, "cpu-ms/op")
				})
			}
		})
	}
}

// cpuTime is the CPU time this process used (the machine may be busy:
// wall time alone says little); PostgreSQL's own is not in it.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
