// Command meshproof is an Envoy ext_authz server that evaluates OPA policies
// and records, per request, the evidence that the hop was mutually
// authenticated.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command line is cobra's and pflag's, as kubectl's, istioctl's and
// opa's are: help on standard output for every command, shell completion,
// GNU-style flags with the usual shorthands (-o, -n, -A). Go's flag package
// took a long flag with one dash (-policy x): run still does, by giving it
// its second dash (normalizeArgs).

const rootDoc = `meshproof: per-request proof that your mesh uses mutual TLS, and policy on it.`

// usageError is a mistake in the command line or options: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command line: exit status 0 done, 1 broken or failed, 2
// a wrong command line, 3 not ready. Help goes to stdout, errors to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s\n\n%s", rootDoc, root.UsageString())
		return 2
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	ran := false // a command's RunE ran: its error is its own, not cobra's
	for _, c := range allCommands(root) {
		if c.RunE != nil {
			runE := c.RunE
			c.RunE = func(cmd *cobra.Command, a []string) error {
				ran = true
				return runE(cmd, a)
			}
		}
	}
	root.SetArgs(normalizeArgs(root, args))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	name := "meshproof" // and the command's name, when one was found
	if cmd != nil && cmd != root {
		for c := cmd; c.HasParent(); c = c.Parent() {
			name = "meshproof " + c.Name()
		}
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errBroken):
		return 1 // the report said it
	case errors.Is(err, errNotReady), errors.Is(err, errDenied):
		return 3 // the report, or eval's output, said it
	case !ran || errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		switch {
		case !ran && cmd == root:
			fmt.Fprintln(stderr, `Run "meshproof --help" for the commands.`)
		case !ran && cmd != nil:
			fmt.Fprintf(stderr, "Run %q for its flags.\n", cmd.CommandPath()+" --help")
		}
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

// newRootCommand is meshproof with every command, writing to stdout and
// stderr.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "meshproof",
		Short:         "per-request proof that your mesh uses mutual TLS, and policy on it",
		Long:          rootDoc,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cobra.AddTemplateFunc("plainBools", plainBools)
	root.SetUsageTemplate(strings.ReplaceAll(root.UsageTemplate(), ".FlagUsages | trimTrailingWhitespaces", ".FlagUsages | plainBools | trimTrailingWhitespaces"))
	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddCommand(
		serveCommand(),
		evalCommand(stdout),
		migrateCommand(stdout),
		verifyCommand(stdout),
		verifyProofCommand(stdout),
		archiveCommand(stdout),
		keygenCommand(stdout),
		checkpointCommand(stdout),
		queryCommand(stdout, stderr),
		exportCommand(stdout),
		reportCommand(stdout),
		demoCommand(stdout, stderr),
		versionCommand(stdout),
	)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// plainBools drops the "[=true|false]" pflag writes after every boolean
// flag in help ("--all[=true|false]"): kubectl, istioctl and opa write
// "--all", and a bare --all is how the flag is used. Spaces of the same
// width keep the columns aligned.
func plainBools(usages string) string {
	const mark = "[=true|false]"
	return strings.ReplaceAll(usages, mark, strings.Repeat(" ", len(mark)))
}

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, allCommands(sub)...)
	}
	return out
}

// noArgs refuses arguments: every option is a flag.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q (options are flags: --help lists them)", strings.TrimPrefix(cmd.CommandPath(), "meshproof "), args)}
	}
	return nil
}

// normalizeArgs gives a second dash to a long flag written with one
// (-policy x, -output=json), as Go's flag package took them: a word of
// more than one letter after one dash that is a long flag of the command.
// Anything else is left to pflag (-o json, -A, -ofjson).
func normalizeArgs(root *cobra.Command, args []string) []string {
	cmd, i := root, 0
	for i < len(args) {
		sub := subcommand(cmd, args[i])
		if sub == nil {
			break
		}
		cmd, i = sub, i+1
	}
	cmd.InitDefaultHelpFlag()
	fs := cmd.Flags()
	out := append([]string{}, args[:i]...)
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		var f *pflag.Flag
		hasValue := false
		switch {
		case strings.HasPrefix(a, "--"):
			var name string
			name, _, hasValue = strings.Cut(a[2:], "=")
			f = fs.Lookup(name)
		case strings.HasPrefix(a, "-") && len(a) > 2:
			var name string
			name, _, hasValue = strings.Cut(a[1:], "=")
			if f = fs.Lookup(name); f != nil && len(name) > 1 {
				a = "-" + a
			} else {
				f = nil
			}
		case strings.HasPrefix(a, "-") && len(a) == 2:
			f = fs.ShorthandLookup(a[1:])
		}
		out = append(out, a)
		// A flag's value is never a flag: skip it.
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		}
	}
	return out
}

func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

// newFlagSet returns a flag set whose errors are returned, not printed (the
// flags of a command that tests parse without the command).
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// leaf is a command of use that takes no arguments; run gets its parsed
// flags.
func leaf(use, short, long string, run func(cmd *cobra.Command) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " [flags]",
		Short: short,
		Long:  long,
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return run(cmd) },
	}
}

// execute runs cmd alone (not under the root command) with args, as run
// would: flag mistakes are usage errors, nothing printed but help.
func execute(ctx context.Context, cmd *cobra.Command, args []string) error {
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}
