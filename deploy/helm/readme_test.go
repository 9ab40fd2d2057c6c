package helm

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	"github.com/meshproof/meshproof/deploy/istio"
	kustomize "github.com/meshproof/meshproof/deploy/kubernetes"
)

// TestReadme renders what the main README's "Run on Kubernetes" tells a
// reader to run, with no cluster: each helm install and upgrade command's
// values files and --set expressions (merged by Helm's own code), and
// checks that every Secret the release then reads was made by one of the
// section's kubectl create secret commands, under the key it reads; and
// that the meshConfig block shown is what NOTES.txt prints for it.
func TestReadme(t *testing.T) {
	root := filepath.Dir(deploytest.Root(t))
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Run on Kubernetes\n")
	if !ok {
		t.Fatal(`README.md has no "Run on Kubernetes" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")

	secrets := map[string]map[string]bool{} // name -> keys
	var helm [][]string
	for _, block := range fenced(section, "sh") {
		for _, line := range commands(block) {
			w := words(t, line)
			switch {
			case len(w) > 5 && w[0] == "kubectl" && strings.Join(w[3:6], " ") == "create secret generic":
				keys := map[string]bool{}
				for _, a := range w[7:] {
					for _, p := range []string{"--from-file=", "--from-literal="} {
						if kv, ok := strings.CutPrefix(a, p); ok {
							k, _, _ := strings.Cut(kv, "=")
							keys[k] = true
						}
					}
				}
				secrets[w[6]] = keys
			case len(w) > 1 && w[0] == "helm" && (w[1] == "install" || w[1] == "upgrade"):
				helm = append(helm, w)
			}
		}
	}
	if len(helm) < 4 || len(secrets) < 3 {
		t.Fatalf("found %d helm commands and Secrets %v: the section's commands were not read", len(helm), deploytest.Keys(secrets))
	}

	var notes string
	for i, w := range helm {
		t.Run(fmt.Sprintf("%d-helm-%s", i+1, w[1]), func(t *testing.T) {
			files, set := helmArgs(t, root, w)
			r := mustRender(t, valuesOf(t, files, set))
			in := decode(t, r)
			if notes == "" {
				notes = r.notes
			}
			for _, ref := range secretRefs(t, in) {
				if !secrets[ref[0]][ref[1]] {
					t.Errorf("the release reads key %q of Secret %q, which no command of the section makes (made: %v)", ref[1], ref[0], secrets)
				}
			}
			d := in.Deployments[releaseName]
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "REGISTRY/meshproof:TAG" {
				t.Errorf("image %s, want the --set image", img)
			}
			for _, s := range set {
				switch {
				case strings.HasPrefix(s, "serviceMonitor.enabled=true"):
					if len(in.ServiceMonitors) != 1 {
						t.Error("no ServiceMonitor")
					}
				case strings.HasPrefix(s, "prometheusRule.enabled=true"):
					if len(in.PrometheusRules) != 1 {
						t.Error("no PrometheusRule")
					}
				case strings.HasPrefix(s, "dashboard.enabled=true"):
					if in.ConfigMaps[releaseName+"-dashboard"] == nil {
						t.Error("no dashboard ConfigMap")
					}
				case strings.HasPrefix(s, "istio.authorizationPolicy.namespaces="):
					if len(in.AuthorizationPolicies) != 1 || in.AuthorizationPolicies[0].Metadata.Namespace != "mtls-pg" {
						t.Error("no AuthorizationPolicy in mtls-pg")
					}
				}
			}
		})
	}

	blocks := fenced(section, "yaml")
	if len(blocks) != 1 {
		t.Fatalf("%d yaml blocks, want the meshConfig one", len(blocks))
	}
	mc, err := istio.DecodeMeshConfigValues([]byte(blocks[0]))
	if err != nil {
		t.Fatalf("the README's meshConfig: %v", err)
	}
	if got := notesProvider(t, notes); len(mc.GetExtensionProviders()) != 1 || !proto.Equal(mc.GetExtensionProviders()[0], got) {
		t.Errorf("the README shows\n%v\nNOTES.txt prints\n%v", mc.GetExtensionProviders(), got)
	}
}

// helmArgs reads `helm install|upgrade RELEASE CHART` and its flags: the
// release and namespace must be the ones the tests render, the chart this
// one; it returns the values files (paths from the repository's root) and
// the --set expressions in order.
func helmArgs(t *testing.T, root string, w []string) (files, set []string) {
	t.Helper()
	if len(w) < 4 || w[2] != releaseName || w[3] != "deploy/helm/meshproof" {
		t.Fatalf("%v: want helm %s %s deploy/helm/meshproof", w, w[1], releaseName)
	}
	for i := 4; i < len(w); i++ {
		flag, value := w[i], ""
		if i+1 < len(w) {
			value = w[i+1]
		}
		switch flag {
		case "-n", "--namespace":
			if value != namespace {
				t.Errorf("namespace %q, the tests render %q", value, namespace)
			}
		case "-f", "--values":
			files = append(files, filepath.Join(root, value))
		case "--set":
			set = append(set, value)
		default:
			t.Fatalf("%v: flag %q is not one this test reads", w, flag)
		}
		i++
	}
	return files, set
}

// secretRefs are the (Secret, key) pairs the release reads: the files its
// flags name on Secret volumes, env from Secrets, and the ServiceMonitor's
// credentials.
func secretRefs(t *testing.T, in *chartObjects) [][2]string {
	var refs [][2]string
	for _, p := range deploytest.PodSpecs(in.Deployments, in.Jobs) {
		for _, c := range p.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					refs = append(refs, [2]string{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key})
				}
			}
			_, flags, err := kustomize.Flags(c.Args)
			if err != nil {
				t.Fatal(err)
			}
			for _, flag := range []string{"api-token-file", "ingest-token-file", "signing-key"} {
				for _, file := range flags[flag] {
					if m := deploytest.MountOf(c, file); m != nil {
						if v := deploytest.Volume(p, m.Name); v != nil && v.Secret != nil {
							refs = append(refs, [2]string{v.Secret.SecretName, path.Base(file)})
							continue
						}
					}
					t.Errorf("--%s=%s is on no Secret volume", flag, file)
				}
			}
		}
	}
	for _, sm := range in.ServiceMonitors {
		for _, ep := range sm.Spec.Endpoints {
			if a := ep.Authorization; a != nil && a.Credentials != nil {
				refs = append(refs, [2]string{a.Credentials.Name, a.Credentials.Key})
			}
		}
	}
	return refs
}

// fenced returns the bodies of the ```lang blocks of markdown.
func fenced(markdown, lang string) []string {
	var blocks []string
	rest := markdown
	for {
		_, after, ok := strings.Cut(rest, "```"+lang+"\n")
		if !ok {
			return blocks
		}
		body, tail, _ := strings.Cut(after, "```")
		blocks = append(blocks, body)
		rest = tail
	}
}

// commands joins a shell block's backslash-continued lines and drops
// comments.
func commands(block string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(block, "\n") {
		if c, ok := strings.CutSuffix(strings.TrimRight(line, " "), "\\"); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(line)
		cmd, _, _ := strings.Cut(cur.String(), " #")
		if cmd = strings.TrimSpace(cmd); cmd != "" {
			out = append(out, cmd)
		}
		cur.Reset()
	}
	return out
}

// words splits a command line as a shell would for the section's
// commands: whitespace, and single quotes around a word or part of one.
func words(t *testing.T, line string) []string {
	t.Helper()
	var w []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				w = append(w, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		w = append(w, cur.String())
	}
	return w
}
