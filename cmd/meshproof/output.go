package main

import (
	"encoding/json"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Every command that prints takes -o/--output with the same values:
// table (for people, the default), wide (the table with more columns where
// there are more), json, yaml (the JSON, as YAML: sigs.k8s.io/yaml) and
// ndjson where records stream (query, export). A command refuses a value it
// does not support, listing those it does.

// outputFlag registers -o/--output on fs, default def, taking formats.
func outputFlag(fs *pflag.FlagSet, p *string, def string, formats ...string) {
	*p = def
	fs.StringVarP(p, "output", "o", def, "output `format`: "+strings.Join(formats, ", "))
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
