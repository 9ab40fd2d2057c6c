package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/rego"
)

// TestEvalPrintsTheStoredRecord: eval prints the record as serve stores
// it. A path and a recorded header over evidence.MaxFieldBytes are cut, and
// the record says so (truncated, and the reason), in eval's output as in the
// record a real serve path (Check, a Recorder, a SQLite file) stores for
// the same request. Eval used to print the record before it was bounded:
// the bounds were applied by the writer, after the Check had answered.
func TestEvalPrintsTheStoredRecord(t *testing.T) {
	long := "/" + strings.Repeat("p", evidence.MaxFieldBytes+100)
	req := authztest.NewRequest(authztest.Path(long), authztest.Header("x-note", strings.Repeat("n", evidence.MaxFieldBytes+1)))
	raw, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "request.json")
	if err := os.WriteFile(input, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"eval", "--input", input, "--record-header", "x-note"}, &stdout, &stderr); code != 0 {
		t.Fatalf("eval: exit %d: %s", code, stderr.String())
	}
	var out struct {
		Reasons []string         `json:"reasons"`
		Record  *evidence.Record `json:"record"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("eval's output: %v\n%s", err, stdout.String())
	}
	printed := out.Record
	if len(printed.Request.Path) != evidence.MaxFieldBytes || len(printed.Headers["x-note"]) != evidence.MaxFieldBytes ||
		!printed.Truncated || !slices.Contains(printed.Reasons, evidence.ReasonTruncated) || !slices.Equal(out.Reasons, printed.Reasons) {
		t.Errorf("eval printed a record not bounded: path %d bytes, x-note %d bytes, truncated %v, reasons %q (top-level %q)",
			len(printed.Request.Path), len(printed.Headers["x-note"]), printed.Truncated, printed.Reasons, out.Reasons)
	}

	// The same request through serve's path, stored and read back.
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rc := recorder.DefaultConfig()
	rc.Durability = recorder.Sync
	rec, err := recorder.New(ctx, rc, "eval", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close(ctx)
	p := rego.Defaults()
	p.Watch = false
	engine, err := rego.New(p, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer engine.Stop(ctx)
	a := authz.DefaultConfig()
	a.Replica = "eval"
	a.RecordHeaders = []string{"x-note"}
	svc, err := authz.NewServer(a, engine, rec, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := store.Get(ctx, resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue())
	if err != nil {
		t.Fatal(err)
	}
	// What differs between two Checks of one request, and the link only
	// the writer sets.
	for _, r := range []*evidence.Record{printed, stored} {
		r.ID, r.Decision.DecisionID, r.Chain = "", "", evidence.Chain{}
		r.Time = r.Time.UTC().Truncate(0)
	}
	printed.Time = stored.Time
	if !reflect.DeepEqual(printed, stored) {
		p, _ := json.Marshal(printed)
		s, _ := json.Marshal(stored)
		t.Errorf("eval printed\n%.600s\nserve stored\n%.600s", p, s)
	}
}
