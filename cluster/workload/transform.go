package workload

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// Transform is a cache.TransformFunc for the informers that feed an Index:
// it keeps of a Pod, ReplicaSet or Job only what the Index reads, so the
// informer's store holds a few hundred bytes an object instead of the whole
// object (managed fields, annotations such as Istio's injection status, the
// containers' specs). Anything else passes unchanged. It is idempotent, as
// client-go asks, and returns a new object, so it never changes its input.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return slimPod(o), nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{ObjectMeta: slimMeta(&o.ObjectMeta, false)}, nil
	case *batchv1.Job:
		return &batchv1.Job{ObjectMeta: slimMeta(&o.ObjectMeta, false)}, nil
	case cache.DeletedFinalStateUnknown:
		inner, err := Transform(o.Obj)
		return cache.DeletedFinalStateUnknown{Key: o.Key, Obj: inner}, err
	}
	return obj, nil
}

// _ checks Transform's type.
var _ cache.TransformFunc = Transform

func slimPod(in *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: slimMeta(&in.ObjectMeta, true),
		Spec: corev1.PodSpec{
			ServiceAccountName: in.Spec.ServiceAccountName,
			NodeName:           in.Spec.NodeName,
			HostNetwork:        in.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{
			Phase:   in.Status.Phase,
			PodIP:   in.Status.PodIP,
			PodIPs:  in.Status.PodIPs,
			HostIP:  in.Status.HostIP,
			HostIPs: in.Status.HostIPs,
		},
	}
	// Of the containers only the proxy's presence matters, so only the
	// proxy is kept, by name (and, as an init container, its restart policy).
	for i := range in.Spec.Containers {
		if in.Spec.Containers[i].Name == ProxyContainer {
			out.Spec.Containers = []corev1.Container{{Name: ProxyContainer}}
			break
		}
	}
	for i := range in.Spec.InitContainers {
		if c := &in.Spec.InitContainers[i]; isNativeSidecar(c) {
			always := corev1.ContainerRestartPolicyAlways
			out.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, RestartPolicy: &always}}
			break
		}
	}
	return out
}

// slimMeta keeps the identity, the resourceVersion the Index orders by, the
// controller reference, and for a Pod its creation time and labels.
func slimMeta(in *metav1.ObjectMeta, isPod bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name:            in.Name,
		Namespace:       in.Namespace,
		UID:             in.UID,
		ResourceVersion: in.ResourceVersion,
	}
	for i := range in.OwnerReferences {
		if r := &in.OwnerReferences[i]; r.Controller != nil && *r.Controller {
			out.OwnerReferences = []metav1.OwnerReference{*r}
			break
		}
	}
	if !isPod {
		return out
	}
	out.CreationTimestamp = in.CreationTimestamp
	// Every label: App and Version come from some, and PeerAuthentication
	// selectors (cluster/istio) may name any.
	out.Labels = maps.Clone(in.Labels)
	return out
}
