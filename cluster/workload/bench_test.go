package workload

import (
	"net/netip"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const benchPods = 10000

// BenchmarkLookup looks up the addresses of 10,000 indexed pods, in turn,
// each resolving its Deployment through its ReplicaSet.
func BenchmarkLookup(b *testing.B) {
	tmpl := loadPodTemplate(b)
	ix := NewIndex()
	ix.UpsertReplicaSet(replicaSet("cart-7d4b9c5f8", "1", controller("apps/v1", "Deployment", "cart")))
	addrs := make([]netip.Addr, benchPods)
	for i := range benchPods {
		p, _ := Transform(tmpl.pod(b, i))
		pod := p.(*corev1.Pod)
		// Every pod owned by the ReplicaSet above.
		pod.OwnerReferences[0].UID = "uid-ReplicaSet-cart-7d4b9c5f8"
		ix.UpsertPod(pod)
		addrs[i] = netip.MustParseAddr(pod.Status.PodIP)
	}
	if w, why := ix.Lookup(addrs[0]); w.Kind != KindDeployment || why != "" {
		b.Fatalf("Lookup = %+v, %q", w, why)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, why := ix.Lookup(addrs[i]); why != "" {
				b.Fatal(why)
			}
			if i++; i == len(addrs) {
				i = 0
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, why := ix.Lookup(addrs[i]); why != "" {
					b.Fatal(why)
				}
				if i++; i == len(addrs) {
					i = 0
				}
			}
		})
	})
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		strs := make([]string, len(addrs))
		for i, a := range addrs {
			strs[i] = a.String()
		}
		i := 0
		for b.Loop() {
			if _, why := ix.LookupString(strs[i]); why != "" {
				b.Fatal(why)
			}
			if i++; i == len(strs) {
				i = 0
			}
		}
	})
}

// BenchmarkHeapPerPod reports the heap held, after GC, per pod of 10,000
// realistic (Istio-injected) pods: "full" keeps the pods as decoded (an
// informer without Transform, no index), "informer+index" keeps the
// transformed pods (what the informer's store holds) and the Index fed from
// them, "index" the Index alone. The informer store's own key map is not
// counted. Run with -benchtime=1x: each iteration builds all 10,000.
func BenchmarkHeapPerPod(b *testing.B) {
	tmpl := loadPodTemplate(b)
	measure := func(build func() any) float64 {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		kept := build()
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(kept)
		return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / benchPods
	}
	for b.Loop() {
		full := measure(func() any {
			pods := make([]*corev1.Pod, benchPods)
			for i := range pods {
				pods[i] = tmpl.pod(b, i)
			}
			return pods
		})
		both := measure(func() any {
			ix := NewIndex()
			pods := make([]*corev1.Pod, benchPods)
			for i := range pods {
				p, _ := Transform(tmpl.pod(b, i))
				pods[i] = p.(*corev1.Pod)
				ix.UpsertPod(pods[i])
			}
			return []any{ix, pods}
		})
		index := measure(func() any {
			ix := NewIndex()
			for i := range benchPods {
				p, _ := Transform(tmpl.pod(b, i))
				ix.UpsertPod(p.(*corev1.Pod))
			}
			return ix
		})
		b.ReportMetric(full, "full-B/pod")
		b.ReportMetric(both, "informer+index-B/pod")
		b.ReportMetric(index, "index-B/pod")
	}
}

// resolver is how authz calls Resolve: through an interface, so the
// compiler cannot keep what Resolve returns on the caller's stack.
var resolver interface {
	Resolve(addr string) (*Workload, string)
}

// BenchmarkResolve is Resolve (what a Check asks, through authz.Workloads)
// of the addresses of 10,000 indexed pods in turn, each a Deployment's
// through its ReplicaSet.
func BenchmarkResolve(b *testing.B) {
	tmpl := loadPodTemplate(b)
	ix := NewIndex()
	ix.UpsertReplicaSet(replicaSet("cart-7d4b9c5f8", "1", controller("apps/v1", "Deployment", "cart")))
	strs := make([]string, benchPods)
	for i := range benchPods {
		p, _ := Transform(tmpl.pod(b, i))
		pod := p.(*corev1.Pod)
		pod.OwnerReferences[0].UID = "uid-ReplicaSet-cart-7d4b9c5f8"
		ix.UpsertPod(pod)
		strs[i] = netip.MustParseAddr(pod.Status.PodIP).String()
	}
	resolver = ix
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if w, why := resolver.Resolve(strs[i]); w == nil || w.Kind != KindDeployment {
			b.Fatal(why)
		}
		if i++; i == len(strs) {
			i = 0
		}
	}
}
