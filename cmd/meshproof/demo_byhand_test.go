package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/internal/meshsim"
)

// TestDemoByHand: the demo names curl's exit code 35 and writes the files
// its curl uses (the key 0600) to a directory it prints; with them, Go's
// TLS client repeats the call: offering an Istio ALPN it gets through over
// mTLS and is recorded as curl's identity, offering curl's ALPNs its
// handshake fails. The printed curl and openssl commands, run by a shell
// when the tools are here, say the same. The directory goes on exit.
func TestDemoByHand(t *testing.T) {
	out, _, done, stop := startDemo(t)
	waitMatch(t, out, regexp.MustCompile(`Ctrl-C stops the demo`), done)
	text := out.String()
	server := regexp.MustCompile(`The page:\s+(http://127\.0\.0\.1:\d+)/ui/`).FindStringSubmatch(text)[1]
	dir := regexp.MustCompile(`the files curl uses are in (\S+) \(removed on exit\)`).FindStringSubmatch(text)
	if dir == nil {
		t.Fatal("the demo does not say where curl's files are")
	}
	curlLine := regexp.MustCompile(`(?m)^  (curl -k .+)$`).FindStringSubmatch(text)
	opensslLine := regexp.MustCompile(`(?m)^  (printf .+ \| openssl s_client .+)$`).FindStringSubmatch(text)
	if curlLine == nil || opensslLine == nil || !strings.Contains(text, "exit code 35") {
		t.Fatal("no curl command, openssl command or exit code 35 in the story")
	}
	sidecar := regexp.MustCompile(`https://(127\.0\.0\.\d+:\d+)/headers`).FindStringSubmatch(curlLine[1])[1]
	certFile, keyFile, rootFile := filepath.Join(dir[1], "curl-cert.pem"), filepath.Join(dir[1], "curl-key.pem"), filepath.Join(dir[1], "root-cert.pem")
	for _, f := range []string{certFile, keyFile, rootFile} {
		if !strings.Contains(text, f) {
			t.Errorf("%s is not in the printed commands", f)
		}
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v, %v; want mode 0600", fi, err)
	}
	if fi, err := os.Stat(dir[1]); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the directory: %v, %v; want mode 0700", fi, err)
	}

	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("%s holds no certificate", rootFile)
	}
	certPEM, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(certPEM)
	sum := sha256.Sum256(block.Bytes)
	certHash := hex.EncodeToString(sum[:])

	// The sidecar's certificate carries its SPIFFE ID, not a host name:
	// verified as Istio verifies it.
	config := func(alpn ...string) *tls.Config {
		return &tls.Config{
			Certificates:       []tls.Certificate{pair},
			NextProtos:         alpn,
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				leaf := cs.PeerCertificates[0]
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					return err
				}
				if !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == meshsim.ServerID }) {
					return errors.New("the sidecar is not " + meshsim.ServerID)
				}
				return nil
			},
		}
	}
	get := func(cfg *tls.Config) (*http.Response, error) {
		rt := &http.Transport{DisableKeepAlives: true, DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, sidecar)
		}}
		defer rt.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "https://"+meshsim.Host+"/headers", nil)
		return rt.RoundTrip(req)
	}

	// Offering an Istio ALPN: mTLS, recorded as curl's identity.
	resp, err := get(config("istio-http/1.1"))
	if err != nil {
		t.Fatalf("the mTLS call with the demo's files: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	// httpbin echoes the headers it got: meshproof's evidence id among them.
	answer := &meshsim.Response{Status: resp.StatusCode, Body: body}
	headers, err := answer.Headers()
	if err != nil {
		t.Fatal(err)
	}
	id := headers["X-Meshproof-Evidence-Id"]
	if resp.StatusCode != http.StatusOK || id == "" || !strings.Contains(headers["X-Forwarded-Client-Cert"], "URI="+meshsim.CurlID) {
		t.Fatalf("the mTLS call: %d, headers httpbin got %v", resp.StatusCode, headers)
	}
	api, err := client.New(server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitRecord(t, api, id)
	if rec.Verdict != evidence.MTLS || rec.Source.Principal != meshsim.CurlID || rec.Source.Certificate == nil || rec.Source.Certificate.SHA256 != certHash {
		t.Errorf("the record of the mTLS call: %+v", rec)
	}
	// Made from 127.0.0.1, outside the demo's cluster: no source workload,
	// and the reason; the destination is httpbin's pod.
	if rec.Source.Workload != nil || !slices.Contains(rec.Reasons, "source workload: unknown address") ||
		rec.Destination.Workload == nil || rec.Destination.Workload.Name != "httpbin" {
		t.Errorf("the mTLS call's workloads: source %+v, destination %+v, reasons %q", rec.Source.Workload, rec.Destination.Workload, rec.Reasons)
	}

	// curl's ALPNs: the plaintext chain, and a failed handshake (exit 35).
	if resp, err := get(config("h2", "http/1.1")); err == nil {
		resp.Body.Close()
		t.Errorf("curl's call got %d, want a failed handshake", resp.StatusCode)
	}

	// The printed commands, as a reader pastes them.
	shell := func(line string) string {
		cctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		b, _ := exec.CommandContext(cctx, "sh", "-c", line).CombinedOutput()
		return string(b)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		if got := shell(curlLine[1]); !strings.HasSuffix(got, "exit 35\n") {
			t.Errorf("%s:\n%s\nwant exit 35", curlLine[1], got)
		}
	} else {
		t.Log("no curl here: its printed command is not run")
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		got := shell(opensslLine[1])
		if !strings.Contains(got, "HTTP/1.1 200 OK") || !strings.Contains(got, "URI="+meshsim.CurlID) || !strings.Contains(got, "X-Meshproof-Evidence-Id") {
			t.Errorf("%s:\n%s\nwant 200, curl's identity in XFCC and the evidence id", opensslLine[1], got)
		}
	} else {
		t.Log("no openssl here: its printed command is not run")
	}

	stop()
	if _, err := os.Stat(dir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", dir[1], err)
	}
}

// waitRecord waits until the API has the record id (the writer batches).
func waitRecord(t *testing.T, api *client.Client, id string) *evidence.Record {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rec, err := api.Get(context.Background(), id)
		if err == nil {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %s: %v after 15s", id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
