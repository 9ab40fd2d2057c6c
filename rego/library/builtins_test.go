package library_test

// The library's policies call meshproof's built-ins (meshproof.facts()):
// linking the rego package into this test binary registers them for the
// tests of package library too, which cannot import it (rego imports
// library).
import _ "github.com/meshproof/meshproof/rego"
