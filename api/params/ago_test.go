package params_test

import (
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/params"
)

func TestParseAgo(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration // -1: an error
	}{
		{"90s", 90 * time.Second},
		{"1h", time.Hour},
		{"1.5h", 90 * time.Minute},
		{"0s", 0},
		{"7d", 7 * 24 * time.Hour},
		{"30d", 30 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"0d30m", 30 * time.Minute},
		{"d", -1},
		{"1.5d", -1},
		{"1d1d", -1},
		{"1h1d", -1},
		{"-1h", -1},
		{"+1h", -1},
		{"1d-1h", -1},
		{"1d+1h", -1},
		{"106751d", 106751 * 24 * time.Hour},
		{"106752d", -1},
		{"106751d23h59m", -1},
		{"1w", -1},
		{"", -1},
		{"5", -1},
	}
	for _, tc := range tests {
		got, err := params.ParseAgo(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("ParseAgo(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
