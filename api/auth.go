package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/identity/spiffe"
)

// MinTokenBytes is the shortest token accepted: shorter ones can be guessed.
const MinTokenBytes = 16

// LoadTokens reads a token file: one token per line; blank lines and lines
// starting with # are ignored. It needs at least one token, each at least
// MinTokenBytes long. Errors name the file and line, never a token.
func LoadTokens(path string) ([]string, error) { return loadTokens("api token file", path) }

// LoadIngestTokens reads a file of ingest tokens (Config.IngestTokens), in
// the format of LoadTokens.
func LoadIngestTokens(path string) ([]string, error) { return loadTokens("ingest token file", path) }

func loadTokens(what, path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var tokens []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for line := 1; sc.Scan(); line++ {
		tok := strings.TrimSpace(sc.Text())
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if err := checkToken(tok); err != nil {
			return nil, fmt.Errorf("%s %s, line %d: %w", what, path, line, err)
		}
		tokens = append(tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s %s: no token in it: put one per line (make one with: openssl rand -hex 32)", what, path)
	}
	return tokens, nil
}

// checkToken says what is wrong with a token, without repeating it.
func checkToken(tok string) error {
	if len(tok) < MinTokenBytes {
		return fmt.Errorf("the token is %d bytes, the minimum is %d (make one with: openssl rand -hex 32)", len(tok), MinTokenBytes)
	}
	for _, c := range []byte(tok) {
		if c <= ' ' || c >= 0x7f {
			return errors.New("the token holds a space, a control character or a non-ASCII byte: a bearer token is printable ASCII")
		}
	}
	return nil
}

// role is what a request does with the evidence: read it (the API, the
// metrics, the profiler) or write it (OPA's decision log uploads, /logs).
// Each has its own credentials, and those of one are refused (403) by the
// other: a reader's token must not write evidence, nor an uploader's read
// it.
type role int

const (
	reader role = iota
	uploader
)

// credentials are the tokens and client certificates of one role.
type credentials struct {
	hashes [][32]byte // SHA-256 of each token: equal-length values for a constant-time compare
	allow  []string   // SPIFFE ID prefixes of accepted client certificates
}

func newCredentials(tokens, allow []string) credentials {
	c := credentials{allow: allow}
	for _, t := range tokens {
		c.hashes = append(c.hashes, sha256.Sum256([]byte(t)))
	}
	return c
}

func (c *credentials) none() bool { return len(c.hashes) == 0 && len(c.allow) == 0 }

// allows reports whether a SPIFFE ID is under one of the allowed prefixes.
func (c *credentials) allows(id string) bool {
	for _, p := range c.allow {
		if spiffe.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// authenticator decides who may read the evidence, and who may upload it.
type authenticator struct {
	open       bool // readers need no authentication (loopback or --api-insecure)
	ingestOpen bool // uploads need no authentication (Config.IngestOpen)
	read       credentials
	ingest     credentials
}

func newAuthenticator(cfg Config) *authenticator {
	return &authenticator{
		open:       cfg.Insecure || len(cfg.Tokens) == 0 && len(cfg.AllowSPIFFE) == 0,
		ingestOpen: cfg.IngestOpen,
		read:       newCredentials(cfg.Tokens, cfg.AllowSPIFFE),
		ingest:     newCredentials(cfg.IngestTokens, cfg.IngestAllowSPIFFE),
	}
}

// check returns who the request comes from ("token 2", "ingest token 1",
// a SPIFFE ID, "open"), or an error: unauthorized saying what was missing,
// forbidden when the credentials are the other role's.
func (a *authenticator) check(r *http.Request, as role) (string, error) {
	own, other, tokenName := &a.read, &a.ingest, "token "
	if as == uploader {
		own, other, tokenName = &a.ingest, &a.read, "ingest token "
		switch {
		case a.ingestOpen:
			return "open", nil
		case own.none():
			return "", &apiError{kind: forbidden, msg: "no ingest credential is configured, so POST /logs takes no upload: " +
				"give uploaders a token of --ingest-token-file (or allow their client certificates with --ingest-allow-spiffe); " +
				"the API's reader tokens may not write evidence"}
		}
	} else if a.open {
		return "open", nil
	}
	id, certMsg := a.clientID(r)
	var certForbidden string
	if id != "" {
		switch {
		case own.allows(id):
			return id, nil
		case other.allows(id) && as == reader:
			certForbidden = "the client certificate's SPIFFE ID " + quote(id) + " may only upload decision logs (--ingest-allow-spiffe), not read the evidence (--api-allow-spiffe)"
		case other.allows(id):
			certForbidden = "the client certificate's SPIFFE ID " + quote(id) + " may read the evidence (--api-allow-spiffe) but not upload it: allow it with --ingest-allow-spiffe"
		case len(own.allow) == 0:
			// This role takes no certificate: the hint says what it takes.
		case as == reader:
			certMsg = "the client certificate's SPIFFE ID " + quote(id) + " is not allowed (--api-allow-spiffe)"
		default:
			certMsg = "the client certificate's SPIFFE ID " + quote(id) + " may not upload decision logs (--ingest-allow-spiffe)"
		}
	}
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	switch {
	case h == "" && certForbidden != "":
		return "", &apiError{kind: forbidden, msg: certForbidden}
	case h == "" && certMsg != "":
		return "", &apiError{kind: unauthorized, msg: certMsg}
	case h == "":
		return "", &apiError{kind: unauthorized, msg: own.hint(as)}
	case !strings.EqualFold(scheme, "Bearer") || tok == "":
		return "", &apiError{kind: unauthorized, msg: "the Authorization header is not \"Bearer <token>\""}
	}
	// Both sets are compared, whatever the first says.
	n, m := own.token(tok), other.token(tok)
	switch {
	case n > 0:
		return tokenName + strconv.Itoa(n), nil
	case m > 0 && as == reader:
		return "", &apiError{kind: forbidden, msg: "the bearer token is an ingest token (--ingest-token-file): it may only upload decision logs to POST /logs, not read the evidence"}
	case m > 0:
		return "", &apiError{kind: forbidden, msg: "the bearer token is a reader token (--api-token-file), which may not write evidence: POST /logs takes a token of --ingest-token-file"}
	}
	return "", &apiError{kind: unauthorized, msg: "the bearer token is not accepted"}
}

// token returns the 1-based index of the configured token tok is, or 0.
// Every configured token is compared, whether one matched already or not,
// and the comparisons are of SHA-256 sums, so that neither the time taken
// nor its variation says which token matched or how long tokens are.
func (c *credentials) token(tok string) int {
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for i := range c.hashes {
		eq := subtle.ConstantTimeCompare(sum[:], c.hashes[i][:])
		match = subtle.ConstantTimeSelect(eq, i+1, match)
	}
	return match
}

// clientID returns the SPIFFE ID of a client certificate that the TLS
// handshake verified against the client CA and whose one URI SAN is a
// SPIFFE ID, when an allowlist (of either role) is configured; msg says
// why a presented certificate is not an X.509-SVID.
func (a *authenticator) clientID(r *http.Request) (id, msg string) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 || len(a.read.allow) == 0 && len(a.ingest.allow) == 0 {
		return "", ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return "", "the client certificate is not an X.509-SVID (it must have exactly one URI SAN)"
	}
	parsed, err := spiffe.Parse(leaf.URIs[0].String())
	if err != nil {
		return "", "the client certificate's URI SAN is not a SPIFFE ID"
	}
	return parsed.ID, ""
}

func (c *credentials) hint(as role) string {
	bearer := "send Authorization: Bearer <token>"
	if as == uploader {
		bearer = "send Authorization: Bearer <a token of --ingest-token-file>"
	}
	switch {
	case len(c.hashes) > 0 && len(c.allow) > 0:
		return "authentication required: " + bearer + ", or a client certificate with an allowed SPIFFE ID"
	case len(c.allow) > 0:
		return "authentication required: present a client certificate with an allowed SPIFFE ID"
	}
	return "authentication required: " + bearer
}

// validateAllow checks the SPIFFE ID prefixes of Config.AllowSPIFFE or
// IngestAllowSPIFFE (what names which).
func validateAllow(what string, prefixes []string) error {
	for _, p := range prefixes {
		if _, err := spiffe.Parse(strings.TrimSuffix(p, "/")); err != nil {
			return fmt.Errorf("%s %s: want a SPIFFE ID prefix such as spiffe://cluster.local/ns/audit: %w", what, quote(p), err)
		}
	}
	return nil
}
