package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/rego"
)

// maxEvalInput bounds what eval reads: a CheckRequest larger than the
// serve default (4 MiB) could not reach serve either.
const maxEvalInput = 4 << 20

// evalOutput is what eval prints.
type evalOutput struct {
	Response json.RawMessage `json:"response"`
	// GRPCError is what serve answers instead of a response: the policy
	// gave no decision, with --on-policy-error=error (a google.rpc.Status).
	GRPCError json.RawMessage  `json:"grpc_error,omitempty"`
	Verdict   evidence.Verdict `json:"verdict"`
	Reasons   []string         `json:"reasons"`
	Record    *evidence.Record `json:"record"`
	Input     json.RawMessage  `json:"input,omitempty"`
}

// errDenied makes eval --fail-on-deny exit 3 once it has printed its
// answer.
var errDenied = errors.New("the policy denies the request")

const evalDoc = `Evaluate one CheckRequest, given as protojson (as grpcurl and ghz send it), through
exactly the serve path; print the CheckResponse, the mTLS verdict and the evidence record.

Exit status: 0, or with --fail-on-deny 3 when the policy denies the request or
gives no decision (as opa eval --fail); 1 when it could not be evaluated, 2 for
a wrong command line.`

// evalCommand is `meshproof eval`.
func evalCommand(stdout io.Writer) *cobra.Command {
	p := rego.Defaults()
	p.Watch = false
	a := authz.DefaultConfig()
	a.Replica = "eval"
	logs := defaultLogOptions()
	logs.Level = "warn"
	var inputPath string
	var showInput, failOnDeny bool
	var output string
	cmd := leaf("eval", "evaluate one CheckRequest (protojson) exactly as serve would", evalDoc, func(cmd *cobra.Command) error {
		return runEval(cmd.Context(), p, a, logs, inputPath, showInput, failOnDeny, output, stdout)
	})
	fs := cmd.Flags()
	// eval's answer is a document (as opa eval's): json by default, so
	// that scripts read it as they did before -o, or yaml.
	outputFlag(fs, &output, "json", evalOutputs...)
	fs.StringVar(&inputPath, "input", "", "CheckRequest as protojson; - reads standard input (required)")
	fs.BoolVar(&showInput, "show-input", false, "also print the input document the policy saw")
	fs.BoolVar(&failOnDeny, "fail-on-deny", false, "exit 3 when the policy denies the request or gives no decision (as opa eval --fail); the output is the same")
	policyFlags(fs, &p)
	authzFlags(fs, &a)
	logFlags(fs, &logs)
	return cmd
}

// evalOutputs are the formats of eval's -o.
var evalOutputs = []string{"json", "yaml"}

func runEval(ctx context.Context, p rego.Config, a authz.Config, logs logOptions, inputPath string, showInput, failOnDeny bool, output string, stdout io.Writer) error {
	if inputPath == "" {
		return usageError{fmt.Errorf("--input is required (a protojson CheckRequest file, or - for standard input)")}
	}
	if err := p.Validate(); err != nil {
		return usageError{err}
	}
	log, err := logs.logger(os.Stderr)
	if err != nil {
		return usageError{err}
	}
	req, err := readCheckRequest(inputPath)
	if err != nil {
		return err
	}
	out, err := evaluate(ctx, p, a, req, log, showInput)
	if err != nil {
		return err
	}
	if err := writeStructured(stdout, output, out); err != nil {
		return err
	}
	if failOnDeny && (out.GRPCError != nil || !out.Record.Decision.Allowed) {
		return errDenied
	}
	return nil
}

func readCheckRequest(path string) (*authv3.CheckRequest, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, maxEvalInput+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxEvalInput {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxEvalInput)
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, req); err != nil {
		// protojson names the offending field and position.
		return nil, fmt.Errorf("%s is not a CheckRequest in protojson: %w", path, err)
	}
	return req, nil
}

func evaluate(ctx context.Context, p rego.Config, a authz.Config, req *authv3.CheckRequest, log zerolog.Logger, showInput bool) (*evalOutput, error) {
	engine, err := rego.New(p, log, nil)
	if err != nil {
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		return nil, err
	}
	defer engine.Stop(ctx)
	svc, err := authz.NewServer(a, engine, nil, log, nil)
	if err != nil {
		return nil, err
	}
	res := svc.Explain(ctx, req)
	out := &evalOutput{Response: json.RawMessage("null"), Verdict: res.Verdict, Reasons: res.Record.Reasons, Record: res.Record}
	if res.Err != nil {
		if out.GRPCError, err = protojson.Marshal(status.Convert(res.Err).Proto()); err != nil {
			return nil, err
		}
	} else if out.Response, err = protojson.Marshal(res.Response); err != nil {
		return nil, err
	}
	if showInput && res.Input != nil {
		v, err := ast.JSON(res.Input.Value)
		if err != nil {
			return nil, err
		}
		if out.Input, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	return out, nil
}
