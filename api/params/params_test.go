package params

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

func TestDecodeResolve(t *testing.T) {
	now := time.Date(2025, 3, 3, 12, 0, 0, 0, time.UTC)
	w, err := Decode(map[string][]string{
		"since": {"2h"}, "source": {""}, "verdict": {"plaintext", "", "mtls_mismatch"}, "allowed": {"false"},
		"other": {"ignored: the caller refuses names outside the table"},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Resolve(now)
	no := false
	want := evidence.Filter{Since: now.Add(-2 * time.Hour), Allowed: &no,
		Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.MTLSMismatch}}
	if err != nil || !f.Since.Equal(want.Since) || *f.Allowed || !slices.Equal(f.Verdicts, want.Verdicts) || f.Source != "" {
		t.Errorf("Resolve = %+v, %v; want %+v", f, err, want)
	}
	if got := w.Values().Encode(); got != "allowed=false&since=2h&verdict=plaintext&verdict=mtls_mismatch" {
		t.Errorf("Values = %s", got)
	}
}

// TestErrorsNameTheParameter: each refusal is an *evidence.FilterError
// whose Field is the query parameter, and repeats at most maxEcho bytes
// of the value.
func TestErrorsNameTheParameter(t *testing.T) {
	long := strings.Repeat("y", 5000)
	for _, tc := range []struct {
		values map[string][]string
		field  string
	}{
		{map[string][]string{"mtls": {"yes"}}, "mtls"},
		{map[string][]string{"allowed": {long}}, "allowed"},
		{map[string][]string{"verdict": {"mtls", long}}, "verdict"},
		{map[string][]string{"since": {long}}, "since"},
		{map[string][]string{"until": {"-1h"}}, "until"},
		{map[string][]string{"since": {"1h"}, "until": {"2h"}}, "until"},
		{map[string][]string{"mtls": {"true"}, "verdict": {"mtls"}}, "mtls"},
		{map[string][]string{"path_prefix": {"a\x00"}}, "path_prefix"},
		{map[string][]string{"request_id": {long}}, "request_id"},
	} {
		w, err := Decode(tc.values)
		if err == nil {
			_, err = w.Resolve(time.Now())
		}
		var fe *evidence.FilterError
		if !errors.As(err, &fe) || fe.Field != tc.field || len(fe.Msg) > 200 {
			t.Errorf("%.60v: %v, want a FilterError naming %s", tc.values, err, tc.field)
		}
	}
}

func TestFlagValues(t *testing.T) {
	var w Filter
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, p := range Table {
		fs.Var(p.Value(&w), p.Flag, p.Usage())
	}
	err := fs.Parse([]string{"--verdict", "plaintext, mtls_mismatch", "--verdict=mtls", "--mtls", "false",
		"--source-prefix", "spiffe://a/", "--since", "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Values().Encode(); got != "mtls=false&since=1h&source_prefix=spiffe%3A%2F%2Fa%2F&verdict=plaintext&verdict=mtls_mismatch&verdict=mtls" {
		t.Errorf("flags made %s", got)
	}
	if got := fs.Lookup("verdict").Value.String(); got != "plaintext,mtls_mismatch,mtls" {
		t.Errorf("--verdict prints back as %q", got)
	}
	for _, bad := range [][]string{{"--verdict", "mtls,bogus"}, {"--mtls", "yes"}, {"--allowed", "1"}} {
		err := fs.Parse(bad)
		if err == nil || strings.Contains(err.Error(), bad[0][2:]+": "+bad[0][2:]) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if got := fs.Lookup("since").Value.(*Value).Type(); got != "time" {
		t.Errorf("since's type %q", got)
	}
}

func TestTableIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Table {
		if seen[p.Name] || seen["flag "+p.Flag] || p.Doc == "" || p.wire == nil || p.store == nil {
			t.Errorf("%+v: repeated, or incomplete", p)
		}
		seen[p.Name], seen["flag "+p.Flag] = true, true
		if strings.Count(p.Doc, "`") != 2 {
			t.Errorf("%s: Doc %q should name the flag's argument in backquotes", p.Name, p.Doc)
		}
		if got, ok := Lookup(p.Name); !ok || got.Name != p.Name {
			t.Errorf("Lookup(%s)", p.Name)
		}
	}
	if _, ok := Lookup("limit"); ok {
		t.Error("limit is no filter parameter")
	}
}
