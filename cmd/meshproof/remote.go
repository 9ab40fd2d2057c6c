package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshproof/meshproof/api/client"
)

// defaultServer is where `meshproof serve` listens by default (--http-addr).
const defaultServer = "http://127.0.0.1:8181"

// remoteOptions say how query and report reach the evidence API.
type remoteOptions struct {
	Server    string
	TokenFile string
	CAFile    string
	Cert      string
	Key       string
	Timeout   time.Duration
}

func (o *remoteOptions) flags(fs *pflag.FlagSet) {
	o.Server = defaultServer
	o.Timeout = client.DefaultTimeout
	fs.StringVar(&o.Server, "server", o.Server, "`URL` of meshproof serve's HTTP listener (its --http-addr; https:// when it has --http-tls-cert)")
	fs.StringVar(&o.TokenFile, "token-file", o.TokenFile, "`file` holding a bearer token from serve's --api-token-file (its first line that is not blank or a # comment)")
	fs.StringVar(&o.CAFile, "ca-file", o.CAFile, "PEM CA bundle that signed the server's certificate (https://; the system's CAs when unset)")
	fs.StringVar(&o.Cert, "cert", o.Cert, "PEM client certificate, for a server that requires mTLS (serve's --http-client-ca and --api-allow-spiffe)")
	fs.StringVar(&o.Key, "key", o.Key, "PEM private key of --cert")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long to wait for each answer of the server")
}

// hint is the flags a command printed for the user to paste needs to
// reach the same server as this one, each followed by a space: those given
// that differ from their defaults, shell-quoted.
func (o *remoteOptions) hint() string {
	var b strings.Builder
	for _, f := range []struct{ name, value, def string }{
		{"server", o.Server, defaultServer},
		{"token-file", o.TokenFile, ""},
		{"ca-file", o.CAFile, ""},
		{"cert", o.Cert, ""},
		{"key", o.Key, ""},
		{"timeout", o.Timeout.String(), client.DefaultTimeout.String()},
	} {
		if f.value != f.def {
			b.WriteString("--" + f.name + "=" + shellQuote(f.value) + " ")
		}
	}
	return b.String()
}

func (o *remoteOptions) client() (*client.Client, error) {
	if o.Timeout <= 0 {
		return nil, usageError{errors.New("--timeout must be positive")}
	}
	c, err := client.New(o.Server, client.Options{
		TokenFile: o.TokenFile, CAFile: o.CAFile, CertFile: o.Cert, KeyFile: o.Key, Timeout: o.Timeout,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// explain turns an error of the API client into one that says what to do.
// A parameter the server refused is a usage error naming the flag.
func (o *remoteOptions) explain(err error) error {
	var ae *client.Error
	var ue *client.UnreachableError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return o.explainAnswer(ae)
	case errors.As(err, &ue):
		return fmt.Errorf("%w\n%s", err, o.unreachableHint(ue.Err))
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from %s within --timeout %s: %w", o.Server, o.Timeout, err)
	}
	return err
}

func (o *remoteOptions) explainAnswer(e *client.Error) error {
	switch e.StatusCode {
	case http.StatusBadRequest:
		if e.Parameter != "" {
			msg := strings.TrimPrefix(e.Message, e.Parameter+": ")
			return usageError{fmt.Errorf("--%s: %s (the server refused parameter %s)", strings.ReplaceAll(e.Parameter, "_", "-"), msg, e.Parameter)}
		}
		return usageError{fmt.Errorf("the server refused the request: %w", e)}
	case http.StatusUnauthorized:
		hint := "pass --token-file with a file holding one of the tokens of meshproof serve's --api-token-file"
		if o.TokenFile != "" {
			hint = "the token in " + o.TokenFile + " must be one of those in meshproof serve's --api-token-file"
		}
		if o.Cert == "" {
			hint += " (or pass --cert and --key: a client certificate whose SPIFFE ID serve's --api-allow-spiffe allows)"
		} else {
			hint += "; the SPIFFE ID of --cert must be one serve's --api-allow-spiffe allows"
		}
		return fmt.Errorf("%s refused the credentials: %s\n%s", o.Server, e.Message, hint)
	}
	return fmt.Errorf("%s: %w", o.Server, e)
}

// unreachableHint guesses, from the transport's error, what is wrong.
func (o *remoteOptions) unreachableHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		return "the server's certificate is signed by a CA this machine does not trust: pass --ca-file with the CA that signed serve's --http-tls-cert"
	case errors.As(err, &badName):
		return "the server's certificate does not name the host of --server: use a host name it has (" + msg + ")"
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "the server speaks plain HTTP: use an http:// URL in --server"
	case strings.Contains(msg, `malformed HTTP response "\x15`):
		return "the server speaks TLS (serve has --http-tls-cert): use an https:// URL in --server"
	case strings.Contains(msg, "certificate required"):
		return "the server requires a client certificate (serve's --http-client-ca): pass --cert and --key"
	case strings.Contains(msg, "tls: bad certificate"), strings.Contains(msg, "tls: unknown certificate authority"):
		return "the server refused the client certificate of --cert: it must be signed by serve's --http-client-ca"
	}
	var op *net.OpError
	if connected := !errors.As(err, &op) || op.Op != "dial"; connected && strings.HasPrefix(o.Server, "https:") {
		// With TLS 1.3 the server checks the client certificate after the
		// client's handshake is done: its alert often loses the race with
		// the request, and the client sees a closed connection instead.
		if o.Cert == "" {
			return "the server closed the connection after the TLS handshake: if it requires a client certificate (serve's --http-client-ca), pass --cert and --key"
		}
		return "the server closed the connection after the TLS handshake: it may refuse the client certificate of --cert, which must be signed by serve's --http-client-ca"
	}
	return "is meshproof serve running there? --server must match its --http-addr (" + defaultServer + " by default)"
}
