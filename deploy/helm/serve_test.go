package helm

import (
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
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
		deploytest.CheckCommandLines(t, bin, name, deploytest.PodSpecs(in.Deployments, in.Jobs))
	}
}
