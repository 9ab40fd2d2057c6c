// Command meshproof is an Envoy ext_authz server that evaluates OPA policies
// and records, per request, the evidence that the hop was mutually
// authenticated.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `meshproof: per-request proof that your mesh uses mutual TLS, and policy on it.

Usage:
  meshproof serve   [flags]   run the Envoy ext_authz gRPC server
  meshproof eval    [flags]   evaluate one CheckRequest (protojson) exactly as serve would
  meshproof migrate [flags]   create or update the evidence store's schema
  meshproof verify  [flags]   check every chain and transparency log in the evidence store (exit 1 when broken)
  meshproof verify-proof      check one record's inclusion proof (JSON on standard input) with no store
  meshproof keygen  [flags]   make the key pair that signs checkpoints (serve --signing-key)
  meshproof checkpoint save   fetch each replica's latest signed checkpoint from a server into a directory
  meshproof query   [flags]   print evidence records from a running serve's API (--follow: as they arrive)
  meshproof report  REPORT    tls-check, or strict-readiness (exit 3 when not ready), from a running serve's API
  meshproof demo    [flags]   run serve with a simulated Istio mesh sending it traffic, to see evidence at once
  meshproof version           print versions

Run "meshproof <command> --help" for a command's flags.
`

// usageError is a mistake in the command line or options: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(args[1:])
	case "eval":
		err = runEval(args[1:], stdout)
	case "migrate":
		err = runMigrate(args[1:], stdout)
	case "verify":
		err = runVerify(args[1:], stdout)
	case "verify-proof":
		err = runVerifyProof(args[1:], os.Stdin, stdout)
	case "keygen":
		err = runKeygen(args[1:], stdout)
	case "checkpoint":
		err = runCheckpoint(args[1:], stdout)
	case "query":
		err = runQuery(args[1:], stdout, stderr)
	case "report":
		err = runReport(args[1:], stdout)
	case "demo":
		err = runDemo(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = runVersion(stdout)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "meshproof: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errBroken):
		return 1 // the report said it
	case errors.Is(err, errNotReady):
		return 3 // the report said it
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "meshproof %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "meshproof %s: %v\n", args[0], err)
		return 1
	}
}

// newFlagSet returns a flag set whose errors are returned, not fatal, and
// whose --help starts with what the command does.
func newFlagSet(name, doc string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: meshproof %s [flags]\n\nFlags:\n", doc, name)
		fs.PrintDefaults()
	}
	return fs
}
