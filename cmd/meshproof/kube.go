package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshproof/meshproof/cluster/istio"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// kubeOptions turn on the cluster's own names in records (issue 16).
type kubeOptions struct {
	Enabled    bool
	Kubeconfig string
	// SyncTimeout bounds the wait for the informers' first list at start.
	SyncTimeout time.Duration
	// static, when set, is the cluster to watch instead of an API server
	// (the demo's); it has no flag.
	static *workload.Sources
	// staticIstio is the demo's Istio configuration, beside static.
	staticIstio *istio.Sources
	// IstioRoot is Istio's root namespace, whose namespace-wide
	// PeerAuthentication is mesh-wide.
	IstioRoot string
}

func (k *kubeOptions) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&k.Enabled, "kubernetes", k.Enabled, "record each Check's source and destination workloads (namespace, owner, pod, service account; resolved from the pod IPs when the Check is made), watching pods, replicasets and jobs: in-cluster credentials, or --kubeconfig")
	fs.StringVar(&k.Kubeconfig, "kubeconfig", k.Kubeconfig, "with --kubernetes, the kubeconfig file to reach the API server with (outside a pod)")
	fs.DurationVar(&k.SyncTimeout, "kubernetes-sync-timeout", k.SyncTimeout, "with --kubernetes, how long serve waits at start for the first list of pods, replicasets and jobs, then of Istio's peerauthentications and destinationrules, before it gives up")
	fs.StringVar(&k.IstioRoot, "istio-root-namespace", k.IstioRoot, "with --kubernetes, Istio's root namespace (the mesh config's rootNamespace; default "+istio.DefaultRootNamespace+"): its PeerAuthentication without a selector is mesh-wide")
}

// restConfig is the kubeconfig's, or the pod's own service account's.
func (k *kubeOptions) restConfig() (*rest.Config, error) {
	if k.Kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", k.Kubeconfig, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubernetes without --kubeconfig needs to run in a pod: %w", err)
	}
	return c, nil
}

// watchWorkloads starts the informers that feed a workload index and waits,
// at most SyncTimeout and until ctx (serve's start) ends, for their first
// list; stop ends them and returns once they have all returned. The
// sources are the API server's, or k.static's (the demo's cluster).
func watchWorkloads(ctx context.Context, k kubeOptions, log zerolog.Logger) (ix *workload.Index, stop func(), err error) {
	if k.Kubeconfig != "" && !k.Enabled {
		return nil, nil, errors.New("--kubeconfig is for --kubernetes, which is not set")
	}
	if k.IstioRoot != "" && !k.Enabled {
		return nil, nil, errors.New("--istio-root-namespace is for --kubernetes, which is not set")
	}
	src, from := k.static, "the demo's simulated cluster"
	if k.static == nil {
		cfg, err := k.restConfig()
		if err != nil {
			return nil, nil, err
		}
		cfg.UserAgent = "meshproof"
		cs, err := workload.NewClients(cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("kubernetes: %w", err)
		}
		s := cs.Sources()
		src, from = &s, cfg.Host
	}
	ix = workload.NewIndex()
	stop, err = awaitWatch(ctx, k.SyncTimeout, func(wctx context.Context) (<-chan struct{}, error) {
		return workload.Watch(wctx, *src, ix)
	}, fmt.Sprintf("pods, replicasets and jobs not listed from %s within --kubernetes-sync-timeout %s (can it be reached, and may meshproof list and watch them?)", from, k.SyncTimeout))
	if err != nil {
		return nil, nil, err
	}
	log.Info().Str("api_server", from).Int("pods", ix.Len()).Msg("watching the cluster's workloads")
	return ix, stop, nil
}

// awaitWatch runs watch, which starts informers and returns once they
// have listed (or fails), with a context of its own: the informers live
// until stop, beyond serve's start. It waits at most timeout (then fails
// with late) and until ctx ends; on any failure the informers are ended
// and waited for. stop ends them and returns once every one has returned
// (done is closed).
func awaitWatch(ctx context.Context, timeout time.Duration, watch func(context.Context) (done <-chan struct{}, err error), late string) (stop func(), err error) {
	wctx, cancel := context.WithCancel(context.Background())
	type watched struct {
		done <-chan struct{}
		err  error
	}
	synced := make(chan watched, 1)
	go func() {
		done, err := watch(wctx)
		synced <- watched{done, err}
	}()
	var w watched
	select {
	case w = <-synced:
		err = w.err
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-time.After(timeout):
		err = errors.New(late)
	}
	if err != nil {
		cancel()
		if w.done == nil && w.err == nil {
			w = <-synced // watch returns now that wctx has ended
		}
		if w.done != nil {
			<-w.done // it had synced after all: its informers end now
		}
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return func() {
		cancel()
		<-w.done
	}, nil
}

// watchIstio starts the informers of Istio's PeerAuthentications and
// DestinationRules, as watchWorkloads does (from the API server, or
// k.staticIstio's), and returns what the reports set beside the traffic:
// their modes, with the pods' labels from ix. stop returns once the
// informers have.
func watchIstio(ctx context.Context, k kubeOptions, ix *workload.Index, log zerolog.Logger) (cfg *istioConfig, stop func(), err error) {
	src, from := k.staticIstio, "the demo's simulated cluster"
	if src == nil {
		rc, err := k.restConfig()
		if err != nil {
			return nil, nil, err
		}
		rc.UserAgent = "meshproof"
		cs, err := istio.NewClients(rc)
		if err != nil {
			return nil, nil, fmt.Errorf("kubernetes: %w", err)
		}
		served, err := cs.Served(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("kubernetes: %w", err)
		}
		if !served {
			// Plain Envoy on Kubernetes: workloads, but no mesh config.
			log.Warn().Str("api_server", rc.Host).Msg("Istio's PeerAuthentication and DestinationRule are not served (Istio's CRDs are not installed): reports show traffic without configured modes")
			return nil, func() {}, nil
		}
		s := cs.Sources()
		src, from = &s, rc.Host
	}
	var w *istio.Watcher
	stop, err = awaitWatch(ctx, k.SyncTimeout, func(wctx context.Context) (<-chan struct{}, error) {
		var err error
		if w, err = istio.Watch(wctx, *src, k.IstioRoot); err != nil {
			return nil, err
		}
		return w.Done(), nil
	}, fmt.Sprintf("peerauthentications and destinationrules not listed from %s within --kubernetes-sync-timeout %s (are Istio's CRDs installed, and may meshproof list and watch them?)", from, k.SyncTimeout))
	if err != nil {
		return nil, nil, err
	}
	c := w.Config()
	log.Info().Str("api_server", from).Int("peerauthentications", c.PeerAuthentications).
		Int("destinationrules", c.DestinationRules).Msg("watching Istio's mTLS configuration")
	return &istioConfig{w: w, pods: ix}, stop, nil
}

// istioConfig is report.Configuration over the Istio watch and the pods'
// labels.
type istioConfig struct {
	w    *istio.Watcher
	pods *workload.Index
	// modes caches PeerMode for the Config it was computed from.
	modes atomic.Pointer[modeCache]
}

func (c *istioConfig) PeerAuthentication(ns string, w *evidence.Workload, port uint32) report.Setting {
	return c.peerAuthentication(c.w.Config(), ns, w, port)
}

func (c *istioConfig) peerAuthentication(cfg *istio.Config, ns string, w *evidence.Workload, port uint32) report.Setting {
	var labels map[string]string
	if w != nil {
		labels = c.pods.Labels(*w)
	}
	d := cfg.PeerMode(istio.Workload{Namespace: ns, Labels: labels}, port)
	return report.Setting{Name: d.Policy, Mode: d.Mode}
}

func (c *istioConfig) DestinationRule(clientNS, host string, port uint32) report.Setting {
	d := c.w.Config().ClientTLS(clientNS, host, port)
	return report.Setting{Name: d.Rule, Mode: d.Mode}
}

// modeCache is PeerMode's answers for one Config, by workload (one
// pointer per pod, replaced when the pod changes) and port: the metrics
// ask on every Check, and PolicyIndex's answer costs a microsecond or two.
// A new Config starts a new cache; so does one grown past maxCachedModes
// (pods come and go, and their old workloads would stay).
type modeCache struct {
	cfg   *istio.Config
	modes sync.Map // modeKey -> string
	n     atomic.Int64
}

type modeKey struct {
	w    *evidence.Workload
	port uint32
}

const maxCachedModes = 1 << 16

// PeerMode is authz.PeerModes: the mode of w's PeerAuthentication on port.
func (c *istioConfig) PeerMode(w *evidence.Workload, port uint32) string {
	cfg := c.w.Config()
	mc := c.modes.Load()
	if mc == nil || mc.cfg != cfg || mc.n.Load() > maxCachedModes {
		c.modes.CompareAndSwap(mc, &modeCache{cfg: cfg})
		mc = c.modes.Load()
	}
	k := modeKey{w, port}
	if v, ok := mc.modes.Load(k); ok {
		return v.(string)
	}
	mode := c.peerAuthentication(mc.cfg, w.Namespace, w, port).Mode
	if _, loaded := mc.modes.LoadOrStore(k, mode); !loaded {
		mc.n.Add(1)
	}
	return mode
}
