package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/meshproof/meshproof/evidence"
)

// verifyOptions reads verify's checkpoint and key files.
func verifyOptions(checkpoints, keys []string) (evidence.VerifyOptions, error) {
	var o evidence.VerifyOptions
	if len(checkpoints) > 0 && len(keys) == 0 {
		return o, errors.New("--checkpoint needs --public-key: a checkpoint is worth what its signature is")
	}
	if len(keys) > 0 {
		v, err := evidence.LoadVerifiers(keys)
		if err != nil {
			return o, err
		}
		o.Verifiers = v
	}
	for _, path := range checkpoints {
		b, err := evidence.ReadCheckpointFile(path)
		if err != nil {
			return o, fmt.Errorf("checkpoint: %w", err)
		}
		o.Checkpoints = append(o.Checkpoints, b)
	}
	return o, nil
}

func runKeygen(args []string, stdout io.Writer) error {
	var name, out string
	fs := newFlagSet("keygen", "Make an Ed25519 key pair for signing checkpoints: FILE (the signer key, for serve --signing-key, mode 0600) and FILE.pub (the verifier key, for verify --public-key and anyone checking proofs).")
	fs.StringVar(&name, "name", "", "the key's name, which also begins each checkpoint's origin line (NAME/REPLICA): a name of your own, such as meshproof.prod.example.com")
	fs.StringVar(&out, "out", "", "FILE to write the signer key to (FILE.pub gets the verifier key); neither may exist")
	if err := fs.Parse(args); err != nil {
		return asUsage(err)
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("keygen takes no arguments, got %q", fs.Args())}
	}
	if name == "" || out == "" {
		return usageError{errors.New("--name and --out are required")}
	}
	skey, vkey, err := evidence.GenerateSigningKey(name)
	if err != nil {
		return usageError{err}
	}
	if err := writeNew(out, skey+"\n", 0o600); err != nil {
		return err
	}
	if err := writeNew(out+".pub", vkey+"\n", 0o644); err != nil {
		os.Remove(out)
		return err
	}
	fmt.Fprintf(stdout, "signer key: %s (keep it secret: serve --signing-key %s)\nverifier key: %s.pub (publish it: %s)\n", out, out, out, vkey)
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// maxProofBytes bounds the proof read from standard input.
const maxProofBytes = 1 << 20

func runVerifyProof(args []string, stdin io.Reader, stdout io.Writer) error {
	var keys []string
	output := "text"
	fs := newFlagSet("verify-proof", "Check a record's inclusion proof (the JSON of GET /v1/evidence/{id}/proof, on standard input) against the signed checkpoint it carries, with no store: exit 0 when it holds, 1 when not.")
	fs.Var(newListFlag(&keys), "public-key", "verifier key file (FILE.pub of meshproof keygen), repeatable; required")
	fs.StringVar(&output, "output", output, "text or json (the record the proof holds)")
	if err := fs.Parse(args); err != nil {
		return asUsage(err)
	}
	if len(keys) == 0 {
		return usageError{errors.New("--public-key is required: a proof is worth what its checkpoint's signature is")}
	}
	if output != "text" && output != "json" {
		return usageError{fmt.Errorf("output %q: want text or json", output)}
	}
	verifiers, err := evidence.LoadVerifiers(keys)
	if err != nil {
		return usageError{err}
	}
	b, err := io.ReadAll(io.LimitReader(stdin, maxProofBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxProofBytes {
		return errors.New("the proof on standard input is over 1 MiB")
	}
	var p evidence.Proof
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("standard input is not a proof (GET /v1/evidence/{id}/proof): %w", err)
	}
	c, rec, err := p.Check(verifiers)
	if err != nil {
		fmt.Fprintf(stdout, "proof FAILS: %v\n", err)
		return errBroken
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"verified": true, "origin": c.Origin, "tree_size": c.Size, "leaf_index": p.LeafIndex, "record": rec})
	}
	fmt.Fprintf(stdout, "proof holds: record %s is leaf %d of %s, in its checkpoint of %d leaves, whose signature the key given verifies\n",
		rec.ID, p.LeafIndex, c.Origin, c.Size)
	fmt.Fprintf(stdout, "  %s  %s -> %s  %s %s%s  verdict %s, %s\n", rec.Time.UTC().Format("2006-01-02T15:04:05Z"),
		nonEmpty(evidence.SourceKey(rec)), nonEmpty(rec.Destination.Principal), rec.Request.Method, rec.Request.Host, rec.Request.Path,
		rec.Verdict, map[bool]string{true: "allowed", false: "denied"}[rec.Decision.Allowed])
	return nil
}

func nonEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runCheckpoint(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "save" {
		return usageError{errors.New("want: meshproof checkpoint save --server URL --out DIR")}
	}
	var o remoteOptions
	var dir string
	fs := newFlagSet("checkpoint save", "Fetch each replica's latest signed checkpoint from a running serve and keep it in DIR as REPLICA.checkpoint (and REPLICA.SIZE.checkpoint): "+
		"run it from cron, outside the cluster, and give the files to meshproof verify --checkpoint.")
	o.flags(fs)
	fs.StringVar(&dir, "out", "", "directory to keep the checkpoints in (made if missing)")
	if err := fs.Parse(args[1:]); err != nil {
		return asUsage(err)
	}
	if dir == "" {
		return usageError{errors.New("--out DIR is required")}
	}
	c, err := o.client()
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	list, err := c.Checkpoints(ctx)
	if err != nil {
		return o.explain(err)
	}
	if len(list) == 0 {
		return errors.New("the server has no signed checkpoint (is serve run with --signing-key?)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, cp := range list {
		note, err := c.Checkpoint(ctx, cp.Replica)
		if err != nil {
			return o.explain(err)
		}
		parsed, err := evidence.ParseUnverified(note)
		if err != nil {
			return fmt.Errorf("the checkpoint of %s: %w", cp.Replica, err)
		}
		name := safeName(cp.Replica)
		if err := writeFileAtomic(filepath.Join(dir, fmt.Sprintf("%s.%d.checkpoint", name, parsed.Size)), note); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, name+".checkpoint"), note); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d leaves -> %s\n", cp.Replica, parsed.Size, filepath.Join(dir, name+".checkpoint"))
	}
	return nil
}

// safeName makes a replica name a file name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// writeFileAtomic writes path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".checkpoint-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
