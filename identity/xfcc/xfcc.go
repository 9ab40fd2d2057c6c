package xfcc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// Limits that bound the work one header can cause.
const (
	// MaxHeaderBytes is the largest header Parse accepts; larger ones fail with ErrTooLarge.
	MaxHeaderBytes = 64 << 10
	// MaxElements is the most elements (proxy hops) Parse accepts; more fail with ErrTooManyElements.
	MaxElements = 64
	// MaxPairs is the most key=value pairs Parse accepts in one element; more fail with ErrTooManyPairs.
	MaxPairs = 256
)

// Sentinel errors for the limits, matched with errors.Is against what Parse returns.
var (
	// ErrTooLarge means the header is longer than MaxHeaderBytes.
	ErrTooLarge = errors.New("xfcc: header too large")
	// ErrTooManyElements means the header has more than MaxElements elements.
	ErrTooManyElements = errors.New("xfcc: too many elements")
	// ErrTooManyPairs means an element has more than MaxPairs key=value pairs.
	ErrTooManyPairs = errors.New("xfcc: too many key=value pairs in one element")
)

// Element is one proxy hop's entry in an XFCC header.
type Element struct {
	By      []string            // "By" values, in order (one per URI SAN of the proxy's cert)
	Hash    string              // "Hash"
	Cert    string              // "Cert", URL-decoded PEM (url.PathUnescape semantics: '+' stays '+')
	Chain   string              // "Chain", URL-decoded PEM
	Subject string              // "Subject" (unquoted/unescaped value)
	URI     []string            // "URI" values (old Envoy's "SAN" counts as URI); "URI=" gives [""], absent gives nil
	DNS     []string            // "DNS" values, one per pair
	Other   map[string][]string // unknown keys as written (e.g. "Issuer"), values in order; nil when none
}

// Error describes why a header could not be parsed and where.
type Error struct {
	Element int    // index of the element at fault, counting from 0 at the left; -1 when the whole header is
	Offset  int    // byte offset into the header, counting from 0
	Reason  string // what was wrong
	Err     error  // the sentinel or underlying cause, if any; exposed to errors.Is and errors.As
}

// Error formats the error as "xfcc: element N: <reason> at byte M".
func (e *Error) Error() string {
	if e.Element < 0 {
		return "xfcc: " + e.Reason
	}
	return fmt.Sprintf("xfcc: element %d: %s at byte %d", e.Element, e.Reason, e.Offset)
}

// Unwrap returns the sentinel or underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Parse parses an XFCC header value into its elements, oldest (leftmost) first.
// An empty or all-blank header gives nil, nil. Any error is an [*Error].
func Parse(header string) ([]Element, error) {
	if len(header) > MaxHeaderBytes {
		return nil, &Error{
			Element: -1,
			Offset:  MaxHeaderBytes,
			Reason:  fmt.Sprintf("header is %d bytes, the limit is %d", len(header), MaxHeaderBytes),
			Err:     ErrTooLarge,
		}
	}
	p := parser{s: header}
	return p.parse()
}

// Rightmost returns the newest element (the one this hop's proxy appended); ok false when none.
func Rightmost(elems []Element) (Element, bool) {
	if len(elems) == 0 {
		return Element{}, false
	}
	return elems[len(elems)-1], true
}

// CertSHA256 returns the lowercase hex SHA-256 of the DER of the first CERTIFICATE PEM block in e.Cert,
// "" if Cert is empty, error if Cert is not valid PEM.
//
// The result is comparable with e.Hash, which Envoy computes over the same DER.
func (e Element) CertSHA256() (string, error) {
	if e.Cert == "" {
		return "", nil
	}
	rest := []byte(e.Cert)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return "", errors.New("xfcc: Cert holds no CERTIFICATE PEM block")
		}
		if block.Type == "CERTIFICATE" {
			sum := sha256.Sum256(block.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}
