package main

import (
	"slices"
	"testing"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/api/params"
)

// TestQueryFilterFlags checks that query registers a flag for each filter
// parameter of the API's table, that the flags of earlier releases are all
// still there, and that a value given to a flag reaches its parameter.
func TestQueryFilterFlags(t *testing.T) {
	var o queryOptions
	fs := newFlagSet("query")
	o.flags(fs)
	for _, name := range []string{"since", "until", "source", "source-prefix", "destination", "destination-prefix",
		"trust-domain", "namespace", "verdict", "mtls", "allowed", "method", "host", "path-prefix", "request-id", "replica",
		"source-namespace", "destination-namespace", "source-workload", "destination-workload"} {
		if fs.Lookup(name) == nil {
			t.Errorf("--%s is gone", name)
		}
	}
	sample := map[params.Kind]string{params.KindText: "x", params.KindTime: "2h",
		params.KindBool: "false", params.KindVerdicts: "plaintext,mtls_mismatch", params.KindWorkload: "legacy/sleep"}
	for _, p := range params.Table {
		var f client.Filter
		fs := newFlagSet("query")
		filterFlags(fs, &f)
		if err := fs.Parse([]string{"--" + p.Flag, sample[p.Kind]}); err != nil {
			t.Errorf("--%s: %v", p.Flag, err)
			continue
		}
		want := []string{sample[p.Kind]}
		if p.Kind == params.KindVerdicts {
			want = []string{"plaintext", "mtls_mismatch"}
		}
		if got := f.Values(); len(got) != 1 || !slices.Equal(got[p.Name], want) {
			t.Errorf("--%s %s: parameters %v, want %s=%q", p.Flag, sample[p.Kind], got, p.Name, want)
		}
		if got := fs.Lookup(p.Flag).Value.String(); got != sample[p.Kind] {
			t.Errorf("--%s %s prints back as %q (the next-page command repeats it)", p.Flag, sample[p.Kind], got)
		}
	}
}
