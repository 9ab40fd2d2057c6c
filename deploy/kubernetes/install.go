// Package kubernetes holds meshproof's Kubernetes manifests (base/: the
// SQLite default; postgres/: the shared-store overlay) and reads a rendered
// installation for the tests of this and other deploy/ packages.
package kubernetes

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Install is one rendered kustomization, indexed by kind and name.
type Install struct {
	Namespaces          map[string]*corev1.Namespace
	ServiceAccounts     map[string]*corev1.ServiceAccount
	ConfigMaps          map[string]*corev1.ConfigMap
	Secrets             map[string]*corev1.Secret
	PVCs                map[string]*corev1.PersistentVolumeClaim
	Services            map[string]*corev1.Service
	Deployments         map[string]*appsv1.Deployment
	Jobs                map[string]*batchv1.Job
	NetworkPolicies     map[string]*networkingv1.NetworkPolicy
	PDBs                map[string]*policyv1.PodDisruptionBudget
	ClusterRoles        map[string]*rbacv1.ClusterRole
	ClusterRoleBindings map[string]*rbacv1.ClusterRoleBinding
}

// NewInstall indexes objs; a kind it does not know, or two objects of one
// kind and name, is an error.
func NewInstall(objs []runtime.Object) (*Install, error) {
	in := &Install{
		Namespaces: map[string]*corev1.Namespace{}, ServiceAccounts: map[string]*corev1.ServiceAccount{},
		ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{},
		PVCs: map[string]*corev1.PersistentVolumeClaim{}, Services: map[string]*corev1.Service{},
		Deployments: map[string]*appsv1.Deployment{}, Jobs: map[string]*batchv1.Job{},
		NetworkPolicies: map[string]*networkingv1.NetworkPolicy{}, PDBs: map[string]*policyv1.PodDisruptionBudget{},
		ClusterRoles: map[string]*rbacv1.ClusterRole{}, ClusterRoleBindings: map[string]*rbacv1.ClusterRoleBinding{},
	}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Namespace:
			err = put(in.Namespaces, o.Name, o)
		case *corev1.ServiceAccount:
			err = put(in.ServiceAccounts, o.Name, o)
		case *corev1.ConfigMap:
			err = put(in.ConfigMaps, o.Name, o)
		case *corev1.Secret:
			err = put(in.Secrets, o.Name, o)
		case *corev1.PersistentVolumeClaim:
			err = put(in.PVCs, o.Name, o)
		case *corev1.Service:
			err = put(in.Services, o.Name, o)
		case *appsv1.Deployment:
			err = put(in.Deployments, o.Name, o)
		case *batchv1.Job:
			err = put(in.Jobs, o.Name, o)
		case *networkingv1.NetworkPolicy:
			err = put(in.NetworkPolicies, o.Name, o)
		case *policyv1.PodDisruptionBudget:
			err = put(in.PDBs, o.Name, o)
		case *rbacv1.ClusterRole:
			err = put(in.ClusterRoles, o.Name, o)
		case *rbacv1.ClusterRoleBinding:
			err = put(in.ClusterRoleBindings, o.Name, o)
		default:
			err = fmt.Errorf("unexpected object %T", o)
		}
		if err != nil {
			return nil, err
		}
	}
	return in, nil
}

func put[T any](m map[string]T, name string, v T) error {
	if _, dup := m[name]; dup {
		return fmt.Errorf("two %T named %q", v, name)
	}
	m[name] = v
	return nil
}

// SecretNamed finds a generated Secret by the name it was given before
// kustomize appended its content hash.
func (in *Install) SecretNamed(base string) *corev1.Secret {
	for name, s := range in.Secrets {
		if name == base || strings.HasPrefix(name, base+"-") && len(name) == len(base)+11 {
			return s
		}
	}
	return nil
}

// Flags reads a command line of --name=value arguments (the manifests' form)
// after the subcommand: repeated flags keep every value in order.
func Flags(args []string) (command string, flags map[string][]string, err error) {
	if len(args) == 0 {
		return "", nil, fmt.Errorf("no arguments")
	}
	flags = map[string][]string{}
	for _, a := range args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			return "", nil, fmt.Errorf("argument %q: write flags as --name=value", a)
		}
		flags[name] = append(flags[name], value)
	}
	return args[0], flags, nil
}
