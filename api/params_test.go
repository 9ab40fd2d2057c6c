package api

import (
	"testing"
)

func TestClipAndQuote(t *testing.T) {
	tests := []struct{ in, clip, quote string }{
		{"source", "source", `"source"`},
		{"a\x00b\xff", "a?b?", `"a\x00b\xff"`},
	}
	for _, tc := range tests {
		if got := clip(tc.in); got != tc.clip {
			t.Errorf("clip(%q) = %q, want %q", tc.in, got, tc.clip)
		}
		if got := quote(tc.in); got != tc.quote {
			t.Errorf("quote(%q) = %q, want %q", tc.in, got, tc.quote)
		}
	}
	long := "ééééééééééééééééééééééééééééééééééééééééééééééé" // 94 bytes
	if got := clip(long); len(got) > maxEcho+3 || got[len(got)-3:] != "..." {
		t.Errorf("clip of %d bytes = %q (%d bytes)", len(long), got, len(got))
	}
	if got := quote(long); len(got) > 4*maxEcho+5 {
		t.Errorf("quote of %d bytes = %d bytes", len(long), len(got))
	}
}
