//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"
)

// sample is one measured run of one target.
type sample struct {
	RPS    float64       `json:"rps"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	Checks int           `json:"checks"`
	Errors int           `json:"errors"`
	// ServerCPU runs from the start of the measured run to the server's
	// exit after SIGTERM, so that work a Check leaves behind (meshproof's
	// evidence records still queued when ghz ends) is counted.
	ServerCPU float64 `json:"server_cpu_us_per_check"`
	// ServerCPURun is the CPU while ghz ran only.
	ServerCPURun float64 `json:"server_cpu_run_us_per_check"`
	ClientCPU    float64 `json:"ghz_cpu_us_per_check"` // the load generator shares the cores
}

// String is the one-line progress form.
func (s sample) String() string {
	return fmt.Sprintf("%8.0f rps  p50 %-9s p99 %-9s %6.1f µs CPU/Check  %d errors",
		s.RPS, round(s.P50), round(s.P99), s.ServerCPU, s.Errors)
}

func round(d time.Duration) time.Duration { return d.Round(time.Microsecond) }

// targetReport is one target's medians across rounds and the rounds themselves.
type targetReport struct {
	Name   string `json:"name"`
	Median sample `json:"median"`
	// Errors is the sum over rounds: a median would hide a round that failed.
	Errors int `json:"errors"`
	// ThroughputVsCeiling is median rps over the ceiling's median rps.
	ThroughputVsCeiling float64 `json:"throughput_vs_ceiling"`
	// RoundsVsCeiling is the median over rounds of the round's rps over
	// the ceiling's in the same round: a machine whose speed drifts
	// between rounds moves both sides of each ratio alike.
	RoundsVsCeiling float64  `json:"rounds_vs_ceiling"`
	Rounds          []sample `json:"rounds"`
}

// report is the outcome of a whole run, with what is needed to reproduce it.
type report struct {
	Date        time.Time      `json:"date"`
	GhzVersion  string         `json:"ghz_version"`
	GoVersion   string         `json:"go_version"`
	CPUs        int            `json:"cpus"`
	ClockTicks  int            `json:"clk_tck"`
	Requests    int            `json:"requests"`
	Concurrency int            `json:"concurrency"`
	Connections int            `json:"connections"`
	Rounds      int            `json:"rounds"`
	Targets     []targetReport `json:"targets"`
}

// summarize takes the per-metric median of each target's rounds. Medians are
// taken metric by metric, so a row may mix rounds; with few rounds that is
// more robust to one noisy round than any single round would be.
func summarize(cfg config, ts []target, samples map[string][]sample, ticks int, ghz string) report {
	r := report{
		Date:        time.Now().UTC().Truncate(time.Second),
		GhzVersion:  ghz,
		GoVersion:   runtime.Version(),
		CPUs:        runtime.NumCPU(),
		ClockTicks:  ticks,
		Requests:    cfg.Requests,
		Concurrency: cfg.Concurrency,
		Connections: cfg.Connections,
		Rounds:      cfg.Rounds,
	}
	for _, t := range ts {
		ss := samples[t.name]
		tr := targetReport{Name: t.name, Rounds: ss, Median: sample{
			RPS:          median(ss, func(s sample) float64 { return s.RPS }),
			P50:          time.Duration(median(ss, func(s sample) float64 { return float64(s.P50) })),
			P99:          time.Duration(median(ss, func(s sample) float64 { return float64(s.P99) })),
			Checks:       int(median(ss, func(s sample) float64 { return float64(s.Checks) })),
			ServerCPU:    median(ss, func(s sample) float64 { return s.ServerCPU }),
			ServerCPURun: median(ss, func(s sample) float64 { return s.ServerCPURun }),
			ClientCPU:    median(ss, func(s sample) float64 { return s.ClientCPU }),
		}}
		for _, s := range ss {
			tr.Errors += s.Errors
		}
		tr.Median.Errors = tr.Errors
		r.Targets = append(r.Targets, tr)
	}
	if base := r.Targets[0].Median.RPS; base > 0 {
		for i := range r.Targets {
			r.Targets[i].ThroughputVsCeiling = r.Targets[i].Median.RPS / base
		}
	}
	ceiling := r.Targets[0].Rounds
	for i := range r.Targets {
		var ratios []sample
		for j, s := range r.Targets[i].Rounds {
			if j < len(ceiling) && ceiling[j].RPS > 0 {
				ratios = append(ratios, sample{RPS: s.RPS / ceiling[j].RPS})
			}
		}
		r.Targets[i].RoundsVsCeiling = median(ratios, func(s sample) float64 { return s.RPS })
	}
	return r
}

// median of one metric over the samples; the mean of the middle two when even.
func median(ss []sample, metric func(sample) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = metric(s)
	}
	slices.Sort(v)
	mid := len(v) / 2
	if len(v)%2 == 0 {
		return (v[mid-1] + v[mid]) / 2
	}
	return v[mid]
}

func (r report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r report) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "\nghz %s, -n %d -c %d --connections %d, median of %d round(s), %d CPUs, %s\n\n",
		r.GhzVersion, r.Requests, r.Concurrency, r.Connections, r.Rounds, r.CPUs, r.GoVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trps\tp50\tp99\tCPU µs/Check\terrors\trps vs ceiling\tround by round\t")
	for _, t := range r.Targets {
		m := t.Median
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.1f\t%d\t%.2f\t%.2f\t\n",
			t.Name, m.RPS, round(m.P50), round(m.P99), m.ServerCPU, t.Errors, t.ThroughputVsCeiling, t.RoundsVsCeiling)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ceiling := r.Targets[0].Median
	fmt.Fprintln(w)
	for _, t := range r.Targets[1:] {
		fmt.Fprintf(w, "%s: %.2f of the ceiling's throughput (%.2f round by round), %.1f µs server CPU per Check (ceiling %.1f µs, +%.1f µs)\n",
			t.Name, t.ThroughputVsCeiling, t.RoundsVsCeiling, t.Median.ServerCPU, ceiling.ServerCPU, t.Median.ServerCPU-ceiling.ServerCPU)
	}
	return nil
}
