package api

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchStore.s != nil { // a benchmark made its store
		benchStore.s.Close()
		if dir, err := benchDir(); err == nil {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}
