package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// versionCommand is `meshproof version`.
func versionCommand(stdout io.Writer) *cobra.Command {
	return leaf("version", "print versions", "Print meshproof's version, and those of OPA, go-control-plane, gRPC and Go it was built with.",
		func(*cobra.Command) error { return runVersion(stdout) })
}

func runVersion(w io.Writer) error {
	fmt.Fprintf(w, "meshproof %s\n", version)
	info, ok := debug.ReadBuildInfo()
	if ok {
		for _, d := range info.Deps {
			switch d.Path {
			case "github.com/open-policy-agent/opa", "github.com/envoyproxy/go-control-plane/envoy", "google.golang.org/grpc":
				fmt.Fprintf(w, "  %s %s\n", d.Path, d.Version)
			}
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				fmt.Fprintf(w, "  commit %s\n", s.Value)
			}
		}
	}
	fmt.Fprintf(w, "  %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
