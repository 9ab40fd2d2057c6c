package meshsim

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// ServeHTTP is the HTTP connection manager with the ext_authz filter and
// the router: rewrite the headers, Check, honour the answer, forward.
func (s *Sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	d := downstream{remote: r.RemoteAddr, tls: r.TLS}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		d.local = a.String()
	}
	if r.TLS != nil {
		d.own = s.cfg.Identity.Cert
	}
	h := r.Header.Clone()
	mutateRequestHeaders(h, d, s.ForwardClientCert())
	streamID := randUint64()
	req := newCheckRequest(d, r, h, streamID, start, checkOptions{
		includePeerCertificate: s.cfg.IncludePeerCertificate,
		includeTLSSession:      s.cfg.IncludeTLSSession,
	})

	s.stats.checks.Add(1)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	resp, err := s.authz.Check(ctx, req)
	cancel()
	if err != nil {
		s.stats.checkErrors.Add(1)
	}
	out := decide(resp, err, filterOptions{statusOnError: s.cfg.StatusOnError, failureModeAllow: s.cfg.FailureModeAllow})

	e := Entry{
		Time: start, Chain: "plaintext", Source: d.remote, SourcePrincipal: req.GetAttributes().GetSource().GetPrincipal(),
		Method: r.Method, Host: r.Host, Path: req.GetAttributes().GetRequest().GetHttp().GetPath(),
		RequestID: h.Get(headerRequestID), StreamID: strconv.FormatUint(streamID, 10),
		Checked: out.checked, Allowed: out.allowed,
		EvidenceID: metadataString(out.metadata, "meshproof_evidence_id"),
		Verdict:    metadataString(out.metadata, "meshproof_verdict"),
	}
	if r.TLS != nil {
		e.Chain = "mtls"
	}
	if err != nil {
		e.CheckError = err.Error()
	}
	if out.allowed {
		e.Status = s.forward(w, r, h, mutateRequest(h, e.Path, out.ok), out)
	} else {
		e.Status = out.status
		localReply(w, out)
	}
	if s.cfg.AccessLog != nil {
		s.cfg.AccessLog(e)
	}
}

// localReply sends the denial Envoy makes up itself.
func localReply(w http.ResponseWriter, out outcome) {
	for k, vs := range out.header {
		w.Header()[k] = vs
	}
	if out.body != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(out.status)
	_, _ = io.WriteString(w, out.body)
}

// hopHeaders are connection-level headers a proxy does not forward.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends the allowed request upstream (the router) and its answer
// back, with the OK response's response_headers_to_add; it returns the
// status sent.
func (s *Sidecar) forward(w http.ResponseWriter, r *http.Request, h http.Header, path string, out outcome) int {
	up, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+s.cfg.Upstream+path, r.Body)
	if err != nil {
		http.Error(w, "meshproof mesh: bad upstream request: "+err.Error(), http.StatusBadRequest)
		return http.StatusBadRequest
	}
	up.Host = r.Host
	up.ContentLength = r.ContentLength
	up.Header = h
	for _, k := range hopHeaders {
		up.Header.Del(k)
	}
	resp, err := s.upstream.RoundTrip(up)
	if err != nil {
		// Envoy's words for it.
		http.Error(w, "upstream connect error or disconnect/reset before headers", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, k := range hopHeaders {
		w.Header().Del(k)
	}
	for _, hv := range out.ok.GetResponseHeadersToAdd() {
		applyHeader(w.Header(), hv)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return resp.StatusCode
}

// pemOf is a certificate's PEM, as Envoy writes it.
func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
