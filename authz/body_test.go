package authz

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/authz/authztest"
)

// multipartBody is a multipart/form-data body of n small parts, named
// name(i) each.
func multipartBody(n int, name func(int) string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "--XX\r\nContent-Disposition: form-data; name=%q\r\n\r\n%d\r\n", name(i), i%10)
	}
	b.WriteString("--XX--\r\n")
	return b.String()
}

// TestMultipartManyParts: OPA-Envoy takes any number of parts (meshproof
// refused more than 1,000 with a 400); the document is the reference's.
func TestMultipartManyParts(t *testing.T) {
	for _, n := range []int{1000, 1001, 5000} {
		body := multipartBody(n, func(i int) string { return fmt.Sprintf("f%d", i%7) })
		req := authztest.NewRequest(authztest.Body("multipart/form-data; boundary=XX", body))
		t.Run(fmt.Sprint(n), func(t *testing.T) { assertSame(t, req) })
	}
}

// TestMultipartMemoryBoundedByBody: without a cap on parts, what parsing a
// body keeps is bounded by the body's size. The worst case is the smallest
// named part (every part a value) with every name new (every part a key).
func TestMultipartMemoryBoundedByBody(t *testing.T) {
	const ctype = "multipart/form-data; boundary=XX"
	for _, tc := range []struct {
		name string
		part func(int) string
	}{
		{"one name", func(int) string { return "f" }},
		{"every name new", func(i int) string { return fmt.Sprintf("%x", i) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := multipartBody(100_000, tc.part)
			h := newHeaderReader(authztest.NewRequest(authztest.Body(ctype, body)).Attributes.Request.Http)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			v, truncated, err := parsedBody(&h, body, nil)
			if err != nil || truncated {
				t.Fatalf("parsedBody: %v (truncated %v)", err, truncated)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(v)
			runtime.KeepAlive(body) // else freed by the second GC, hiding as much
			kept := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d parts, body %d bytes, kept %d bytes (%.1f per body byte)", 100_000, len(body), kept, float64(kept)/float64(len(body)))
			if limit := 8 * int64(len(body)); kept > limit {
				t.Errorf("parsing a %d-byte body kept %d bytes, more than %d", len(body), kept, limit)
			}
		})
	}
}
