package helm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusals: values the chart must refuse while rendering, with a
// message that names the value and says what to do, rather than render
// pods that cannot work.
func TestRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  []string
		want string
	}{
		{"two SQLite replicas", []string{"replicaCount=2"},
			"replicaCount 2 with store.type sqlite: SQLite is one writer's file on a ReadWriteOnce volume, so it runs exactly 1 replica; use store.type postgres for several"},
		{"no SQLite replica", []string{"store.type=sqlite", "replicaCount=0"}, "runs exactly 1 replica"},
		{"PostgreSQL without its Secret", []string{"store.type=postgres"}, "store.postgres.existingSecret: name the Secret holding the PostgreSQL DSN"},
		{"an unknown store (the schema)", []string{"store.type=mysql"}, "at '/store/type': value must be one of 'sqlite', 'postgres'"},
		{"no API tokens", []string{"apiTokens.existingSecret="}, "apiTokens.existingSecret: serve's HTTP listener leaves loopback"},
		{"a ServiceMonitor without a token", []string{"serviceMonitor.enabled=true"}, "serviceMonitor: /metrics wants a bearer token"},
		{"a policy ConfigMap twice", []string{"policy.configMaps[0].name=policy", "policy.configMaps[0].existingConfigMap=x", "policy.configMaps[1].name=policy", "policy.configMaps[1].existingConfigMap=y"}, `name "policy" twice`},
		{"a policy ConfigMap with nothing", []string{"policy.configMaps[0].name=policy"}, "give data or existingConfigMap, one of them"},
		{"a policy ConfigMap with both", []string{"policy.configMaps[0].name=policy", "policy.configMaps[0].existingConfigMap=x", "policy.configMaps[0].data.a=b"}, "give data or existingConfigMap, one of them"},
		{"a policy ConfigMap over the tokens", []string{"policy.configMaps[0].name=api", "policy.configMaps[0].existingConfigMap=x"}, `name "api" is taken: /etc/meshproof/api holds a Secret's files`},
		{"a misspelt value (the schema)", []string{"replicas=2"}, "additional properties 'replicas' not allowed"},
		{"an unknown builtin (the schema)", []string{"policy.builtins={allow-all}"}, "policy/builtins/0"},
		{"a flag not written --name=value (the schema)", []string{"extraArgs={-v}"}, "extraArgs/0"},
		{"a policy ConfigMap name off a DNS label", []string{"policy.configMaps[0].name=My_Rules", "policy.configMaps[0].existingConfigMap=x"}, `name "My_Rules" is not a DNS label`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, valuesOf(t, nil, tt.set))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("--set %v: error %v, want one saying %q", tt.set, err, tt.want)
			}
		})
	}
	// And what they refuse is fine one step away: the cases above fail for
	// their stated reason, not for a broken chart.
	for _, set := range [][]string{
		{"replicaCount=1"},
		{"store.type=postgres", "store.postgres.existingSecret=db", "replicaCount=2"},
		{"serviceMonitor.enabled=true", "metrics.open=true"},
		{"policy.configMaps[0].name=policy", "policy.configMaps[0].existingConfigMap=x", "policy.configMaps[1].name=team", "policy.configMaps[1].existingConfigMap=y"},
	} {
		if _, err := render(t, valuesOf(t, nil, set)); err != nil {
			t.Errorf("--set %v: %v", set, err)
		}
	}
}

// TestSQLiteReplicasFile: a values file (not --set) asking for two replicas
// on ci/sqlite.yaml's store fails rendering (helm template, install and
// upgrade) with the message that says why and what to use instead. `helm
// lint` does not catch it: Helm's lint mode turns fail and required into
// no-ops, so the refusals are tested by rendering.
func TestSQLiteReplicasFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "two.yaml")
	if err := os.WriteFile(file, []byte("store:\n  type: sqlite\nreplicaCount: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []string{ciFiles(t)["sqlite"], file}
	const want = "SQLite is one writer's file on a ReadWriteOnce volume, so it runs exactly 1 replica; use store.type postgres for several"
	if _, err := render(t, valuesOf(t, files, nil)); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("rendering with %s: error %v, want one saying %q", file, err, want)
	}
}
