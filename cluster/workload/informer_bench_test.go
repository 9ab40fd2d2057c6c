package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// The cluster of BenchmarkWatchHeap: benchPods pods of benchDeployments
// Deployments (10 pods each) over benchNamespaces namespaces, and
// benchRevisions ReplicaSets a Deployment (its current one and older ones
// scaled to zero, as a Deployment's revisionHistoryLimit keeps them).
const (
	benchDeployments = benchPods / 10
	benchNamespaces  = 50
	benchRevisions   = 3
)

// benchCluster is that cluster as an API server would send it: every List
// decodes the objects afresh from JSON, so each string is its own
// allocation, as a client decoding the server's response gets them.
type benchCluster struct{ tmpl podTemplate }

// deployment d's names: its namespace, app (also its service account and
// containers' name) and the pod-template-hash of its revision r.
func (c benchCluster) deployment(d, r int) (ns, app, hash string) {
	return fmt.Sprintf("team-%02d", d%benchNamespaces), fmt.Sprintf("svc-%03d", d), fmt.Sprintf("%x", 0x5c8d0000+d*benchRevisions+r)
}

func rsUID(d, r int) string { return fmt.Sprintf("5e7a%04x-%04x-4c6d-9e8f-0a1b2c3d4e5f", d, r) }

// podJSON is pod i (of Deployment i/10, its current ReplicaSet): the
// template, Istio-injected, renamed throughout (labels, owner, Istio's
// environment, image) for its Deployment.
func (c benchCluster) podJSON(i int) []byte {
	d := i / 10
	ns, app, hash := c.deployment(d, 0)
	return []byte(strings.NewReplacer(
		`"NAME"`, fmt.Sprintf(`"%s-%s-%05x"`, app, hash, i),
		`"UID"`, fmt.Sprintf(`"%08x-1c2d-4e3f-8a9b-%012x"`, i, i*7919),
		`"RV"`, fmt.Sprintf(`"%d"`, 1000000+i),
		`"NODE"`, fmt.Sprintf(`"node-%02d"`, i%100),
		`"HOSTIP"`, fmt.Sprintf(`"192.168.0.%d"`, i%100+1),
		`"PODIP"`, fmt.Sprintf(`"10.244.%d.%d"`, i/250, i%250+1),
		"6f1c2d3e-4b5a-4c6d-9e8f-0a1b2c3d4e5f", rsUID(d, 0),
		"7d4b9c5f8", hash,
		"cart", app,
		"shop", ns,
	).Replace(string(c.tmpl)))
}

func (c benchCluster) pods() (*corev1.PodList, error) {
	list := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "2000000"}, Items: make([]corev1.Pod, benchPods)}
	for i := range list.Items {
		if err := json.Unmarshal(c.podJSON(i), &list.Items[i]); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// replicaSets are every Deployment's, each with the pod template the
// Deployment's controller writes into it, as the API server returns them.
func (c benchCluster) replicaSets() (*appsv1.ReplicaSetList, error) {
	list := &appsv1.ReplicaSetList{ListMeta: metav1.ListMeta{ResourceVersion: "2000000"}, Items: make([]appsv1.ReplicaSet, 0, benchDeployments*benchRevisions)}
	yes := true
	for d := range benchDeployments {
		for r := range benchRevisions {
			var p corev1.Pod
			if err := json.Unmarshal(c.podJSON(d*10), &p); err != nil {
				return nil, err
			}
			ns, app, hash := c.deployment(d, r)
			replicas := int32(0)
			if r == 0 {
				replicas = 10
			}
			list.Items = append(list.Items, appsv1.ReplicaSet{
				ObjectMeta: metav1.ObjectMeta{
					Name: app + "-" + hash, Namespace: ns, UID: types.UID(rsUID(d, r)), ResourceVersion: fmt.Sprint(900000 + d*benchRevisions + r),
					CreationTimestamp: p.CreationTimestamp, Labels: p.Labels, ManagedFields: p.ManagedFields,
					Annotations: map[string]string{
						"deployment.kubernetes.io/desired-replicas": "10",
						"deployment.kubernetes.io/max-replicas":     "13",
						"deployment.kubernetes.io/revision":         fmt.Sprint(benchRevisions - r),
					},
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: app,
						UID: types.UID(fmt.Sprintf("d3a1%04x-0b1c-4d2e-8f30-4a5b6c7d8e9f", d)), Controller: &yes, BlockOwnerDeletion: &yes}},
				},
				Spec: appsv1.ReplicaSetSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app, "pod-template-hash": hash}},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels, Annotations: p.Annotations}, Spec: p.Spec},
				},
				Status: appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas, FullyLabeledReplicas: replicas, ObservedGeneration: 1},
			})
		}
	}
	return list, nil
}

// source lists what list returns, afresh each time, and watches nothing
// (no event comes, as in a cluster at rest): a ListWatch in memory, no
// network, through the same reflector path as an API server's (a List,
// then a Watch; no streaming list, as StaticSource).
func benchSource(list func() (kruntime.Object, error)) cache.ListerWatcher {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (kruntime.Object, error) { return list() },
		WatchFuncWithContext: func(ctx context.Context, _ metav1.ListOptions) (watch.Interface, error) {
			return newIdleWatch(ctx), nil
		},
	}
	return cache.ToListWatcherWithWatchListSemantics(lw, noWatchList{})
}

// BenchmarkWatchHeap measures what serve --kubernetes's informers hold for
// a cluster of 10,000 Istio-injected pods: Watch itself (its informers of
// pods, replicasets and jobs with Transform, and the Index they feed) over
// ListWatches that serve 10,000 pods and their 3,000 ReplicaSets from
// memory. It reports the heap in use after GC once Watch has synced, less
// the heap before it started: per pod (B/pod, live objects as
// runtime.MemStats.HeapAlloc counts them), in total (MB), and as
// HeapInuse counts it (inuse-MB: the spans holding them). Run with
// -benchtime=1x: each iteration lists the whole cluster.
func BenchmarkWatchHeap(b *testing.B) {
	c := benchCluster{tmpl: loadPodTemplate(b)}
	src := Sources{
		Pods:        benchSource(func() (kruntime.Object, error) { return c.pods() }),
		ReplicaSets: benchSource(func() (kruntime.Object, error) { return c.replicaSets() }),
		Jobs:        StaticSource(&batchv1.JobList{}),
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		ix := NewIndex()
		stopped, err := Watch(ctx, src, ix)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)

		// Every pod resolves to its Deployment, through its ReplicaSet.
		if n := ix.Len(); n != benchPods {
			b.Errorf("index holds %d pods, want %d", n, benchPods)
		}
		for _, i := range []int{0, 4321, benchPods - 1} {
			w, why := ix.LookupString(fmt.Sprintf("10.244.%d.%d", i/250, i%250+1))
			if _, app, _ := c.deployment(i/10, 0); why != "" || w.Kind != KindDeployment || w.Name != app || !w.Sidecar {
				b.Errorf("pod %d: %+v (%q), want Deployment %s with a sidecar", i, w, why, app)
			}
		}
		cancel()
		<-stopped
		runtime.KeepAlive(ix)

		alloc := float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
		b.ReportMetric(alloc/benchPods, "B/pod")
		b.ReportMetric(alloc/1e6, "MB")
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/1e6, "inuse-MB")
	}
}
