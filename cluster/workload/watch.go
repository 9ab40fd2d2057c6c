package workload

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
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

// Watch feeds ix from the cluster: Pods, ReplicaSets and Jobs in every
// namespace (it needs list and watch on all three), through informers that
// keep only what Transform keeps. It returns once the index holds the
// initial state, so addresses resolve from the first Check; the informers
// run until ctx is done. It fails when ctx ends before that. TestWatch
// runs it against a real API server (test/kube).
func Watch(ctx context.Context, client Clients, ix *Index) error {
	all := func(c cache.Getter, resource string) *cache.ListWatch {
		return cache.NewListWatchFromClient(c, resource, corev1.NamespaceAll, fields.Everything())
	}
	// No resync: the index is updated on every event and needs no replay.
	sources := []struct {
		name     string
		informer cache.SharedIndexInformer
		upsert   func(any)
		remove   func(any)
	}{
		{"pods", newInformer(all(client.Core, "pods"), &corev1.Pod{}),
			typed(ix.UpsertPod), typed(ix.DeletePod)},
		{"replicasets", newInformer(all(client.Apps, "replicasets"), &appsv1.ReplicaSet{}),
			typed(ix.UpsertReplicaSet), typed(ix.DeleteReplicaSet)},
		{"jobs", newInformer(all(client.Batch, "jobs"), &batchv1.Job{}),
			typed(ix.UpsertJob), typed(ix.DeleteJob)},
	}
	var synced []cache.InformerSynced
	for _, s := range sources {
		reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    s.upsert,
			UpdateFunc: func(_, obj any) { s.upsert(obj) },
			DeleteFunc: s.remove,
		})
		if err != nil {
			return fmt.Errorf("workload: watching %s: %w", s.name, err)
		}
		synced = append(synced, reg.HasSynced)
		go s.informer.Run(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("workload: pods, replicasets and jobs not listed before the context ended: %w", context.Cause(ctx))
	}
	return nil
}

func newInformer(lw *cache.ListWatch, obj runtime.Object) cache.SharedIndexInformer {
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
