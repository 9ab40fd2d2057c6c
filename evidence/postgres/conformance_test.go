package postgres_test

import (
	"testing"

	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// TestConformance runs the suite every evidence store passes, each subtest
// on a fresh database.
func TestConformance(t *testing.T) {
	postgrestest.AdminDSN(t) // skip once, not in every subtest
	evidencetest.Run(t, postgrestest.Backend)
}
