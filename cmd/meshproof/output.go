package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Every command that prints takes -o/--output with the same values:
// table (for people, the default), wide (the table with more columns where
// there are more), json, yaml (the JSON, as YAML: sigs.k8s.io/yaml) and
// ndjson where records stream (query, export). A command refuses a value it
// does not support, listing those it does.

// outputFlag registers -o/--output on fs, default def, taking formats: a
// value outside them is refused where it is set (the command line or the
// config file), naming those the command supports.
func outputFlag(fs *pflag.FlagSet, p *string, def string, formats ...string) {
	*p = def
	fs.VarP(&outputValue{p, formats}, "output", "o", "output `format`: "+strings.Join(formats, ", "))
}

// outputValue is -o/--output: one of formats.
type outputValue struct {
	p       *string
	formats []string
}

func (v *outputValue) String() string { return *v.p }
func (v *outputValue) Type() string   { return "string" }

func (v *outputValue) Set(s string) error {
	if !slices.Contains(v.formats, s) {
		return fmt.Errorf("want %s", strings.Join(v.formats, ", "))
	}
	*v.p = s
	return nil
}

// writeStructured writes v as indented JSON, or as YAML of that JSON.
func writeStructured(w io.Writer, format string, v any) error {
	if format != "yaml" {
		return writeJSON(w, v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(b)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}
