//go:build linux

package main

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// binaries are the executables one run needs, all inside the run's temp dir
// except a prebuilt meshproof.
type binaries struct {
	meshproof, ceiling, ghz string
}

// buildAll builds the binaries before anything is measured, so a compile
// error surfaces in seconds and compiling never competes with a measured run.
func buildAll(ctx context.Context, cfg config, repo, tmp string, logf func(string, ...any)) (binaries, error) {
	tools := filepath.Join(repo, "tools")
	b := binaries{
		meshproof: cfg.MeshproofBin,
		ceiling:   filepath.Join(tmp, "ceiling"),
		ghz:       filepath.Join(tmp, "ghz"),
	}
	if b.meshproof == "" {
		b.meshproof = filepath.Join(tmp, "meshproof")
		logf("building meshproof (./cmd/meshproof)")
		if err := goBuild(ctx, repo, b.meshproof, "./cmd/meshproof"); err != nil {
			return b, fmt.Errorf("%w\n(pass --meshproof-bin to benchmark a prebuilt binary)", err)
		}
	} else {
		abs, err := filepath.Abs(b.meshproof)
		if err != nil {
			return b, err
		}
		// Children run in tools/, so a relative path must not be taken from there.
		b.meshproof = abs
		if _, err := os.Stat(abs); err != nil {
			return b, fmt.Errorf("--meshproof-bin: %w", err)
		}
	}
	logf("building ceiling (tools/ceiling)")
	if err := goBuild(ctx, tools, b.ceiling, "./ceiling"); err != nil {
		return b, err
	}
	logf("building ghz (pinned in tools/go.mod)")
	if err := goBuild(ctx, tools, b.ghz, "github.com/bojand/ghz/cmd/ghz"); err != nil {
		return b, err
	}
	return b, nil
}

func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s in %s: %w\n%s", out, pkg, dir, err, msg)
	}
	return nil
}

// writeProtoset writes the Authorization service's descriptors, with every
// file they import, for ghz --protoset. ghz then needs no server reflection,
// so a target that does not enable it (OPA-Envoy's default) can be compared.
func writeProtoset(path string) error {
	var set descriptorpb.FileDescriptorSet
	seen := make(map[string]bool)
	var add func(protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		// Imports first: readers of a set may expect dependency order.
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(authv3.File_envoy_service_auth_v3_external_auth_proto)
	b, err := proto.Marshal(&set)
	if err != nil {
		return fmt.Errorf("marshal protoset: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// ghzVersion reads the ghz module version from the binary itself, because
// `ghz --version` says "dev" when built with go build rather than a release.
func ghzVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	// Built by package path, ghz's own module is recorded as the main module.
	for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
		if m.Path == "github.com/bojand/ghz" {
			return m.Version
		}
	}
	return "unknown"
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat. It is 100 on every mainstream Linux, which is the
// fallback when getconf is missing.
func clockTicks(logf func(string, ...any)) int {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return n
		}
	}
	logf("getconf CLK_TCK failed (%v); assuming 100 ticks per second", err)
	return 100
}
