// Package deploytest helps the tests of deploy/: building kustomizations as
// `kubectl apply -k` would, decoding Kubernetes objects strictly into their
// k8s.io/api types, building the meshproof binary the manifests run, and
// (checks.go) the checks the kustomize base and the Helm chart both hold to.
package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Root is the deploy/ directory, the root of this Go module.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/meshproof/meshproof/deploy\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("deploytest: not inside the deploy module")
		}
		dir = parent
	}
}

// Kustomize builds the kustomization in dir (a path under deploy/) from an
// in-memory copy of deploy/ to which files (paths under deploy/ -> content)
// are added: the git-ignored inputs of the secret generators, which a user
// makes by hand.
func Kustomize(t testing.TB, dir string, files map[string]string) []byte {
	t.Helper()
	root := Root(t)
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(path, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := mem.WriteFile(filepath.Join(root, name), []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(mem, filepath.Join(root, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Docs splits a YAML stream into its non-empty documents.
func Docs(t testing.TB, stream []byte) [][]byte {
	t.Helper()
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// scheme knows the API groups the manifests may use, and only those.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// Objects decodes every document of stream into the k8s.io/api type its
// apiVersion and kind name, with the API server's strict decoder: an unknown
// or duplicated field, or a kind outside the known groups, fails the test.
func Objects(t testing.TB, stream []byte) []runtime.Object {
	t.Helper()
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	var objs []runtime.Object
	for _, doc := range Docs(t, stream) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decoding %s: %v\n%s", gvk, err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

// Meshproof builds the meshproof command from the repository and returns
// the binary's path. It builds as test/e2e does (plain go build), so that
// after the product's tests the build cache already holds every package;
// the Dockerfile's own build line is checked in deploy/dockerfile_test.go.
func Meshproof(t testing.TB, buildArgs ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshproof")
	args := append(append([]string{"build", "-o", bin}, buildArgs...), "./cmd/meshproof")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(Root(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building meshproof: %v\n%s", err, out)
	}
	return bin
}

// AcceptsFlags runs the meshproof binary with args and -h after them: the
// flag package stops at -h with success only when every flag before it
// exists and its value parses, so this checks a command line without
// running it.
func AcceptsFlags(t testing.TB, bin string, args []string) {
	t.Helper()
	cmd := exec.Command(bin, append(slices.Clone(args), "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("meshproof %s: %v\n%s", strings.Join(args, " "), err, firstLine(out))
	}
}

// firstLine is the flag package's complaint, before the usage text.
func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}
