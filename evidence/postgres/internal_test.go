package postgres

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix, want string
		ok           bool
	}{
		{prefix: "spiffe://a/", want: "spiffe://a0", ok: true},
		{prefix: "café", want: "cafê", ok: true},
		{prefix: "a\u007f", want: "a\u0080", ok: true},
		{prefix: "a\ud7ff", want: "a\ue000", ok: true},
		{prefix: "a\U0010FFFF", want: "b", ok: true},
		{prefix: "\U0010FFFF\U0010FFFF", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			got, ok := prefixEnd(tc.prefix)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("prefixEnd(%q) = %q, %v; want %q, %v", tc.prefix, got, ok, tc.want, tc.ok)
			}
			if !ok {
				return
			}
			if !utf8.ValidString(got) {
				t.Errorf("prefixEnd(%q) = %q is not UTF-8", tc.prefix, got)
			}
			// Every extension of the prefix sorts below it, bytewise.
			for _, ext := range []string{"", "a", "\U0010FFFF", "\xf4\x8f\xbf\xbf\xf4"} {
				if s := tc.prefix + ext; s >= got {
					t.Errorf("%q is not below prefixEnd %q", s, got)
				}
			}
			if strings.HasPrefix(got, tc.prefix) {
				t.Errorf("prefixEnd(%q) = %q starts with the prefix", tc.prefix, got)
			}
		})
	}
}

func TestDays(t *testing.T) {
	tests := []struct {
		at   time.Time
		name string
	}{
		{time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), "records_20261127"},
		{time.Date(2026, 11, 27, 23, 59, 59, 999999999, time.UTC), "records_20261127"},
		{time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC), "records_19691231"},
		{time.Date(2024, 2, 29, 12, 0, 0, 0, time.FixedZone("x", 13*3600)), "records_20240228"},
	}
	for _, tc := range tests {
		day := dayOf(tc.at.UnixNano())
		if got := partitionName(day); got != tc.name {
			t.Errorf("partition of %s = %s, want %s", tc.at, got, tc.name)
		}
		if back, ok := dayOfPartition(tc.name); !ok || back != day {
			t.Errorf("dayOfPartition(%s) = %d, %v; want %d", tc.name, back, ok, day)
		}
		if start := day * dayNS; start > tc.at.UnixNano() || start+dayNS <= tc.at.UnixNano() {
			t.Errorf("day %d does not hold %s", day, tc.at)
		}
	}
	for _, bad := range []string{"records", "records_2026", "rollups_20261127", "records_20261127_old"} {
		if _, ok := dayOfPartition(bad); ok {
			t.Errorf("dayOfPartition(%q) accepted", bad)
		}
	}
}

func TestFloorDiv(t *testing.T) {
	for _, tc := range []struct{ a, b, want int64 }{{7, 60, 0}, {60, 60, 1}, {-1, 60, -1}, {-60, 60, -1}, {-61, 60, -2}} {
		if got := floorDiv(tc.a, tc.b); got != tc.want {
			t.Errorf("floorDiv(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != SchemaVersion || ms[0].version != 1 {
		t.Fatalf("%d migrations from version %d, want %d from 1", len(ms), ms[0].version, SchemaVersion)
	}
}

// TestCover checks that the rollup rows read for a range cover each of its
// minutes once, using the coarsest level that fits.
func TestCover(t *testing.T) {
	const day = 24 * 60
	tests := []struct {
		name     string
		from, to int64
		want     []span
	}{
		{"empty", 10, 10, nil},
		{"minutes", 61, 119, []span{{0, 61, 119}}},
		{"one hour", 60, 120, []span{{1, 1, 2}}},
		{"hour and ends", 59, 181, []span{{0, 59, 60}, {1, 1, 3}, {0, 180, 181}}},
		{"days", day - 1, 3*day + 61, []span{{0, day - 1, day}, {2, 1, 3}, {1, 72, 73}, {0, 3*day + 60, 3*day + 61}}},
		{"weeks", 6*day + 60, 22 * day, []span{{1, 145, 168}, {3, 1, 3}, {2, 21, 22}}},
		{"before 1970", -day - 90, 30, []span{{0, -day - 90, -day - 60}, {1, -25, -24}, {2, -1, 0}, {0, 0, 30}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := cover(tc.from, tc.to); !slices.Equal(got, tc.want) {
				t.Errorf("cover(%d, %d) = %v, want %v", tc.from, tc.to, got, tc.want)
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		from := rng.Int64N(40*day) - 20*day
		to := from + rng.Int64N(30*day)
		var next int64 = from
		for _, sp := range cover(from, to) {
			m := levels[sp.level].minutes
			if sp.from*m != next || sp.to <= sp.from {
				t.Fatalf("cover(%d, %d): %v leaves a gap or overlaps at minute %d", from, to, sp, next)
			}
			next = sp.to * m
		}
		if next != to && from < to {
			t.Fatalf("cover(%d, %d) ends at minute %d", from, to, next)
		}
	}
	if sp := cover(math.MinInt64, 100); len(sp) == 0 || sp[len(sp)-1].to != 100 {
		t.Errorf("cover from the beginning of time: %v", sp)
	}
}
