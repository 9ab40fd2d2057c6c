package workload

import (
	"net/netip"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// epoch is the creation time fixtures count from.
var epoch = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// testPod is a running pod in namespace shop on node-1 (192.168.0.1) with
// service account sa-NAME, holding ips, at resourceVersion rv.
func testPod(name, rv string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			Namespace:         "shop",
			UID:               types.UID("uid-" + name),
			ResourceVersion:   rv,
			CreationTimestamp: metav1.NewTime(epoch),
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "sa-" + name,
			NodeName:           "node-1",
			Containers:         []corev1.Container{{Name: "app"}},
		},
		Status: corev1.PodStatus{
			Phase:   corev1.PodRunning,
			HostIP:  "192.168.0.1",
			HostIPs: []corev1.HostIP{{IP: "192.168.0.1"}},
		},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

// with returns a copy of p changed by f, as a later update of the pod.
func with(p *corev1.Pod, rv string, f func(*corev1.Pod)) *corev1.Pod {
	q := p.DeepCopy()
	q.ResourceVersion = rv
	if f != nil {
		f(q)
	}
	return q
}

func phase(ph corev1.PodPhase) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Status.Phase = ph }
}

func controller(apiVersion, kind, name string) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID("uid-" + kind + "-" + name), Controller: &yes}
}

func replicaSet(name, rv string, owners ...metav1.OwnerReference) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "shop", UID: types.UID("uid-ReplicaSet-" + name), ResourceVersion: rv, OwnerReferences: owners,
	}}
}

func job(name, rv string, owners ...metav1.OwnerReference) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "shop", UID: types.UID("uid-Job-" + name), ResourceVersion: rv, OwnerReferences: owners,
	}}
}

// expectPod fails unless ip resolves to pod name.
func expectPod(t *testing.T, ix *Index, ip, name string) {
	t.Helper()
	w, why := ix.LookupString(ip)
	if why != "" || w.Pod != name {
		t.Errorf("Lookup(%s) = pod %q, reason %q; want pod %q", ip, w.Pod, why, name)
	}
}

// expectReason fails unless ip resolves to no workload, for reason want.
func expectReason(t *testing.T, ix *Index, ip string, want Reason) {
	t.Helper()
	w, why := ix.LookupString(ip)
	if why != want || w != (Workload{}) {
		t.Errorf("Lookup(%s) = %+v, reason %q; want no workload, reason %q", ip, w, why, want)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
