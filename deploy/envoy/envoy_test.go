package envoy

import (
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The facts below come from Envoy's ext_authz and x-forwarded-client-cert docs and Istio's PERMISSIVE and STRICT modes. Each assertion
// names the fact, so that an edit that breaks one says which.

const (
	extAuthzName = "envoy.filters.http.ext_authz" // also the dynamic metadata namespace
	routerName   = "envoy.filters.http.router"
	xfcc         = "x-forwarded-client-cert"
)

var (
	istioALPNs  = []string{"istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
	logFormulas = []string{
		"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:meshproof_evidence_id)%",
		"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:meshproof_verdict)%",
	}
)

func read(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := ReadBootstrap(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func unpack[M proto.Message](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if a == nil {
		t.Fatalf("no typed_config where a %T was expected", m)
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("typed_config %s is not a %T: %v", a.GetTypeUrl(), m, err)
	}
	return m
}

func onlyListener(t *testing.T, b *bootstrapv3.Bootstrap) *listenerv3.Listener {
	t.Helper()
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		t.Fatalf("%d listeners, want the one inbound listener", len(ls))
	}
	return ls[0]
}

func chainHCM(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	fs := fc.GetFilters()
	if len(fs) != 1 || fs[0].GetName() != "envoy.filters.network.http_connection_manager" {
		t.Fatalf("chain %q: want exactly the HTTP connection manager, got %v", fc.GetName(), fs)
	}
	return unpack(t, fs[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
}

func chainTLS(t *testing.T, fc *listenerv3.FilterChain) *tlsv3.DownstreamTlsContext {
	t.Helper()
	ts := fc.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("chain %q: transport socket %q, want envoy.transport_sockets.tls", fc.GetName(), ts.GetName())
	}
	return unpack(t, ts.GetTypedConfig(), &tlsv3.DownstreamTlsContext{})
}

func TestPermissiveBootstrap(t *testing.T) {
	b := read(t, "envoy.yaml")
	l := onlyListener(t, b)

	t.Run("tls_inspector", func(t *testing.T) {
		lf := l.GetListenerFilters()
		if len(lf) != 1 || lf[0].GetName() != "envoy.filters.listener.tls_inspector" {
			t.Fatalf("listener filters %v: want the tls_inspector, which the ALPN match needs", lf)
		}
		unpack(t, lf[0].GetTypedConfig(), &tlsinspectorv3.TlsInspector{})
	})

	chains := l.GetFilterChains()
	if len(chains) != 2 || l.GetDefaultFilterChain() != nil {
		t.Fatalf("%d filter chains (default chain %v): want exactly mtls and plaintext, as Istio's permissive listener",
			len(chains), l.GetDefaultFilterChain())
	}
	mtls, plain := chains[0], chains[1]

	t.Run("mtls chain matched by Istio ALPN", func(t *testing.T) {
		m := mtls.GetFilterChainMatch()
		if m.GetTransportProtocol() != "tls" {
			t.Errorf("transport_protocol %q, want tls", m.GetTransportProtocol())
		}
		for _, p := range istioALPNs {
			if !slices.Contains(m.GetApplicationProtocols(), p) {
				t.Errorf("application_protocols %v lack %q", m.GetApplicationProtocols(), p)
			}
		}
		for _, p := range m.GetApplicationProtocols() {
			if !strings.HasPrefix(p, "istio") {
				t.Errorf("application_protocols has %q: a non-Istio ALPN would pull curl-like clients onto the mTLS chain", p)
			}
		}
		checkServerTLS(t, chainTLS(t, mtls))
	})

	t.Run("plaintext chain", func(t *testing.T) {
		m := plain.GetFilterChainMatch()
		if m.GetTransportProtocol() != "raw_buffer" || len(m.GetApplicationProtocols()) != 0 {
			t.Errorf("match %v: want transport_protocol raw_buffer and no ALPN", m)
		}
		if plain.GetTransportSocket() != nil {
			t.Errorf("the plaintext chain has a transport socket %q", plain.GetTransportSocket().GetName())
		}
	})

	mh, ph := chainHCM(t, mtls), chainHCM(t, plain)
	for _, c := range []struct {
		name string
		hcm  *hcmv3.HttpConnectionManager
	}{{"mtls", mh}, {"plaintext", ph}} {
		t.Run("HCM "+c.name, func(t *testing.T) { checkHCM(t, b, c.hcm) })
	}

	t.Run("chains differ only in stat_prefix", func(t *testing.T) {
		a, p := proto.Clone(mh).(*hcmv3.HttpConnectionManager), proto.Clone(ph).(*hcmv3.HttpConnectionManager)
		if a.StatPrefix == p.StatPrefix {
			t.Errorf("both chains use stat_prefix %q: their stats would mix", a.StatPrefix)
		}
		a.StatPrefix, p.StatPrefix = "", ""
		if !proto.Equal(a, p) {
			t.Errorf("the two chains' HTTP connection managers differ beyond stat_prefix:\nmtls:      %v\nplaintext: %v", a, p)
		}
	})

	t.Run("clusters", func(t *testing.T) { checkClusters(t, b) })
}

func TestStrictBootstrap(t *testing.T) {
	strict, perm := read(t, "envoy-strict.yaml"), read(t, "envoy.yaml")
	l := onlyListener(t, strict)
	chains := l.GetFilterChains()
	if len(chains) != 1 || l.GetDefaultFilterChain() != nil {
		t.Fatalf("%d filter chains: STRICT has the mTLS chain only, so plaintext is refused", len(chains))
	}
	fc := chains[0]
	if fc.GetFilterChainMatch() != nil {
		t.Errorf("filter_chain_match %v: with one chain, a match only refuses clients (curl without an Istio ALPN)", fc.GetFilterChainMatch())
	}
	tc := chainTLS(t, fc)
	checkServerTLS(t, tc)
	checkHCM(t, strict, chainHCM(t, fc))
	checkClusters(t, strict)

	permMTLS := onlyListener(t, perm).GetFilterChains()[0]
	if !proto.Equal(tc, chainTLS(t, permMTLS)) {
		t.Error("the STRICT chain's TLS context differs from envoy.yaml's mTLS chain")
	}
	if !proto.Equal(chainHCM(t, fc), chainHCM(t, permMTLS)) {
		t.Error("the STRICT chain's HTTP connection manager differs from envoy.yaml's mTLS chain")
	}
	if !proto.Equal(&bootstrapv3.Bootstrap_StaticResources{Clusters: strict.GetStaticResources().GetClusters()},
		&bootstrapv3.Bootstrap_StaticResources{Clusters: perm.GetStaticResources().GetClusters()}) {
		t.Error("the clusters of envoy-strict.yaml and envoy.yaml differ")
	}
}

// checkServerTLS: a client certificate is required and validated as a SPIFFE
// X.509-SVID of the trust domain.
func checkServerTLS(t *testing.T, tc *tlsv3.DownstreamTlsContext) {
	t.Helper()
	if !tc.GetRequireClientCertificate().GetValue() {
		t.Error("require_client_certificate is not true: TLS without a client certificate would pass as the mTLS chain")
	}
	common := tc.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) != 1 {
		t.Errorf("%d server certificates, want this proxy's SVID", len(common.GetTlsCertificates()))
	}
	vc := common.GetValidationContext()
	cv := vc.GetCustomValidatorConfig()
	if cv.GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("custom validator %q, want the SPIFFE validator", cv.GetName())
	}
	sv := unpack(t, cv.GetTypedConfig(), &tlsv3.SPIFFECertValidatorConfig{})
	if len(sv.GetTrustDomains()) == 0 {
		t.Error("the SPIFFE validator has no trust domain")
	}
	for _, td := range sv.GetTrustDomains() {
		if strings.Contains(td.GetName(), "://") || td.GetTrustBundle().GetFilename() == "" {
			t.Errorf("trust domain %q: want a bare name and a trust bundle file", td.GetName())
		}
	}
	for _, san := range vc.GetMatchTypedSubjectAltNames() {
		if san.GetSanType() != tlsv3.SubjectAltNameMatcher_URI || !strings.HasPrefix(san.GetMatcher().GetPrefix(), "spiffe://") {
			t.Errorf("SAN matcher %v: the SPIFFE validator matches URI SANs, by spiffe:// prefix here", san)
		}
	}
}

// checkHCM: XFCC as Istio's sidecar sets it, ext_authz before the router with
// the evidence settings, and the evidence id in the access log.
func checkHCM(t *testing.T, b *bootstrapv3.Bootstrap, h *hcmv3.HttpConnectionManager) {
	t.Helper()
	if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_APPEND_FORWARD {
		t.Errorf("forward_client_cert_details %v, want APPEND_FORWARD (Istio's inbound)", h.GetForwardClientCertDetails())
	}
	d := h.GetSetCurrentClientCertDetails()
	if !d.GetSubject().GetValue() || !d.GetUri() || !d.GetDns() {
		t.Errorf("set_current_client_cert_details %v: want subject, uri and dns", d)
	}
	if d.GetCert() || d.GetChain() {
		t.Errorf("set_current_client_cert_details %v: Cert and Chain make XFCC kilobytes long; the certificate comes with include_peer_certificate", d)
	}

	var names []string
	for _, f := range h.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	ai, ri := slices.Index(names, extAuthzName), slices.Index(names, routerName)
	switch {
	case ai < 0:
		t.Fatalf("http_filters %v: no %s (it must be named so: Envoy keeps meshproof's dynamic metadata under this name)", names, extAuthzName)
	case ri != len(names)-1:
		t.Errorf("http_filters %v: the router must be last", names)
	case ai > ri:
		t.Errorf("http_filters %v: ext_authz after the router never runs", names)
	}
	checkExtAuthz(t, b, unpack(t, h.GetHttpFilters()[ai].GetTypedConfig(), &extauthzv3.ExtAuthz{}))
	checkAccessLog(t, h)
}

func checkExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap, ea *extauthzv3.ExtAuthz) {
	t.Helper()
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version %v, want V3", ea.GetTransportApiVersion())
	}
	if ea.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: requests would pass unchecked, with no evidence, when meshproof is away")
	}
	if ea.GetShadowMode() || ea.GetFilterEnabled() != nil || ea.GetFilterEnabledMetadata() != nil {
		t.Error("shadow_mode or filter_enabled*: this proxy is meant to check every request")
	}
	if code := ea.GetStatusOnError().GetCode(); code != 0 && code < 400 {
		t.Errorf("status_on_error %v would answer a failed check with success", code)
	}
	if !ea.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate is off: meshproof could not record the certificate hash, serial and validity")
	}
	if !ea.GetIncludeTlsSession() {
		t.Error("include_tls_session is off: no SNI in the evidence")
	}
	if !headerAllowed(t, ea.GetAllowedHeaders(), true) || headerAllowed(t, ea.GetDisallowedHeaders(), false) {
		t.Errorf("%s does not reach meshproof (allowed_headers %v, disallowed_headers %v)", xfcc, ea.GetAllowedHeaders(), ea.GetDisallowedHeaders())
	}
	gs := ea.GetGrpcService()
	if c := gs.GetEnvoyGrpc().GetClusterName(); c != "meshproof" || cluster(b, c) == nil {
		t.Errorf("ext_authz calls cluster %q, want the meshproof cluster", c)
	}
	if d := gs.GetTimeout().AsDuration(); d < 100*time.Millisecond || d > time.Second {
		t.Errorf("ext_authz timeout %v: want 100ms to 1s (too short denies under a GC pause, too long holds every request)", d)
	}
}

// headerAllowed says whether XFCC matches list; an unset list yields
// ifUnset (Envoy sends every header to a gRPC server when allowed_headers is
// unset, and disallows none when disallowed_headers is).
func headerAllowed(t *testing.T, list *matcherv3.ListStringMatcher, ifUnset bool) bool {
	t.Helper()
	if list == nil {
		return ifUnset
	}
	for _, m := range list.GetPatterns() {
		fold := func(p string) string { // header names reach the filter lower-case
			if m.GetIgnoreCase() {
				return strings.ToLower(p)
			}
			return p
		}
		var ok bool
		switch x := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			ok = xfcc == fold(x.Exact)
		case *matcherv3.StringMatcher_Prefix:
			ok = strings.HasPrefix(xfcc, fold(x.Prefix))
		case *matcherv3.StringMatcher_Suffix:
			ok = strings.HasSuffix(xfcc, fold(x.Suffix))
		case *matcherv3.StringMatcher_Contains:
			ok = strings.Contains(xfcc, fold(x.Contains))
		default:
			t.Fatalf("header matcher %v: teach this test the kind", m)
		}
		if ok {
			return true
		}
	}
	return false
}

func checkAccessLog(t *testing.T, h *hcmv3.HttpConnectionManager) {
	t.Helper()
	var formats []string
	for _, al := range h.GetAccessLog() {
		fl := unpack(t, al.GetTypedConfig(), &filev3.FileAccessLog{})
		for _, v := range fl.GetLogFormat().GetJsonFormat().GetFields() {
			formats = append(formats, v.GetStringValue())
		}
		formats = append(formats, fl.GetLogFormat().GetTextFormatSource().GetInlineString())
	}
	for _, want := range logFormulas {
		if !slices.Contains(formats, want) {
			t.Errorf("no access log prints %s", want)
		}
	}
}

func cluster(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// checkClusters: every route leads to a cluster, and the meshproof one speaks
// HTTP/2, as gRPC needs.
func checkClusters(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	mp := cluster(b, "meshproof")
	if mp == nil {
		t.Fatal("no meshproof cluster")
	}
	opts, ok := mp.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatal("the meshproof cluster has no HttpProtocolOptions: Envoy would speak HTTP/1.1 to a gRPC server")
	}
	po := unpack(t, opts, &upstreamhttpv3.HttpProtocolOptions{})
	if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("the meshproof cluster is not explicitly HTTP/2")
	}
	for _, fc := range onlyListener(t, b).GetFilterChains() {
		for _, vh := range chainHCM(t, fc).GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if c := r.GetRoute().GetCluster(); cluster(b, c) == nil {
					t.Errorf("chain %q routes to cluster %q, which is not defined", fc.GetName(), c)
				}
			}
		}
	}
}
