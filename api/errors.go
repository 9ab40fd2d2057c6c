package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// kind is what went wrong, as far as the client is concerned. Statuses are
// chosen from kinds in one place, status.
type kind int

const (
	internal         kind = iota // the store or the server failed: details in the log only
	badParam                     // a query parameter is wrong; apiError.param names it
	notFound                     // no such record or path
	unauthorized                 // no accepted token or client certificate
	forbidden                    // credentials of the other role (reader, uploader)
	methodNotAllowed             // only GET is served
	unavailable                  // not ready, or the query ran out of time
)

func (k kind) status() int {
	switch k {
	case badParam:
		return http.StatusBadRequest
	case notFound:
		return http.StatusNotFound
	case unauthorized:
		return http.StatusUnauthorized
	case forbidden:
		return http.StatusForbidden
	case methodNotAllowed:
		return http.StatusMethodNotAllowed
	case unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// apiError is an error the API answers with: msg and param go to the
// client, err (the cause) to the log only.
type apiError struct {
	kind  kind
	msg   string
	param string
	err   error
}

func (e *apiError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *apiError) Unwrap() error { return e.err }

// badParamf is a 400 naming the parameter.
func badParamf(param, msg string) *apiError {
	return &apiError{kind: badParam, param: param, msg: clip(param) + ": " + msg}
}

// errorBody is the JSON of every error.
type errorBody struct {
	Error     string `json:"error"`
	Parameter string `json:"parameter,omitempty"`
}

// classify turns any error a handler returns into an apiError: the one
// place where store and report errors meet HTTP.
func classify(err error) *apiError {
	var ae *apiError
	var fe *evidence.FilterError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &fe):
		return badParamf(fe.Field, fe.Msg)
	case errors.Is(err, evidence.ErrBadCursor):
		return badParamf("cursor", "not a cursor this server gave out: start again without it")
	case errors.Is(err, report.ErrNoDestination):
		return badParamf("destination", "required: a host:port as in :authority, or a destination principal")
	case errors.Is(err, evidence.ErrNotFound):
		return &apiError{kind: notFound, msg: "no such record", err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{kind: unavailable, err: err,
			msg: "the query took longer than " + queryTimeout.String() + ": narrow it (since, source, destination, host)"}
	}
	return &apiError{kind: internal, msg: "the evidence store failed; the server log has the details", err: err}
}

// writeError answers with e as JSON.
func writeError(w http.ResponseWriter, e *apiError) {
	switch e.kind {
	case unauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshproof"`)
	case methodNotAllowed:
		w.Header().Set("Allow", "GET")
	}
	writeJSON(w, e.kind.status(), errorBody{Error: e.msg, Parameter: clip(e.param)})
}

// writeJSON answers with v. Encoding first means a value that cannot be
// encoded is a 500, not half a 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "the answer could not be encoded; the server log has the details"})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// maxEcho bounds how much of a client's bad value an answer repeats.
const maxEcho = 48

// clip is s cut to at most maxEcho bytes, as valid UTF-8 without control
// characters, for naming a parameter the client sent.
func clip(s string) string {
	cut := len(s) > maxEcho
	if cut {
		s = s[:maxEcho]
	}
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if cut {
		s += "..."
	}
	return s
}

// quote is a bad value as an answer repeats it: quoted, escaped, and at
// most maxEcho bytes of it.
func quote(s string) string { return params.Quote(s) }
