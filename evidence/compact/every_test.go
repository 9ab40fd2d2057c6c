package compact_test

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// TestRoundTripEveryField: a record with every field of every struct set,
// found by reflection (as evidence's own jcs_test does), round-trips, so a
// field added to Record does too: it goes in the shape unless Split blanks
// it.
func TestRoundTripEveryField(t *testing.T) {
	r := &evidence.Record{}
	fill(t, reflect.ValueOf(r).Elem(), 0)
	roundTrip(t, r)
	r.Decision.DecisionID = r.ID
	r.ID += evidence.AmendmentSuffix
	r.Amends.ID = strings.TrimSuffix(r.ID, evidence.AmendmentSuffix)
	roundTrip(t, r)
}

// TestRoundTripGolden: the record of the canonical version 2 golden file
// (evidence/testdata) round-trips to the golden bytes.
func TestRoundTripGolden(t *testing.T) {
	want, err := os.ReadFile("../testdata/canonical-v2.golden")
	if err != nil {
		t.Fatal(err)
	}
	var r evidence.Record
	if err := json.Unmarshal(want, &r); err != nil {
		t.Fatal(err)
	}
	shape, rest, err := roundTripErr(&r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := joinBytes(shape, rest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, want) {
		t.Fatalf("golden record changed:\n got %s\nwant %s", back, want)
	}
}

func fill(t testing.TB, v reflect.Value, depth int) {
	if depth > 10 {
		t.Fatal("record type nests too deep to fill")
	}
	if v.Type() == reflect.TypeOf(time.Time{}) {
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).Add(time.Duration(depth) * time.Hour)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("v-" + v.Type().Name() + strings.Repeat("x", depth))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(int64(403 + depth))
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(8000 + depth))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), depth+1)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(t, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range []string{"k-b", "k-a"} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(t, e, depth+1)
			m.SetMapIndex(reflect.ValueOf(k), e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), depth+1)
			}
		}
	default:
		t.Fatalf("cannot fill a %s", v.Type())
	}
}

func roundTripErr(r *evidence.Record) (shape, rest []byte, err error) { return compact.Split(r) }

func joinBytes(shape, rest []byte) ([]byte, error) {
	r, err := compact.Join(shape, rest)
	if err != nil {
		return nil, err
	}
	return r.CanonicalJSON(), nil
}
