package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/authz/authztest"
)

// hostileRequests are CheckRequests of just under size bytes that cost the
// most memory decoded, each a different way: empty header_map entries (2
// bytes each on the wire), empty values in a metadata list, a JSON body of
// zeros (parsed into input.parsed_body), and as many headers of 450 bytes
// as fit.
func hostileRequests(t *testing.T, size int) map[string]*authv3.CheckRequest {
	t.Helper()
	// fit grows req to n units so that it lands within 4 KiB under size:
	// n is estimated from the size of a few units, then corrected from the
	// size it gave (the length prefixes grow with n). A search over n built
	// requests of up to millions of units many times and took 17 minutes
	// under the race detector on a busy machine.
	fit := func(name string, req *authv3.CheckRequest, grow func(n int)) {
		const probe = 256
		grow(0)
		base := proto.Size(req)
		grow(probe)
		per := float64(proto.Size(req)-base) / probe
		n := int(float64(size-2048-base) / per)
		for range 8 {
			grow(n)
			s := proto.Size(req)
			if s < size && s >= size-4096 {
				return
			}
			n += int(float64(size-2048-s)/per) + 1
		}
		t.Fatalf("%s: %d bytes, want just under %d", name, proto.Size(req), size)
	}
	out := map[string]*authv3.CheckRequest{}

	hm := authztest.NewRequest()
	hm.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{}
	empty := make([]*corev3.HeaderValue, size/2)
	for i := range empty {
		empty[i] = &corev3.HeaderValue{}
	}
	fit("header_map", hm, func(n int) { hm.Attributes.Request.Http.HeaderMap.Headers = empty[:n] })
	out["header_map"] = hm

	md := authztest.NewRequest()
	list := &structpb.ListValue{}
	md.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"x": {Fields: map[string]*structpb.Value{"l": structpb.NewListValue(list)}},
	}}
	values := make([]*structpb.Value, size/2)
	for i := range values {
		values[i] = &structpb.Value{}
	}
	fit("metadata", md, func(n int) { list.Values = values[:n] })
	out["metadata"] = md

	body := authztest.NewRequest(authztest.Method("POST"), authztest.Header("content-type", "application/json"))
	zeros := "[" + strings.Repeat("0,", size/2)
	fit("json body", body, func(n int) { body.Attributes.Request.Http.Body = zeros[:max(1, 2*n)] + "0]" })
	out["json body"] = body

	many := authztest.NewRequest()
	value := strings.Repeat("v", 450)
	fit("headers", many, func(n int) {
		h := map[string]string{}
		for i := range n {
			h["x-h-"+strconv.Itoa(i)] = value
		}
		many.Attributes.Request.Http.Headers = h
	})
	out["headers"] = many
	return out
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatus(t, pid, "VmHWM:")
}

func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestHostileRequestsBoundedRSS: sixteen callers, each on its own
// connection, send requests just under the 4 MiB default limit that decode
// into the most memory, two each, every kind from eight callers; the server's peak
// resident memory stays under 1 GiB with the default flags. Sixteen such
// requests in flight used to take 8.5 GB.
func TestHostileRequestsBoundedRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 32 requests of 4 MiB")
	}
	const limit = 1 << 30
	reqs := hostileRequests(t, 4<<20-1024)
	kinds := []string{"header_map", "metadata", "json body", "headers"}
	s := startServe(t)
	pid := s.cmd.Process.Pid

	// Guard the machine: a server past 3 GiB is failing anyway.
	stop := make(chan struct{})
	guard := make(chan int64, 1)
	go func() {
		defer close(guard)
		for {
			select {
			case <-stop:
				return
			case <-s.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
						if kb<<10 > 3<<30 {
							guard <- kb << 10
							s.kill()
							return
						}
					}
				}
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 16*2)
	for c := range 16 {
		conn := dial(t, s.GRPCAddr, nil)
		client := authv3.NewAuthorizationClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2 {
				kind := kinds[(c+i)%len(kinds)]
				// No deadline of its own: the budget lets two of these
				// decode at a time, so the last waits for fifteen rounds
				// before it, however long the machine takes (at load 23,
				// some passed 5 minutes). The test binary's timeout
				// stops a server that hangs.
				resp, err := client.Check(context.Background(), reqs[kind])
				switch {
				case err != nil:
					errs <- fmt.Errorf("caller %d, %s: %v", c, kind, err)
				case kind == "header_map" && resp.GetDeniedResponse().GetStatus().GetCode() != 431:
					errs <- fmt.Errorf("caller %d, %s: %v, want a 431", c, kind, resp.GetDeniedResponse())
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if rss, killed := <-guard; killed {
		t.Fatalf("the server's resident memory reached %d MiB; killed", rss>>20)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peak := vmHWM(t, pid)
	t.Logf("peak RSS (VmHWM) after 32 hostile 4 MiB requests from 16 callers: %d MiB", peak>>20)
	if peak >= limit {
		t.Fatalf("peak RSS %d MiB, over 1 GiB", peak>>20)
	}
}
