package authz

import (
	"context"
	"slices"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A CheckRequest costs far more memory decoded than on the wire: an empty
// header_map entry is 2 bytes sent and about 100 decoded (a 4 MiB request of
// them decodes to 204 MB; an empty struct value in metadata, to 140 MB), and
// the input document and a parsed body add to that. Sixteen such requests at
// once reached 8.5 GB. checkBudget bounds the memory of the Checks in flight
// by reserving, from a budget, checkBytesPerByte times each request's size,
// from before it is decoded until its Check has returned. The Check service
// meshproof serves reserves inside its codec, where the size on the wire is
// known (checkServiceDesc); wrap, for any other unary handler, knows no size
// before decoding, so it reserves what the largest request may hold and
// gives back all but the request's own share once decoded. A Check waits
// (first come, first served) for room, or until its caller gives up.
type checkBudget struct {
	sem   *semaphore.Weighted
	worst int64 // what a request not yet decoded may hold
}

const (
	// checkBytesPerByte is what one byte of request may cost while its
	// Check runs, above the 51 measured for header_map entries.
	checkBytesPerByte = 64
	// checkBaseBytes is what any Check holds: its input document, record,
	// evaluation.
	checkBaseBytes = 64 << 10
)

// newCheckBudget makes a budget of size bytes for requests of up to maxMsg
// bytes. A budget smaller than the largest request's share is that share:
// such requests are then decoded one at a time.
func newCheckBudget(size int64, maxMsg int) *checkBudget {
	worst := checkBaseBytes + checkBytesPerByte*int64(maxMsg)
	size = max(size, worst)
	return &checkBudget{sem: semaphore.NewWeighted(size), worst: worst}
}

// share is the share of a request of n bytes on the wire.
func (b *checkBudget) share(n int) int64 {
	return min(b.worst, checkBaseBytes+checkBytesPerByte*int64(n))
}

// weigh is a decoded request's share.
func (b *checkBudget) weigh(m any) int64 {
	var n int
	switch r := m.(type) {
	case *authv3.CheckRequest:
		n = requestBytes(r)
	case *lenientCheck:
		n = requestBytes(&r.req)
	case proto.Message:
		n = proto.Size(r)
	default:
		return b.worst
	}
	return min(b.worst, checkBaseBytes+checkBytesPerByte*int64(n))
}

// entryBytes is what a map or list entry takes on the wire beyond its
// strings, at least (tags and lengths).
const entryBytes = 2

// requestBytes is about the size of r on the wire (proto.Size walks maps
// by reflection, which cost as much as a cached Check): every string and
// entry of the parts that can be large, and proto.Size of metadata, which
// Envoy sends only when configured to.
func requestBytes(r *authv3.CheckRequest) int {
	a := r.GetAttributes()
	n := 64 // the fixed fields: time, ports, the nesting
	for _, p := range []*authv3.AttributeContext_Peer{a.GetSource(), a.GetDestination()} {
		if p == nil {
			continue
		}
		n += len(p.Principal) + len(p.Certificate) + len(p.Service) + mapBytes(p.Labels)
		if s := p.GetAddress().GetSocketAddress(); s != nil {
			n += len(s.Address) + len(s.ResolverName) + len(s.GetNamedPort()) + len(s.NetworkNamespaceFilepath)
		} else if p.Address != nil {
			n += proto.Size(p.Address)
		}
	}
	n += mapBytes(a.GetContextExtensions()) + len(a.GetTlsSession().GetSni())
	if a.GetMetadataContext() != nil {
		n += proto.Size(a.MetadataContext)
	}
	if a.GetRouteMetadataContext() != nil {
		n += proto.Size(a.RouteMetadataContext)
	}
	h := a.GetRequest().GetHttp()
	n += len(h.GetId()) + len(h.GetMethod()) + len(h.GetPath()) + len(h.GetHost()) + len(h.GetScheme()) +
		len(h.GetQuery()) + len(h.GetFragment()) + len(h.GetProtocol()) + len(h.GetBody()) + len(h.GetRawBody()) +
		mapBytes(h.GetHeaders())
	for _, e := range h.GetHeaderMap().GetHeaders() {
		n += entryBytes
		if e != nil {
			n += len(e.Key) + len(e.Value) + len(e.RawValue)
		}
	}
	return n
}

func mapBytes(m map[string]string) int {
	n := entryBytes * len(m)
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// wrap gates a unary method handler: the request is decoded and handled
// only within the budget.
func (b *checkBudget) wrap(h grpc.MethodHandler) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		if err := b.sem.Acquire(ctx, b.worst); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		held := b.worst
		defer func() { b.sem.Release(held) }()
		return h(srv, ctx, func(m any) error {
			err := dec(m)
			if err != nil {
				return err
			}
			if w := b.weigh(m); w < held {
				b.sem.Release(held - w)
				held = w
			}
			return nil
		}, ic)
	}
}

// budgeted is the service d with its methods behind b.
func budgeted(d grpc.ServiceDesc, b *checkBudget) grpc.ServiceDesc {
	d.Methods = slices.Clone(d.Methods)
	for i := range d.Methods {
		d.Methods[i].Handler = b.wrap(d.Methods[i].Handler)
	}
	return d
}
