package storekit

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshproof/meshproof/evidence"
)

// MaxReasonBytes bounds a quarantine reason (the store's error text).
const MaxReasonBytes = 4096

// QuarantineEntry is what a store keeps of rec, refused for reason: its
// JSON as far as it can be encoded, and text fields made safe for any
// store (valid UTF-8 without NUL bytes: the reason may be that they were
// not), the reason cut to MaxReasonBytes.
func QuarantineEntry(rec *evidence.Record, reason string, at time.Time) evidence.Quarantined {
	body, err := evidence.MarshalJSON(rec)
	if err != nil {
		body = nil
		reason += " (and the record does not encode: " + err.Error() + ")"
	}
	return evidence.Quarantined{
		Replica: rec.Replica, Seq: rec.Chain.Seq, ID: safeText(rec.ID, evidence.MaxFieldBytes),
		PrevHash: rec.Chain.PrevHash, Hash: rec.Chain.Hash,
		Reason: safeText(reason, MaxReasonBytes), At: at.UTC(), Record: body,
	}
}

func safeText(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) > max {
		s = s[:max]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
