package evidence

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Driver opens one kind of store. Backends register theirs by DSN scheme
// (evidence/sqlite: "sqlite", evidence/postgres: "postgres" and
// "postgresql"); the binary imports the backends it ships.
type Driver struct {
	// Open connects to the store. A store whose schema must be migrated
	// explicitly (a shared database) refuses to open until it is, saying
	// what to run.
	Open func(ctx context.Context, dsn string, opts Options) (Store, error)
	// Migrate brings the schema to this version, and says from which.
	Migrate func(ctx context.Context, dsn string) (Migrated, error)
}

// Migrated is what a migration did: the schema version the store had
// (From; 0 for a new store, which it created) and the one it has now (To).
// From == To: it was up to date.
type Migrated struct{ From, To int }

// Options tune how a store is opened.
type Options struct {
	// Durable asks for records on stable storage (the fsync durability):
	// a store whose commit can flush does so with every commit
	// (PostgreSQL forces synchronous_commit on); one that is a Syncer
	// (SQLite) is made durable by Sync, which the writer calls after
	// Append, so that one flush serves several commits.
	Durable bool
	// Existing opens only a store that exists: a SQLite file that does not
	// is an error naming it, and is not created. For the commands that
	// read a store (verify, serve --role query), where a mistyped path
	// would otherwise be an empty store that holds "no evidence".
	Existing bool
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available for DSNs with the scheme.
func Register(scheme string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	drivers[scheme] = d
}

func driverFor(dsn string) (Driver, error) {
	scheme, _, ok := strings.Cut(dsn, ":")
	driversMu.RLock()
	d, found := drivers[scheme]
	known := make([]string, 0, len(drivers))
	for k := range drivers {
		known = append(known, k)
	}
	driversMu.RUnlock()
	if !ok || !found {
		slices.Sort(known)
		return Driver{}, fmt.Errorf("store %q: want sqlite:PATH or postgres://... (known schemes: %s)", redact(dsn), strings.Join(known, ", "))
	}
	return d, nil
}

// Open opens the store a DSN names.
func Open(ctx context.Context, dsn string, opts Options) (Store, error) {
	d, err := driverFor(dsn)
	if err != nil {
		return nil, err
	}
	return d.Open(ctx, dsn, opts)
}

// Migrate migrates the store a DSN names.
func Migrate(ctx context.Context, dsn string) error {
	_, err := MigrateVersions(ctx, dsn)
	return err
}

// MigrateVersions migrates the store a DSN names, and says from which
// schema version to which.
func MigrateVersions(ctx context.Context, dsn string) (Migrated, error) {
	d, err := driverFor(dsn)
	if err != nil {
		return Migrated{}, err
	}
	return d.Migrate(ctx, dsn)
}

// redact hides a password in a DSN, in its user info or in a password
// query parameter (pgx takes both), for messages and logs.
func redact(dsn string) string {
	out := dsn
	if scheme, rest, ok := strings.Cut(dsn, "://"); ok {
		authority := rest
		if i := strings.IndexAny(authority, "/?"); i >= 0 {
			authority, rest = authority[:i], authority[i:]
		} else {
			rest = ""
		}
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			if user, _, hasPass := strings.Cut(authority[:at], ":"); hasPass {
				authority = user + ":xxxxx" + authority[at:]
			}
		}
		out = scheme + "://" + authority + rest
	}
	if base, q, ok := strings.Cut(out, "?"); ok {
		if v, err := url.ParseQuery(q); err == nil && v.Has("password") {
			v.Set("password", "xxxxx")
			out = base + "?" + v.Encode()
		}
	}
	return out
}

// Redact hides the password in a DSN, for messages and logs.
func Redact(dsn string) string { return redact(dsn) }
