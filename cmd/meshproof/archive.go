package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
)

// archiveCommand is `meshproof archive`.
func archiveCommand(stdout io.Writer) *cobra.Command {
	var dsn, before, out, key, output string
	dsn = DefaultStore
	cmd := leaf("archive", "seal whole UTC days of evidence into Parquet files with their signed checkpoint (verify --archive checks them)",
		"Seal every whole UTC day of each replica's evidence older than --before into DIR/replica=R/date=YYYY-MM-DD/ "+
			"(records.parquet, zstd; checkpoint, the signed checkpoint that covers the day; manifest.json, the proof of the day's records against it). "+
			"Days already in DIR are left as they are. Any engine that reads Parquet queries the files (DuckDB, Trino, Spark, Athena, BigQuery); "+
			"meshproof verify --archive DIR --public-key KEY checks them offline. Nothing is removed from the store: serve's retention does that, "+
			"and with serve --archive-dir only what is archived.",
		func(cmd *cobra.Command) error {
			return runArchive(cmd.Context(), dsn, before, out, key, output, stdout)
		})
	fs := cmd.Flags()
	storeFlag(fs, &dsn)
	fs.StringVar(&before, "before", "7d", "seal the days that end before this `time`: RFC 3339, or a duration back from now (7d, 36h)")
	fs.StringVar(&out, "out", "", "archive `DIR` (made if missing); required")
	fs.StringVar(&key, "signing-key", "", "signer key `file` (meshproof keygen): sign a checkpoint of a replica's log when the store has none that covers the days to seal; "+
		"without it the store's own checkpoints (serve --signing-key) are used")
	outputFlag(fs, &output, "table", "table", "json", "yaml")
	return cmd
}

func runArchive(ctx context.Context, dsn, before, out, key, output string, stdout io.Writer) error {
	if out == "" {
		return usageError{errors.New("--out DIR is required")}
	}
	t, err := params.ParseTime(before, time.Now())
	if err != nil {
		return usageError{fmt.Errorf("--before: %w", err)}
	}
	var signer note.Signer
	if key != "" {
		if signer, err = evidence.LoadSigner(key); err != nil {
			return usageError{err}
		}
	}
	s, err := evidence.Open(ctx, dsn, evidence.Options{Existing: true})
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := archive.Seal(ctx, s, archive.Options{Dir: out, Before: t, Signer: signer})
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if output == "json" || output == "yaml" {
		if err := writeStructured(stdout, output, res); err != nil {
			return err
		}
	} else {
		printArchive(stdout, res)
	}
	if len(res.Errors) > 0 {
		return errors.New("some days could not be archived (listed above)")
	}
	return nil
}

func printArchive(w io.Writer, res archive.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tDATE\tRECORDS\tBYTES\tSTATUS")
	var n, b int64
	sealed := 0
	for _, d := range res.Days {
		status := "sealed"
		if d.Existing {
			status = "already archived"
		} else {
			n, b, sealed = n+d.Records, b+d.Bytes, sealed+1
		}
		bytes := "-"
		if !d.Existing {
			bytes = fmt.Sprint(d.Bytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.Replica, d.Date, d.Records, bytes, status)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d day(s) sealed: %d records in %d bytes", sealed, n, b)
	if n > 0 {
		fmt.Fprintf(w, " (%.1f bytes/record)", float64(b)/float64(n))
	}
	fmt.Fprintln(w)
	var reps []string
	for r := range res.Errors {
		reps = append(reps, r)
	}
	sort.Strings(reps)
	for _, r := range reps {
		fmt.Fprintf(w, "%s: NOT ARCHIVED: %s\n", r, res.Errors[r])
	}
}

// runVerifyArchive is `meshproof verify --archive DIR`.
func runVerifyArchive(ctx context.Context, dir string, keys []string, output string, stdout io.Writer) error {
	if len(keys) == 0 {
		return usageError{errors.New("--archive needs --public-key: an archived day is proven against its signed checkpoint")}
	}
	verifiers, err := evidence.LoadVerifiers(keys)
	if err != nil {
		return usageError{err}
	}
	checked, err := archive.Verify(ctx, dir, verifiers)
	var problem *archive.Problem
	if err != nil && !errors.As(err, &problem) {
		return fmt.Errorf("verify --archive: %w", err)
	}
	if output == "json" || output == "yaml" {
		v := map[string]any{"intact": problem == nil, "days": checked}
		if problem != nil {
			v["problem"] = problem
		}
		if err := writeStructured(stdout, output, v); err != nil {
			return err
		}
	} else {
		var records int64
		for _, c := range checked {
			records += c.Records
			fmt.Fprintf(stdout, "%s %s: %d records, seqs %d..%d, proven in %s's checkpoint of %d leaves\n",
				c.Replica, c.Date, c.Records, c.FirstSeq, c.LastSeq, c.Origin, c.CheckpointSize)
		}
		if problem != nil {
			fmt.Fprintf(stdout, "archive BROKEN: %s\n  %s\n", problem.Path, problem.Detail)
		} else {
			fmt.Fprintf(stdout, "archive intact: %d day(s), %d records\n", len(checked), records)
		}
	}
	if problem != nil {
		return errBroken
	}
	return nil
}

// archiveOptions are serve's archive flags.
type archiveOptions struct {
	Dir   string
	After time.Duration
	Every time.Duration
}

// archiveState is serve's archiver: it seals the days older than After
// into Dir every Every, and says how far retention may go.
type archiveState struct {
	o      archiveOptions
	signer note.Signer
	log    zerolog.Logger
	last   time.Time // the last run's start; zero before the first
	// safe: per replica, the time before which its records are archived
	// (archive.Result.Safe of the last run).
	safe archive.Result
}

// run seals the days due, when a run is due at now.
func (a *archiveState) run(ctx context.Context, s evidence.Store, now time.Time) {
	if !a.last.IsZero() && now.Sub(a.last) < a.o.Every {
		return
	}
	a.last = now
	start := time.Now()
	res, err := archive.Seal(ctx, s, archive.Options{Dir: a.o.Dir, Before: now.Add(-a.o.After), Signer: a.signer})
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn().Err(err).Msg("evidence archive failed; retention keeps every record until it succeeds")
		}
		a.safe = archive.Result{}
		return
	}
	a.safe = res
	var days, records int64
	for _, d := range res.Days {
		if !d.Existing {
			days++
			records += d.Records
		}
	}
	if days > 0 {
		a.log.Info().Int64("days", days).Int64("records", records).Dur("took", time.Since(start)).Str("dir", a.o.Dir).Msg("evidence archived")
	}
	for r, e := range res.Errors {
		a.log.Warn().Str("replica", r).Str("error", e).Msg("evidence of a replica not archived; retention keeps its records")
	}
}

// cut is the time before which retention may remove records: before, or
// less, so that no record that is not archived goes. A replica of the store
// the last run did not see (or could not seal) keeps retention from
// removing any record.
func (a *archiveState) cut(ctx context.Context, s evidence.Store, before time.Time) (time.Time, error) {
	if before.IsZero() {
		return before, nil
	}
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return time.Time{}, err
	}
	safe := a.safe.SafeBefore(replicas)
	if len(replicas) > 0 && safe.IsZero() {
		return time.Time{}, nil
	}
	if len(replicas) > 0 && safe.Before(before) {
		return safe, nil
	}
	return before, nil
}

func (a archiveOptions) validate(signingKey string) error {
	if a.Dir == "" {
		return nil
	}
	var errs []string
	if a.After <= 0 {
		errs = append(errs, "archive-after must be positive")
	}
	if a.Every <= 0 {
		errs = append(errs, "archive-interval must be positive")
	}
	if signingKey == "" {
		errs = append(errs, "archive-dir needs --signing-key: each archived day is kept with a signed checkpoint that covers it")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
