package authz

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/authz/authztest"
)

// TestLenientWalkCopiesValid: on a request that decodes, the lenient
// walker writes the very bytes it read (what it re-encodes, lengths
// included, is the wire format).
func TestLenientWalkCopiesValid(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 3))
	md := (&authv3.CheckRequest{}).ProtoReflect().Descriptor()
	for i := range 2000 {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(randomRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		var w lenientWalker
		if err := w.message(b, md, 0); err != nil || w.bad != "" || !bytes.Equal(w.out, b) {
			t.Fatalf("request %d: walker gave %v, bad %q, same bytes %v", i, err, w.bad, bytes.Equal(w.out, b))
		}
	}
}

// TestLenientDecodeRepairs: a header value that is not UTF-8 in random
// requests decodes as the same request with that value repaired, and the
// field is named; every length above it grew.
func TestLenientDecodeRepairs(t *testing.T) {
	const placeholder, bad = "PLACEHOLDER-1", "ab\xffcd\xc3(xyz\xfe!!"
	r := rand.New(rand.NewPCG(12, 4))
	for i := range 2000 {
		req := randomRequest(r)
		if req.GetAttributes().GetRequest().GetHttp() == nil {
			continue
		}
		h := req.Attributes.Request.Http
		if h.Headers == nil {
			h.Headers = map[string]string{}
		}
		h.Headers["x-bad"] = placeholder
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte(placeholder), []byte(bad), 1)
		cause := proto.Unmarshal(b, &authv3.CheckRequest{})
		if cause == nil {
			t.Fatal("the request decoded")
		}
		var got authv3.CheckRequest
		ue := lenientDecode(b, &got, cause)
		h.Headers["x-bad"] = strings.ToValidUTF8(bad, "\uFFFD")
		if want := `attributes.request.http.headers["x-bad"]`; ue.Field != want || !errors.Is(ue, cause) {
			t.Fatalf("request %d: %v (field %q), want field %q", i, ue, ue.Field, want)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("request %d decoded as\n%v\nwant\n%v", i, &got, req)
		}
	}
}

// TestLenientDecodeTooDeep: a bad string deeper than maxLenientDepth is
// not repaired; the request is left empty and the error is the codec's.
func TestLenientDecodeTooDeep(t *testing.T) {
	const placeholder, bad = "PLACEHOLDER-1", "ab\xffcd\xc3(xyz\xfe!!"
	v := structpb.NewStringValue(placeholder)
	for range maxLenientDepth {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	req := authztest.NewRequest(func(r *authv3.CheckRequest) {
		r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"f": {Fields: map[string]*structpb.Value{"deep": v}},
		}}
	})
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(placeholder), []byte(bad), 1)
	cause := proto.Unmarshal(b, &authv3.CheckRequest{})
	got := proto.Clone(req).(*authv3.CheckRequest)
	ue := lenientDecode(b, got, cause)
	if cause == nil || ue.Field != "" || ue.Err != cause || !proto.Equal(got, &authv3.CheckRequest{}) {
		t.Fatalf("got %v (field %q), request %v; want the codec's error %v and an empty request", ue, ue.Field, got, cause)
	}
}

// BenchmarkDecodeCheckRequest is the gRPC codec's cost for the benchmark
// request: gRPC's proto codec, and the lenient codec the server runs (which
// must cost the same on a request that decodes).
func BenchmarkDecodeCheckRequest(b *testing.B) {
	raw, err := proto.Marshal(authztest.FromFile(b, "../test/testdata/bench/request.json"))
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(raw)}
	b.Run("proto", func(b *testing.B) {
		c := encoding.GetCodecV2(grpcproto.Name)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Unmarshal(data, new(authv3.CheckRequest)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lenient", func(b *testing.B) {
		c := newLenientCodec()
		b.ReportAllocs()
		for b.Loop() {
			in := new(lenientCheck)
			if err := c.Unmarshal(data, in); err != nil || in.undecodable != nil {
				b.Fatal(err, in.undecodable)
			}
		}
	})
}
