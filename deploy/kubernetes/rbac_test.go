package kubernetes

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
)

// TestRBAC: both variants bind meshproof's ServiceAccount (the
// Deployment's, in its namespace) to a ClusterRole that grants exactly get,
// list and watch of what serve --kubernetes watches (deploytest.Watched),
// by name (no wildcard, no resourceNames, no subresource, no URL); and the
// rendered objects are the files in base/ as written, which
// cluster/workload's TestRBAC reads.
func TestRBAC(t *testing.T) {
	for _, dir := range []string{"kubernetes/base", "kubernetes/postgres"} {
		t.Run(dir, func(t *testing.T) {
			in := build(t, dir)
			d := in.Deployments["meshproof"]
			role, binding := in.ClusterRoles["meshproof"], in.ClusterRoleBindings["meshproof"]
			if role == nil || binding == nil || len(in.ClusterRoles) != 1 || len(in.ClusterRoleBindings) != 1 {
				t.Fatalf("ClusterRoles %v, ClusterRoleBindings %v: want one of each, named meshproof", deploytest.Keys(in.ClusterRoles), deploytest.Keys(in.ClusterRoleBindings))
			}
			deploytest.CheckClusterRole(t, role)
			deploytest.CheckClusterRoleBinding(t, binding, role, d, in.ServiceAccounts)

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
