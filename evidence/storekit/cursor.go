package storekit

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"github.com/meshproof/meshproof/evidence"
)

// EncodeCursor makes the opaque cursor that continues a newest-first
// listing after the record at (timeNS, id).
func EncodeCursor(timeNS int64, id string) string {
	b := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(b, uint64(timeNS))
	return base64.RawURLEncoding.EncodeToString(append(b, id...))
}

// DecodeCursor reads a cursor made by EncodeCursor; any other string is an
// error wrapping evidence.ErrBadCursor.
func DecodeCursor(c string) (timeNS int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 8 || len(b) > 8+evidence.MaxFieldBytes {
		return 0, "", fmt.Errorf("%w: %q", evidence.ErrBadCursor, truncateForError(c))
	}
	return int64(binary.BigEndian.Uint64(b[:8])), string(b[8:]), nil
}

func truncateForError(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
