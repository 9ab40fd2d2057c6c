package evidence

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Rollup seals cover the rollups that outlive their records.
//
// Reports read rollups, which are kept far longer than records (a year
// against 30 days by default). While a bucket's records are stored, Verify
// counts them again; once retention removes them, nothing else could tell an
// edited bucket from a true one. So before retention removes a replica's
// records of an hour, the store seals the hour: the SHA-256 digest of that
// replica's minute buckets of the hour (SealDigest), chained to the seal of
// the hour before (SealChain), one seal for every hour, empty ones too. The
// head of that chain goes into every signed checkpoint of the replica as
// the extension line
//
//	meshproof-rollups FIRST THROUGH CHAIN
//
// (hours as Unix hours, the chain in hex): hours FIRST to THROUGH-1 are
// sealed, and CHAIN is the seal of hour THROUGH-1. Verify recomputes every
// sealed hour's digest from the buckets still stored, walks the seal chain,
// and checks it against the checkpoints; hours and days and weeks that
// reports read are checked against the minutes they sum. A record that
// arrives for an hour already sealed (a late upload drained from a spool) is
// stored but not counted in the rollups: its hour is closed for good.

// RollupsExtension is the checkpoint extension line of a replica's rollup
// seals.
const RollupsExtension = "meshproof-rollups"

// RollupBucket is one bucket of one rollup group as a store keeps it: its
// Span (minutes: 1, 60, 1440 or 10080) from its first minute (Minute).
type RollupBucket struct {
	RollupKey
	Span                   int64
	Count, FirstNS, LastNS int64
	Example                string
}

// RollupSeal is one sealed hour of one replica.
type RollupSeal struct {
	Hour   int64 // Unix hours
	Digest [32]byte
	Prev   [32]byte // the seal of the hour before (zero for the first)
	Chain  [32]byte // SealChain(Prev, Hour, Digest)
}

// SealHead is where a replica's rollup seals stand: hours First to
// Through-1 were sealed, Chain is the last seal. Through 0: none yet.
type SealHead struct {
	First, Through int64
	Chain          [32]byte
}

// RollupAuditor is what Verify reads of the rollups themselves.
type RollupAuditor interface {
	// RollupBuckets calls fn with every bucket of every span and replica
	// that begins in the hours [fromHour, toHour), in the order of their
	// first minutes.
	RollupBuckets(ctx context.Context, fromHour, toHour int64, fn func(RollupBucket) error) error
	// RollupSeals returns replica's seal head and calls fn with its
	// stored seals in hour order.
	RollupSeals(ctx context.Context, replica string, fn func(RollupSeal) error) (SealHead, error)
	// RollupBounds returns the first minute of the rollups retention kept
	// (math.MinInt64 when it removed none; buckets that begin before it
	// are gone), and the first minute whose records the buckets of the
	// coarser spans do not count yet (math.MaxInt64 when they count all).
	RollupBounds(ctx context.Context) (horizon, closed int64, err error)
}

// SealDigest is the digest of one replica's minute buckets of one hour, in
// any order (it sorts them; the Span of each is 1).
func SealDigest(buckets []RollupBucket) [32]byte {
	slices.SortFunc(buckets, compareBuckets)
	h := sha256.New()
	h.Write([]byte("meshproof rollup hour v1\n"))
	var line []byte
	for _, b := range buckets {
		line = strconv.AppendInt(line[:0], b.Minute, 10)
		for _, s := range [...]string{b.Source, b.DestinationHost, b.DestinationPrincipal, b.Verdict} {
			line = strconv.AppendQuote(append(line, ' '), s)
		}
		line = strconv.AppendBool(append(line, ' '), b.Allowed)
		for _, n := range [...]int64{b.Count, b.FirstNS, b.LastNS} {
			line = strconv.AppendInt(append(line, ' '), n, 10)
		}
		line = strconv.AppendQuote(append(line, ' '), b.Example)
		h.Write(append(line, '\n'))
	}
	return [32]byte(h.Sum(nil))
}

func compareBuckets(a, b RollupBucket) int {
	return cmp.Or(cmp.Compare(a.Minute, b.Minute), cmp.Compare(a.Replica, b.Replica), cmp.Compare(a.Source, b.Source),
		cmp.Compare(a.DestinationHost, b.DestinationHost), cmp.Compare(a.DestinationPrincipal, b.DestinationPrincipal),
		cmp.Compare(a.Verdict, b.Verdict), boolCmp(a.Allowed, b.Allowed))
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// SealChain is the seal of hour with digest after the seal prev.
func SealChain(prev [32]byte, hour int64, digest [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("meshproof rollup seal v1\n"))
	h.Write(prev[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(hour)))
	h.Write(digest[:])
	return [32]byte(h.Sum(nil))
}

// MakeSealHead checks and assembles a seal head as a store reads it.
func MakeSealHead(replica string, first, through int64, chain []byte) (SealHead, error) {
	head := SealHead{First: first, Through: through}
	if through != 0 && len(chain) != len(head.Chain) {
		return head, fmt.Errorf("the seal head of %s holds %d bytes, not a hash", replica, len(chain))
	}
	copy(head.Chain[:], chain)
	return head, nil
}

// Seal is the seal of the next hour after head, with the buckets of that
// hour, and the head that follows. head.Through is that hour unless head
// is empty (Through 0).
func (head SealHead) Seal(hour int64, buckets []RollupBucket) (RollupSeal, SealHead) {
	s := RollupSeal{Hour: hour, Digest: SealDigest(buckets), Prev: head.Chain}
	s.Chain = SealChain(s.Prev, hour, s.Digest)
	if head.Through == 0 {
		head.First = hour
	}
	head.Through, head.Chain = hour+1, s.Chain
	return s, head
}

// SealsUntil is the hour retention seals up to (exclusive) before removing
// records older than t: the hour t falls in. Retention removes only records
// older than its start, so every record of a later hour stays to be
// counted by Verify.
func SealsUntil(t time.Time) int64 { return floorDivInt(t.Unix(), 3600) }

// HourStart is the time an hour (Unix hours) begins.
func HourStart(hour int64) time.Time { return time.Unix(hour*3600, 0).UTC() }

// Line is the head as a checkpoint extension line ("" when nothing is
// sealed).
func (head SealHead) Line() string {
	if head.Through == 0 {
		return ""
	}
	return fmt.Sprintf("%s %d %d %s", RollupsExtension, head.First, head.Through, hex.EncodeToString(head.Chain[:]))
}

// Rollups returns the seal head a checkpoint names (RollupsExtension), ok
// false when it names none.
func (c Checkpoint) Rollups() (head SealHead, ok bool, err error) {
	for _, e := range c.Extensions {
		f := strings.Fields(e)
		if len(f) == 0 || f[0] != RollupsExtension {
			continue
		}
		bad := fmt.Errorf("checkpoint: bad %s line %q", RollupsExtension, e)
		if len(f) != 4 {
			return head, false, bad
		}
		if head.First, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			return head, false, bad
		}
		if head.Through, err = strconv.ParseInt(f[2], 10, 64); err != nil || head.Through <= head.First {
			return head, false, bad
		}
		b, err := hex.DecodeString(f[3])
		if err != nil || len(b) != 32 {
			return head, false, bad
		}
		head.Chain = [32]byte(b)
		return head, true, nil
	}
	return head, false, nil
}

// shortSeal is a seal for messages: its first bytes in hex.
func shortSeal(b [32]byte) string { return hex.EncodeToString(b[:6]) }
