package helm

import (
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	corev1 "k8s.io/api/core/v1"
)

// TestFlagsExist: every command line the chart renders, with its defaults
// and each ci/ file, is accepted by the meshproof binary built from this
// repository (its flags exist and their values parse: `serve ... -h`).
func TestFlagsExist(t *testing.T) {
	bin := deploytest.Meshproof(t)
	cases := map[string][]string{"defaults": nil}
	for name, file := range ciFiles(t) {
		cases[name] = []string{file}
	}
	for name, files := range cases {
		in := decode(t, mustRender(t, valuesOf(t, files, nil)))
		var pods []corev1.PodSpec
		for _, d := range in.Deployments {
			pods = append(pods, d.Spec.Template.Spec)
		}
		for _, j := range in.Jobs {
			pods = append(pods, j.Spec.Template.Spec)
		}
		for _, p := range pods {
			for _, c := range p.Containers {
				env := map[string]string{}
				for _, e := range c.Env {
					env[e.Name] = "value-of-" + e.Name
				}
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					args[i] = envRef.ReplaceAllStringFunc(a, func(m string) string { return env[envRef.FindStringSubmatch(m)[1]] })
				}
				t.Run(name+"/"+c.Name, func(t *testing.T) { deploytest.AcceptsFlags(t, bin, args) })
			}
		}
	}
}
