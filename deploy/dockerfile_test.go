package deploy

import (
	"bytes"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	"github.com/meshproof/meshproof/deploy/kubernetes"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// No Docker engine runs here. These tests read the repository's Dockerfile
// with BuildKit's own parser and linter, check what the image must be, and
// replay the build stage's commands on the build context that .dockerignore
// leaves, with the build stage's / mapped to a temporary directory.

type dockerfile struct {
	stages []instructions.Stage
	args   map[string]string // ARG defaults, global and per stage
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(repo(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		t.Errorf("Dockerfile line %d: %s: %s", loc[0].Start.Line, rule, msg)
	}})
	stages, meta, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{stages: stages, args: map[string]string{}}
	add := func(a *instructions.ArgCommand) {
		for _, kv := range a.Args {
			d.args[kv.Key] = kv.ValueString()
		}
	}
	for i := range meta {
		add(&meta[i])
	}
	for _, s := range stages {
		for _, c := range s.Commands {
			if a, ok := c.(*instructions.ArgCommand); ok {
				add(a)
			}
		}
	}
	return d
}

func (d dockerfile) expand(s string) string {
	return os.Expand(s, func(k string) string { return d.args[k] })
}

func commands[C instructions.Command](s instructions.Stage) []C {
	var cs []C
	for _, c := range s.Commands {
		if c, ok := c.(C); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("%d stages: want a build stage and a runtime stage", len(d.stages))
	}
	build, final := d.stages[0], d.stages[len(d.stages)-1]

	goVersion := goDirective(t)
	if base := d.expand(build.BaseName); base != "golang:"+goVersion && !strings.HasPrefix(base, "golang:"+goVersion+"-") {
		t.Errorf("build stage FROM %s: want golang:%s, the Go of go.mod", base, goVersion)
	}
	if base := d.expand(final.BaseName); base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("runtime stage FROM %s: want distroless static or scratch", base)
	}
	for _, s := range d.stages {
		for _, a := range commands[*instructions.AddCommand](s) {
			for _, src := range a.SourcePaths {
				if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
					t.Errorf("ADD %s fetches from the network at build time", src)
				}
			}
		}
	}

	line := goBuildLine(t, build)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=${VERSION}"} {
		if !strings.Contains(line, want) {
			t.Errorf("the go build line lacks %s: %s", want, line)
		}
	}

	users := commands[*instructions.UserCommand](final)
	if len(users) != 1 {
		t.Fatalf("the runtime stage has %d USER instructions, want one", len(users))
	}
	uid, gid := numericUser(t, users[0].User)

	in, err := kubernetes.NewInstall(deploytest.Objects(t, deploytest.Kustomize(t, "kubernetes/base",
		map[string]string{"kubernetes/base/api-tokens": "0123456789abcdef0123456789abcdef\n"})))
	if err != nil {
		t.Fatal(err)
	}
	pod := in.Deployments["meshproof"].Spec.Template.Spec
	if sc := pod.SecurityContext; *sc.RunAsUser != uid || *sc.RunAsGroup != gid {
		t.Errorf("the Deployment runs as %d:%d, the image as %d:%d", *sc.RunAsUser, *sc.RunAsGroup, uid, gid)
	}

	var exposed []string
	for _, e := range commands[*instructions.ExposeCommand](final) {
		exposed = append(exposed, e.Ports...)
	}
	for _, p := range pod.Containers[0].Ports {
		if !slices.Contains(exposed, strconv.Itoa(int(p.ContainerPort))) {
			t.Errorf("EXPOSE %v lacks the container port %s (%d)", exposed, p.Name, p.ContainerPort)
		}
	}

	var volumes []string
	for _, v := range commands[*instructions.VolumeCommand](final) {
		volumes = append(volumes, v.Volumes...)
	}
	const data = "/var/lib/meshproof"
	if !slices.Contains(volumes, data) {
		t.Errorf("VOLUME %v lacks %s", volumes, data)
	}
	if !slices.ContainsFunc(commands[*instructions.CopyCommand](final), func(c *instructions.CopyCommand) bool {
		return c.DestPath == data && c.Chown == users[0].User
	}) {
		t.Errorf("%s is not copied in owned by %s: a fresh volume there would not be writable", data, users[0].User)
	}

	ep := commands[*instructions.EntrypointCommand](final)
	if len(ep) != 1 || ep[0].PrependShell || !slices.Equal(ep[0].CmdLine, []string{"/meshproof"}) {
		t.Errorf("ENTRYPOINT %v: want the exec form [\"/meshproof\"]", ep)
	}
	cmd := commands[*instructions.CmdCommand](final)
	if len(cmd) != 1 || cmd[0].PrependShell || len(cmd[0].CmdLine) == 0 || cmd[0].CmdLine[0] != "serve" {
		t.Fatalf("CMD %v: want the exec form, starting with serve", cmd)
	}
	for _, a := range cmd[0].CmdLine {
		if p, ok := strings.CutPrefix(a, "--store=sqlite:"); ok && !strings.HasPrefix(p, data+"/") {
			t.Errorf("CMD keeps the evidence at %s, outside the volume %s", p, data)
		}
	}
}

// TestDockerBuildStage replays the build stage: its COPY sources must be in
// the build context, its RUN lines must succeed there, and the runtime
// stage's COPY --from=build sources must then exist. The binary must be
// static, carry the version given as the VERSION build argument, and accept
// the image's CMD.
func TestDockerBuildStage(t *testing.T) {
	d := readDockerfile(t)
	build, final := d.stages[0], d.stages[len(d.stages)-1]
	root := t.TempDir()
	src := filepath.Join(root, "src") // WORKDIR /src: the build context goes there
	buildContext(t, src)

	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			for _, p := range c.SourcePaths {
				if _, err := os.Stat(filepath.Join(src, p)); err != nil {
					t.Errorf("COPY %s: not in the build context (.dockerignore?): %v", p, err)
				}
			}
		case *instructions.RunCommand:
			line := strings.ReplaceAll(strings.Join(c.CmdLine, " "), "/out/", root+"/out/")
			run := exec.Command("sh", "-c", line)
			run.Dir = src
			run.Env = append(os.Environ(), "VERSION=test")
			if out, err := run.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", strings.Join(c.CmdLine, " "), err, out)
			}
		}
	}
	for _, c := range commands[*instructions.CopyCommand](final) {
		for _, p := range c.SourcePaths {
			if _, err := os.Stat(filepath.Join(root, p)); c.From == build.Name && err != nil {
				t.Errorf("COPY --from=%s %s: the build stage did not make it", c.From, p)
			}
		}
	}

	bin := filepath.Join(root, "out", "meshproof")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it would not run on distroless static")
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !bytes.HasPrefix(out, []byte("meshproof test\n")) {
		t.Errorf("meshproof version: %q, %v; want it to start with the VERSION build argument", out, err)
	}
	deploytest.AcceptsFlags(t, bin, commands[*instructions.CmdCommand](final)[0].CmdLine)
}

// buildContext copies the repository into dir, less what .dockerignore
// excludes, with Docker's own pattern matcher.
func buildContext(t *testing.T, dir string) {
	t.Helper()
	top := repo(t)
	f, err := os.Open(filepath.Join(top, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(top, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == top {
			return err
		}
		rel, _ := filepath.Rel(top, path)
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		switch {
		case err != nil:
			return err
		case skip && e.IsDir() && !pm.Exclusions():
			return filepath.SkipDir
		case skip || e.IsDir():
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{".git", "deploy", "tools"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s is in the build context", gone)
		}
	}
}

func goBuildLine(t *testing.T, build instructions.Stage) string {
	t.Helper()
	for _, r := range commands[*instructions.RunCommand](build) {
		if line := strings.Join(r.CmdLine, " "); strings.Contains(line, "go build") {
			return line
		}
	}
	t.Fatal("no RUN ... go build in the build stage")
	return ""
}

func numericUser(t *testing.T, user string) (uid, gid int64) {
	t.Helper()
	u, g, ok := strings.Cut(user, ":")
	uid, err1 := strconv.ParseInt(u, 10, 64)
	gid, err2 := strconv.ParseInt(g, 10, 64)
	if !ok || err1 != nil || err2 != nil || uid == 0 || gid == 0 {
		t.Fatalf("USER %s: want numeric uid:gid, not root (Kubernetes' runAsNonRoot checks a numeric user)", user)
	}
	return uid, gid
}

// goDirective is the go line of the product's go.mod.
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// repo is the repository's top directory, above deploy/.
func repo(t *testing.T) string { return filepath.Dir(deploytest.Root(t)) }
