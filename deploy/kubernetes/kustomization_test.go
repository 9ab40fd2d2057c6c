package kubernetes

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// TestKustomizationFiles decodes each kustomization.yaml strictly (a
// misspelt key would otherwise be ignored) and checks that every manifest in
// its directory is one of its resources or patches: a file nobody renders is
// a file nobody tests. Building (TestBase, TestPostgres) checks the reverse,
// that everything listed exists.
func TestKustomizationFiles(t *testing.T) {
	for _, dir := range []string{"base", "postgres"} {
		t.Run(dir, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var k types.Kustomization
			if err := yaml.UnmarshalStrict(raw, &k); err != nil {
				t.Fatalf("kustomization.yaml: %v", err)
			}
			listed := slices.Clone(k.Resources)
			for _, p := range k.Patches {
				if p.Path != "" {
					listed = append(listed, p.Path)
				}
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
			for _, f := range files {
				if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(listed, name) {
					t.Errorf("%s is not in the kustomization", f)
				}
			}
		})
	}
}
