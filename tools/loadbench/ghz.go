//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
)

// ghzReport is the part of ghz's --format json output loadbench reads.
// Durations are nanoseconds, which time.Duration unmarshals as is.
type ghzReport struct {
	Count               int            `json:"count"`
	RPS                 float64        `json:"rps"`
	StatusCodes         map[string]int `json:"statusCodeDistribution"`
	ErrorMessages       map[string]int `json:"errorDistribution"`
	LatencyDistribution []struct {
		Percentage int           `json:"percentage"`
		Latency    time.Duration `json:"latency"`
	} `json:"latencyDistribution"`
}

// errors counts every Check whose gRPC status is not OK. A deny is still an
// OK RPC, so this is transport and server failures only.
func (r *ghzReport) errors() int {
	n := 0
	for code, count := range r.StatusCodes {
		if code != "OK" {
			n += count
		}
	}
	return n
}

// percentile returns the latency at p, or 0 when ghz did not report it (it
// omits the distribution when every request failed).
func (r *ghzReport) percentile(p int) time.Duration {
	for _, l := range r.LatencyDistribution {
		if l.Percentage == p {
			return l.Latency
		}
	}
	return 0
}

// failures describes the non-OK status codes and the most frequent error messages.
func (r *ghzReport) failures() string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(r.StatusCodes)) {
		if code != "OK" {
			parts = append(parts, fmt.Sprintf("%s x%d", code, r.StatusCodes[code]))
		}
	}
	msgs := slices.SortedFunc(maps.Keys(r.ErrorMessages), func(a, b string) int {
		return r.ErrorMessages[b] - r.ErrorMessages[a]
	})
	for _, m := range msgs[:min(len(msgs), 3)] {
		parts = append(parts, fmt.Sprintf("%q x%d", m, r.ErrorMessages[m]))
	}
	return strings.Join(parts, "; ")
}

// runGhz runs ghz as its own process, as the reference figures were taken,
// and returns its report and the CPU time ghz itself used: on a small
// machine the load generator competes with the server for the same cores.
func runGhz(ctx context.Context, cfg config, env runEnv, addr string, n int) (*ghzReport, time.Duration, error) {
	cmd := exec.CommandContext(ctx, env.ghz,
		"--insecure",
		"--protoset", env.protoset,
		"--call", "envoy.service.auth.v3.Authorization.Check",
		"-D", env.request,
		"-n", strconv.Itoa(n),
		"-c", strconv.Itoa(cfg.Concurrency),
		"--connections", strconv.Itoa(cfg.Connections),
		"--format", "json",
		addr)
	// Like the servers, ghz gets its own process group: on Ctrl-C it must not
	// print a partial report that would pass for a measurement; cancelling
	// ctx kills it instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("ghz: %w\n%s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var r ghzReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, 0, fmt.Errorf("parse ghz output: %w", err)
	}
	if r.Count == 0 {
		return nil, 0, fmt.Errorf("ghz made no Checks\n%s", bytes.TrimSpace(stderr.Bytes()))
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return &r, cpu, nil
}

// measure starts t, warms it up, measures one run and stops it. The warm-up
// lets connections, pools and the Go heap settle so the measured run sees the
// steady state, and is left out of the CPU figure.
func measure(ctx context.Context, cfg config, env runEnv, t target, round int) (sample, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return sample{}, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return sample{}, err
	}
	srv, err := startServer(ctx, env, t.name, t.bin, t.args(grpcAddr, httpAddr), round)
	if err != nil {
		return sample{}, err
	}
	defer srv.kill()
	decision, err := srv.waitReady(ctx, grpcAddr, env.check)
	if err != nil {
		return sample{}, err
	}
	if decision != codes.OK {
		env.logf("warning: %s answered the reference Check with %s, but the reference policy allows it; figures may not mean what you think", t.name, decision)
	}
	if _, _, err := runGhz(ctx, cfg, env, grpcAddr, max(cfg.Requests/10, cfg.Concurrency)); err != nil {
		return sample{}, fmt.Errorf("warm-up: %w%s", err, srv.tail())
	}
	before, err := srv.cpuTicks()
	if err != nil {
		return sample{}, err
	}
	r, clientCPU, err := runGhz(ctx, cfg, env, grpcAddr, cfg.Requests)
	if err != nil {
		return sample{}, fmt.Errorf("%w%s", err, srv.tail())
	}
	after, err := srv.cpuTicks()
	if err != nil {
		return sample{}, fmt.Errorf("server CPU after the run: %w%s", err, srv.tail())
	}
	if err := srv.stop(); err != nil {
		return sample{}, err
	}
	// Through the exit: SIGTERM makes meshproof write the evidence still
	// queued, which belongs to the measured Checks.
	ps := srv.cmd.ProcessState
	lifetime := ps.UserTime() + ps.SystemTime()
	serverCPU := lifetime - time.Duration(before)*time.Second/time.Duration(env.ticks)
	runCPU := time.Duration(after-before) * time.Second / time.Duration(env.ticks)
	s := sample{
		RPS:          r.RPS,
		P50:          r.percentile(50),
		P99:          r.percentile(99),
		Checks:       r.Count,
		Errors:       r.errors(),
		ServerCPU:    perCheck(serverCPU, r.Count),
		ServerCPURun: perCheck(runCPU, r.Count),
		ClientCPU:    perCheck(clientCPU, r.Count),
	}
	if s.Errors > 0 {
		msg := fmt.Sprintf("%d of %d Checks failed: %s", s.Errors, s.Checks, r.failures())
		if !cfg.AllowErrors {
			return s, fmt.Errorf("%s (pass --allow-errors to report them instead of failing)", msg)
		}
		env.logf("warning: %s: %s", t.name, msg)
	}
	return s, nil
}

// perCheck is CPU time per Check in microseconds.
func perCheck(cpu time.Duration, checks int) float64 {
	return float64(cpu.Microseconds()) / float64(checks)
}
