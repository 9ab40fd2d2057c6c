//go:build linux

package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    int64
		wantErr bool
	}{
		{
			name: "plain",
			stat: "42 (ceiling) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 8 0 1234 0 0",
			want: 281,
		},
		{
			// A command name may hold spaces and parentheses; fields are
			// counted after the last ')'.
			name: "name with spaces and parens",
			stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 9 0 0",
			want: 7,
		},
		{name: "truncated", stat: "7 (x) R 1 7 7", wantErr: true},
		{name: "no name", stat: "garbage", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ticks = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCPUTicksOwnProcess(t *testing.T) {
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestGhzReport(t *testing.T) {
	tests := []struct {
		name       string
		json       string
		wantErrors int
		wantP99    time.Duration
		wantInMsg  string
	}{
		{
			name: "all OK",
			json: `{"count":20,"rps":100.5,"statusCodeDistribution":{"OK":20},"errorDistribution":{},
				"latencyDistribution":[{"percentage":50,"latency":1000},{"percentage":99,"latency":9000}]}`,
			wantP99: 9 * time.Microsecond,
		},
		{
			// What ghz v0.121.0 prints when every Check times out.
			name: "all failed",
			json: `{"count":48,"rps":12335.7,"statusCodeDistribution":{"DeadlineExceeded":48},
				"errorDistribution":{"rpc error: code = DeadlineExceeded desc = context deadline exceeded":40,
				"rpc error: code = DeadlineExceeded desc = context deadline exceeded while waiting for connections to become ready":8},
				"latencyDistribution":null}`,
			wantErrors: 48,
			wantInMsg:  "DeadlineExceeded x48",
		},
		{
			name:       "some failed",
			json:       `{"count":10,"statusCodeDistribution":{"OK":7,"Unavailable":3},"errorDistribution":{"boom":3}}`,
			wantErrors: 3,
			wantInMsg:  `"boom" x3`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ghzReport
			if err := json.Unmarshal([]byte(tt.json), &r); err != nil {
				t.Fatal(err)
			}
			if got := r.errors(); got != tt.wantErrors {
				t.Errorf("errors = %d, want %d", got, tt.wantErrors)
			}
			if got := r.percentile(99); got != tt.wantP99 {
				t.Errorf("p99 = %v, want %v", got, tt.wantP99)
			}
			if msg := r.failures(); !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("failures() = %q, want it to contain %q", msg, tt.wantInMsg)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	rps := func(s sample) float64 { return s.RPS }
	tests := []struct {
		name string
		rps  []float64
		want float64
	}{
		{name: "none", want: 0},
		{name: "one", rps: []float64{5}, want: 5},
		{name: "odd, unsorted", rps: []float64{9, 1, 5}, want: 5},
		{name: "even", rps: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ss []sample
			for _, v := range tt.rps {
				ss = append(ss, sample{RPS: v})
			}
			if got := median(ss, rps); got != tt.want {
				t.Errorf("median = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummarizeRatiosAndErrors(t *testing.T) {
	ts := []target{{name: "ceiling"}, {name: "meshproof"}}
	samples := map[string][]sample{
		"ceiling":   {{RPS: 1000}, {RPS: 1200}, {RPS: 1100}},
		"meshproof": {{RPS: 600, Errors: 2}, {RPS: 550}, {RPS: 900}},
	}
	r := summarize(config{Rounds: 3}, ts, samples, 100, "v0.121.0")
	mp := r.Targets[1]
	if want := 600.0 / 1100; mp.ThroughputVsCeiling != want {
		t.Errorf("ratio = %v, want %v", mp.ThroughputVsCeiling, want)
	}
	// Round by round: 600/1000, 550/1200 and 900/1100, whose median is 0.6.
	if want := 0.6; mp.RoundsVsCeiling != want {
		t.Errorf("round by round = %v, want %v", mp.RoundsVsCeiling, want)
	}
	// One bad round must show even though the median round had none.
	if mp.Errors != 2 {
		t.Errorf("errors = %d, want the sum 2", mp.Errors)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := config{Requests: 20000, Concurrency: 16, Connections: 2, Rounds: 3, CompareName: "compare"}
	tests := []struct {
		name    string
		edit    func(*config)
		wantErr bool
	}{
		{name: "defaults", edit: func(*config) {}},
		{name: "fewer requests than workers", edit: func(c *config) { c.Requests = 8 }, wantErr: true},
		{name: "fewer workers than connections", edit: func(c *config) { c.Concurrency = 1 }, wantErr: true},
		{name: "no rounds", edit: func(c *config) { c.Rounds = 0 }, wantErr: true},
		{name: "compare args without bin", edit: func(c *config) { c.CompareArgs = "--addr {grpc}" }, wantErr: true},
		{name: "compare without port", edit: func(c *config) { c.CompareBin = "opa" }, wantErr: true},
		{name: "compare named like a built-in", edit: func(c *config) {
			c.CompareBin, c.CompareArgs, c.CompareName = "opa", "{grpc}", "ceiling"
		}, wantErr: true},
		{name: "compare", edit: func(c *config) { c.CompareBin, c.CompareArgs = "opa", "--addr {grpc}" }},
		{name: "variants", edit: func(c *config) {
			c.Variants = []string{"sync=--evidence-durability sync", "fsync=--evidence-durability fsync"}
		}},
		{name: "variant without a name", edit: func(c *config) { c.Variants = []string{"--evidence-durability sync"} }, wantErr: true},
		{name: "variant named like a built-in", edit: func(c *config) { c.Variants = []string{"meshproof=--x"} }, wantErr: true},
		{name: "two variants of one name", edit: func(c *config) { c.Variants = []string{"a=--x", "a=--y"} }, wantErr: true},
		{name: "variant named like the compare target", edit: func(c *config) {
			c.CompareBin, c.CompareArgs, c.Variants = "opa", "--addr {grpc}", []string{"compare=--x"}
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if err := c.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}
