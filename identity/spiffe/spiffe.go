package spiffe

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits from the SPIFFE standard that go-spiffe does not enforce.
const (
	// MaxIDBytes is the longest SPIFFE ID, in bytes, that Parse accepts.
	MaxIDBytes = 2048
	// MaxTrustDomainBytes is the longest trust domain, in bytes, that Parse accepts.
	MaxTrustDomainBytes = 255
)

const scheme = "spiffe://"

// ID is a parsed SPIFFE ID. Namespace and ServiceAccount are set only for Istio-style IDs: path exactly /ns/<namespace>/sa/<service-account>.
type ID struct {
	ID             string // canonical string, spiffe://td/path
	TrustDomain    string
	Path           string // "" or "/a/b"
	Namespace      string
	ServiceAccount string
}

// Parse parses s as a SPIFFE ID and enforces the standard's byte limits.
// Errors start with "spiffe: " and say what is wrong with s.
func Parse(s string) (ID, error) {
	// Checked first so that an oversized input costs nothing more.
	if len(s) > MaxIDBytes {
		return ID{}, fmt.Errorf("spiffe: ID is %d bytes, the limit is %d", len(s), MaxIDBytes)
	}
	sid, err := spiffeid.FromString(s)
	if err != nil {
		if hint := mistake(s); hint != "" {
			return ID{}, fmt.Errorf("spiffe: invalid ID %s: %s", snippet(s), hint)
		}
		return ID{}, fmt.Errorf("spiffe: invalid ID %s: %w", snippet(s), err)
	}
	td := sid.TrustDomain().Name()
	if len(td) > MaxTrustDomainBytes {
		return ID{}, fmt.Errorf("spiffe: trust domain is %d bytes, the limit is %d", len(td), MaxTrustDomainBytes)
	}
	id := ID{ID: sid.String(), TrustDomain: td, Path: sid.Path()}
	id.Namespace, id.ServiceAccount = istio(id.Path)
	return id, nil
}

// istio returns the namespace and service account of an Istio-style path,
// /ns/<namespace>/sa/<service-account>, and "", "" for any other path.
// The path has passed spiffeid's checks, so its segments are not empty.
func istio(path string) (namespace, serviceAccount string) {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return "", ""
	}
	namespace, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return "", ""
	}
	serviceAccount, ok = strings.CutPrefix(rest, "sa/")
	if !ok || serviceAccount == "" || strings.Contains(serviceAccount, "/") {
		return "", ""
	}
	return namespace, serviceAccount
}

// mistake names a common way for s to be an invalid SPIFFE ID, or returns ""
// and lets go-spiffe's message stand. It only explains a rejection; whether s
// is valid is decided by spiffeid alone.
func mistake(s string) string {
	switch {
	case s == "":
		return "the ID is empty"
	case !strings.HasPrefix(s, scheme):
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return `the scheme must be lower-case "spiffe://"`
		}
		return `the ID must start with "spiffe://"`
	}
	rest := s[len(scheme):]
	authority, _, _ := strings.Cut(rest, "/")
	switch {
	case strings.Contains(authority, "@"):
		return "userinfo ('@') is not allowed"
	case strings.Contains(rest, "?"):
		return "a query ('?') is not allowed"
	case strings.Contains(rest, "#"):
		return "a fragment ('#') is not allowed"
	case strings.Contains(authority, ":"):
		return "a port (':') is not allowed"
	case authority != strings.ToLower(authority):
		return "the trust domain must be lower-case"
	}
	return ""
}

// snippet quotes s for an error message, cut short so that a 2 KiB ID does
// not produce a 2 KiB message.
func snippet(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
