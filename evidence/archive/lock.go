package archive

import (
	"fmt"
	"os"
	"path/filepath"
)

// LockFile is the file in an archive's directory that a sealing run holds
// locked: one run at a time writes there.
const LockFile = ".lock"

// claim takes the archive directory for one sealing run and removes what
// earlier runs left half written (a run stopped by a crash or a kill
// leaves its day's temporary directory): with the lock held no other run
// is writing one. A second run at once is refused, naming the directory,
// rather than racing the first to the same days.
func claim(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	held, err := lockFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("archive: locking %s: %w", f.Name(), err)
	}
	if !held {
		f.Close()
		return nil, fmt.Errorf("archive: another run is sealing into %s (it holds %s)", dir, f.Name())
	}
	stale, err := filepath.Glob(filepath.Join(dir, "replica=*", ".date=*.tmp-*"))
	if err != nil {
		f.Close()
		return nil, err
	}
	for _, d := range stale {
		if err := os.RemoveAll(d); err != nil {
			f.Close()
			return nil, fmt.Errorf("archive: removing what an interrupted run left: %w", err)
		}
	}
	return func() { f.Close() }, nil
}
