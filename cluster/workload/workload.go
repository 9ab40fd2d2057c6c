// Package workload maps pod addresses to the Kubernetes workloads that held
// them, so a Check can record which workload a source or destination was at
// the time of the request: pod IPs are reused within minutes, and resolving
// an address later names whoever holds it then.
//
// The Index is fed typed objects (Pods, ReplicaSets, Jobs), from an informer
// (Watch) or any other source, and answers Lookup without allocating.
package workload

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshproof/meshproof/evidence"
)

// Workload is what an address belonged to: the pod and its top owner, as
// the evidence record keeps it (its Kind is one of the kinds below, or
// another controller's kind as its owner reference spells it).
type Workload = evidence.Workload

// The kinds of top owner the index names itself; any other controller's
// kind is passed through as its owner reference spells it.
const (
	KindPod         = "Pod"
	KindDeployment  = "Deployment"
	KindReplicaSet  = "ReplicaSet"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindJob         = "Job"
	KindCronJob     = "CronJob"
)

// ProxyContainer is the name of Istio's sidecar container.
const ProxyContainer = "istio-proxy"

// The labels App and Version come from, recommended label first.
const (
	labelName       = "app.kubernetes.io/name"
	labelApp        = "app"
	labelVersion    = "app.kubernetes.io/version"
	labelVersionOld = "version"
)

// ownerRef is a controller reference reduced to what resolution needs.
// Kind is empty when there is no controller.
type ownerRef struct {
	kind, name string
	uid        types.UID
}

// controllerOf returns refs' controller. A ReplicaSet or Job is recognised
// only in its own API group, so a custom resource that happens to be called
// Job is not followed into the Job table.
func controllerOf(refs []metav1.OwnerReference) ownerRef {
	for i := range refs {
		r := &refs[i]
		if r.Controller == nil || !*r.Controller {
			continue
		}
		kind := r.Kind
		group := "" // the core group's APIVersion is just "v1"
		if g, _, ok := strings.Cut(r.APIVersion, "/"); ok {
			group = g
		}
		switch {
		case kind == KindReplicaSet && group != appsv1.GroupName,
			kind == KindJob && group != batchv1.GroupName:
			kind = group + "/" + kind // still named, never resolved further
		}
		return ownerRef{kind: kind, name: r.Name, uid: r.UID}
	}
	return ownerRef{}
}

// appVersion reads the app and version labels, the recommended one first.
func appVersion(labels map[string]string) (app, version string) {
	app = labels[labelName]
	if app == "" {
		app = labels[labelApp]
	}
	version = labels[labelVersion]
	if version == "" {
		version = labels[labelVersionOld]
	}
	return app, version
}

// hasSidecar reports whether spec runs Istio's proxy: as a container, or as a
// native sidecar (an init container with restartPolicy Always, which runs for
// the pod's life; an ordinary init container of that name would not proxy).
func hasSidecar(spec *corev1.PodSpec) bool {
	for i := range spec.Containers {
		if spec.Containers[i].Name == ProxyContainer {
			return true
		}
	}
	for i := range spec.InitContainers {
		if isNativeSidecar(&spec.InitContainers[i]) {
			return true
		}
	}
	return false
}

func isNativeSidecar(c *corev1.Container) bool {
	return c.Name == ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// terminal reports whether a pod in phase has stopped for good: its
// containers are gone and its IPs may already belong to another pod.
func terminal(phase corev1.PodPhase) bool {
	return phase == corev1.PodSucceeded || phase == corev1.PodFailed
}
