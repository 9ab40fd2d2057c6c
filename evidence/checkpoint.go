package evidence

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A signed checkpoint is a C2SP tlog-checkpoint (origin line, tree size in
// decimal, root hash in base64, optional extension lines) signed as a note
// (golang.org/x/mod/sumdb/note, Ed25519). The origin is NAME/REPLICA, NAME
// the signing key's name: anyone with the verifier key checks it with
// note.Open, and a record's inclusion in it with tlog.CheckRecord.

// SignedCheckpoint is a checkpoint of one replica's log as a store keeps it.
type SignedCheckpoint struct {
	Replica string    `json:"replica"`
	Size    int64     `json:"size"`
	Time    time.Time `json:"time"`
	Note    []byte    `json:"-"` // the signed note, exactly as served
}

// CheckpointStore keeps signed checkpoints.
type CheckpointStore interface {
	// SaveCheckpoint keeps c; one of a size already kept is a no-op.
	SaveCheckpoint(ctx context.Context, c SignedCheckpoint) error
}

// CheckpointReader reads them back.
type CheckpointReader interface {
	// Checkpoints returns replica's checkpoints, largest first, at most
	// limit, of at most size leaves when size > 0.
	Checkpoints(ctx context.Context, replica string, size int64, limit int) ([]SignedCheckpoint, error)
}

// BaseExtension is the checkpoint extension line that names where a log
// starts when it does not start the chain: the seq and the canonical-v1
// hash of the last record before its first leaf.
const BaseExtension = "meshproof-base"

// TimeExtension is the checkpoint extension line that says when it was
// signed, in Unix seconds: a record not in a checkpoint was written after
// it, so a record removed from the log although a checkpoint that lacks it
// is younger than the retention window was removed too early (Verify).
const TimeExtension = "meshproof-time"

// Checkpoint is a parsed checkpoint body.
type Checkpoint struct {
	Origin     string
	Size       int64
	Root       tlog.Hash
	Extensions []string
}

// Text is the checkpoint body in the C2SP tlog-checkpoint format.
func (c Checkpoint) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
	for _, e := range c.Extensions {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.String()
}

// ParseCheckpoint reads a checkpoint body (a note's text).
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return Checkpoint{}, errors.New("checkpoint: want an origin, a size and a root hash, each on a line")
	}
	c := Checkpoint{Origin: lines[0]}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint: tree size %q is not a decimal number", lines[1])
	}
	c.Size = n
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("checkpoint: root hash %q is not 32 bytes of base64", lines[2])
	}
	copy(c.Root[:], root)
	c.Extensions = lines[3 : len(lines)-1]
	if c.Origin == "" {
		return Checkpoint{}, errors.New("checkpoint: empty origin line")
	}
	return c, nil
}

// Base returns the log's base from its extension line: 0 and "" without.
func (c Checkpoint) Base() (uint64, string, error) {
	for _, e := range c.Extensions {
		f := strings.Fields(e)
		if len(f) == 0 || f[0] != BaseExtension {
			continue
		}
		if len(f) != 3 {
			return 0, "", fmt.Errorf("checkpoint: bad %s line %q", BaseExtension, e)
		}
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return 0, "", fmt.Errorf("checkpoint: bad %s line %q", BaseExtension, e)
		}
		return seq, f[2], nil
	}
	return 0, "", nil
}

// Time is when the checkpoint says it was signed (TimeExtension).
func (c Checkpoint) Time() (time.Time, bool) {
	for _, e := range c.Extensions {
		f := strings.Fields(e)
		if len(f) == 2 && f[0] == TimeExtension {
			if sec, err := strconv.ParseInt(f[1], 10, 64); err == nil && sec > 0 {
				return time.Unix(sec, 0).UTC(), true
			}
		}
	}
	return time.Time{}, false
}

// Origin is the checkpoint origin of replica's log for a key named name.
func Origin(name, replica string) string { return name + "/" + replica }

// SignCheckpoint signs a checkpoint of th for replica, stamped with now.
func SignCheckpoint(signer note.Signer, replica string, th TreeHead, now time.Time) ([]byte, error) {
	c := Checkpoint{Origin: Origin(signer.Name(), replica), Size: th.Size, Root: th.Root}
	if th.Base > 0 {
		c.Extensions = []string{fmt.Sprintf("%s %d %s", BaseExtension, th.Base, th.BaseHash)}
	}
	c.Extensions = append(c.Extensions, fmt.Sprintf("%s %d", TimeExtension, now.Unix()))
	if line := th.Rollups.Line(); line != "" {
		c.Extensions = append(c.Extensions, line)
	}
	return note.Sign(&note.Note{Text: c.Text()}, signer)
}

// OpenCheckpoint checks a signed checkpoint against verifiers and parses
// it; replica, when not empty, must be the one its origin names.
func OpenCheckpoint(signed []byte, verifiers note.Verifiers, replica string) (Checkpoint, error) {
	n, err := note.Open(signed, verifiers)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if replica != "" {
		ok := false
		for _, s := range n.Sigs {
			if c.Origin == Origin(s.Name, replica) {
				ok = true
			}
		}
		if !ok {
			return Checkpoint{}, fmt.Errorf("checkpoint origin %q is not the log of replica %s", c.Origin, replica)
		}
	}
	return c, nil
}

// ReplicaOf is the replica a checkpoint's origin names, for a key named
// name: "" when the origin is not of that key.
func ReplicaOf(origin, name string) string {
	r, ok := strings.CutPrefix(origin, name+"/")
	if !ok {
		return ""
	}
	return r
}

// ParseHexHash reads a hash in lowercase hex, as Chain.Hash holds it.
func ParseHexHash(s string) (tlog.Hash, error) { return parseHexHash(s) }

// HexHash writes a tlog hash as Chain.Hash holds it.
func HexHash(h tlog.Hash) string { return hex.EncodeToString(h[:]) }
