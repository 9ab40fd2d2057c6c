package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/decisionlog"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/rego"
)

// serveOptions is the whole configuration of `meshproof serve`.
type serveOptions struct {
	Config    string
	Role      string // roleServe or roleQuery
	GRPC      authz.GRPCConfig
	HTTP      httpOptions
	Policy    rego.Config
	Authz     authz.Config
	Evidence  evidenceOptions
	Kube      kubeOptions
	Log       logOptions
	Grace     time.Duration
	GCPercent int
	// MemoryLimit is Go's soft memory limit (as GOMEMLIMIT); 0: none.
	MemoryLimit int64
	// onListen, when set, is told the bound addresses once both listeners
	// serve (meshproof demo asks for :0 ports). Not an option.
	onListen func(grpcAddr, httpAddr net.Addr)
}

func defaultServeOptions() serveOptions {
	host, _ := os.Hostname()
	a := authz.DefaultConfig()
	a.Replica = host
	return serveOptions{
		Role:     roleServe,
		GRPC:     authz.DefaultGRPCConfig(),
		HTTP:     httpOptions{Addr: "127.0.0.1:8181"},
		Policy:   rego.Defaults(),
		Authz:    a,
		Evidence: defaultEvidenceOptions(),
		Kube:     kubeOptions{SyncTimeout: time.Minute},
		Log:      defaultLogOptions(),
		Grace:    10 * time.Second,
		// The live heap is small (policy, caches), so Go's default GC target
		// collects every few MB: at thousands of Checks per second that was
		// a third of meshproof's CPU. 400 trades tens of MB for it.
		GCPercent: 400,
		// With that target the heap may grow to five times the live heap;
		// the limit makes the collector work harder instead as the heap
		// nears it, so that a burst of large Checks (bounded by
		// --check-memory-budget) stays within about 1 GiB of memory.
		MemoryLimit: 800 << 20,
	}
}

// policyFlags are shared by serve and eval.
func policyFlags(fs *pflag.FlagSet, p *rego.Config) {
	fs.Var(newListFlag(&p.Policies), "policy", "policy source, repeatable: a .rego or data .json/.yaml file, a directory of them, a .tar.gz bundle, or builtin:NAME (observe, require-spiffe, spiffe-allowlist, deny-suspect); none: builtin:observe")
	fs.StringVar(&p.Decision, "decision", p.Decision, "decision path, as OPA-Envoy's: envoy/authz/allow or a ref such as data.envoy.authz.result")
	fs.StringVar(&p.OPAConfig, "opa-config", p.OPAConfig, "OPA configuration file (services, bundles, keys) for remote bundles, run by OPA's plugin manager")
	fs.BoolVar(&p.V0Compatible, "v0-compatible", p.V0Compatible, "parse local policies as Rego v0 (written for OPA before 1.0)")
	fs.IntVar(&p.DecisionCache, "decision-cache", p.DecisionCache, "remember up to this many decisions of a deterministic policy, keyed by the input values it reads; 0 turns it off")
	fs.DurationVar(&p.PolicySettle, "policy-settle", p.PolicySettle, "with --watch, how long a policy file written in place must stay unchanged before it is reloaded (a file renamed into place, or a ConfigMap update, is reloaded at once); 0: at once")
	fs.IntVar(&p.DecisionCacheBytes, "decision-cache-bytes", p.DecisionCacheBytes, "memory the decision cache may hold, in bytes (keys and decisions charged by their contents); a key over 4 KiB or a decision over 64 KiB is not kept; 0 turns the cache off")
}

func authzFlags(fs *pflag.FlagSet, a *authz.Config) {
	fs.Var(newListFlag(&a.RecordHeaders), "record-header", "request header to keep in evidence records, repeatable (authorization, cookie, proxy-authorization and x-api-key never are)")
	fs.BoolVar(&a.RecordQuery, "record-query", a.RecordQuery, "keep the query string in recorded paths (it often holds tokens and personal data)")
	fs.BoolVar(&a.DryRun, "dry-run", a.DryRun, "let through what the policy denies (with --on-policy-error=deny, also what it gives no decision for); evidence and metrics keep the policy's real decision")
	fs.StringVar(&a.OnPolicyError, "on-policy-error", a.OnPolicyError, "when the policy gives no decision (error, undefined or malformed decision): error answers as OPA-Envoy, with a gRPC error that Envoy's failure_mode_allow and status_on_error act on; deny denies with --status-on-error")
	fs.IntVar(&a.StatusOnError, "status-on-error", a.StatusOnError, "HTTP status of a request denied because the policy gave no decision, with --on-policy-error=deny")
	fs.StringVar(&a.Replica, "replica", a.Replica, "name of this instance in evidence records; the host name unless set")
	fs.BoolVar(&a.InputMeshproof, "input-meshproof", a.InputMeshproof, "also put meshproof's view of the request (the meshproof.facts() built-in) into the input as input.meshproof, for policies written before the built-ins; off, the input is exactly OPA-Envoy's")
	fs.IntVar(&a.MaxRequestHeaders, "max-request-headers", a.MaxRequestHeaders, "a request with more headers (headers and header_map entries) is denied with 431 before its policy is evaluated, and recorded; keep it above Envoy's max_headers_count")
	fs.IntVar(&a.MaxRequestHeaderBytes, "max-request-header-bytes", a.MaxRequestHeaderBytes, "a request with more bytes of header names and values is denied with 431 before its policy is evaluated, and recorded; keep it above Envoy's max_request_headers_kb")
}

func logFlags(fs *pflag.FlagSet, l *logOptions) {
	fs.StringVar(&l.Format, "log-format", l.Format, "log format: json or console; console when standard error is a terminal, unless set")
	fs.StringVar(&l.Level, "log-level", l.Level, "log level: debug, info, warn or error")
}

func (o *serveOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Config, "config", "", "YAML file of options; its keys are these flags' names (policy: [a, b] for repeatable ones); flags given here override it")
	fs.StringVar(&o.Role, "role", o.Role, "serve: the ext_authz server, recording evidence, with the evidence API beside it; "+
		"query: only the evidence API, reports and page over --store (a fleet's shared PostgreSQL), with no ext_authz listener, policy or recorder, "+
		"so that auditors' traffic never touches the data path (it takes only --store, the --http-*, --api-*, --metrics-open, --debug-pprof and --log-* flags, --shutdown-grace, --gc-percent and --memory-limit)")
	g := &o.GRPC
	fs.StringVar(&g.Addr, "grpc-addr", g.Addr, "ext_authz gRPC listener: host:port or unix:///path.sock")
	fs.StringVar(&g.TLSCert, "grpc-tls-cert", g.TLSCert, "PEM certificate for TLS on the gRPC listener (re-read when it changes)")
	fs.StringVar(&g.TLSKey, "grpc-tls-key", g.TLSKey, "PEM private key for --grpc-tls-cert")
	fs.StringVar(&g.ClientCA, "grpc-client-ca", g.ClientCA, "PEM CA bundle; when set, callers must present a client certificate it signed (mTLS)")
	fs.IntVar(&g.MaxRecvMsgBytes, "grpc-max-recv-msg-bytes", g.MaxRecvMsgBytes, "largest CheckRequest accepted, bodies included")
	fs.Int64Var(&g.CheckMemoryBudget, "check-memory-budget", g.CheckMemoryBudget, "memory the Checks in flight may hold, in bytes, each charged 64 per byte of its request on the wire; a Check waits for room before its request is decoded; 0 turns it off")
	fs.Func("grpc-max-concurrent-streams", fmt.Sprintf("concurrent Checks per connection, at most `n` (default %d)", g.MaxConcurrentStreams), func(s string) error {
		var n uint32
		_, err := fmt.Sscan(s, &n)
		g.MaxConcurrentStreams = n
		return err
	})
	fs.Func("grpc-stream-workers", fmt.Sprintf("`n` long-lived goroutines run Checks; beyond n concurrent Checks each gets a new one (default %d: 8 per CPU)", g.StreamWorkers), func(s string) error {
		var n uint32
		_, err := fmt.Sscan(s, &n)
		g.StreamWorkers = n
		return err
	})
	fs.DurationVar(&g.KeepaliveTime, "grpc-keepalive-time", g.KeepaliveTime, "ping a connection idle for this long")
	fs.DurationVar(&g.KeepaliveTimeout, "grpc-keepalive-timeout", g.KeepaliveTimeout, "close a connection whose ping is not answered within this")
	fs.DurationVar(&g.KeepaliveMinClientInterval, "grpc-keepalive-min-client-interval", g.KeepaliveMinClientInterval, "shortest keepalive ping interval accepted from clients")
	o.HTTP.flags(fs)
	o.HTTP.ingestFlags(fs)
	policyFlags(fs, &o.Policy)
	fs.BoolVar(&o.Policy.Watch, "watch", o.Policy.Watch, "reload local policy files when they change")
	authzFlags(fs, &o.Authz)
	o.Evidence.flags(fs)
	o.Kube.flags(fs)
	logFlags(fs, &o.Log)
	fs.DurationVar(&o.Grace, "shutdown-grace", o.Grace, "on SIGTERM, how long in-flight Checks may take to finish")
	fs.IntVar(&o.GCPercent, "gc-percent", o.GCPercent, "Go GC target percentage (as GOGC; GOGC in the environment wins); higher uses more memory and less CPU")
	fs.Int64Var(&o.MemoryLimit, "memory-limit", o.MemoryLimit, "Go's soft memory limit in bytes (as GOMEMLIMIT; GOMEMLIMIT in the environment wins): the GC works harder as the heap nears it; 0: none")
}

func (o *serveOptions) validate() error {
	errs := []error{o.GRPC.Validate(), o.Policy.Validate(), o.Authz.Validate(), o.Evidence.validate(), o.HTTP.validate()}
	if _, _, err := net.SplitHostPort(o.HTTP.Addr); err != nil {
		errs = append(errs, fmt.Errorf("http-addr %q: %w", o.HTTP.Addr, err))
	}
	if o.Grace <= 0 {
		errs = append(errs, errors.New("shutdown-grace must be positive"))
	}
	if o.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("memory-limit %d: must be 0 (none) or more", o.MemoryLimit))
	}
	return errors.Join(errs...)
}

// serveCommand is `meshproof serve`.
func serveCommand() *cobra.Command {
	o := defaultServeOptions()
	cmd := leaf("serve", "run the Envoy ext_authz gRPC server",
		"Run the ext_authz gRPC server, recording evidence (--role query: only the evidence API over a shared store).",
		func(cmd *cobra.Command) error {
			if err := applyConfig(cmd.Flags()); err != nil {
				return usageError{err}
			}
			return runServe(cmd.Context(), o, cmd.Flags())
		})
	o.flags(cmd.Flags())
	return cmd
}

func runServe(ctx context.Context, o serveOptions, fs *pflag.FlagSet) error {
	if err := o.checkRole(fs); err != nil {
		return usageError{err}
	}
	if err := o.validate(); err != nil {
		return usageError{err}
	}
	log, err := o.Log.logger(os.Stderr)
	if err != nil {
		return usageError{err}
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(o.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && o.MemoryLimit > 0 {
		debug.SetMemoryLimit(o.MemoryLimit)
	}
	return serve(ctx, o, log)
}

// Roles of `meshproof serve`.
const (
	roleServe = "serve"
	roleQuery = "query"
)

// checkRole refuses a role it does not know, and, with --role query, every
// flag of the data path (ext_authz, policy, evidence writing, spool): the
// query role would silently ignore them.
func (o *serveOptions) checkRole(fs *pflag.FlagSet) error {
	switch o.Role {
	case roleServe:
		return nil
	case roleQuery:
	default:
		return fmt.Errorf("role %q: want serve or query", o.Role)
	}
	q := defaultServeOptions()
	takes := newFlagSet("query")
	storeFlag(takes, &q.Evidence.Store)
	q.HTTP.flags(takes)
	logFlags(takes, &q.Log)
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	var refused []string
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "config", "role", "shutdown-grace", "gc-percent", "memory-limit":
			return
		}
		// Set on the command line, or by --config (which sets values, not
		// flags).
		if takes.Lookup(f.Name) == nil && (set[f.Name] || f.Value.String() != f.DefValue) {
			refused = append(refused, "--"+f.Name)
		}
	})
	// Options whose flags do not print their value, set by --config.
	if len(refused) == 0 && (o.GRPC != q.GRPC || o.Evidence.Recorder != q.Evidence.Recorder) {
		refused = append(refused, "--grpc-* or --evidence-*")
	}
	if len(refused) > 0 {
		return fmt.Errorf("--role query serves the evidence API only (no ext_authz listener, policy, recorder or spool), so it does not take %s: drop them, or run with --role serve",
			strings.Join(refused, ", "))
	}
	return nil
}

// serve runs until ctx is done, then stops in order: the gRPC listener
// first (in-flight Checks finish), then the rest (server.Close).
func serve(ctx context.Context, o serveOptions, log zerolog.Logger) error {
	s, err := newServer(ctx, o, log)
	if err != nil {
		return err
	}
	err = s.run(ctx)
	// Close logs what it could not stop or close; the exit status is the
	// listeners', as it always was.
	_ = s.Close()
	if s.rec != nil {
		log.Info().Uint64("chain_seq", s.rec.Head().Seq).Msg("stopped")
	} else {
		log.Info().Msg("stopped")
	}
	return err
}

// server is `meshproof serve` built: every component, made by newServer in
// the order of the fields below, each from those before it. run serves;
// Close stops and closes what was made in the reverse order, so that each
// goes before what it uses: the gRPC listener (in-flight Checks finish),
// the HTTP listener (uploads to /logs and API reads finish), the recorder
// (what they queued is written), the last checkpoints, the store, the
// policy engine. --role query makes only the store and the HTTP listener.
type server struct {
	o   serveOptions
	log zerolog.Logger
	reg *prometheus.Registry

	engine *rego.Engine
	store  evidence.Store
	health func() map[string]any  // the spool's state, for /readyz; nil without one
	cp     *evidence.Checkpointer // nil without --signing-key
	arch   *archiveState          // nil without --archive-dir
	rec    *recorder.Recorder
	svc    *authz.Server
	hs     *http.Server
	hlis   net.Listener
	grpc   *authz.GRPC // nil in the query role
	oldest *oldestRecord
	glis   net.Listener

	// closers undo the construction, one per step that opened something,
	// in its order.
	closers []closer
	// served: run started the listeners; grpcDone and httpDone are closed
	// when their Serve has returned.
	served             bool
	grpcDone, httpDone chan struct{}
	// stopCtx bounds what Close does after the gRPC listener's own grace.
	stopCtx    context.Context
	stopCancel context.CancelFunc
}

type closer struct {
	name   string
	failed string // the log message when close fails
	close  func() error
}

// opened adds the step that undoes what was just opened.
func (s *server) opened(name, failed string, close func() error) {
	s.closers = append(s.closers, closer{name: name, failed: failed, close: close})
}

// newServer builds every component of o.Role; when a step fails, what the
// steps before it opened is closed before the error is returned.
func newServer(ctx context.Context, o serveOptions, log zerolog.Logger) (*server, error) {
	s := &server{o: o, log: log, reg: prometheus.NewRegistry()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(s.reg)
	build := s.build
	if o.Role == roleQuery {
		build = s.buildQuery
	}
	if err := build(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *server) build(ctx context.Context) error {
	o, log := &s.o, s.log
	engine, err := rego.New(o.Policy, log, s.reg)
	if err != nil {
		return err
	}
	s.engine = engine
	// Stopped even when Start fails: OPA's plugin manager may have begun.
	s.opened("policy engine", "", func() error {
		engine.Stop(context.Background())
		return nil
	})
	if err := engine.Start(ctx); err != nil {
		return err
	}

	var signer note.Signer
	if o.Evidence.SigningKey != "" {
		if signer, err = evidence.LoadSigner(o.Evidence.SigningKey); err != nil {
			return err
		}
	}
	if s.store, s.health, err = openStore(ctx, o.Evidence, o.Authz.Replica, log, s.reg); err != nil {
		return err
	}
	s.opened("evidence store", "the evidence store did not close cleanly", s.store.Close)
	s.oldest = newOldestRecord(s.store, log.With().Str("component", "evidence").Logger(), s.reg)
	if o.Evidence.Archive.Dir != "" {
		s.arch = &archiveState{o: o.Evidence.Archive, signer: signer, log: log.With().Str("component", "archive").Logger()}
	}
	if signer != nil {
		s.cp = evidence.NewCheckpointer(s.store, signer, o.Evidence.CheckpointInterval, log.With().Str("component", "checkpoints").Logger(), s.reg)
		s.opened("checkpoints", "the last checkpoints could not be signed", func() error {
			if !s.served {
				return nil // nothing was recorded
			}
			// The last records, in a checkpoint of their own.
			return s.cp.SignAll(s.stopContext())
		})
	}
	if s.rec, err = recorder.New(ctx, o.Evidence.Recorder, o.Authz.Replica, s.store, log, recorder.NewMetrics(s.reg)); err != nil {
		return err
	}
	s.opened("recorder", "evidence not all stored", func() error {
		// Every Check and upload has answered: what they queued is
		// written now.
		return s.rec.Close(s.stopContext())
	})
	if s.svc, err = authz.NewServer(o.Authz, engine, s.rec, log, s.reg); err != nil {
		return err
	}
	if o.Kube.Enabled || o.Kube.Kubeconfig != "" || o.Kube.IstioRoot != "" {
		ix, stop, err := watchWorkloads(ctx, o.Kube, log)
		if err != nil {
			return err
		}
		s.opened("kubernetes informers", "", func() error {
			stop() // returns once every informer goroutine has
			return nil
		})
		s.svc.ResolveWorkloads(ix)
		cfg, stopIstio, err := watchIstio(ctx, o.Kube, ix, log)
		if err != nil {
			return err
		}
		s.opened("istio informers", "", func() error {
			stopIstio()
			return nil
		})
		if cfg != nil { // nil: the cluster has no Istio
			o.HTTP.istio = cfg
			s.svc.ResolvePeerModes(cfg)
		}
	}
	if o.HTTP.logs, err = decisionlog.New(decisionLogConfig(s.store, o.Evidence, s.reg), s.svc, s.rec, log); err != nil {
		return err
	}
	if err := s.listenHTTP(engine.Ready); err != nil {
		return err
	}
	if s.grpc, err = authz.NewGRPC(o.GRPC, s.svc, s.reg); err != nil {
		return err
	}
	s.opened("gRPC server", "", func() error {
		if !s.served {
			s.grpc.Stop() // its stream workers
			return nil
		}
		s.grpc.Shutdown(s.o.Grace)
		<-s.grpcDone
		return nil
	})
	if s.glis, err = authz.Listen(o.GRPC.Addr); err != nil {
		return err
	}
	s.opened("gRPC listener", "", func() error {
		if s.served {
			return nil // closed by the gRPC server's Shutdown
		}
		return ignoreClosed(s.glis.Close())
	})
	return nil
}

// buildQuery builds --role query: the evidence API, reports, page and
// metrics over the store (read only), and nothing of the data path (no
// ext_authz listener, policy, recorder or retention).
func (s *server) buildQuery(ctx context.Context) error {
	// The query role reads a store that serve writes: it never creates one.
	store, err := evidence.Open(ctx, s.o.Evidence.Store, evidence.Options{Existing: true})
	if err != nil {
		return fmt.Errorf("evidence store: %w", err)
	}
	s.store = store
	s.opened("evidence store", "the evidence store did not close cleanly", store.Close)
	return s.listenHTTP(nil)
}

// listenHTTP builds the HTTP server and binds its listener.
func (s *server) listenHTTP(ready func() bool) error {
	hs, err := s.o.HTTP.httpServer(s.store, s.reg, ready, s.health, s.log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.o.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http-addr: %w", err)
	}
	s.hs, s.hlis = hs, lis
	s.opened("HTTP listener", "the HTTP listener did not stop cleanly", func() error {
		if !s.served {
			return ignoreClosed(lis.Close())
		}
		err := hs.Shutdown(s.stopContext())
		if err != nil {
			hs.Close() // out of time: the connections still open go
		}
		<-s.httpDone
		return err
	})
	return nil
}

// stopContext bounds the stopping after the gRPC listener's: one grace
// for the HTTP listener, the recorder and the last checkpoints together.
func (s *server) stopContext() context.Context {
	if s.stopCtx == nil {
		s.stopCtx, s.stopCancel = context.WithTimeout(context.Background(), s.o.Grace)
	}
	return s.stopCtx
}

// Close stops and closes, in the reverse order of construction, whatever
// was opened, logging what fails; it is safe after a partial construction,
// and a second call does nothing.
func (s *server) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		c := s.closers[i]
		if err := c.close(); err != nil {
			if c.failed != "" {
				s.log.Error().Err(err).Msg(c.failed)
			}
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	s.closers = nil
	if s.stopCancel != nil {
		s.stopCancel()
	}
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// run serves until ctx is done or a listener fails, and returns that
// failure; retention, the checkpoints and the health flip stop with it.
// Close stops the listeners.
func (s *server) run(ctx context.Context) error {
	s.served = true
	errc := make(chan error, 2)
	s.httpDone = make(chan struct{})
	go func() {
		defer close(s.httpDone)
		errc <- serveHTTP(s.hs, s.hlis)
	}()
	var bg sync.WaitGroup
	bctx, stopBG := context.WithCancel(ctx)
	defer func() {
		stopBG()
		bg.Wait()
	}()
	if s.grpc == nil {
		s.log.Info().
			Str("role", s.o.Role).
			Str("http_addr", s.hlis.Addr().String()).
			Str("store", evidence.Redact(s.o.Evidence.Store)).
			Bool("http_tls", s.o.HTTP.TLSCert != "").
			Bool("api_auth", s.o.HTTP.TokenFile != "" || len(s.o.HTTP.AllowSPIFFE) > 0).
			Msg("meshproof serving")
	} else {
		s.grpcDone = make(chan struct{})
		go func() {
			defer close(s.grpcDone)
			errc <- s.grpc.Serve(s.glis)
		}()
		bg.Add(3)
		go func() {
			defer bg.Done()
			retain(bctx, s.store, s.o.Evidence, s.arch, s.log)
		}()
		go func() {
			defer bg.Done()
			s.oldest.run(bctx)
		}()
		go func() {
			defer bg.Done()
			markServing(bctx, s.grpc, s.engine.Ready)
		}()
		if s.cp != nil {
			bg.Add(1)
			go func() {
				defer bg.Done()
				s.cp.Run(bctx)
			}()
		}
		s.logServing()
		if s.o.onListen != nil {
			s.o.onListen(s.glis.Addr(), s.hlis.Addr())
		}
	}

	var err error
	select {
	case <-ctx.Done():
		if s.grpc == nil {
			s.log.Info().Msg("stopping")
		} else {
			s.log.Info().Msg("stopping: in-flight Checks finish first")
		}
	case err = <-errc:
		s.log.Error().Err(err).Msg("listener failed; stopping")
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *server) logServing() {
	o := &s.o
	s.log.Info().
		Str("role", o.Role).
		Str("grpc_addr", s.glis.Addr().String()).
		Str("http_addr", s.hlis.Addr().String()).
		Str("decision", o.Policy.Decision).
		Str("policy_revision", s.engine.Revision()).
		Bool("dry_run", o.Authz.DryRun).
		Str("store", evidence.Redact(o.Evidence.Store)).
		Str("spool", o.Evidence.Spool).
		Str("durability", string(o.Evidence.Recorder.Durability)).
		Uint64("chain_seq", s.rec.Head().Seq).
		Bool("grpc_tls", o.GRPC.TLSCert != "").
		Bool("grpc_mtls", o.GRPC.ClientCA != "").
		Bool("http_tls", o.HTTP.TLSCert != "").
		Bool("api_auth", o.HTTP.TokenFile != "" || len(o.HTTP.AllowSPIFFE) > 0).
		Bool("signed_checkpoints", s.cp != nil).
		Bool("ingest_auth", o.HTTP.IngestTokenFile != "" || len(o.HTTP.IngestAllowSPIFFE) > 0).
		Msg("meshproof serving")
}

// markServing flips gRPC health to SERVING once the policy is loaded (remote
// bundles can take a while).
func markServing(ctx context.Context, g *authz.GRPC, ready func() bool) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !ready() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	g.SetServing(true)
}
