//go:build !unix

package archive

import (
	"errors"
	"os"
)

// lockFile: sealing needs an advisory lock this platform does not offer
// through the standard library.
func lockFile(f *os.File) (bool, error) {
	return false, errors.New("sealing an archive needs a Unix system (flock)")
}
