package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshproof/meshproof/evidence"
	"github.com/spf13/cobra"
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

// keygenCommand is `meshproof keygen`.
func keygenCommand(stdout io.Writer) *cobra.Command {
	var name, out string
	cmd := leaf("keygen", "make the key pair that signs checkpoints (serve --signing-key)",
		"Make an Ed25519 key pair for signing checkpoints: FILE (the signer key, for serve --signing-key, mode 0600) and FILE.pub (the verifier key, for verify --public-key and anyone checking proofs).",
		func(*cobra.Command) error { return runKeygen(name, out, stdout) })
	cmd.Flags().StringVar(&name, "name", "", "the key's name, which also begins each checkpoint's origin line (NAME/REPLICA): a name of your own, such as meshproof.prod.example.com")
	cmd.Flags().StringVar(&out, "out", "", "FILE to write the signer key to (FILE.pub gets the verifier key); neither may exist")
	return cmd
}

func runKeygen(name, out string, stdout io.Writer) error {
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

// verifyProofCommand is `meshproof verify-proof`.
func verifyProofCommand(stdout io.Writer) *cobra.Command {
	var keys []string
	var output string
	cmd := leaf("verify-proof", "check one record's inclusion proof (JSON on standard input) with no store",
		"Check a record's inclusion proof (the JSON of GET /v1/evidence/{id}/proof, on standard input) against the signed checkpoint it carries, with no store: exit 0 when it holds, 1 when not.",
		func(cmd *cobra.Command) error { return runVerifyProof(keys, output, cmd.InOrStdin(), stdout) })
	cmd.Flags().Var(newListFlag(&keys), "public-key", "verifier key file (FILE.pub of meshproof keygen), repeatable; required")
	outputFlag(cmd.Flags(), &output, "table", proofOutputs...)
	return cmd
}

// proofOutputs are verify-proof's -o values (the record the proof holds);
// text is the table's old name.
var proofOutputs = []string{"table", "wide", "json", "yaml", "text"}

func runVerifyProof(keys []string, output string, stdin io.Reader, stdout io.Writer) error {
	if len(keys) == 0 {
		return usageError{errors.New("--public-key is required: a proof is worth what its checkpoint's signature is")}
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
	if output == "json" || output == "yaml" {
		return writeStructured(stdout, output, map[string]any{"verified": true, "origin": c.Origin, "tree_size": c.Size, "leaf_index": p.LeafIndex, "record": rec})
	}
	fmt.Fprintf(stdout, "proof holds: record %s is leaf %d of %s, in its checkpoint of %d leaves, whose signature the key given verifies\n",
		rec.ID, p.LeafIndex, c.Origin, c.Size)
	fmt.Fprintf(stdout, "  %s  %s -> %s  %s %s%s  verdict %s, %s\n", stamp(rec.Time),
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

// checkpointCommand is `meshproof checkpoint` (save).
func checkpointCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint save",
		Short: "fetch each replica's latest signed checkpoint from a server into a directory",
		Long:  "Signed checkpoints: save fetches each replica's latest from a running serve into a directory.",
		Args:  cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("want: meshproof checkpoint save --server URL --out DIR")}
		},
	}
	var o remoteOptions
	var dir string
	save := leaf("save", "fetch each replica's latest signed checkpoint from a server into a directory",
		"Fetch each replica's latest signed checkpoint from a running serve and keep it in DIR as REPLICA.checkpoint (and REPLICA.SIZE.checkpoint): "+
			"run it from cron, outside the cluster, and give the files to meshproof verify --checkpoint.",
		func(cmd *cobra.Command) error { return runCheckpointSave(cmd.Context(), o, dir, stdout) })
	o.flags(save.Flags())
	save.Flags().StringVar(&dir, "out", "", "directory to keep the checkpoints in (made if missing)")
	cmd.AddCommand(save)
	return cmd
}

func runCheckpointSave(ctx context.Context, o remoteOptions, dir string, stdout io.Writer) error {
	if dir == "" {
		return usageError{errors.New("--out DIR is required")}
	}
	c, err := o.client()
	if err != nil {
		return usageError{err}
	}
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
