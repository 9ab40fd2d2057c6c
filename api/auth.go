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

	"github.com/meshproof/meshproof/evidence/spiffe"
)

// MinTokenBytes is the shortest token accepted: shorter ones can be guessed.
const MinTokenBytes = 16

// LoadTokens reads a token file: one token per line; blank lines and lines
// starting with # are ignored. It needs at least one token, each at least
// MinTokenBytes long. Errors name the file and line, never a token.
func LoadTokens(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api token file: %w", err)
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
			return nil, fmt.Errorf("api token file %s, line %d: %w", path, line, err)
		}
		tokens = append(tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("api token file %s: %w", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("api token file %s: no token in it: put one per line (make one with: openssl rand -hex 32)", path)
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

// authenticator decides who may read the evidence.
type authenticator struct {
	open   bool       // no authentication configured (loopback or --api-insecure)
	hashes [][32]byte // SHA-256 of each token: equal-length values for a constant-time compare
	allow  []string   // SPIFFE ID prefixes of accepted client certificates
}

func newAuthenticator(cfg Config) *authenticator {
	a := &authenticator{open: cfg.Insecure || len(cfg.Tokens) == 0 && len(cfg.AllowSPIFFE) == 0, allow: cfg.AllowSPIFFE}
	for _, t := range cfg.Tokens {
		a.hashes = append(a.hashes, sha256.Sum256([]byte(t)))
	}
	return a
}

// check returns who the request comes from ("token 2", a SPIFFE ID,
// "open"), or an unauthorized error saying what was missing.
func (a *authenticator) check(r *http.Request) (string, error) {
	if a.open {
		return "open", nil
	}
	id, ok, certMsg := a.certificate(r)
	if ok {
		return id, nil
	}
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	switch {
	case h == "" && certMsg != "":
		return "", &apiError{kind: unauthorized, msg: certMsg}
	case h == "":
		return "", &apiError{kind: unauthorized, msg: a.hint()}
	case !strings.EqualFold(scheme, "Bearer") || tok == "":
		return "", &apiError{kind: unauthorized, msg: "the Authorization header is not \"Bearer <token>\""}
	}
	if n := a.token(tok); n > 0 {
		return "token " + strconv.Itoa(n), nil
	}
	return "", &apiError{kind: unauthorized, msg: "the bearer token is not accepted"}
}

// token returns the 1-based index of the configured token tok is, or 0.
// Every configured token is compared, whether one matched already or not,
// and the comparisons are of SHA-256 sums, so that neither the time taken
// nor its variation says which token matched or how long tokens are.
func (a *authenticator) token(tok string) int {
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for i := range a.hashes {
		eq := subtle.ConstantTimeCompare(sum[:], a.hashes[i][:])
		match = subtle.ConstantTimeSelect(eq, i+1, match)
	}
	return match
}

// certificate accepts a client certificate that the TLS handshake verified
// against the client CA, whose one URI SAN is a SPIFFE ID under an allowed
// prefix (on a path-segment boundary). msg says why a presented
// certificate is not accepted.
func (a *authenticator) certificate(r *http.Request) (id string, ok bool, msg string) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 || len(a.allow) == 0 {
		return "", false, ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return "", false, "the client certificate is not an X.509-SVID (it must have exactly one URI SAN)"
	}
	parsed, err := spiffe.Parse(leaf.URIs[0].String())
	if err != nil {
		return "", false, "the client certificate's URI SAN is not a SPIFFE ID"
	}
	for _, p := range a.allow {
		if spiffe.HasPrefix(parsed.ID, p) {
			return parsed.ID, true, ""
		}
	}
	return "", false, "the client certificate's SPIFFE ID " + quote(parsed.ID) + " is not allowed (--api-allow-spiffe)"
}

func (a *authenticator) hint() string {
	switch {
	case len(a.hashes) > 0 && len(a.allow) > 0:
		return "authentication required: send Authorization: Bearer <token>, or a client certificate with an allowed SPIFFE ID"
	case len(a.allow) > 0:
		return "authentication required: present a client certificate with an allowed SPIFFE ID"
	}
	return "authentication required: send Authorization: Bearer <token>"
}

// validateAllow checks the SPIFFE ID prefixes of Config.AllowSPIFFE.
func validateAllow(prefixes []string) error {
	for _, p := range prefixes {
		if _, err := spiffe.Parse(strings.TrimSuffix(p, "/")); err != nil {
			return fmt.Errorf("api allow-spiffe %s: want a SPIFFE ID prefix such as spiffe://cluster.local/ns/audit: %w", quote(p), err)
		}
	}
	return nil
}
