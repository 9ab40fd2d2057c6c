package authz

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMetrics is meshproof_grpc_requests_total: calls handled by the gRPC
// listener by method (the registered services' methods only: gRPC refuses
// any other before a handler runs) and status code.
type grpcMetrics struct {
	vec *prometheus.CounterVec
	// byMethod holds each method's counters by code, resolved up front: a
	// Check does not hash label values. Written only by newGRPCMetrics.
	byMethod map[string]*[codeCount]prometheus.Counter
}

// codeCount: gRPC's codes are 0 (OK) to 16 (Unauthenticated).
const codeCount = 17

// newGRPCMetrics registers the counter with reg (nil: not registered);
// resolve then names the methods, once the services are registered.
func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	m := &grpcMetrics{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_grpc_requests_total",
			Help: "Calls the gRPC listener answered, by method (/service/method) and status code (OK, Unknown: no decision under --on-policy-error=error, ResourceExhausted: over --check-memory-budget or --grpc-max-recv-msg-bytes, ...).",
		}, []string{"method", "code"}),
		byMethod: map[string]*[codeCount]prometheus.Counter{},
	}
	if reg != nil {
		reg.MustRegister(m.vec)
	}
	return m
}

// resolve makes every registered method's series, each code at 0, before
// the server serves: present from start-up for absent() and rate().
func (m *grpcMetrics) resolve(s *grpc.Server) {
	for svc, info := range s.GetServiceInfo() {
		for _, method := range info.Methods {
			full := "/" + svc + "/" + method.Name
			var cs [codeCount]prometheus.Counter
			for c := range cs {
				cs[c] = m.vec.WithLabelValues(full, codes.Code(c).String())
			}
			m.byMethod[full] = &cs
		}
	}
}

// observe counts a call of method that returned err.
func (m *grpcMetrics) observe(method string, err error) {
	c := status.Code(err)
	if cs := m.byMethod[method]; cs != nil && c < codeCount {
		cs[c].Inc()
		return
	}
	if strings.HasPrefix(method, "/") && c < codeCount {
		m.vec.WithLabelValues(method, c.String()).Inc()
	}
}

// unary and stream are the interceptors that count; the Check handler
// also counts a request it refused before the interceptor ran (its
// decoding failed or was over the memory budget).
func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, err)
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	m.observe(info.FullMethod, err)
	return err
}
