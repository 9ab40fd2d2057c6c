package kubetest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	securityv1beta1api "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

func TestNamePrefix(t *testing.T) {
	long := strings.Repeat("a", 100)
	tests := []struct {
		test, want string
	}{
		{"TestInformer", "testinformer-"},
		{"TestInformer/pods_of_a_ReplicaSet", "testinformer-pods-of-a-replicaset-"},
		{"Test__Two--Dashes", "test-two-dashes-"},
		{"_Leading", "leading-"},
		{"Trailing/", "trailing-"},
		{"Ünïcode/名前", "n-code-"},
		{"", "test-"},
		{"/", "test-"},
		{long, long[:maxPrefix-1] + "-"},
		// Cut where a dash would end the name: no two dashes.
		{strings.Repeat("a", maxPrefix-2) + "/b", strings.Repeat("a", maxPrefix-2) + "-"},
	}
	label := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	for _, tt := range tests {
		got := namePrefix(tt.test)
		if got != tt.want {
			t.Errorf("namePrefix(%q) = %q, want %q", tt.test, got, tt.want)
		}
		// With the server's 5 characters it must be a DNS label.
		if name := got + "x1y2z"; len(name) > 63 || !label.MatchString(name) {
			t.Errorf("namePrefix(%q) = %q: %q is no DNS label", tt.test, got, name)
		}
	}
}

// events returns the objects an informer adds or updates, in order.
func events[T any](t *testing.T, inf cache.SharedIndexInformer) <-chan T {
	t.Helper()
	ch := make(chan T, 100)
	send := func(obj any) {
		if o, ok := obj.(T); ok {
			ch <- o
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { send(obj) },
		UpdateFunc: func(_, obj any) { send(obj) },
	})
	if err != nil {
		t.Fatalf("add an event handler: %v", err)
	}
	t.Cleanup(func() { _ = inf.RemoveEventHandler(reg) })
	return ch
}

// await returns the first event on ch that ok accepts, failing the test
// when ctx ends first.
func await[T any](ctx context.Context, t *testing.T, ch <-chan T, what string, ok func(T) bool) T {
	t.Helper()
	for {
		select {
		case o := <-ch:
			if ok(o) {
				return o
			}
		case <-ctx.Done():
			t.Fatalf("no informer event for %s: %v", what, ctx.Err())
		}
	}
}

// TestInformerSeesWorkload writes what meshproof will watch (a
// ServiceAccount, a ReplicaSet, a Pod it owns with the IP its status got
// through the status subresource, a PeerAuthentication) and reads it back
// through shared informers, as meshproof will.
func TestInformerSeesWorkload(t *testing.T) {
	cfg := Config(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := Namespace(t, cs)
	// A bound on a broken server, not a measurement.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	kf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	podInf := kf.Core().V1().Pods().Informer()
	rsInf := kf.Apps().V1().ReplicaSets().Informer()
	saInf := kf.Core().V1().ServiceAccounts().Informer()
	isf := istioinformers.NewSharedInformerFactoryWithOptions(ic, 0, istioinformers.WithNamespace(ns))
	paInf := isf.Security().V1().PeerAuthentications().Informer()
	pods := events[*corev1.Pod](t, podInf)
	replicaSets := events[*appsv1.ReplicaSet](t, rsInf)
	accounts := events[*corev1.ServiceAccount](t, saInf)
	peerAuths := events[*securityv1.PeerAuthentication](t, paInf)

	stop := make(chan struct{})
	kf.Start(stop)
	isf.Start(stop)
	t.Cleanup(func() {
		close(stop)
		kf.Shutdown()
		isf.Shutdown()
	})
	for typ, synced := range kf.WaitForCacheSync(ctx.Done()) {
		if !synced {
			t.Fatalf("informer of %v did not sync", typ)
		}
	}
	for typ, synced := range isf.WaitForCacheSync(ctx.Done()) {
		if !synced {
			t.Fatalf("informer of %v did not sync (are Istio's CRDs applied?)", typ)
		}
	}

	labels := map[string]string{"app": "reviews", "pod-template-hash": "7d9f8c6b5"}
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "bookinfo-reviews"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ServiceAccount: %v", err)
	}
	rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1-7d9f8c6b5", Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: sa.Name,
					Containers:         []corev1.Container{{Name: "reviews", Image: "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2"}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ReplicaSet: %v", err)
	}
	controller := true
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   rs.Name + "-x7k2p",
			Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &controller,
			}},
		},
		Spec: rs.Spec.Template.Spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Pod: %v", err)
	}
	// Only a kubelet sets a Pod's IP, and only through the status
	// subresource: an update of the Pod itself would drop it.
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = "10.244.1.17"
	pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update the Pod's status: %v", err)
	}
	pa, err := ic.SecurityV1().PeerAuthentications(ns).Create(ctx, &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-strict"},
		Spec: securityv1beta1api.PeerAuthentication{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
			Mtls:     &securityv1beta1api.PeerAuthentication_MutualTLS{Mode: securityv1beta1api.PeerAuthentication_MutualTLS_STRICT},
			PortLevelMtls: map[uint32]*securityv1beta1api.PeerAuthentication_MutualTLS{
				9080: {Mode: securityv1beta1api.PeerAuthentication_MutualTLS_PERMISSIVE},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PeerAuthentication: %v", err)
	}

	gotSA := await(ctx, t, accounts, "ServiceAccount "+sa.Name, func(o *corev1.ServiceAccount) bool { return o.Name == sa.Name })
	if gotSA.UID != sa.UID {
		t.Errorf("ServiceAccount: informer has UID %s, server gave %s", gotSA.UID, sa.UID)
	}
	gotRS := await(ctx, t, replicaSets, "ReplicaSet "+rs.Name, func(o *appsv1.ReplicaSet) bool { return o.Name == rs.Name })
	if gotRS.UID != rs.UID || gotRS.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("ReplicaSet: informer has UID %s, service account %q; want %s, %q",
			gotRS.UID, gotRS.Spec.Template.Spec.ServiceAccountName, rs.UID, sa.Name)
	}
	// The Pod's add comes without an IP; its status update brings one.
	gotPod := await(ctx, t, pods, "Pod "+pod.Name+" with an IP", func(o *corev1.Pod) bool {
		return o.Name == pod.Name && o.Status.PodIP != ""
	})
	if got, want := describePod(gotPod), fmt.Sprintf("ip=10.244.1.17 phase=Running sa=%s owner=ReplicaSet/%s/%s", sa.Name, rs.Name, rs.UID); got != want {
		t.Errorf("Pod through the informer: %s, want %s", got, want)
	}
	gotPA := await(ctx, t, peerAuths, "PeerAuthentication "+pa.Name, func(o *securityv1.PeerAuthentication) bool { return o.Name == pa.Name })
	if got := gotPA.Spec.GetMtls().GetMode(); got != securityv1beta1api.PeerAuthentication_MutualTLS_STRICT {
		t.Errorf("PeerAuthentication mode %v, want STRICT", got)
	}
	if got := gotPA.Spec.GetPortLevelMtls()[9080].GetMode(); got != securityv1beta1api.PeerAuthentication_MutualTLS_PERMISSIVE {
		t.Errorf("PeerAuthentication port 9080 mode %v, want PERMISSIVE", got)
	}
	if got := gotPA.Spec.GetSelector().GetMatchLabels()["app"]; got != "reviews" {
		t.Errorf("PeerAuthentication selects app=%q, want reviews", got)
	}

	// The listers answer from the same caches.
	if p, err := kf.Core().V1().Pods().Lister().Pods(ns).Get(pod.Name); err != nil || p.Status.PodIP != "10.244.1.17" {
		t.Errorf("Pod lister: %v, IP %q", err, podIP(p))
	}
	if _, err := isf.Security().V1().PeerAuthentications().Lister().PeerAuthentications(ns).Get(pa.Name); err != nil {
		t.Errorf("PeerAuthentication lister: %v", err)
	}
}

func describePod(p *corev1.Pod) string {
	owner := "none"
	if ref := metav1.GetControllerOf(p); ref != nil {
		owner = ref.Kind + "/" + ref.Name + "/" + string(ref.UID)
	}
	return fmt.Sprintf("ip=%s phase=%s sa=%s owner=%s", p.Status.PodIP, p.Status.Phase, p.Spec.ServiceAccountName, owner)
}

func podIP(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	return p.Status.PodIP
}
