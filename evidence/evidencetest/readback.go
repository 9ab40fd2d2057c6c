package evidencetest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testReadBack writes a record with every field set and reads it back
// through Get, Query, Scan and Walk.
func testReadBack(t *testing.T, f Factory) {
	ctx := context.Background()
	b := f(t)
	// A zone other than UTC and nanoseconds: stores give times back in UTC.
	at := time.Date(2025, 3, 4, 12, 30, 15, 123456789, time.FixedZone("CET", 3600))
	// A record with the optional parts left out (nil stays nil), then the
	// full one: second in its chain, so that even its prev_hash is set.
	plain := Full("01JQ0000000000000000000001", "replica-full", at.Add(-time.Second))
	plain.Source.Certificate, plain.XFCC, plain.Headers, plain.Reasons = nil, nil, nil, nil
	full := Amended("01JQ0000000000000000000002", "replica-full", at)
	head := Link(evidence.Link{}, plain, full)
	// PrevHash stays empty: a log's records do not name their predecessor
	// (TestMigrateFromSchema1 reads v1 records back, prev_hash included).
	if zero := slices.DeleteFunc(zeroFields(reflect.ValueOf(*full), "Record"), func(f string) bool { return f == "Record.Chain.PrevHash" }); len(zero) > 0 {
		t.Fatalf("the Full fixture leaves fields zero, so their storage goes untested: %v", zero)
	}
	write(t, b.Store, []*evidence.Record{plain, full})
	want := []*evidence.Record{full, plain} // newest first

	got, err := b.Store.Get(ctx, full.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	sameRecords(t, "Get", []*evidence.Record{got}, want[:1])
	if _, err := b.Store.Get(ctx, "01JQ00000000000000000000XX"); !errors.Is(err, evidence.ErrNotFound) {
		t.Errorf("Get(unknown id) = %v, want an error wrapping ErrNotFound", err)
	}

	sameRecords(t, "Query", everything(t, b.Store, evidence.Filter{}, 0), want)

	var scanned []*evidence.Record
	if err := b.Store.Scan(ctx, evidence.Filter{}, func(r *evidence.Record) error {
		scanned = append(scanned, r)
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	sameRecords(t, "Scan", scanned, want)

	var walked []*evidence.Record
	if err := b.Store.Walk(ctx, "replica-full", func(r *evidence.Record, stored evidence.Stored) error {
		if want := evidence.ColumnsOf(r); stored.Columns != want {
			t.Errorf("Walk: stored columns of %s = %+v,\nwant %+v", r.ID, stored, want)
		}
		walked = append(walked, r)
		return nil
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	sameRecords(t, "Walk", walked, []*evidence.Record{plain, full})

	if h, err := b.Store.Head(ctx, "replica-full"); err != nil || h != head {
		t.Errorf("Head = %+v, %v; want %+v", h, err, head)
	}
	if reps, err := b.Store.Replicas(ctx); err != nil || !reflect.DeepEqual(reps, []string{"replica-full"}) {
		t.Errorf("Replicas = %v, %v; want [replica-full]", reps, err)
	}
	if h, err := b.Store.Head(ctx, "never-wrote"); err != nil || h != (evidence.Link{}) {
		t.Errorf("Head(unknown replica) = %+v, %v; want the zero link", h, err)
	}
}

// zeroFields lists the paths of the zero values under v.
func zeroFields(v reflect.Value, path string) []string {
	if v.IsZero() {
		return []string{path}
	}
	var out []string
	switch v.Kind() {
	case reflect.Pointer:
		out = zeroFields(v.Elem(), path)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return nil
		}
		for i := range v.NumField() {
			out = append(out, zeroFields(v.Field(i), path+"."+v.Type().Field(i).Name)...)
		}
	case reflect.Slice:
		for i := range v.Len() {
			out = append(out, zeroFields(v.Index(i), path+"[]")...)
		}
	case reflect.Map:
		if v.Len() == 0 {
			out = append(out, path)
		}
	}
	return out
}
