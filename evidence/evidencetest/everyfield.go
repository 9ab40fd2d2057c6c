package evidencetest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// EveryField returns a record with every exported field of every struct
// set to a value that is not zero, found by reflection (chain fields
// included), so that a field added to Record fails the tests that use it
// until the canonical encoding and the stores' codecs carry it.
func EveryField(t testing.TB) *evidence.Record {
	r := &evidence.Record{}
	fill(t, reflect.ValueOf(r).Elem(), 0)
	return r
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
