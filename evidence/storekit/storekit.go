// Package storekit holds what the evidence stores (evidence/sqlite,
// evidence/postgres) share and nothing else uses: their page cursors, the
// paged scan they both drive, and the entry they keep of a quarantined
// record. What Verify, the rollup check or a reader of a store also needs
// (the index columns, rollup keys, the stored bytes) stays in evidence:
// storekit imports evidence, never the other way.
package storekit
