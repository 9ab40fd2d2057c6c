package workload

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watch feeds ix from the cluster: Pods, ReplicaSets and Jobs in every
// namespace (it needs list and watch on all three), through informers that
// keep only what Transform keeps. It returns once the index holds the
// initial state, so addresses resolve from the first Check; the informers
// run until ctx is done. It fails when ctx ends before that. TestWatch
// runs it against a real API server (test/kube).
func Watch(ctx context.Context, client kubernetes.Interface, ix *Index) error {
	// No resync: the index is updated on every event and needs no replay.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Transform))
	sources := []struct {
		name     string
		informer cache.SharedIndexInformer
		upsert   func(any)
		remove   func(any)
	}{
		{"pods", factory.Core().V1().Pods().Informer(),
			typed(ix.UpsertPod), typed(ix.DeletePod)},
		{"replicasets", factory.Apps().V1().ReplicaSets().Informer(),
			typed(ix.UpsertReplicaSet), typed(ix.DeleteReplicaSet)},
		{"jobs", factory.Batch().V1().Jobs().Informer(),
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
	}
	factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		factory.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("workload: pods, replicasets and jobs not listed before the context ended: %w", context.Cause(ctx))
	}
	return nil
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
