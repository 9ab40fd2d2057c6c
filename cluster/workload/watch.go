package workload

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Clients are the REST clients of the three API groups Watch reads
// (core/v1, apps/v1, batch/v1): NewClients's, or a clientset's
// CoreV1().RESTClient() and the like.
type Clients struct{ Core, Apps, Batch cache.Getter }

// NewClients makes Clients from cfg with a scheme of these three groups
// alone: client-go's clientsets register every API group Kubernetes has,
// which took the binary from 54 to 80 MB (98 with the informer factory).
func NewClients(cfg *rest.Config) (Clients, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return Clients{}, err
		}
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()
	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientFor(c)
	}
	var cs Clients
	var err error
	if cs.Core, err = client(corev1.SchemeGroupVersion, "/api"); err != nil {
		return Clients{}, err
	}
	if cs.Apps, err = client(appsv1.SchemeGroupVersion, "/apis"); err != nil {
		return Clients{}, err
	}
	if cs.Batch, err = client(batchv1.SchemeGroupVersion, "/apis"); err != nil {
		return Clients{}, err
	}
	return cs, nil
}

// Sources are where Watch lists and watches each kind it reads: the API
// server (Clients.Sources) or fixed objects (StaticSource, the demo's
// simulated cluster), so both go through the same informers and Index.
type Sources struct{ Pods, ReplicaSets, Jobs cache.ListerWatcher }

// Sources lists and watches Pods, ReplicaSets and Jobs in every namespace.
func (c Clients) Sources() Sources {
	all := func(g cache.Getter, resource string) cache.ListerWatcher {
		return cache.NewListWatchFromClient(g, resource, corev1.NamespaceAll, fields.Everything())
	}
	return Sources{Pods: all(c.Core, "pods"), ReplicaSets: all(c.Apps, "replicasets"), Jobs: all(c.Batch, "jobs")}
}

// Watch feeds ix from src: Pods, ReplicaSets and Jobs (from an API server
// it needs list and watch on all three, in every namespace), through
// informers that keep only what Transform keeps. It returns once the index
// holds the initial state, so addresses resolve from the first Check; the
// informers run until ctx is done, and stopped is closed once every one of
// them has returned (a caller that ends ctx waits on it to leave no
// goroutine behind). When ctx ends before the first list, Watch waits for
// the informers and fails. TestWatch runs it against a real API server
// (test/kube).
func Watch(ctx context.Context, src Sources, ix *Index) (stopped <-chan struct{}, err error) {
	// No resync: the index is updated on every event and needs no replay.
	sources := []struct {
		name     string
		informer cache.SharedIndexInformer
		upsert   func(any)
		remove   func(any)
	}{
		{"pods", newInformer(src.Pods, &corev1.Pod{}), typed(ix.UpsertPod), typed(ix.DeletePod)},
		{"replicasets", newInformer(src.ReplicaSets, &appsv1.ReplicaSet{}), typed(ix.UpsertReplicaSet), typed(ix.DeleteReplicaSet)},
		{"jobs", newInformer(src.Jobs, &batchv1.Job{}), typed(ix.UpsertJob), typed(ix.DeleteJob)},
	}
	var synced []cache.InformerSynced
	for _, s := range sources {
		reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    s.upsert,
			UpdateFunc: func(_, obj any) { s.upsert(obj) },
			DeleteFunc: s.remove,
		})
		if err != nil {
			return nil, fmt.Errorf("workload: watching %s: %w", s.name, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	// RunWithContext returns only once the informer's own goroutines
	// (reflector, processor) have; the WaitGroup waits for every Run.
	var wg sync.WaitGroup
	for _, s := range sources {
		wg.Go(func() { s.informer.RunWithContext(ctx) })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		<-done
		return nil, fmt.Errorf("workload: pods, replicasets and jobs not listed before the context ended: %w", context.Cause(ctx))
	}
	return done, nil
}

// StaticSource lists the objects of list (a PodList, a ReplicaSetList, or
// any other kind's list, such as Istio's) and watches nothing: its watch
// sends no event and ends with the informer's context. It feeds a cluster
// that never changes, the demo's, through the informers a real one uses.
func StaticSource(list runtime.Object) cache.ListerWatcher {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			return list.DeepCopyObject(), nil // the informer owns what it gets
		},
		WatchFuncWithContext: func(ctx context.Context, _ metav1.ListOptions) (watch.Interface, error) {
			return newIdleWatch(ctx), nil
		},
	}
	// A reflector first asks for a streaming list (WatchList), which a watch
	// of no events would never end; this source says it has none, so the
	// reflector lists.
	return cache.ToListWatcherWithWatchListSemantics(lw, noWatchList{})
}

// noWatchList tells a reflector that a source cannot stream its list.
type noWatchList struct{}

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// idleWatch is a watch with no events whose channel closes when it is
// stopped or its context ends, whichever is first.
type idleWatch struct {
	ch   chan watch.Event
	once sync.Once
	stop func() bool // context.AfterFunc's
}

func newIdleWatch(ctx context.Context) *idleWatch {
	w := &idleWatch{ch: make(chan watch.Event)}
	w.stop = context.AfterFunc(ctx, w.end)
	return w
}

func (w *idleWatch) end() { w.once.Do(func() { close(w.ch) }) }

// Stop ends the watch and releases its hold on the context.
func (w *idleWatch) Stop() {
	w.stop()
	w.end()
}

func (w *idleWatch) ResultChan() <-chan watch.Event { return w.ch }

func newInformer(lw cache.ListerWatcher, obj runtime.Object) cache.SharedIndexInformer {
	inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
	if err := inf.SetTransform(Transform); err != nil {
		panic("workload: a new informer refused its transform: " + err.Error()) // only once started
	}
	return inf
}

// typed adapts an Index method to an informer's handler; a delete whose
// final state the informer missed arrives wrapped, and is unwrapped.
func typed[T *corev1.Pod | *appsv1.ReplicaSet | *batchv1.Job](f func(T)) func(any) {
	return func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if o, ok := obj.(T); ok {
			f(o)
		}
	}
}
