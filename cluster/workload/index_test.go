package workload

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/meshproof/meshproof/evidence"
)

func TestOwnerResolution(t *testing.T) {
	deploymentRS := replicaSet("web-7d4b9c", "10", controller("apps/v1", "Deployment", "web"))
	bareRS := replicaSet("legacy", "11")
	cronJob := job("report-29012345", "12", controller("batch/v1", "CronJob", "report"))
	bareJob := job("migrate", "13")
	foreignJob := job("train", "14", controller("batch/v1", "CronJob", "nightly"))

	tests := []struct {
		name     string
		owners   []metav1.OwnerReference
		wantKind string
		wantName string
	}{
		{"bare pod", nil, "Pod", "p"},
		{"only a non-controller owner", []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm", UID: "u"}}, "Pod", "p"},
		{"Deployment through its ReplicaSet", []metav1.OwnerReference{controller("apps/v1", "ReplicaSet", "web-7d4b9c")}, "Deployment", "web"},
		{"ReplicaSet without a Deployment", []metav1.OwnerReference{controller("apps/v1", "ReplicaSet", "legacy")}, "ReplicaSet", "legacy"},
		{"StatefulSet", []metav1.OwnerReference{controller("apps/v1", "StatefulSet", "db")}, "StatefulSet", "db"},
		{"DaemonSet", []metav1.OwnerReference{controller("apps/v1", "DaemonSet", "agent")}, "DaemonSet", "agent"},
		{"Job", []metav1.OwnerReference{controller("batch/v1", "Job", "migrate")}, "Job", "migrate"},
		{"CronJob through its Job", []metav1.OwnerReference{controller("batch/v1", "Job", "report-29012345")}, "CronJob", "report"},
		{"static pod, mirrored by its node", []metav1.OwnerReference{controller("v1", "Node", "node-1")}, "Node", "node-1"},
		// A custom resource called Job is not looked up among batch Jobs,
		// even though a batch Job's UID would match.
		{"a Job of another API group", []metav1.OwnerReference{{APIVersion: "ml.example.com/v1", Kind: "Job", Name: "train", UID: foreignJob.UID, Controller: ptr(true)}}, "ml.example.com/Job", "train"},
	}
	ix := NewIndex()
	ix.UpsertReplicaSet(deploymentRS)
	ix.UpsertReplicaSet(bareRS)
	ix.UpsertJob(cronJob)
	ix.UpsertJob(bareJob)
	ix.UpsertJob(foreignJob)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ip := fmt.Sprintf("10.1.0.%d", i+1)
			p := testPod("p", "100", ip)
			p.UID = types.UID("uid-" + ip)
			p.OwnerReferences = tc.owners
			ix.UpsertPod(p)
			w, why := ix.LookupString(ip)
			if why != "" {
				t.Fatalf("Lookup(%s): no workload: %s", ip, why)
			}
			if w.Kind != tc.wantKind || w.Name != tc.wantName {
				t.Errorf("top owner %s/%s, want %s/%s", w.Kind, w.Name, tc.wantKind, tc.wantName)
			}
			if w.Pod != "p" || w.Namespace != "shop" || w.ServiceAccount != "sa-p" {
				t.Errorf("pod fields %+v", w)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The pod arrives before its ReplicaSet (informers sync in any order): it
// names the ReplicaSet until the ReplicaSet arrives, then the Deployment,
// and the ReplicaSet again once it is deleted.
func TestDeploymentResolvesWhenReplicaSetArrives(t *testing.T) {
	ix := NewIndex()
	p := testPod("web-7d4b9c-x2x9q", "100", "10.2.0.1")
	p.OwnerReferences = []metav1.OwnerReference{controller("apps/v1", "ReplicaSet", "web-7d4b9c")}
	ix.UpsertPod(p)
	owner := func() string {
		w, why := ix.Lookup(addr("10.2.0.1"))
		if why != "" {
			t.Fatalf("no workload: %s", why)
		}
		return w.Kind + "/" + w.Name
	}
	if got := owner(); got != "ReplicaSet/web-7d4b9c" {
		t.Errorf("before the ReplicaSet: %s", got)
	}
	rs := replicaSet("web-7d4b9c", "90", controller("apps/v1", "Deployment", "web"))
	ix.UpsertReplicaSet(rs)
	if got := owner(); got != "Deployment/web" {
		t.Errorf("after the ReplicaSet: %s", got)
	}
	// An older version of the ReplicaSet (no owner yet) changes nothing.
	ix.UpsertReplicaSet(replicaSet("web-7d4b9c", "80"))
	if got := owner(); got != "Deployment/web" {
		t.Errorf("after a stale ReplicaSet: %s", got)
	}
	ix.DeleteReplicaSet(rs)
	if got := owner(); got != "ReplicaSet/web-7d4b9c" {
		t.Errorf("after the ReplicaSet's delete: %s", got)
	}
	// An update that arrives after the delete does not bring it back.
	ix.UpsertReplicaSet(replicaSet("web-7d4b9c", "95", controller("apps/v1", "Deployment", "web")))
	if got := owner(); got != "ReplicaSet/web-7d4b9c" {
		t.Errorf("after an update following the delete: %s", got)
	}
}

func TestLabelsAndSidecar(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	tests := []struct {
		name        string
		labels      map[string]string
		containers  []corev1.Container
		init        []corev1.Container
		app, ver    string
		wantSidecar bool
	}{
		{name: "no labels, no proxy", containers: []corev1.Container{{Name: "app"}}},
		{name: "recommended labels first",
			labels: map[string]string{"app.kubernetes.io/name": "cart", "app": "old", "app.kubernetes.io/version": "1.2", "version": "v1"},
			app:    "cart", ver: "1.2"},
		{name: "Istio's app and version", labels: map[string]string{"app": "cart", "version": "v2"}, app: "cart", ver: "v2"},
		{name: "empty recommended label falls back", labels: map[string]string{"app.kubernetes.io/name": "", "app": "cart"}, app: "cart"},
		{name: "injected proxy container", containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}, wantSidecar: true},
		{name: "native sidecar", init: []corev1.Container{{Name: "istio-validation"}, {Name: "istio-proxy", RestartPolicy: &always}}, wantSidecar: true},
		{name: "init container named istio-proxy that exits", init: []corev1.Container{{Name: "istio-proxy"}}},
		{name: "another restartable init container", init: []corev1.Container{{Name: "envoy", RestartPolicy: &always}}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := NewIndex()
			ip := fmt.Sprintf("10.3.0.%d", i+1)
			p := testPod("p", "1", ip)
			p.Labels = tc.labels
			if tc.containers != nil {
				p.Spec.Containers = tc.containers
			}
			p.Spec.InitContainers = tc.init
			ix.UpsertPod(p)
			w, _ := ix.LookupString(ip)
			if w.App != tc.app || w.Version != tc.ver || w.Sidecar != tc.wantSidecar {
				t.Errorf("app %q version %q sidecar %v; want %q %q %v", w.App, w.Version, w.Sidecar, tc.app, tc.ver, tc.wantSidecar)
			}
		})
	}
}

// TestIPReuse plays the events of an IP passing from pod old to pod new in
// the orders they can arrive in.
func TestIPReuse(t *testing.T) {
	const ip = "10.4.0.7"
	old := testPod("old", "100", ip)
	young := testPod("new", "200", ip)
	young.CreationTimestamp = metav1.NewTime(epoch.Add(time.Minute))
	oldDone := with(old, "150", phase(corev1.PodSucceeded))
	oldLateFail := with(old, "300", phase(corev1.PodFailed)) // written after new got the IP
	oldMoved := with(old, "120", func(p *corev1.Pod) {       // sandbox recreated with another IP
		p.Status.PodIPs = []corev1.PodIP{{IP: "10.4.0.8"}}
		p.Status.PodIP = "10.4.0.8"
	})
	// Without API server resourceVersions, the later creation decides.
	oldNoRV := with(old, "", nil)
	youngNoRV := with(young, "", nil)

	type event struct {
		del bool
		pod *corev1.Pod
	}
	up := func(p *corev1.Pod) event { return event{pod: p} }
	del := func(p *corev1.Pod) event { return event{del: true, pod: p} }
	tests := []struct {
		name    string
		events  []event
		wantPod string
		want    Reason
	}{
		{"old only", []event{up(old)}, "old", ""},
		{"new after old", []event{up(old), up(young)}, "new", ""},
		{"old after new (stale, e.g. a relist)", []event{up(young), up(old)}, "new", ""},
		{"old ended, then new", []event{up(old), up(oldDone), up(young)}, "new", ""},
		{"new, then old's end", []event{up(old), up(young), up(oldDone)}, "new", ""},
		{"old's terminal status written after new got the IP", []event{up(young), up(oldLateFail)}, "new", ""},
		{"old deleted, then new", []event{up(old), del(old), up(young)}, "new", ""},
		{"new, then old deleted", []event{up(old), up(young), del(old)}, "new", ""},
		{"new deleted, old's end known", []event{up(old), up(oldDone), up(young), del(young)}, "", "pod terminated (shop/old, Succeeded)"},
		{"old succeeded", []event{up(old), up(oldDone)}, "", "pod terminated (shop/old, Succeeded)"},
		{"old deleted", []event{up(old), del(old)}, "", ReasonUnknown},
		{"old's update after its delete", []event{del(old), up(old)}, "", ReasonUnknown},
		{"stale update of old after its end", []event{up(oldDone), up(old)}, "", "pod terminated (shop/old, Succeeded)"},
		{"old moved to another IP", []event{up(old), up(oldMoved)}, "", ReasonUnknown},
		{"old's move arrives before its older state", []event{up(oldMoved), up(old)}, "", ReasonUnknown},
		{"no resourceVersions: newer creation wins", []event{up(youngNoRV), up(oldNoRV)}, "new", ""},
		{"no resourceVersions, other order", []event{up(oldNoRV), up(youngNoRV)}, "new", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := NewIndex()
			for _, e := range tc.events {
				if e.del {
					ix.DeletePod(e.pod)
				} else {
					ix.UpsertPod(e.pod)
				}
			}
			if tc.wantPod != "" {
				expectPod(t, ix, ip, tc.wantPod)
			} else {
				expectReason(t, ix, ip, tc.want)
			}
		})
	}
}

func TestDualStack(t *testing.T) {
	ix := NewIndex()
	p := testPod("web", "1", "10.5.0.1", "fd00:10:5::1")
	ix.UpsertPod(p)
	for _, ip := range []string{"10.5.0.1", "fd00:10:5::1", "::ffff:10.5.0.1", "fd00:10:5:0:0:0:0:1"} {
		expectPod(t, ix, ip, "web")
	}
	// Only the single field, as from a cluster before dual-stack.
	single := testPod("single", "2")
	single.Status.PodIP = "10.5.0.2"
	ix.UpsertPod(single)
	expectPod(t, ix, "10.5.0.2", "single")

	ix.DeletePod(p)
	expectReason(t, ix, "10.5.0.1", ReasonUnknown)
	expectReason(t, ix, "fd00:10:5::1", ReasonUnknown)
	if n := ix.Len(); n != 1 {
		t.Errorf("Len = %d after deleting one of two pods", n)
	}
}

func TestHostNetwork(t *testing.T) {
	ix := NewIndex()
	agent := testPod("node-agent", "1", "192.168.0.9", "fd00:192::9")
	agent.Spec.NodeName = "node-9"
	agent.Spec.HostNetwork = true
	agent.Status.HostIPs = []corev1.HostIP{{IP: "192.168.0.9"}, {IP: "fd00:192::9"}}
	ix.UpsertPod(agent)
	expectReason(t, ix, "192.168.0.9", "host network (node node-9)")
	expectReason(t, ix, "fd00:192::9", "host network (node node-9)")

	// A node's address is known from any pod on it, too.
	web := testPod("web", "2", "10.6.0.1")
	ix.UpsertPod(web)
	expectReason(t, ix, "192.168.0.1", "host network (node node-1)")
	expectPod(t, ix, "10.6.0.1", "web")

	ix.DeletePod(agent)
	expectReason(t, ix, "192.168.0.9", ReasonUnknown)
	ix.DeletePod(web)
	expectReason(t, ix, "192.168.0.1", ReasonUnknown)

	// A pod not yet scheduled names no node.
	pending := testPod("pending", "3")
	pending.Spec.NodeName = ""
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending, HostIP: "192.168.0.1"}
	ix.UpsertPod(pending)
	expectReason(t, ix, "192.168.0.1", ReasonUnknown)
}

func TestLookupInvalid(t *testing.T) {
	ix := NewIndex()
	expectReason(t, ix, "10.0.0.1:8080", `invalid address "10.0.0.1:8080"`)
	expectReason(t, ix, "", `invalid address ""`)
}

// TestConcurrent updates and looks up from many goroutines; run with -race.
// Every answer must be a pod that really held the address, or a reason.
func TestConcurrent(t *testing.T) {
	ix := NewIndex()
	const ips = 64
	ipOf := func(i int) string { return fmt.Sprintf("10.7.%d.%d", i/250, i%250+1) }
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			gen := make([]int, ips) // a deleted pod comes back as a new pod
			for n := range 2000 {
				i := r.IntN(ips)
				p := testPod(fmt.Sprintf("p%d-%d", i, g), fmt.Sprint(n+1), ipOf(i))
				p.UID = types.UID(fmt.Sprintf("%s-%d", p.Name, gen[i]))
				if r.IntN(4) == 0 {
					ix.DeletePod(p)
					gen[i]++
				} else {
					ix.UpsertPod(p)
				}
				ix.UpsertReplicaSet(replicaSet("rs", fmt.Sprint(n+1)))
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for n := range 20000 {
				i := n % ips
				w, why := ix.LookupString(ipOf(i))
				if why == "" && !matchesIP(w.Pod, i) {
					t.Errorf("address of pod %d resolved to %q", i, w.Pod)
					return
				}
				if why != "" && why != ReasonUnknown {
					t.Errorf("address of pod %d: reason %q", i, why)
					return
				}
			}
		})
	}
	wg.Wait()
}

func matchesIP(pod string, i int) bool {
	var n, g int
	_, err := fmt.Sscanf(pod, "p%d-%d", &n, &g)
	return err == nil && n == i
}

// A deleted pod's UID stays deleted; an object without a UID is keyed by its
// name, and a new one of that name is a new object.
func TestDeleteThenRecreate(t *testing.T) {
	ix := NewIndex()
	p := testPod("db-0", "10", "10.8.0.1")
	ix.DeletePod(p)
	ix.UpsertPod(p)
	expectReason(t, ix, "10.8.0.1", ReasonUnknown)
	again := with(p, "20", func(p *corev1.Pod) { p.UID = "uid-db-0-second" })
	ix.UpsertPod(again)
	expectPod(t, ix, "10.8.0.1", "db-0")

	noUID := with(p, "30", func(p *corev1.Pod) { p.UID = ""; p.Status.PodIPs = []corev1.PodIP{{IP: "10.8.0.2"}} })
	ix.UpsertPod(noUID)
	ix.DeletePod(noUID)
	expectReason(t, ix, "10.8.0.2", ReasonUnknown)
	ix.UpsertPod(noUID)
	expectPod(t, ix, "10.8.0.2", "db-0")
}

// The informer handlers unwrap a delete whose final state was missed, and
// ignore objects of another type.
func TestHandlersUnwrapTombstones(t *testing.T) {
	ix := NewIndex()
	p := testPod("web", "1", "10.9.0.1")
	upsert, remove := typed(ix.UpsertPod), typed(ix.DeletePod)
	upsert(p)
	upsert(replicaSet("rs", "1")) // not a pod: ignored
	expectPod(t, ix, "10.9.0.1", "web")
	remove(cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: p})
	expectReason(t, ix, "10.9.0.1", ReasonUnknown)
}

// TestResolveShares: Resolve hands every Check the pod's one Workload,
// without allocating; a change of the pod's owner publishes a new one and
// leaves the one already handed out as it was (Checks hold it unlocked).
func TestResolveShares(t *testing.T) {
	ix := NewIndex()
	p := testPod("web-7d4b9c-x2x9q", "100", "10.2.0.1")
	p.OwnerReferences = []metav1.OwnerReference{controller("apps/v1", "ReplicaSet", "web-7d4b9c")}
	ix.UpsertPod(p)
	first, why := ix.Resolve("10.2.0.1")
	if first == nil {
		t.Fatalf("no workload: %s", why)
	}
	if again, _ := ix.Resolve("10.2.0.1"); again != first {
		t.Errorf("a second Resolve made another Workload (%p, then %p)", first, again)
	}
	if n := testing.AllocsPerRun(100, func() { ix.Resolve("10.2.0.1") }); n != 0 {
		t.Errorf("Resolve allocates %v times", n)
	}

	steps := []struct {
		name     string
		change   func()
		want     string // kind/name
		replaced bool
	}{
		{"the ReplicaSet arrives", func() {
			ix.UpsertReplicaSet(replicaSet("web-7d4b9c", "90", controller("apps/v1", "Deployment", "web")))
		}, "Deployment/web", true},
		{"a ReplicaSet update that renames nothing", func() {
			ix.UpsertReplicaSet(replicaSet("web-7d4b9c", "91", controller("apps/v1", "Deployment", "web")))
		}, "Deployment/web", false},
		{"the ReplicaSet is deleted", func() { ix.DeleteReplicaSet(replicaSet("web-7d4b9c", "92")) }, "ReplicaSet/web-7d4b9c", true},
		{"the pod changes", func() {
			ix.UpsertPod(with(p, "101", func(q *corev1.Pod) { q.Labels = map[string]string{"app": "web"} }))
		}, "ReplicaSet/web-7d4b9c", true},
	}
	prev := first
	for _, s := range steps {
		held := *prev
		s.change()
		w, why := ix.Resolve("10.2.0.1")
		if w == nil {
			t.Fatalf("%s: no workload: %s", s.name, why)
		}
		if got := w.Kind + "/" + w.Name; got != s.want {
			t.Errorf("%s: %s, want %s", s.name, got, s.want)
		}
		if (w != prev) != s.replaced {
			t.Errorf("%s: Workload replaced %v, want %v", s.name, w != prev, s.replaced)
		}
		if *prev != held {
			t.Errorf("%s: the Workload already handed out changed: %+v, was %+v", s.name, *prev, held)
		}
		prev = w
	}
}

// TestResolveRace: Checks read the Workloads Resolve returns while the
// owner of their pods changes; with -race, a write to a published Workload
// fails here.
func TestResolveRace(t *testing.T) {
	ix := NewIndex()
	const pods = 16
	for i := range pods {
		p := testPod(fmt.Sprintf("web-%d", i), "100", fmt.Sprintf("10.3.0.%d", i+1))
		p.OwnerReferences = []metav1.OwnerReference{controller("apps/v1", "ReplicaSet", "web-rs")}
		ix.UpsertPod(p)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := range 1000 {
			ix.UpsertReplicaSet(replicaSet("web-rs", fmt.Sprint(n+1), controller("apps/v1", "Deployment", fmt.Sprintf("web-%d", n%3))))
		}
	})
	for range 2 {
		wg.Go(func() {
			for n := range 5000 {
				w, why := ix.Resolve(fmt.Sprintf("10.3.0.%d", n%pods+1))
				if w == nil {
					t.Errorf("no workload: %s", why)
					return
				}
				if w.Kind != "ReplicaSet" && w.Kind != "Deployment" || w.Name == "" {
					t.Errorf("workload %+v", *w)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestCheckIdentityWhich: a SPIFFE identity that is not the pod's is said
// to be stale address data when another pod that claimed the address runs
// as that identity, likely so when the holder was created moments ago, and
// a workload presenting another's identity when the holder has held the
// address for long and nobody else claimed it.
func TestCheckIdentityWhich(t *testing.T) {
	now := time.Now()
	old := func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-time.Hour)) }
	fresh := func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-10 * time.Second)) }
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
		kind string // what reports read back from the record's reason
	}{
		{"the address's previous pod runs as the identity", []*corev1.Pod{
			with(testPod("before", "1", "10.0.0.1"), "2", func(p *corev1.Pod) { old(p); p.Status.Phase = corev1.PodSucceeded }),
			with(testPod("now", "3", "10.0.0.1"), "3", old),
		}, "stale address data: pod shop/before, which runs as that identity, held 10.0.0.1 too", evidence.CaseStaleAddress},
		{"the holder was created moments ago", []*corev1.Pod{
			with(testPod("now", "3", "10.0.0.1"), "3", fresh),
		}, "stale address data, likely: pod shop/now, created 10s ago", evidence.CaseStaleAddress},
		{"the holder has held it for long", []*corev1.Pod{
			with(testPod("now", "3", "10.0.0.1"), "3", old),
		}, "a workload presenting another's identity: pod shop/now holds 10.0.0.1", evidence.CaseBorrowedIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := NewIndex()
			for _, p := range tc.pods {
				ix.UpsertPod(p)
			}
			w, why := ix.Resolve("10.0.0.1")
			if w == nil || w.Pod != "now" {
				t.Fatalf("Resolve = %+v, %q; want pod now", w, why)
			}
			ok, reason := ix.CheckIdentity("10.0.0.1", w, "shop", "sa-before")
			if ok || !strings.Contains(reason, tc.want) || !strings.Contains(reason, `service account differs: workload "sa-now", SPIFFE ID "sa-before"`) {
				t.Errorf("CheckIdentity = %v, %q; want it to say %q", ok, reason, tc.want)
			}
			if kind := mismatchCase(reason); kind != tc.kind {
				t.Errorf("reports read %q as %q, want %q", reason, kind, tc.kind)
			}
		})
	}
	ix := NewIndex()
	ix.UpsertPod(testPod("now", "3", "10.0.0.1"))
	w, _ := ix.Resolve("10.0.0.1")
	if ok, reason := ix.CheckIdentity("10.0.0.1", w, "shop", "sa-now"); !ok || reason != "" {
		t.Errorf("CheckIdentity of the pod's own identity = %v, %q", ok, reason)
	}
	// An address the index no longer holds: it cannot say which.
	if ok, reason := ix.CheckIdentity("10.0.0.99", w, "shop", "sa-other"); ok || mismatchCase(reason) != evidence.CaseIdentityMismatch {
		t.Errorf("CheckIdentity at an address nobody holds = %v, %q, read as %q; want %q", ok, reason, mismatchCase(reason), evidence.CaseIdentityMismatch)
	}
}

// mismatchCase is how reports read the case back from the reason a record
// gets for reason (authz's wording around CheckIdentity's).
func mismatchCase(reason string) string {
	kind, _ := evidence.MismatchCaseOf([]string{"source" + evidence.ReasonIdentityNotWorkload + ": " + reason})
	return kind
}
