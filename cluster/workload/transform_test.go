package workload

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// podTemplate is an Istio-injected Deployment pod as the API server returns
// it (testdata/pod.json), with placeholders for what varies between pods.
type podTemplate string

func loadPodTemplate(tb testing.TB) podTemplate {
	tb.Helper()
	b, err := os.ReadFile("testdata/pod.json")
	if err != nil {
		tb.Fatal(err)
	}
	return podTemplate(b)
}

// pod i of a cluster of 100 nodes, decoded as an informer would, so that
// each string is its own allocation.
func (t podTemplate) pod(tb testing.TB, i int) *corev1.Pod {
	tb.Helper()
	r := strings.NewReplacer(
		`"NAME"`, fmt.Sprintf(`"cart-7d4b9c5f8-%05x"`, i),
		`"UID"`, fmt.Sprintf(`"%08x-1c2d-4e3f-8a9b-%012x"`, i, i*7919),
		`"RV"`, fmt.Sprintf(`"%d"`, 1000000+i),
		`"NODE"`, fmt.Sprintf(`"node-%02d"`, i%100),
		`"HOSTIP"`, fmt.Sprintf(`"192.168.0.%d"`, i%100+1),
		`"PODIP"`, fmt.Sprintf(`"10.244.%d.%d"`, i/250, i%250+1),
	)
	var p corev1.Pod
	if err := json.Unmarshal([]byte(r.Replace(string(t))), &p); err != nil {
		tb.Fatal(err)
	}
	return &p
}

func TestTransformPod(t *testing.T) {
	full := loadPodTemplate(t).pod(t, 7)
	native := full.DeepCopy()
	always := corev1.ContainerRestartPolicyAlways
	native.Spec.InitContainers = append(native.Spec.InitContainers, native.Spec.Containers[1])
	native.Spec.InitContainers[1].RestartPolicy = &always
	native.Spec.Containers = native.Spec.Containers[:1]

	for _, in := range []*corev1.Pod{full, native} {
		before := in.DeepCopy()
		out, err := Transform(in)
		if err != nil {
			t.Fatal(err)
		}
		slim := out.(*corev1.Pod)
		if !equality.Semantic.DeepEqual(in, before) {
			t.Error("Transform changed its input")
		}
		again, _ := Transform(slim)
		if !equality.Semantic.DeepEqual(again, slim) {
			t.Errorf("Transform is not idempotent:\n%+v\n%+v", again, slim)
		}
		if len(slim.ManagedFields) != 0 || len(slim.Annotations) != 0 || slim.GenerateName != "" {
			t.Errorf("metadata kept: %+v", slim.ObjectMeta)
		}
		if wantLabels := in.Labels; !equality.Semantic.DeepEqual(slim.Labels, wantLabels) {
			t.Errorf("labels %v, want %v", slim.Labels, wantLabels)
		}
		if len(slim.Spec.Volumes) != 0 || len(slim.Status.Conditions) != 0 || len(slim.Status.ContainerStatuses) != 0 {
			t.Error("spec volumes or status conditions kept")
		}
		if n := len(slim.Spec.Containers) + len(slim.Spec.InitContainers); n != 1 {
			t.Errorf("%d containers kept, want the proxy only", n)
		}

		// The index reads the same from the slim pod as from the full one.
		a, b := NewIndex(), NewIndex()
		a.UpsertPod(in)
		b.UpsertPod(slim)
		ip := in.Status.PodIP
		wa, ra := a.LookupString(ip)
		wb, rb := b.LookupString(ip)
		if wa != wb || ra != rb || !wb.Sidecar || wb.ServiceAccount != "cart" || wb.App != "cart" || wb.Version != "1.14.2" {
			t.Errorf("full pod: %+v %q; slim pod: %+v %q", wa, ra, wb, rb)
		}
		_, ra = a.LookupString(in.Status.HostIP)
		_, rb = b.LookupString(in.Status.HostIP)
		if ra != rb || rb != "host network (node node-07)" {
			t.Errorf("node address: full pod %q, slim pod %q", ra, rb)
		}
	}
}

func TestTransformOwners(t *testing.T) {
	two := int32(2)
	rs := replicaSet("cart-7d4b9c5f8", "5", metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "x"}, controller("apps/v1", "Deployment", "cart"))
	rs.Annotations = map[string]string{"deployment.kubernetes.io/revision": "3"}
	rs.Spec.Replicas = &two
	rs.Status.Replicas = 2
	j := job("report-1", "6", controller("batch/v1", "CronJob", "report"))
	j.Spec.Parallelism = &two
	j.Labels = map[string]string{"batch.kubernetes.io/job-name": "report-1"}

	want := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: rs.Name, Namespace: "shop", UID: rs.UID, ResourceVersion: "5", OwnerReferences: rs.OwnerReferences[1:],
	}}
	if got, _ := Transform(rs); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("ReplicaSet: %+v, want %+v", got, want)
	}
	wantJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: j.Name, Namespace: "shop", UID: j.UID, ResourceVersion: "6", OwnerReferences: j.OwnerReferences,
	}}
	if got, _ := Transform(j); !equality.Semantic.DeepEqual(got, wantJob) {
		t.Errorf("Job: %+v, want %+v", got, wantJob)
	}

	// A delete whose final state was missed is transformed inside.
	gone, _ := Transform(cache.DeletedFinalStateUnknown{Key: "shop/report-1", Obj: j})
	if d, ok := gone.(cache.DeletedFinalStateUnknown); !ok || d.Key != "shop/report-1" || !equality.Semantic.DeepEqual(d.Obj, wantJob) {
		t.Errorf("tombstone: %+v", gone)
	}
	// Anything else passes as it is.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{"a": "b"}}}
	if got, _ := Transform(node); got != any(node) || len(node.Annotations) != 1 {
		t.Errorf("a Node was changed: %+v", got)
	}
}
