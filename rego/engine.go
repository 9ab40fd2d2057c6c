// Package rego embeds OPA: it loads policies (local files, bundles, the
// shipped library, remote bundles through OPA's own plugin manager),
// compiles them off the hot path, swaps them in atomically, and evaluates
// the decision for a prepared input.
package rego

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// DefaultDecision is OPA-Envoy's default decision path.
const DefaultDecision = "envoy/authz/allow"

// Config configures the engine.
type Config struct {
	// Policies are local sources: .rego files, data files, directories,
	// .tar.gz bundles, or builtin:NAME from the shipped library.
	Policies []string `json:"policy"`
	// Decision is the path of the decision, as OPA-Envoy takes it:
	// envoy/authz/allow, or a Rego ref such as data.envoy.authz.allow.
	Decision string `json:"decision"`
	// OPAConfig is an OPA configuration file (services, bundles, keys) for
	// remote bundles, run by OPA's own plugin manager.
	OPAConfig string `json:"opa_config"`
	// Watch reloads local sources when their files change.
	Watch bool `json:"watch"`
	// PolicySettle is how long a policy file written in place must stay
	// unchanged before it is reloaded (a writer may pause halfway); a file
	// replaced whole (renamed into place, a ConfigMap's ..data swap) is
	// reloaded at once. 0: at once either way.
	PolicySettle time.Duration `json:"policy_settle"`
	// V0Compatible parses local policies as Rego v0 (OPA before 1.0).
	V0Compatible bool `json:"v0_compatible"`
	// DecisionCache is how many decisions of a deterministic policy to
	// remember, by the input values it reads; 0 turns it off.
	DecisionCache int `json:"decision_cache"`
	// DecisionCacheBytes bounds the memory the cache's keys and values
	// hold (estimated from their contents); 0 turns it off.
	DecisionCacheBytes int `json:"decision_cache_bytes"`
}

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	return Config{Decision: DefaultDecision, Watch: true, DecisionCache: 10000, DecisionCacheBytes: 64 << 20, PolicySettle: time.Second}
}

// Validate checks the configuration without touching the file system.
func (c Config) Validate() error {
	if _, err := DecisionRef(c.Decision); err != nil {
		return err
	}
	for _, p := range c.Policies {
		if strings.TrimSpace(p) == "" {
			return errors.New("policy: empty path")
		}
	}
	if c.DecisionCache < 0 {
		return errors.New("decision-cache: must be 0 (off) or more")
	}
	if c.PolicySettle < 0 || c.PolicySettle > maxPolicySettle {
		return fmt.Errorf("policy-settle %s: must be between 0 and %s", c.PolicySettle, maxPolicySettle)
	}
	if c.DecisionCacheBytes < 0 {
		return fmt.Errorf("decision-cache-bytes %d: must be 0 (off) or more", c.DecisionCacheBytes)
	}
	return nil
}

// DecisionRef turns a decision path (envoy/authz/allow, envoy.authz.allow or
// data.envoy.authz.allow) into the ref it names.
func DecisionRef(path string) (ast.Ref, error) {
	p := strings.TrimSpace(path)
	if p == "" {
		return nil, errors.New("decision: empty; OPA-Envoy's default is envoy/authz/allow")
	}
	if strings.Contains(p, "/") {
		p = strings.ReplaceAll(strings.Trim(p, "/"), "/", ".")
	}
	if !strings.HasPrefix(p, "data.") && p != "data" {
		p = "data." + p
	}
	ref, err := ast.ParseRef(p)
	if err != nil {
		return nil, fmt.Errorf("decision %q: not a path like envoy/authz/allow: %w", path, err)
	}
	return ref, nil
}

// Policy is one compiled generation of the policy, immutable once built.
type Policy struct {
	compiler *ast.Compiler
	query    ast.Body
	// Revision identifies the policy: the local sources' digest and the
	// active bundles' revisions.
	Revision string
	memo     *memo // nil: decisions are not cached
}

// Errors Eval returns.
var (
	ErrNotReady  = errors.New("no policy loaded yet")
	ErrUndefined = errors.New("decision is undefined for this input")
)

var resultVar = ast.Var("meshproof_decision")

// Engine owns the OPA store, the plugin manager and the current Policy.
type Engine struct {
	cfg      Config
	ref      ast.Ref
	log      zerolog.Logger
	popts    ast.ParserOptions
	store    storage.Store
	manager  *plugins.Manager
	bundles  *bundleplugin.Plugin // nil without remote bundles
	iqCache  cache.InterQueryCache
	iqvCache cache.InterQueryValueCache
	print    printHook
	metrics  *engineMetrics

	current atomic.Pointer[Policy]

	mu        sync.Mutex // serialises local installs
	installed *localSet  // the local set in the store; guarded by mu
	// local is the local set being committed or in the store; onCompile
	// reads it from inside the commit, possibly from a bundle's goroutine.
	local atomic.Pointer[localSet]

	activatedMu sync.Mutex
	activated   map[string]bool // bundles activated at least once

	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// New builds an engine; Start loads the policy.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ref, _ := DecisionRef(cfg.Decision)
	e := &Engine{
		cfg:     cfg,
		ref:     ref,
		log:     log.With().Str("component", "policy").Logger(),
		popts:   ast.ParserOptions{ProcessAnnotation: true, RegoVersion: ast.RegoV1},
		store:   inmem.New(),
		print:   printHook{log: log},
		metrics: newEngineMetrics(reg),
	}
	if cfg.V0Compatible {
		e.popts.RegoVersion = ast.RegoV0
	}
	raw := []byte("{}")
	if cfg.OPAConfig != "" {
		b, err := os.ReadFile(cfg.OPAConfig)
		if err != nil {
			return nil, fmt.Errorf("opa config: %w", err)
		}
		raw = b
	}
	ol := opaLogger{log: e.log}
	m, err := plugins.New(raw, "meshproof", e.store,
		plugins.Logger(ol), plugins.ConsoleLogger(ol),
		plugins.EnablePrintStatements(true), plugins.PrintHook(e.print),
		plugins.WithParserOptions(e.popts))
	if err != nil {
		return nil, fmt.Errorf("opa config %s: %w", cfg.OPAConfig, err)
	}
	e.manager = m
	if err := e.configureBundles(); err != nil {
		return nil, err
	}
	e.iqCache = cache.NewInterQueryCache(m.InterQueryBuiltinCacheConfig())
	e.iqvCache = cache.NewInterQueryValueCache(context.Background(), m.InterQueryBuiltinCacheConfig())
	return e, nil
}

func (e *Engine) configureBundles() error {
	c := e.manager.Config
	if c.Bundle != nil {
		return errors.New("opa config: the legacy \"bundle\" key is not supported; use \"bundles\"")
	}
	for name, what := range map[string]bool{"decision_logs": c.DecisionLogs != nil, "status": c.Status != nil, "discovery": c.Discovery != nil, "plugins": len(c.Plugins) > 0} {
		if what {
			e.log.Warn().Str("section", name).Msg("opa config: section ignored; meshproof uses services, bundles, keys and caching")
		}
	}
	if c.Bundles == nil {
		return nil
	}
	bc, err := bundleplugin.NewConfigBuilder().
		WithBytes(c.Bundles).
		WithServices(e.manager.Services()).
		WithKeyConfigs(e.manager.PublicKeys()).
		Parse()
	if err != nil {
		return fmt.Errorf("opa config: bundles: %w", err)
	}
	e.bundles = bundleplugin.New(bc, e.manager)
	e.manager.Register(bundleplugin.Name, e.bundles)
	e.bundles.Register("meshproof", e.onBundleStatus)
	return nil
}

// Start loads the local policy (a broken one is an error) and starts the
// remote bundle downloads and the file watcher.
func (e *Engine) Start(ctx context.Context) error {
	e.manager.RegisterCompilerTrigger(e.onCompile)
	if err := e.manager.Init(ctx); err != nil {
		return fmt.Errorf("policy engine: %w", err)
	}
	sources := e.cfg.Policies
	if len(sources) == 0 && e.bundles == nil {
		sources = []string{BuiltinPrefix + "observe"}
		e.log.Warn().Msg("no --policy given: running the built-in observe policy (allow everything, record everything)")
	}
	if len(sources) > 0 {
		if err := e.load(ctx, sources); err != nil {
			return err
		}
	}
	if err := e.manager.Start(ctx); err != nil {
		return fmt.Errorf("policy engine: %w", err)
	}
	if e.cfg.Watch && len(e.cfg.Policies) > 0 {
		if err := e.watch(e.cfg.Policies); err != nil {
			return err
		}
	}
	return nil
}

// Reload reads the local sources again and installs them if they compile.
// A broken policy leaves the current one serving and is returned.
func (e *Engine) Reload(ctx context.Context) error {
	err := e.load(ctx, e.cfg.Policies)
	result := "ok"
	if err != nil {
		result = "error"
		e.log.Error().Err(err).Msg("policy reload rejected; the previous policy keeps serving")
	} else {
		e.log.Info().Str("revision", e.Revision()).Msg("policy reloaded")
	}
	e.metrics.reloads.WithLabelValues("local", result).Inc()
	return err
}

// Stop stops the watcher and OPA's plugins.
func (e *Engine) Stop(ctx context.Context) {
	if e.stopWatch != nil {
		e.stopWatch()
		<-e.watchDone
	}
	e.manager.Stop(ctx)
}

// Ready reports whether a policy is loaded and every remote bundle has
// been activated at least once. A bundle whose latest version was rejected
// keeps its previous one serving, so it does not make the engine unready.
func (e *Engine) Ready() bool {
	if e.current.Load() == nil {
		return false
	}
	if e.bundles == nil {
		return true
	}
	e.activatedMu.Lock()
	defer e.activatedMu.Unlock()
	for name := range e.bundles.Config().Bundles {
		if !e.activated[name] {
			return false
		}
	}
	return true
}

// Revision is the current policy's revision, "" before one is loaded.
func (e *Engine) Revision() string {
	if p := e.current.Load(); p != nil {
		return p.Revision
	}
	return ""
}

// Eval evaluates the decision for input with the current policy. It returns
// the decision value and the policy that produced it.
func (e *Engine) Eval(ctx context.Context, input *ast.Term) (ast.Value, *Policy, error) {
	p := e.current.Load()
	if p == nil {
		return nil, nil, ErrNotReady
	}
	m := p.memo
	if m == nil || m.off.Load() {
		v, err := e.evalQuery(ctx, p, input)
		return v, p, err
	}
	k, ki, ok := m.key(input, factsOf(ctx))
	if !ok {
		v, err := e.evalQuery(ctx, p, input)
		return v, p, err
	}
	if v, found := m.get(k, ki.hash); found {
		m.count(true)
		e.metrics.cache.WithLabelValues("hit").Inc()
		if v == nil {
			return nil, p, ErrUndefined
		}
		return v, p, nil
	}
	m.count(false)
	e.metrics.cache.WithLabelValues("miss").Inc()
	v, err := e.evalQuery(ctx, p, input)
	if err == nil || errors.Is(err, ErrUndefined) {
		m.put(k, ki, v)
	}
	return v, p, err
}

// KeyFunc gives the values at the input paths a cached policy's decisions
// depend on (paths without the leading input), in order; nil for a path
// absent from the input. ok false: it cannot tell without the document.
type KeyFunc func(paths []ast.Ref) (values []*ast.Term, ok bool)

// Cached answers from the decision cache without an input document, when the
// current policy is cached and key can give the values it reads. found false
// means: build the input and call Eval.
func (e *Engine) Cached(key KeyFunc) (v ast.Value, p *Policy, found bool, err error) {
	p = e.current.Load()
	if p == nil {
		return nil, nil, false, nil
	}
	m := p.memo
	if m == nil || m.off.Load() {
		return nil, p, false, nil
	}
	terms, ok := key(m.paths)
	if !ok {
		return nil, p, false, nil
	}
	k, ki, ok := keyOf(terms)
	if !ok {
		return nil, p, false, nil
	}
	v, found = m.get(k, ki.hash)
	if !found {
		return nil, p, false, nil // Eval counts the miss
	}
	m.count(true)
	e.metrics.cache.WithLabelValues("hit").Inc()
	if v == nil {
		return nil, p, true, ErrUndefined
	}
	return v, p, true, nil
}

func (e *Engine) evalQuery(ctx context.Context, p *Policy, input *ast.Term) (ast.Value, error) {
	txn, err := e.store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer e.store.Abort(ctx, txn)
	vc := getVirtualCache()
	defer vc.release()
	q := topdown.NewQuery(p.query).
		WithVirtualCache(vc).
		WithCompiler(p.compiler).
		WithStore(e.store).
		WithTransaction(txn).
		WithInput(input).
		WithMetrics(noMetrics).
		WithInterQueryBuiltinCache(e.iqCache).
		WithInterQueryBuiltinValueCache(e.iqvCache).
		WithPrintHook(e.print)
	if ctx.Done() != nil {
		// A runaway policy stops when Envoy gives up on the Check.
		cancel := topdown.NewCancel()
		stop := context.AfterFunc(ctx, cancel.Cancel)
		defer stop()
		q = q.WithCancel(cancel)
	}
	rs, err := q.Run(ctx)
	switch {
	case err != nil:
		return nil, err
	case len(rs) == 0:
		return nil, ErrUndefined
	case len(rs) > 1:
		return nil, fmt.Errorf("decision has %d values; it must have one", len(rs))
	}
	return rs[0][resultVar].Value, nil
}

var noMetrics = metrics.NoOp()

// load installs sources into the store and compiles everything in it; the
// store's commit hook (onCompile) then swaps the new policy in.
func (e *Engine) load(ctx context.Context, sources []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	set, err := loadLocal(sources, e.popts)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	params := storage.WriteParams
	params.Context = storage.NewContext()
	err = storage.Txn(ctx, e.store, params, func(txn storage.Transaction) error {
		compiler, err := e.install(ctx, txn, set)
		if err != nil {
			return err
		}
		plugins.SetCompilerOnContext(params.Context, compiler)
		// Holding the store's write lock: no other commit can see this
		// before ours.
		e.local.Store(set)
		return nil
	})
	if err != nil {
		e.local.Store(e.installed)
		return fmt.Errorf("policy: %w", err)
	}
	e.installed = set
	return nil
}

// install writes set into the store in txn, replacing the previous local
// set, and compiles it together with the bundles' modules.
func (e *Engine) install(ctx context.Context, txn storage.Transaction, set *localSet) (*ast.Compiler, error) {
	modules := map[string]*ast.Module{}
	if c := e.manager.GetCompiler(); c != nil {
		for id, m := range c.Modules {
			if e.installed == nil || e.installed.modules[id] == nil {
				modules[id] = m // a bundle's module
			}
		}
	}
	if e.installed != nil {
		for id := range e.installed.modules {
			if err := e.store.DeletePolicy(ctx, txn, id); err != nil && !storage.IsNotFound(err) {
				return nil, err
			}
		}
		for key := range e.installed.data {
			if _, still := set.data[key]; !still {
				if err := e.store.Write(ctx, txn, storage.RemoveOp, storage.Path{key}, nil); err != nil && !storage.IsNotFound(err) {
					return nil, err
				}
			}
		}
	}
	for id, m := range set.modules {
		if err := e.store.UpsertPolicy(ctx, txn, id, set.raw[id]); err != nil {
			return nil, err
		}
		modules[id] = m
	}
	for key, v := range set.data {
		if err := e.store.Write(ctx, txn, storage.AddOp, storage.Path{key}, v); err != nil {
			return nil, fmt.Errorf("data %s: %w", key, err)
		}
	}
	compiler := ast.NewCompiler().
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(e.popts.RegoVersion)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, compiler.Errors
	}
	if e.bundles == nil && !e.defined(ctx, txn, compiler) {
		return nil, fmt.Errorf("decision %s: %w (set --decision to the rule your policy defines)", e.ref, errNotDefined)
	}
	return compiler, nil
}

// defined reports whether a rule or a data document exists at the decision.
func (e *Engine) defined(ctx context.Context, txn storage.Transaction, c *ast.Compiler) bool {
	if len(c.GetRules(e.ref)) > 0 || len(c.GetRulesWithPrefix(e.ref)) > 0 {
		return true
	}
	path, err := storage.NewPathForRef(e.ref)
	if err != nil {
		return false
	}
	_, err = e.store.Read(ctx, txn, path)
	return err == nil
}

// onCompile runs inside every commit that changes the compiler (a local
// load or a bundle activation): it prepares the decision query against the
// new compiler and swaps it in. Checks keep using the previous policy until
// the swap; none of this runs on their path.
func (e *Engine) onCompile(txn storage.Transaction) {
	c := e.manager.GetCompiler()
	body := ast.NewBody(ast.Equality.Expr(ast.NewTerm(resultVar), ast.NewTerm(e.ref)))
	q, err := c.QueryCompiler().Compile(body)
	if err != nil {
		e.log.Error().Err(err).Msg("decision query does not compile against the new policy; keeping the previous one")
		e.metrics.reloads.WithLabelValues("compile", "error").Inc()
		return
	}
	rev := e.revision(context.Background(), txn)
	if rev == "" {
		// The plugin manager's first, empty compile: no policy yet, so
		// Checks keep getting ErrNotReady rather than "undefined".
		return
	}
	pol := &Policy{compiler: c, query: q, Revision: rev}
	if e.cfg.DecisionCache > 0 && e.cfg.DecisionCacheBytes > 0 {
		if paths, err := inputPaths(c, q); err != nil {
			e.log.Info().Str("revision", rev).Str("why", err.Error()).Msg("decision cache off for this policy")
		} else {
			pol.memo = newMemo(paths, e.cfg.DecisionCache, e.cfg.DecisionCacheBytes)
			e.log.Info().Str("revision", rev).Stringer("input_paths", refList(paths)).Msg("decision cache on: decisions depend only on these input paths")
		}
	}
	e.current.Store(pol)
	e.metrics.revision.Reset()
	e.metrics.revision.WithLabelValues(rev).Set(1)
	e.log.Debug().Str("revision", rev).Msg("policy activated")
}

// revision combines the local digest with the active bundles' revisions.
func (e *Engine) revision(ctx context.Context, txn storage.Transaction) string {
	var parts []string
	if l := e.local.Load(); l != nil && (len(l.modules) > 0 || len(l.data) > 0) {
		parts = append(parts, l.revision)
	}
	names, err := bundle.ReadBundleNamesFromStore(ctx, e.store, txn)
	if err == nil {
		slices.Sort(names)
		for _, n := range names {
			r, _ := bundle.ReadBundleRevisionFromStore(ctx, e.store, txn, n)
			parts = append(parts, n+"@"+r)
		}
	}
	return strings.Join(parts, ",")
}

func (e *Engine) onBundleStatus(s bundleplugin.Status) {
	if !s.LastSuccessfulActivation.IsZero() {
		e.activatedMu.Lock()
		if e.activated == nil {
			e.activated = map[string]bool{}
		}
		e.activated[s.Name] = true
		e.activatedMu.Unlock()
	}
	if len(s.Errors) > 0 || s.Message != "" {
		e.metrics.reloads.WithLabelValues("bundle", "error").Inc()
		e.log.Error().Str("bundle", s.Name).Str("error", s.Message).Interface("errors", s.Errors).Msg("bundle rejected; the previous policy keeps serving")
		return
	}
	e.metrics.reloads.WithLabelValues("bundle", "ok").Inc()
	e.log.Info().Str("bundle", s.Name).Str("revision", s.ActiveRevision).Msg("bundle activated")
}

// refList prints input paths for the log.
type refList []ast.Ref

func (l refList) String() string {
	parts := make([]string, len(l))
	for i, r := range l {
		parts[i] = "input" + strings.TrimPrefix(ast.Ref(append(ast.Ref{ast.InputRootDocument}, r...)).String(), "input")
	}
	return strings.Join(parts, ", ")
}

type engineMetrics struct {
	reloads  *prometheus.CounterVec
	revision *prometheus.GaugeVec
	cache    *prometheus.CounterVec
}

func newEngineMetrics(reg prometheus.Registerer) *engineMetrics {
	m := &engineMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_policy_reloads_total",
			Help: "Policy loads after start-up, by source (local, bundle, compile) and result (ok, error).",
		}, []string{"source", "result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshproof_policy_revision_info",
			Help: "The active policy revision (value 1).",
		}, []string{"revision"}),
	}
	m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_decision_cache_lookups_total",
		Help: "Decision cache lookups by result (hit, miss); a policy that reads only repeating input values is evaluated once per distinct value.",
	}, []string{"result"})
	// Present from start-up, so that absent() and increase() see them.
	for _, src := range []string{"local", "bundle", "compile"} {
		for _, res := range []string{"ok", "error"} {
			m.reloads.WithLabelValues(src, res)
		}
	}
	for _, res := range []string{"hit", "miss"} {
		m.cache.WithLabelValues(res)
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.revision, m.cache)
	}
	return m
}
