package authz

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A CheckRequest Envoy sends may not decode: header values are bytes to
// Envoy, and a value that is not UTF-8 in the headers map (a proto3 string)
// makes gRPC's codec refuse the whole message, before any Check runs. Here
// such a request still reaches the Check service, decoded leniently and
// marked, so that it is denied, recorded and counted like any request no
// decision could be made for. A request that decodes costs what it did: the
// lenient decoder runs only after the ordinary one failed.

// UndecodableError is a CheckRequest that could not be decoded as sent.
// Field names the first string field that was not UTF-8, by the input
// document's names (attributes.request.http.headers["x-name"]); it is ""
// when the bytes are not a CheckRequest at all, and Err says why.
type UndecodableError struct {
	Field string
	Err   error
}

func (e *UndecodableError) Error() string {
	if e.Field != "" {
		return "request could not be decoded: " + e.Field + ": invalid UTF-8"
	}
	return "request could not be decoded: " + e.Err.Error()
}

func (e *UndecodableError) Unwrap() error { return e.Err }

// lenientCheck is what the Check handler decodes into: the request, and why
// it did not decode as sent (nil when it did).
type lenientCheck struct {
	req         authv3.CheckRequest
	undecodable *UndecodableError
	// budget, when set, is reserved from, under ctx, with the request's
	// size on the wire before it is decoded (checkBudget); held is what was
	// reserved, given back when the Check has returned.
	budget *checkBudget
	ctx    context.Context
	held   int64
}

// reserve takes the share of a request of wireBytes from the budget.
func (lc *lenientCheck) reserve(wireBytes int) error {
	w := lc.budget.share(wireBytes)
	if err := lc.budget.sem.Acquire(lc.ctx, w); err != nil {
		return status.FromContextError(err).Err()
	}
	lc.held = w
	return nil
}

// lenientChecker is the Check service that takes requests decoded
// leniently (*Server).
type lenientChecker interface {
	checkDecoded(ctx context.Context, req *authv3.CheckRequest, undecodable *UndecodableError) (*authv3.CheckResponse, error)
}

// checkServiceDesc is envoy.service.auth.v3.Authorization with a Check
// handler that decodes into a lenientCheck, within budget b when it is not
// nil: the request reserves its share, known from its size on the wire
// before it is decoded, and holds it until its Check has returned.
func checkServiceDesc(b *checkBudget, m *grpcMetrics) grpc.ServiceDesc {
	d := authv3.Authorization_ServiceDesc
	d.Methods = []grpc.MethodDesc{{MethodName: "Check", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		return checkHandler(srv, ctx, dec, ic, b, m)
	}}}
	return d
}

// checkHandler decodes and answers a Check; m, when set, counts a request
// refused in its decoding, which the interceptors never see.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor, b *checkBudget, m *grpcMetrics) (any, error) {
	in := &lenientCheck{budget: b, ctx: ctx}
	defer func() {
		if in.held > 0 {
			b.sem.Release(in.held)
		}
	}()
	if err := dec(in); err != nil {
		if m != nil {
			m.observe(authv3.Authorization_Check_FullMethodName, err)
		}
		return nil, err
	}
	s := srv.(lenientChecker)
	if interceptor == nil {
		return s.checkDecoded(ctx, &in.req, in.undecodable)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, &in.req, info, func(ctx context.Context, req any) (any, error) {
		return s.checkDecoded(ctx, req.(*authv3.CheckRequest), in.undecodable)
	})
}

// lenientCodec is gRPC's proto codec, and for a lenientCheck, the ordinary
// decoding first and the lenient one only when that fails.
type lenientCodec struct{ encoding.CodecV2 }

func newLenientCodec() lenientCodec {
	return lenientCodec{encoding.GetCodecV2(grpcproto.Name)}
}

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	lc, ok := v.(*lenientCheck)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	if lc.budget != nil {
		if err := lc.reserve(data.Len()); err != nil {
			return err
		}
	}
	err := c.CodecV2.Unmarshal(data, &lc.req)
	if err == nil {
		return nil
	}
	lc.undecodable = lenientDecode(data.Materialize(), &lc.req, err)
	return nil
}

// maxLenientDepth is the deepest message the lenient decoder repairs;
// Envoy's strings are within 6, metadata Structs may go deeper. Past it, a
// string that is not UTF-8 leaves the request empty (cause names no field).
const maxLenientDepth = 32

// lenientDecode decodes b into m with every string field that is not UTF-8
// made valid (each bad sequence replaced by U+FFFD), and says which field
// was the first. When b does not decode even so, m is left empty and the
// error carries cause, the ordinary decoder's error. The copy it decodes is
// at most three times b's size.
func lenientDecode(b []byte, m proto.Message, cause error) *UndecodableError {
	w := lenientWalker{out: make([]byte, 0, len(b)+len(b)/8+16)}
	if err := w.message(b, m.ProtoReflect().Descriptor(), 0); err == nil && w.bad != "" {
		proto.Reset(m)
		if proto.Unmarshal(w.out, m) == nil {
			return &UndecodableError{Field: w.bad, Err: cause}
		}
	}
	proto.Reset(m)
	return &UndecodableError{Err: cause}
}

// lenientWalker copies a message's wire bytes into out, repairing strings.
type lenientWalker struct {
	out  []byte
	path []pathElem // the messages above the field being read
	bad  string     // the first repaired field
}

// pathElem is a field in the reason's path; its name is only written out
// for the one field the reason names.
type pathElem struct {
	md    protoreflect.MessageDescriptor // the message the field is in
	fd    protoreflect.FieldDescriptor
	key   []byte // in a map entry, the entry's key
	index int    // in a repeated field, the item's index; else -1
}

func (w *lenientWalker) message(b []byte, md protoreflect.MessageDescriptor, depth int) error {
	fields := md.Fields()
	var key []byte       // a map entry's key, once read (Envoy writes it first)
	var seen map[int]int // per repeated field, its items so far
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		raw := b[:n+m]
		b = b[n+m:]
		fd := fields.ByNumber(num)
		if fd == nil || typ != protowire.BytesType || depth >= maxLenientDepth ||
			fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.MessageKind {
			w.out = append(w.out, raw...)
			continue
		}
		v, _ := protowire.ConsumeBytes(raw[n:])
		el := pathElem{md: md, fd: fd, key: key, index: -1}
		if fd.IsList() {
			if seen == nil {
				seen = map[int]int{}
			}
			el.index = seen[int(num)]
			seen[int(num)]++
		}
		w.out = protowire.AppendTag(w.out, num, typ)
		if fd.Kind() == protoreflect.StringKind {
			if !utf8.Valid(v) {
				w.note(el)
				v = []byte(strings.ToValidUTF8(string(v), "\uFFFD"))
			}
			if md.IsMapEntry() && num == 1 {
				key = v
			}
			w.out = protowire.AppendBytes(w.out, v)
			continue
		}
		// A message: its repaired bytes go in place, then their length in
		// front of them (it may have grown).
		start := len(w.out)
		w.path = append(w.path, el)
		err := w.message(v, fd.Message(), depth+1)
		w.path = w.path[:len(w.path)-1]
		if err != nil {
			return err
		}
		w.out = prependLength(w.out, start)
	}
	return nil
}

// note keeps the path of the first field repaired, by the input's names: a
// field's JSON name, a map value as ["key"] (quoted, shortened), a map key
// as " (a key)", a repeated field's item as [i].
func (w *lenientWalker) note(last pathElem) {
	if w.bad != "" {
		return
	}
	var s strings.Builder
	for _, el := range append(w.path, last) {
		switch {
		case !el.md.IsMapEntry():
			if s.Len() > 0 {
				s.WriteByte('.')
			}
			s.WriteString(el.fd.JSONName())
		case el.fd.Number() == 1:
			s.WriteString(" (a key)")
		default:
			s.WriteString("[" + strconv.Quote(truncate(string(el.key), 64)) + "]")
		}
		if el.index >= 0 {
			s.WriteString("[" + strconv.Itoa(el.index) + "]")
		}
	}
	w.bad = s.String()
}

// prependLength puts the varint length of out[start:] in front of it.
func prependLength(out []byte, start int) []byte {
	n := len(out) - start
	var lb [binary.MaxVarintLen64]byte
	l := protowire.AppendVarint(lb[:0], uint64(n))
	out = append(out, l...)
	copy(out[start+len(l):], out[start:start+n])
	copy(out[start:], l)
	return out
}
