package ui_test

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestNoEmojiGlyphs keeps emoji out of the page's files: a system without
// an emoji font draws them as empty boxes (the lock of an mTLS edge did).
// The page's glyphs are inline SVG instead. Emoji are the pictographs of
// U+1F000 to U+1FAFF and anything asking for emoji presentation (U+FE0F).
func TestNoEmojiGlyphs(t *testing.T) {
	err := fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile("static/" + p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(body), "\n") {
			for _, r := range line {
				if (r >= 0x1F000 && r <= 0x1FAFF) || r == 0xFE0F || r == utf8.RuneError {
					t.Errorf("static/%s:%d: %U %q is an emoji (draws as a box without an emoji font): use an inline SVG", p, i+1, r, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
