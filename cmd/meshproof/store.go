package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	_ "github.com/meshproof/meshproof/evidence/postgres" // postgres:// stores
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/spool"
	_ "github.com/meshproof/meshproof/evidence/sqlite" // sqlite: stores
)

// DefaultStore is the embedded default: a SQLite file in the working
// directory.
const DefaultStore = "sqlite:meshproof.db"

// evidenceOptions configure where evidence goes and how it is written.
type evidenceOptions struct {
	Store           string
	Spool           string // a local SQLite file for when Store fails; "": none
	Recorder        recorder.Config
	Retention       time.Duration
	RollupRetention time.Duration
	// MaxClockSkew: how far ahead of this clock an uploaded decision log
	// event may be stamped.
	MaxClockSkew time.Duration
	// SigningKey is a note signer key file (meshproof keygen): with it,
	// serve signs a checkpoint of each replica's log every
	// CheckpointInterval.
	SigningKey         string
	CheckpointInterval time.Duration
	// Archive: with a Dir, serve seals the days older than After into it
	// (meshproof archive) and retention removes only what is archived.
	Archive archiveOptions
}

func defaultEvidenceOptions() evidenceOptions {
	return evidenceOptions{
		Store:              DefaultStore,
		Recorder:           recorder.DefaultConfig(),
		Retention:          720 * time.Hour,
		RollupRetention:    8760 * time.Hour,
		MaxClockSkew:       5 * time.Minute,
		CheckpointInterval: 10 * time.Second,
		Archive:            archiveOptions{After: 7 * 24 * time.Hour, Every: time.Hour},
	}
}

func storeFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "store", *p, "evidence store: sqlite:PATH (embedded, migrates itself) or postgres://... (shared; run meshproof migrate first)")
}

func (o *evidenceOptions) flags(fs *pflag.FlagSet) {
	storeFlag(fs, &o.Store)
	r := &o.Recorder
	fs.Func("evidence-durability", fmt.Sprintf("when a Check returns: async (its record is queued: a crash of meshproof loses what is queued), "+
		"sync (its record is committed: survives kill -9 of meshproof; with SQLite not a power loss) or "+
		"fsync (committed and flushed to stable storage: survives a power loss); group commit (default %s)", r.Durability), func(s string) error {
		r.Durability = recorder.Durability(s)
		return nil
	})
	fs.Func("evidence-overflow", fmt.Sprintf("when the evidence queue is full: block (wait up to --evidence-block-timeout, then deny), drop (allow without evidence, counted) or deny (default %s)", r.Overflow), func(s string) error {
		r.Overflow = recorder.Overflow(s)
		return nil
	})
	fs.IntVar(&r.QueueSize, "evidence-queue-size", r.QueueSize, "records waiting to be written, at most")
	fs.IntVar(&r.BatchSize, "evidence-batch-size", r.BatchSize, "records per transaction, at most")
	fs.DurationVar(&r.FlushInterval, "evidence-flush-interval", r.FlushInterval, "in async mode, how long a batch waits to fill before it is written")
	fs.DurationVar(&r.BlockTimeout, "evidence-block-timeout", r.BlockTimeout, "with --evidence-overflow block, how long a Check waits for room in the queue")
	fs.IntVar(&r.GroupSize, "evidence-group-size", r.GroupSize, "in sync and fsync durability, a group commit of fewer records waits for more (see --evidence-group-wait)")
	fs.DurationVar(&r.GroupWait, "evidence-group-wait", r.GroupWait, "in sync and fsync durability, how long a group commit of fewer than --evidence-group-size records waits for more, "+
		"when Checks arrive fast enough to fill it in that time (fewer commits and flushes under load; a Check alone never waits); 0: never")
	fs.StringVar(&o.Spool, "spool", o.Spool, "local SQLite file that takes the evidence while --store is unreachable or failing, and drains into it in order once it is back, "+
		"so that an outage neither denies Checks nor loses evidence (with sync or fsync durability a Check returns once its record is committed to either); "+
		"set it with a postgres:// store; none unless set")
	fs.DurationVar(&o.Retention, "retention", o.Retention, "records older than this are deleted (0 keeps them forever)")
	fs.DurationVar(&o.RollupRetention, "rollup-retention", o.RollupRetention, "per-minute rollups (reports) older than this are deleted; keep them longer than records")
	fs.DurationVar(&o.MaxClockSkew, "max-clock-skew", o.MaxClockSkew, "an OPA decision log upload (POST /logs) holding an event stamped further ahead of this server's clock than this is refused (400)")
	fs.StringVar(&o.SigningKey, "signing-key", o.SigningKey, "signer key file (meshproof keygen): sign a checkpoint of each replica's transparency log every --checkpoint-interval and at shutdown, "+
		"served at /v1/checkpoints and checked by meshproof verify; none unless set")
	fs.DurationVar(&o.CheckpointInterval, "checkpoint-interval", o.CheckpointInterval, "with --signing-key, how often the logs that grew are signed")
	fs.StringVar(&o.Archive.Dir, "archive-dir", o.Archive.Dir, "seal each whole UTC day older than --archive-after into this directory (as meshproof archive does), every --archive-interval, "+
		"and let retention remove only records that are archived; needs --signing-key; none unless set")
	fs.DurationVar(&o.Archive.After, "archive-after", o.Archive.After, "with --archive-dir, how old a day must be to be sealed (keep it shorter than --retention)")
	fs.DurationVar(&o.Archive.Every, "archive-interval", o.Archive.Every, "with --archive-dir, how often the days due are sealed")
}

func (o *evidenceOptions) validate() error {
	errs := []error{o.Recorder.Validate()}
	if o.Store == "" {
		errs = append(errs, errors.New("store: empty; the default is "+DefaultStore))
	}
	if path, ok := strings.CutPrefix(o.Store, "sqlite:"); ok && o.Spool != "" && filepath.Clean(path) == filepath.Clean(o.Spool) {
		errs = append(errs, errors.New("spool: the store's own file; give the spool a file of its own"))
	}
	if o.CheckpointInterval <= 0 {
		errs = append(errs, errors.New("checkpoint-interval must be positive"))
	}
	if o.Retention < 0 || o.RollupRetention < 0 {
		errs = append(errs, errors.New("retention and rollup-retention must not be negative"))
	}
	if err := o.Archive.validate(o.SigningKey); err != nil {
		errs = append(errs, err)
	}
	if o.MaxClockSkew <= 0 {
		errs = append(errs, errors.New("max-clock-skew must be positive"))
	}
	if o.Retention > 0 && o.RollupRetention > 0 && o.RollupRetention < o.Retention {
		errs = append(errs, errors.New("rollup-retention shorter than retention: reports would miss records that still exist"))
	}
	return errors.Join(errs...)
}

// openStore opens the evidence store serve writes, behind a spool when one
// is configured; health is then the spool's state for /readyz, else nil.
func openStore(ctx context.Context, o evidenceOptions, replica string, log zerolog.Logger, reg prometheus.Registerer) (s evidence.Store, health func() map[string]any, err error) {
	opts := evidence.Options{Durable: o.Recorder.Durability == recorder.FSync}
	if o.Spool == "" {
		if s, err = evidence.Open(ctx, o.Store, opts); err != nil {
			return nil, nil, fmt.Errorf("evidence store: %w", err)
		}
		return s, nil, nil
	}
	// Dial: a replica that has written through its spool before can start
	// while the store is down.
	primary, err := spool.Dial(ctx, o.Store, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("evidence store: %w", err)
	}
	sp, err := spool.Open(ctx, primary, o.Spool, replica, opts, log, spool.NewMetrics(reg))
	if err != nil {
		primary.Close()
		return nil, nil, err
	}
	return sp, func() map[string]any { return map[string]any{"evidence_store": sp.Status()} }, nil
}

// retain deletes old evidence every interval until ctx ends; with
// archiving (arch not nil) it seals the days due first, and removes only
// records that are archived.
func retain(ctx context.Context, s evidence.Store, o evidenceOptions, arch *archiveState, log zerolog.Logger) {
	if o.Retention == 0 && o.RollupRetention == 0 && arch == nil {
		return
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		retainOnce(ctx, s, o, arch, time.Now(), log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retainOnce is one round of retain at now.
func retainOnce(ctx context.Context, s evidence.Store, o evidenceOptions, arch *archiveState, now time.Time, log zerolog.Logger) {
	var before, rollupsBefore time.Time
	if o.Retention > 0 {
		before = now.Add(-o.Retention)
	}
	if o.RollupRetention > 0 {
		rollupsBefore = now.Add(-o.RollupRetention)
	}
	if arch != nil {
		arch.run(ctx, s, now)
		cut, err := arch.cut(ctx, s, before)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Msg("evidence retention: the store's replicas could not be listed; no record removed")
			}
			cut = time.Time{}
		}
		if cut.Before(before) {
			log.Debug().Time("before", before).Time("archived_before", cut).Msg("evidence retention waits for the archive")
		}
		before = cut
	}
	if before.IsZero() && rollupsBefore.IsZero() {
		return
	}
	n, err := s.DeleteBefore(ctx, before, rollupsBefore, 1000)
	switch {
	case err != nil && ctx.Err() == nil:
		log.Warn().Err(err).Msg("evidence retention failed; retrying in a minute")
	case n > 0:
		log.Info().Int64("deleted", n).Time("before", before).Msg("evidence retention")
	}
}

// migrateCommand is `meshproof migrate`.
func migrateCommand(stdout io.Writer) *cobra.Command {
	dsn := DefaultStore
	cmd := leaf("migrate", "create or update the evidence store's schema",
		"Create or update the evidence store's schema (a PostgreSQL store is never migrated by serve).",
		func(cmd *cobra.Command) error { return runMigrate(cmd.Context(), dsn, stdout) })
	storeFlag(cmd.Flags(), &dsn)
	return cmd
}

func runMigrate(ctx context.Context, dsn string, stdout io.Writer) error {
	m, err := evidence.MigrateVersions(ctx, dsn)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", evidence.Redact(dsn), err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", evidence.Redact(dsn), migrated(m))
	return nil
}

// migrated says what a migration did.
func migrated(m evidence.Migrated) string {
	switch {
	case m.From == 0:
		return fmt.Sprintf("created schema v%d", m.To)
	case m.From == m.To:
		return fmt.Sprintf("schema v%d up to date", m.To)
	}
	return fmt.Sprintf("migrated schema v%d → v%d", m.From, m.To)
}

// errBroken makes verify exit 1 without a second message.
var errBroken = errors.New("a chain is broken")

// verifyFlags are the flags of `meshproof verify`.
type verifyFlags struct {
	dsn, output, archive       string
	checkpoints, keys          []string
	retention, rollupRetention time.Duration
}

// verifyCommand is `meshproof verify`.
func verifyCommand(stdout io.Writer) *cobra.Command {
	v := verifyFlags{dsn: DefaultStore, output: "table", retention: defaultEvidenceOptions().Retention, rollupRetention: defaultEvidenceOptions().RollupRetention}
	cmd := leaf("verify", "check every chain and transparency log in the evidence store (exit 1 when broken)",
		"Walk every replica's chain and transparency log in the evidence store, against their signed checkpoints; exit 0 when every chain is intact, 1 when one is not.",
		func(cmd *cobra.Command) error { return v.run(cmd.Context(), stdout) })
	fs := cmd.Flags()
	storeFlag(fs, &v.dsn)
	outputFlag(fs, &v.output, "table", verifyOutputs...)
	fs.Var(newListFlag(&v.checkpoints), "checkpoint", "signed checkpoint file kept outside the store (meshproof checkpoint save), repeatable: each replica's log must extend it")
	fs.Var(newListFlag(&v.keys), "public-key", "verifier key file (FILE.pub of meshproof keygen), repeatable: checks the signatures of the checkpoints given and stored")
	fs.StringVar(&v.archive, "archive", "", "check an archive `DIR` (meshproof archive, serve --archive-dir) offline instead of a store: each file's SHA-256, every record rebuilt and hashed, "+
		"each day proven against its signed checkpoint with --public-key, no day missing")
	fs.DurationVar(&v.retention, "retention", v.retention, "the store's retention (serve's --retention): records removed although a signed checkpoint younger than this lacks them were removed too early; 0 does not judge")
	fs.DurationVar(&v.rollupRetention, "rollup-retention", v.rollupRetention, "the store's rollup retention (serve's --rollup-retention): rollups removed while younger than this were removed too early; 0 does not judge")
	return cmd
}

// verifyOutputs are verify's -o values; text is the table's old name.
var verifyOutputs = []string{"table", "wide", "json", "yaml", "text"}

// runVerify is `meshproof verify` with args.
func runVerify(args []string, stdout io.Writer) error {
	return execute(context.Background(), verifyCommand(stdout), args)
}

func (v *verifyFlags) run(ctx context.Context, stdout io.Writer) error {
	dsn, output, checkpoints, keys, retention, rollupRetention := v.dsn, v.output, v.checkpoints, v.keys, v.retention, v.rollupRetention
	if v.archive != "" {
		if len(checkpoints) > 0 {
			return usageError{errors.New("--checkpoint is for a store: an archived day holds its own checkpoint")}
		}
		return runVerifyArchive(ctx, v.archive, keys, output, stdout)
	}
	if retention < 0 || rollupRetention < 0 {
		return usageError{errors.New("retention and rollup-retention must not be negative")}
	}
	opts, err := verifyOptions(checkpoints, keys)
	if err != nil {
		return usageError{err}
	}
	opts.Retention, opts.RollupRetention = retention, rollupRetention
	// Existing: a mistyped path is an error, not an empty store whose
	// chains are all intact.
	s, err := evidence.Open(ctx, dsn, evidence.Options{Existing: true})
	if err != nil {
		return err
	}
	defer s.Close()
	reports, err := evidence.VerifyWith(ctx, s, opts)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	broken := false
	quarantined := 0
	for _, r := range reports {
		broken = broken || r.Broken != nil
		quarantined += len(r.Quarantined)
	}
	if output == "json" || output == "yaml" {
		if err := writeStructured(stdout, output, map[string]any{"intact": !broken, "quarantined": quarantined, "chains": reports}); err != nil {
			return err
		}
	} else {
		printReports(stdout, reports)
	}
	if broken {
		return errBroken
	}
	return nil
}

func printReports(w io.Writer, reports []evidence.ChainReport) {
	if len(reports) == 0 {
		fmt.Fprintln(w, "no chains: the store holds no evidence")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tCHECKED\tQUARANTINED\tSEQS\tSTATUS")
	var total, quarantined int64
	for _, r := range reports {
		total += r.Checked
		quarantined += int64(len(r.Quarantined))
		status := "intact"
		if b := r.Broken; b != nil && r.Replica == evidence.RollupsReplica {
			fmt.Fprintf(tw, "%s\t%d hours\t-\t-\tBROKEN (%s): %s\n", r.Replica, r.Checked, b.Kind, b.Detail)
			continue
		}
		if b := r.Broken; b != nil {
			status = fmt.Sprintf("BROKEN at seq %d (%s", b.Seq, b.Kind)
			if b.ID != "" {
				status += ", record " + b.ID
			}
			status += "): " + b.Detail
		}
		if n := len(r.Quarantined); n > 0 && r.Broken == nil {
			status += fmt.Sprintf(", %d record(s) quarantined (listed below)", n)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d..%d\t%s\n", r.Replica, r.Checked, len(r.Quarantined), r.Start.Seq+1, r.Head.Seq, status)
	}
	tw.Flush()
	for _, r := range reports {
		if l := r.Log; l != nil {
			fmt.Fprintf(w, "%s: transparency log of %d leaves (from seq %d), root %s; %d signed checkpoint(s) checked (%d signature(s)), the largest of %d leaves",
				r.Replica, l.Size, l.Base+1, l.Root, l.Checkpoints, l.Signed, l.Latest)
			if l.Unchecked > 0 {
				fmt.Fprintf(w, "; %d older than the records retention left", l.Unchecked)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "%d records in %d chain(s) checked", total, len(reports))
	if quarantined > 0 {
		fmt.Fprintf(w, ", %d quarantined", quarantined)
	}
	fmt.Fprintln(w)
	for _, r := range reports {
		if len(r.Quarantined) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nquarantined records of %s (refused by the store, kept apart; their links are checked):\n", r.Replica)
		for _, q := range r.Quarantined {
			fmt.Fprintf(w, "  seq %d  record %q  at %s: %q\n", q.Seq, q.ID, stamp(q.At), q.Reason)
		}
	}
}
