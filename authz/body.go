package authz

import (
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// pathTerms are a path's parsed_path and parsed_query, or why it has none.
type pathTerms struct {
	path, query *ast.Term
	err         error
}

// maxCachedPath keeps long, unique paths (ids, tokens) out of the cache.
const maxCachedPath = 256

// pathTerms returns the request path's parsed_path and parsed_query.
func (c *inputCache) pathTerms(path string) pathTerms {
	if c == nil || len(path) > maxCachedPath {
		return newPathTerms(path)
	}
	return c.paths.get(path, newPathTerms)
}

func newPathTerms(path string) pathTerms {
	p, q, err := parsedPathQuery(path)
	return pathTerms{p, q, err}
}

// parsedPathQuery returns parsed_path and parsed_query as OPA-Envoy computes
// them: the path before "?" percent-decoded, leading slashes trimmed, split
// on "/"; the query parsed by net/url ("z" alone gives {"z": [""]}).
func parsedPathQuery(path string) (*ast.Term, *ast.Term, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, &parseError{fmt.Sprintf("path %q: %v", truncate(rawPath, 200), err), err}
	}
	trimmed := strings.TrimLeft(decoded, "/")
	n := strings.Count(trimmed, "/") + 1
	segs := make([]*ast.Term, 0, n)
	for {
		seg, rest, found := strings.Cut(trimmed, "/")
		segs = append(segs, ast.StringTerm(seg))
		if !found {
			break
		}
		trimmed = rest
	}
	pathTerm := ast.ArrayTerm(segs...)
	if rawQuery == "" {
		return pathTerm, ast.InternedEmptyObject, nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, &parseError{"query string: " + err.Error(), err}
	}
	return pathTerm, valuesTerm(q), nil
}

func valuesTerm(v url.Values) *ast.Term {
	kv := make([]item, 0, len(v))
	for k, vs := range v {
		ts := make([]*ast.Term, len(vs))
		for i, s := range vs {
			ts[i] = ast.StringTerm(s)
		}
		kv = append(kv, item{ast.StringTerm(k), ast.ArrayTerm(ts...)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

// parsedBody returns parsed_body and truncated_body the way OPA-Envoy does:
// JSON, urlencoded forms ({key: [values]}) and multipart forms ({name:
// [values]}, JSON parts parsed) are understood; any other content type, or
// none, gives null. A body shorter than its content-length was cut by
// Envoy's max_request_bytes and is reported as truncated, not parsed.
// Errors say what was wrong, for the deny reason.
func parsedBody(h *headerReader, body string, raw []byte) (*ast.Term, bool, error) {
	if h.get("x-envoy-auth-partial-body") == "true" {
		return ast.InternedNullTerm, true, nil
	}
	ctype := h.get("content-type")
	if ctype == "" {
		return ast.InternedNullTerm, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}
	kind := ""
	switch {
	case strings.Contains(ctype, "application/json"):
		kind = "json"
	case strings.Contains(ctype, "application/grpc"):
		// Decoding gRPC payloads needs the service's descriptors; without
		// them OPA-Envoy gives null too.
		return ast.InternedNullTerm, false, nil
	case strings.Contains(ctype, "application/x-www-form-urlencoded"):
		kind = "form"
	case strings.Contains(ctype, "multipart/form-data"):
		kind = "multipart"
	default:
		return ast.InternedNullTerm, false, nil
	}
	if payload == "" {
		return ast.InternedNullTerm, false, nil
	}
	if cl, ok := h.lookup("content-length"); ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, &parseError{fmt.Sprintf("content-length %q is not a number", truncate(cl, 40)), err}
		}
		if n != -1 && n > int64(len(payload)) {
			return ast.InternedNullTerm, true, nil
		}
	}
	switch kind {
	case "json":
		v, err := jsonTerm([]byte(payload))
		if err != nil {
			return nil, false, &parseError{"JSON body: " + err.Error(), err}
		}
		return v, false, nil
	case "form":
		q, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, &parseError{"form body: " + err.Error(), err}
		}
		return valuesTerm(q), false, nil
	default:
		v, err := multipartTerm(ctype, payload)
		if err != nil {
			return nil, false, &parseError{"multipart body: " + err.Error(), err}
		}
		return v, false, nil
	}
}

func jsonTerm(b []byte) (*ast.Term, error) {
	var x any
	if err := util.UnmarshalJSON(b, &x); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}

func multipartTerm(ctype, payload string) (*ast.Term, error) {
	_, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.InternedNullTerm, nil
	}
	// As OPA-Envoy, any number of parts: what is kept per part is a few
	// words beside its bytes in the body, and the body is bounded (Envoy's
	// max_request_bytes, --grpc-max-recv-msg-bytes), so the memory is too
	// (TestMultipartMemoryBoundedByBody).
	values := map[string][]*ast.Term{}
	var order []string
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF { //nolint:errorlint // a wrapped EOF is a truncated body, an error, as in OPA-Envoy
			break
		}
		if err != nil {
			return nil, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, &parseError{fmt.Sprintf("part %q: %v", name, err), err}
		}
		var t *ast.Term
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			if t, err = jsonTerm(b); err != nil {
				return nil, &parseError{fmt.Sprintf("part %q: JSON: %v", name, err), err}
			}
		} else {
			t = ast.StringTerm(string(b))
		}
		if _, seen := values[name]; !seen {
			order = append(order, name)
		}
		values[name] = append(values[name], t)
	}
	kv := make([]item, 0, len(order))
	for _, name := range order {
		kv = append(kv, item{ast.StringTerm(name), ast.ArrayTerm(values[name]...)})
	}
	return ast.NewTerm(ast.NewObject(kv...)), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// parseError is a part of the request that cannot be parsed: msg says which
// and why, for the record; err is the error OPA-Envoy reports for it (its
// 400 says exactly that, and so does meshproof's: InputError.Upstream).
type parseError struct {
	msg string
	err error
}

func (e *parseError) Error() string { return e.msg }
func (e *parseError) Unwrap() error { return e.err }
