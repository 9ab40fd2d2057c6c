package workload_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestWatch feeds an index from a real API server: a pod already there
// when Watch starts resolves as soon as Watch returns (the Deployment named
// through its ReplicaSet); a pod created after, and its IP taken over by
// another pod once the first is deleted, follow within the informers'
// events.
func TestWatch(t *testing.T) {
	cs := kubetest.Clientset(t)
	ns := kubetest.Namespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reviews"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	controller := true
	dep, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "reviews"}},
			Template: podTemplate("reviews", "v1"),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No controller manager runs: the ReplicaSet the Deployment would make.
	rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-7d9f8c6b5", Labels: map[string]string{"app": "reviews"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &controller}}},
		Spec: appsv1.ReplicaSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &controller}
	runPod(ctx, t, cs, ns, "reviews-7d9f8c6b5-x7k2p", &owned, "10.244.1.17")

	ix := workload.NewIndex()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	clients, err := workload.NewClients(kubetest.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := workload.Watch(wctx, clients.Sources(), ix)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop()
		<-stopped
	}()
	w, reason := ix.LookupString("10.244.1.17")
	want := workload.Workload{Namespace: ns, Kind: "Deployment", Name: "reviews", Pod: "reviews-7d9f8c6b5-x7k2p",
		ServiceAccount: "reviews", App: "reviews", Version: "v1", Sidecar: true}
	if reason != "" || w != want {
		t.Fatalf("once Watch returned: %+v (%q), want %+v", w, reason, want)
	}

	// A bare pod created afterwards, then deleted, its IP reused by a
	// pod of the Deployment.
	runPod(ctx, t, cs, ns, "debug", nil, "10.244.1.18")
	waitFor(ctx, t, ix, "10.244.1.18", workload.Workload{Namespace: ns, Kind: "Pod", Name: "debug", Pod: "debug",
		ServiceAccount: "reviews", App: "reviews", Version: "v1", Sidecar: true})
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "debug", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	runPod(ctx, t, cs, ns, "reviews-7d9f8c6b5-q4m8z", &owned, "10.244.1.18")
	waitFor(ctx, t, ix, "10.244.1.18", workload.Workload{Namespace: ns, Kind: "Deployment", Name: "reviews", Pod: "reviews-7d9f8c6b5-q4m8z",
		ServiceAccount: "reviews", App: "reviews", Version: "v1", Sidecar: true})
}

func podTemplate(app, version string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app, "version": version}},
		Spec: corev1.PodSpec{
			ServiceAccountName: app,
			Containers: []corev1.Container{
				{Name: app, Image: "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2"},
				{Name: "istio-proxy", Image: "docker.io/istio/proxyv2:1.28.0"},
			},
		},
	}
}

// runPod creates a pod of the reviews template and sets its IP and phase
// through the status subresource, as a kubelet does.
func runPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, owner *metav1.OwnerReference, ip string) {
	t.Helper()
	tmpl := podTemplate("reviews", "v1")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels}, Spec: tmpl.Spec}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits until ip resolves to want: each informer event changes the
// index, so the lookup is tried again on a short tick until ctx ends.
func waitFor(ctx context.Context, t *testing.T, ix *workload.Index, ip string, want workload.Workload) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		w, reason := ix.LookupString(ip)
		if reason == "" && w == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s resolves to %+v (%q), want %+v", ip, w, reason, want)
		case <-tick.C:
		}
	}
}

// TestWatchStops: once Watch's context ends, stopped is closed only when
// no informer goroutine is left, both after a sync (from an API server and
// from a static source) and when the context ends before the first list.
// Without the wait, the informers' goroutines are still there when the
// context's end is seen.
func TestWatchStops(t *testing.T) {
	type start func(t *testing.T) workload.Sources
	server := func(t *testing.T) workload.Sources {
		clients, err := workload.NewClients(kubetest.Config(t)) // skips without a test API server
		if err != nil {
			t.Fatal(err)
		}
		return clients.Sources()
	}
	static := func(*testing.T) workload.Sources {
		return workload.Sources{
			Pods:        workload.StaticSource(&corev1.PodList{}),
			ReplicaSets: workload.StaticSource(&appsv1.ReplicaSetList{}),
			Jobs:        workload.StaticSource(&batchv1.JobList{}),
		}
	}
	// A source that never answers: the context ends before the first list.
	hung := func(*testing.T) workload.Sources {
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, _ metav1.ListOptions) (kruntime.Object, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			WatchFuncWithContext: func(ctx context.Context, _ metav1.ListOptions) (watch.Interface, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		}
		return workload.Sources{Pods: lw, ReplicaSets: lw, Jobs: lw}
	}
	for _, tc := range []struct {
		name   string
		source start
		synced bool
	}{
		{"api server", server, true},
		{"static", static, true},
		{"never listed", hung, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.source(t)
			if n := informerGoroutines(); n != "" {
				t.Fatalf("informer goroutines before Watch:\n%s", n)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if !tc.synced {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			stopped, err := workload.Watch(ctx, src, workload.NewIndex())
			if tc.synced != (err == nil) {
				t.Fatalf("Watch: %v", err)
			}
			if tc.synced {
				if n := informerGoroutines(); n == "" {
					t.Fatal("no informer goroutine while Watch runs: the check below would prove nothing")
				}
				cancel()
				<-stopped
			}
			if n := informerGoroutines(); n != "" {
				t.Errorf("informer goroutines once Watch's context ended and it said it had stopped:\n%s", n)
			}
		})
	}
}

// informerGoroutines are the stacks of the goroutines running client-go's
// informer machinery (package tools/cache), "" when there is none.
func informerGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "k8s.io/client-go/tools/cache.") {
			found = append(found, g)
		}
	}
	return strings.Join(found, "\n\n")
}
