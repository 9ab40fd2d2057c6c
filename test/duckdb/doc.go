// Package duckdb holds the test that reads an archive meshproof wrote
// (evidence/archive) with DuckDB, as an analyst would, and checks what it
// finds against the store. It is a module of its own so that DuckDB (cgo)
// stays out of meshproof's binary and go.mod.
package duckdb
