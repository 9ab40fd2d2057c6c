// Package tlsfiles builds server TLS configurations from PEM files that may be
// rotated while the server runs (SPIRE and cert-manager rotate certificates
// every hour or so): the files are re-read when they change.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// recheck bounds how often the files' modification times are looked at.
const recheck = 5 * time.Second

// ServerConfig returns a TLS configuration serving certFile/keyFile. With
// caFile, clients must present a certificate that chains to a CA in it.
// Every file is read now, so a missing or broken one is an error at start.
// nextProtos are the ALPN protocols served ("h2" for gRPC).
func ServerConfig(certFile, keyFile, caFile string, nextProtos ...string) (*tls.Config, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool, err := r.current()
		if err != nil {
			return nil, err
		}
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*cert},
			NextProtos:   nextProtos,
		}
		if pool != nil {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = pool
		}
		return c, nil
	}
	return base, nil
}

type reloader struct {
	certFile, keyFile, caFile string

	mu      sync.Mutex
	checked time.Time
	stamp   string // modification times of the files last loaded
	cert    *tls.Certificate
	pool    *x509.CertPool
}

// current returns the loaded certificate and CA pool, reloading them when
// the files changed. A broken new file keeps the previous ones in use.
func (r *reloader) current() (*tls.Certificate, *x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) > recheck {
		r.checked = time.Now()
		if r.stampNow() != r.stamp {
			_ = r.loadLocked() // on error the old pair stays
		}
	}
	if r.cert == nil {
		return nil, nil, errors.New("no server certificate loaded")
	}
	return r.cert, r.pool, nil
}

func (r *reloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked = time.Now()
	return r.loadLocked()
}

func (r *reloader) loadLocked() error {
	stamp := r.stampNow()
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	var pool *x509.CertPool
	if r.caFile != "" {
		pem, err := os.ReadFile(r.caFile)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("client CA %s: no PEM certificate in it", r.caFile)
		}
	}
	r.cert, r.pool, r.stamp = &cert, pool, stamp
	return nil
}

func (r *reloader) stampNow() string {
	s := ""
	for _, f := range []string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			s += fi.ModTime().String() + fmt.Sprint(fi.Size()) + ";"
		}
	}
	return s
}
