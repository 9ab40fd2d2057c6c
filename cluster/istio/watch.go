package istio

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Clients are the REST clients of the two Istio API groups Watch reads:
// security.istio.io/v1 (PeerAuthentication) and networking.istio.io/v1
// (DestinationRule).
type Clients struct{ Security, Networking cache.Getter }

// NewClients makes Clients from cfg with a scheme of these two groups alone:
// Istio's clientset registers every Istio group and version, and a
// clientset of Kubernetes' would add every Kubernetes group to the binary.
func NewClients(cfg *rest.Config) (Clients, error) {
	sec, err := newRESTClient(cfg, securityv1.SchemeGroupVersion, securityv1.AddToScheme)
	if err != nil {
		return Clients{}, fmt.Errorf("istio: %s client: %w", securityv1.SchemeGroupVersion, err)
	}
	net, err := newRESTClient(cfg, networkingv1.SchemeGroupVersion, networkingv1.AddToScheme)
	if err != nil {
		return Clients{}, fmt.Errorf("istio: %s client: %w", networkingv1.SchemeGroupVersion, err)
	}
	return Clients{Security: sec, Networking: net}, nil
}

func newRESTClient(cfg *rest.Config, gv schema.GroupVersion, add func(*runtime.Scheme) error) (*rest.RESTClient, error) {
	scheme := runtime.NewScheme()
	if err := add(scheme); err != nil {
		return nil, err
	}
	// The list and watch options travel as query parameters of meta/v1.
	metav1.AddToGroupVersion(scheme, gv)
	c := rest.CopyConfig(cfg)
	c.GroupVersion, c.APIPath = &gv, "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}

// Config is the cluster's Istio configuration at one moment: every
// PeerAuthentication and DestinationRule the watch had seen when it was
// built. It never changes; Watcher.Config hands out the latest.
type Config struct {
	root  string
	peers *PolicyIndex
	rules []*networkingv1.DestinationRule
	// PeerAuthentications and DestinationRules are how many it holds.
	PeerAuthentications, DestinationRules int

	replaced chan struct{} // closed when a newer Config is published
}

// NewConfig builds a Config from the objects (which it keeps, not copies:
// they must not change afterwards), with root as Istio's root namespace (""
// for DefaultRootNamespace). Watch builds its own; this one is for tests and
// for fixed configurations.
func NewConfig(policies []*securityv1.PeerAuthentication, rules []*networkingv1.DestinationRule, root string) *Config {
	if root == "" {
		root = DefaultRootNamespace
	}
	return &Config{root: root, peers: NewPolicyIndex(policies, root), rules: rules,
		PeerAuthentications: len(policies), DestinationRules: len(rules), replaced: make(chan struct{})}
}

// PeerMode is the mode w's sidecar enforces on its (container) port.
func (c *Config) PeerMode(w Workload, port uint32) PeerDecision { return c.peers.Effective(w, port) }

// ClientTLS is the TLS a client in clientNS originates to host (fully
// qualified) on service port port.
func (c *Config) ClientTLS(clientNS, host string, port uint32) ClientDecision {
	return DestinationRuleTLS(c.rules, c.root, clientNS, host, port)
}

// Replaced is closed once a newer Config replaces this one: a test (or
// anything else) waits on it for the next change instead of polling.
func (c *Config) Replaced() <-chan struct{} { return c.replaced }

// Served reports whether the API server serves both groups Watch reads,
// security.istio.io/v1 and networking.istio.io/v1: a cluster without Istio
// (plain Envoy, or Istio's CRDs not installed) answers 404 for their
// discovery documents, which every authenticated user may read.
func (c Clients) Served(ctx context.Context) (bool, error) {
	for _, g := range []struct {
		c  cache.Getter
		gv schema.GroupVersion
	}{{c.Security, securityv1.SchemeGroupVersion}, {c.Networking, networkingv1.SchemeGroupVersion}} {
		if ok, err := served(ctx, g.c, g.gv); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// served reports whether the API server behind c serves gv.
func served(ctx context.Context, c cache.Getter, gv schema.GroupVersion) (bool, error) {
	rc, ok := c.(*rest.RESTClient)
	if !ok {
		return true, nil // not an API server's: Watch will tell
	}
	path := "/apis/" + gv.String()
	err := rc.Get().AbsPath(path).Do(ctx).Error()
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("istio: discovering %s: %w", path, err)
	}
	return true, nil
}

// Sources are where Watch lists and watches each kind: the API server
// (Clients.Sources) or fixed objects (workload.StaticSource, the demo's
// cluster), through the same informers either way.
type Sources struct{ PeerAuthentications, DestinationRules cache.ListerWatcher }

// Sources lists and watches both kinds in every namespace.
func (c Clients) Sources() Sources {
	all := func(g cache.Getter, resource string) cache.ListerWatcher {
		return cache.NewListWatchFromClient(g, resource, metav1.NamespaceAll, fields.Everything())
	}
	return Sources{PeerAuthentications: all(c.Security, "peerauthentications"), DestinationRules: all(c.Networking, "destinationrules")}
}

// Watcher keeps the Config current from the cluster. Config is one atomic
// load: a report reads it without a lock while the informers rebuild it.
type Watcher struct {
	current atomic.Pointer[Config]
	done    chan struct{}
}

// Config returns the latest configuration.
func (w *Watcher) Config() *Config { return w.current.Load() }

// Done is closed once every informer of the watch has returned, after the
// context given to Watch ends: a caller that ends it waits on Done to leave
// no goroutine behind.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Watch starts informers of PeerAuthentication and DestinationRule over src
// (from an API server it needs list and watch on both, in every namespace)
// and rebuilds the Config on every add, update and delete. root is Istio's
// root namespace ("" for DefaultRootNamespace). It returns once both have
// been listed, so the first Config is the cluster's. The informers run
// until ctx ends, then Done is closed. When ctx ends before the first
// list, Watch waits for the informers and fails.
func Watch(ctx context.Context, src Sources, root string) (*Watcher, error) {
	w := &Watcher{done: make(chan struct{})}
	// No resync: every event rebuilds, and nothing needs replaying.
	peers := cache.NewSharedIndexInformer(src.PeerAuthentications, &securityv1.PeerAuthentication{}, 0, cache.Indexers{})
	rules := cache.NewSharedIndexInformer(src.DestinationRules, &networkingv1.DestinationRule{}, 0, cache.Indexers{})
	for _, inf := range []cache.SharedIndexInformer{peers, rules} {
		// Managed fields are most of a small object's bytes and never read.
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return nil, fmt.Errorf("istio: %w", err)
		}
	}

	var mu sync.Mutex // one rebuild at a time, in event order
	synced := false
	rebuild := func() {
		mu.Lock()
		defer mu.Unlock()
		if !synced {
			return // the first Config is built once both are listed
		}
		w.publish(build(peers.GetStore(), rules.GetStore(), root))
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { rebuild() },
		UpdateFunc: func(_, _ any) { rebuild() },
		DeleteFunc: func(any) { rebuild() },
	}
	var regs []cache.InformerSynced
	for name, inf := range map[string]cache.SharedIndexInformer{"peerauthentications": peers, "destinationrules": rules} {
		reg, err := inf.AddEventHandler(handler)
		if err != nil {
			return nil, fmt.Errorf("istio: watching %s: %w", name, err)
		}
		regs = append(regs, reg.HasSynced)
	}
	var wg sync.WaitGroup
	for _, inf := range []cache.SharedIndexInformer{peers, rules} {
		wg.Go(func() { inf.RunWithContext(ctx) }) // it returns once its own goroutines have
	}
	go func() {
		wg.Wait()
		close(w.done)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), regs...) {
		<-w.done
		return nil, fmt.Errorf("istio: peerauthentications and destinationrules not listed before the context ended: %w", context.Cause(ctx))
	}
	mu.Lock()
	synced = true
	w.publish(build(peers.GetStore(), rules.GetStore(), root))
	mu.Unlock()
	return w, nil
}

// publish makes c the current Config and wakes the waiters on the old one.
func (w *Watcher) publish(c *Config) {
	if old := w.current.Swap(c); old != nil {
		close(old.replaced)
	}
}

func build(peers, rules cache.Store, root string) *Config {
	var ps []*securityv1.PeerAuthentication
	for _, o := range peers.List() {
		if p, ok := o.(*securityv1.PeerAuthentication); ok {
			ps = append(ps, p)
		}
	}
	var rs []*networkingv1.DestinationRule
	for _, o := range rules.List() {
		if r, ok := o.(*networkingv1.DestinationRule); ok {
			rs = append(rs, r)
		}
	}
	return NewConfig(ps, rs, root)
}

// dropManagedFields is the informers' transform. It changes the object it
// is given, which client-go allows: the object is the informer's own copy.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
