package kubernetes

import (
	"cmp"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	rbacv1 "k8s.io/api/rbac/v1"
)

// watched is what serve --kubernetes reads (cluster/workload's Watch:
// pods, replicasets, jobs; cluster/istio's watch: peerauthentications,
// destinationrules), by API group; each needs get, list and watch, and the
// ClusterRole may grant nothing else. cluster/workload's TestRBAC applies
// the files to a real API server and shows the same from the other side.
var watched = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}},
	{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs"}},
	{APIGroups: []string{"security.istio.io"}, Resources: []string{"peerauthentications"}},
	{APIGroups: []string{"networking.istio.io"}, Resources: []string{"destinationrules"}},
}

var readVerbs = []string{"get", "list", "watch"}

// TestRBAC: both variants bind meshproof's ServiceAccount (the
// Deployment's, in its namespace) to a ClusterRole that grants exactly get,
// list and watch of what serve --kubernetes watches, by name (no wildcard,
// no resourceNames, no subresource, no URL); and the rendered objects are
// the files in base/ as written, which cluster/workload's TestRBAC reads.
func TestRBAC(t *testing.T) {
	var want []grant
	for _, r := range watched {
		for _, v := range readVerbs {
			want = append(want, grant{r.APIGroups[0], r.Resources[0], v})
		}
	}
	for _, dir := range []string{"kubernetes/base", "kubernetes/postgres"} {
		t.Run(dir, func(t *testing.T) {
			in := build(t, dir)
			d := in.Deployments["meshproof"]
			role, binding := in.ClusterRoles["meshproof"], in.ClusterRoleBindings["meshproof"]
			if role == nil || binding == nil || len(in.ClusterRoles) != 1 || len(in.ClusterRoleBindings) != 1 {
				t.Fatalf("ClusterRoles %v, ClusterRoleBindings %v: want one of each, named meshproof", keys(in.ClusterRoles), keys(in.ClusterRoleBindings))
			}
			var got []grant
			for _, r := range role.Rules {
				if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
					t.Errorf("rule %+v: names resources or URLs", r)
				}
				for _, g := range r.APIGroups {
					for _, res := range r.Resources {
						for _, v := range r.Verbs {
							got = append(got, grant{g, res, v})
						}
					}
				}
			}
			slices.SortFunc(got, cmpGrant)
			slices.SortFunc(want, cmpGrant)
			if !slices.Equal(got, want) {
				t.Errorf("the ClusterRole grants\n%v\nwant\n%v", got, want)
			}
			if role.AggregationRule != nil {
				t.Error("the ClusterRole aggregates others: it would grant what they grant")
			}

			wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}
			wantSubject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: d.Namespace}
			if binding.RoleRef != wantRef || len(binding.Subjects) != 1 || binding.Subjects[0] != wantSubject {
				t.Errorf("the binding: %+v to %+v, want %+v to [%+v]", binding.RoleRef, binding.Subjects, wantRef, wantSubject)
			}
			if sa := in.ServiceAccounts[wantSubject.Name]; sa == nil || sa.Namespace != wantSubject.Namespace {
				t.Errorf("the bound ServiceAccount %s/%s is not part of the installation", wantSubject.Namespace, wantSubject.Name)
			}

			for file, rendered := range map[string]any{"clusterrole.yaml": role, "clusterrolebinding.yaml": binding} {
				raw, err := os.ReadFile(filepath.Join(deploytest.Root(t), "kubernetes", "base", file))
				if err != nil {
					t.Fatal(err)
				}
				objs := deploytest.Objects(t, raw)
				if len(objs) != 1 || !reflect.DeepEqual(objs[0], rendered) {
					t.Errorf("rendered %T differs from base/%s as written", rendered, file)
				}
			}
		})
	}
}

// grant is one verb on one resource.
type grant struct{ group, resource, verb string }

func cmpGrant(a, b grant) int {
	return cmp.Or(strings.Compare(a.group, b.group), strings.Compare(a.resource, b.resource), strings.Compare(a.verb, b.verb))
}
