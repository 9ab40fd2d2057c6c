// Package client is a small typed client of meshproof's evidence API (see
// api/openapi.json): pages of records, one record, the NDJSON export, the
// tls-check and STRICT-readiness reports, and store statistics.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultTimeout bounds a request when Options.Timeout is zero. The server
// gives up on a query after 30 seconds; this leaves it room to say so.
const DefaultTimeout = time.Minute

// Options say how to reach and authenticate to the API.
type Options struct {
	// TokenFile holds the bearer token: its first line that is neither
	// blank nor a # comment (the format of serve's --api-token-file).
	TokenFile string
	// Token is the bearer token itself; TokenFile wins when both are set.
	Token string
	// CAFile is a PEM bundle that verifies the server's certificate
	// (https only); the system roots when empty.
	CAFile string
	// CertFile and KeyFile are a client certificate and its key, for a
	// listener that requires mTLS (serve's --http-client-ca).
	CertFile, KeyFile string
	// Timeout bounds each request; for Export, the wait for the first byte
	// of the answer only. DefaultTimeout when zero.
	Timeout time.Duration
}

// Client calls the API at one base URL. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	timeout time.Duration
	http    *http.Client
}

// New returns a client of the API at baseURL (http:// or https://, as
// serve's --http-addr and --http-tls-cert make it).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://host:port or https://host:port", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server URL %q: want no query or fragment", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, token: opts.Token, timeout: opts.Timeout}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if opts.TokenFile != "" {
		if c.token, err = readToken(opts.TokenFile); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = c.timeout
	// HTTP/1.1 only: requests go one at a time, and over HTTP/2 a TLS alert
	// (a client certificate the server wants or refuses) is reported as
	// "client conn could not be established", without its reason.
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	if opts.CAFile != "" || opts.CertFile != "" || opts.KeyFile != "" {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("server URL %q: a CA file or client certificate needs an https:// URL", baseURL)
		}
		if tr.TLSClientConfig, err = tlsConfig(opts); err != nil {
			return nil, err
		}
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// URL is the base URL the client calls.
func (c *Client) URL() string { return c.base.String() }

// readToken reads the first token of a token file.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		tok := strings.TrimSpace(line)
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return "", fmt.Errorf("token file %s: the token holds a space, a control character or a non-ASCII byte", path)
		}
		return tok, nil
	}
	return "", fmt.Errorf("token file %s: no token in it (one per line; # starts a comment)", path)
}

func tlsConfig(opts Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", opts.CAFile)
		}
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("a client certificate and its key go together")
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s / key %s: %w", opts.CertFile, opts.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Error is an answer of the API other than 200: the JSON error body it
// carried, and its status.
type Error struct {
	StatusCode int
	// Message is the API's explanation ("error").
	Message string
	// Parameter names the query parameter at fault ("parameter"), on a 400.
	Parameter string
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Parameter != "" && !strings.HasPrefix(msg, e.Parameter+":") {
		msg = "parameter " + e.Parameter + ": " + msg
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.StatusCode)
}

// UnreachableError is a request that got no HTTP answer: the server is
// down, elsewhere, or speaks another protocol (TLS or not).
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string { return "cannot reach " + e.URL + ": " + e.Err.Error() }

func (e *UnreachableError) Unwrap() error { return e.Err }

// get sends GET path?query and returns the response when it is a 200; the
// caller closes its body.
func (c *Client) get(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{URL: c.base.String(), Err: unwrapURLError(err)}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// unwrapURLError drops url.Error's "Get "<url>": " prefix: the URL with
// its query says less than the base URL the caller names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decodeError reads an error answer's JSON body.
func decodeError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode}
	var body struct {
		Error     string `json:"error"`
		Parameter string `json:"parameter"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		e.Message, e.Parameter = body.Error, body.Parameter
	} else if s := strings.TrimSpace(string(b)); s != "" {
		e.Message = "not a meshproof API answer: " + clip(s)
	}
	return e
}

func clip(s string) string {
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// getJSON decodes the JSON answer of GET path?query into v, within the
// client's timeout.
func (c *Client) getJSON(ctx context.Context, path string, query url.Values, v any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.get(ctx, path, query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: reading the answer: %w", path, err)
	}
	return nil
}
