package ui_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
)

// TestSearchFormIsTheFilterTable holds the page's search form to the
// API's filter parameters (package params' table): a field for each, no
// other, and a box for each verdict. The form is static HTML, so the
// table cannot write it; this test keeps the two together.
func TestSearchFormIsTheFilterTable(t *testing.T) {
	page, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	_, form, _ := strings.Cut(string(page), `<form id="search-form">`)
	form, _, ok := strings.Cut(form, "</form>")
	if !ok {
		t.Fatal("no search form in index.html")
	}
	var names, verdicts []string
	for _, m := range regexp.MustCompile(`name="([^"]+)"(?: value="([^"]+)")?`).FindAllStringSubmatch(form, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
		if m[1] == "verdict" {
			verdicts = append(verdicts, m[2])
		}
	}
	if want := params.Names(); !sameSet(names, want) {
		t.Errorf("the search form's fields %q, the API's filter parameters %q", names, want)
	}
	var want []string
	for _, v := range evidence.Verdicts {
		want = append(want, string(v))
	}
	if !sameSet(verdicts, want) {
		t.Errorf("the search form's verdicts %q, want %q", verdicts, want)
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
