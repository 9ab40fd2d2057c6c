package rego

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"

	"github.com/meshproof/meshproof/rego/library"
)

// BuiltinPrefix marks a policy source that names a policy of the shipped
// library instead of a path: builtin:require-spiffe.
const BuiltinPrefix = "builtin:"

// localSet is one load of the local policy sources: what goes into the store
// and the revision that identifies it.
type localSet struct {
	modules  map[string]*ast.Module // by policy id (file path or builtin:NAME.rego)
	raw      map[string][]byte
	data     map[string]any // top-level keys of the merged data documents
	revision string
}

// loadLocal reads every source: .rego files, data.json / data.yaml (and any
// .json/.yaml, placed by directory as opa run does), .tar.gz bundles,
// directories of those, and builtin:NAME. Test files (*_test.rego) are
// skipped: they are not policy.
func loadLocal(sources []string, popts ast.ParserOptions) (*localSet, error) {
	set := &localSet{modules: map[string]*ast.Module{}, raw: map[string][]byte{}, data: map[string]any{}}
	var paths []string
	libLoaded := false
	for _, src := range sources {
		name, ok := strings.CutPrefix(src, BuiltinPrefix)
		if !ok {
			paths = append(paths, src)
			continue
		}
		file, text, err := library.Module(name)
		if err != nil {
			return nil, err
		}
		if err := set.addModule(BuiltinPrefix+file, []byte(text), popts); err != nil {
			return nil, err
		}
		if !libLoaded {
			libFile, libText := library.Lib()
			if err := set.addModule(BuiltinPrefix+libFile, []byte(libText), popts); err != nil {
				return nil, err
			}
			libLoaded = true
		}
	}
	if len(paths) > 0 {
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("policy source %s: %w", p, err)
			}
		}
		res, err := loader.NewFileLoader().
			WithRegoVersion(popts.RegoVersion).
			WithProcessAnnotation(true).
			Filtered(paths, skipNonPolicy)
		if err != nil {
			return nil, err
		}
		for id, f := range res.Modules {
			set.modules[id] = f.Parsed
			set.raw[id] = f.Raw
		}
		set.data = res.Documents
	}
	rev, err := set.digest()
	if err != nil {
		return nil, err
	}
	set.revision = rev
	return set, nil
}

func (s *localSet) addModule(id string, src []byte, popts ast.ParserOptions) error {
	m, err := ast.ParseModuleWithOpts(id, string(src), popts)
	if err != nil {
		return err
	}
	s.modules[id] = m
	s.raw[id] = src
	return nil
}

// digest names this set by content, so evidence can cite the exact policy
// that decided: "sha256:" and the first 12 hex digits over every module's id
// and text and the data document.
func (s *localSet) digest() (string, error) {
	h := sha256.New()
	ids := make([]string, 0, len(s.raw))
	for id := range s.raw {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(h, "%d:%s%d:", len(id), id, len(s.raw[id]))
		h.Write(s.raw[id])
	}
	data, err := json.Marshal(s.data) // map keys are sorted: stable
	if err != nil {
		return "", fmt.Errorf("data document: %w", err)
	}
	h.Write(data)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// skipNonPolicy is a loader filter: true excludes the file.
func skipNonPolicy(abspath string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && strings.HasPrefix(name, ".") {
		return true // .git, editor swap files
	}
	return !info.IsDir() && strings.HasSuffix(name, "_test.rego")
}

// errNotDefined is returned when nothing loaded defines the decision.
var errNotDefined = errors.New("not defined by any loaded policy or data")
