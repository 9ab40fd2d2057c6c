// Package library holds meshproof's builtin Rego policies (selected with
// --policy builtin:<name>) and the shared module lib.rego that is loaded with
// each of them. The policies all live in package envoy.authz, so only one of
// them can be loaded at a time.
package library

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// files holds every .rego file in this directory, tests included, so that
// the Rego tests run from the same bytes that ship.
//
//go:embed *.rego
var files embed.FS

const (
	libFile    = "lib.rego"
	regoExt    = ".rego"
	testSuffix = "_test.rego"
)

// ErrUnknownPolicy is returned by Module for a name that is not a builtin.
var ErrUnknownPolicy = errors.New("unknown builtin policy")

// Policies returns the names of the builtin policies, sorted.
func Policies() []string {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(fmt.Sprintf("library: reading embedded policies: %v", err)) // embed.FS cannot fail here
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if n == libFile || !strings.HasSuffix(n, regoExt) || strings.HasSuffix(n, testSuffix) {
			continue
		}
		names = append(names, strings.TrimSuffix(n, regoExt))
	}
	slices.Sort(names)
	return names
}

// Module returns the file name and Rego source of the builtin policy name.
// The policy needs Lib alongside it to compile.
func Module(name string) (filename, source string, err error) {
	for _, p := range Policies() {
		if p == name {
			filename = name + regoExt
			return filename, mustRead(filename), nil
		}
	}
	return "", "", fmt.Errorf("%w %q: use one of %s", ErrUnknownPolicy, name, strings.Join(Policies(), ", "))
}

// Lib returns the file name and Rego source of package meshproof.lib, which
// every builtin policy imports.
func Lib() (filename, source string) {
	return libFile, mustRead(libFile)
}

func mustRead(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("library: reading embedded %s: %v", name, err)) // the name came from the embedded directory
	}
	return string(b)
}
