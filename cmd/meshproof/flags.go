package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Options come from three places, in increasing precedence: defaults, the
// YAML file named by --config (its keys are the flag names), and the command
// line. Defining each option once, as a flag, keeps --help, the file format
// and the README in step. The file is read after the command line is parsed
// and sets only the flags the command line left alone.

// listFlag is a repeatable string flag. Values from the config file are
// replaced, not extended, by the first value given on the command line.
type listFlag struct {
	values   *[]string
	fromFile bool
}

func newListFlag(p *[]string) *listFlag { return &listFlag{values: p} }

func (l *listFlag) String() string {
	if l == nil || l.values == nil {
		return ""
	}
	return strings.Join(*l.values, ",")
}

// Type is what pflag's --help names the value.
func (l *listFlag) Type() string { return "string" }

func (l *listFlag) Set(v string) error {
	if l.fromFile {
		*l.values, l.fromFile = nil, false
	}
	*l.values = append(*l.values, v)
	return nil
}

// parseOptions parses args, then applies the config file --config names
// (if any) to the flags args did not set.
func parseOptions(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return applyConfig(fs)
}

// applyConfig applies the file of the parsed --config, if any, to the
// flags the command line did not set.
func applyConfig(fs *pflag.FlagSet) error {
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		return applyConfigFile(fs, f.Value.String())
	}
	return nil
}

func applyConfigFile(fs *pflag.FlagSet, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m, func(d *json.Decoder) *json.Decoder { d.UseNumber(); return d }); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config file %s: unknown option %q (the keys are the flags of `meshproof %s --help`)", path, k, fs.Name())
		}
		if f.Changed {
			continue // the command line wins
		}
		if err := setFromFile(f, m[k]); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

func setFromFile(f *pflag.Flag, v any) error {
	if list, ok := f.Value.(*listFlag); ok {
		items, isList := v.([]any)
		if !isList {
			items = []any{v}
		}
		*list.values = nil
		for _, it := range items {
			s, err := scalar(it)
			if err != nil {
				return err
			}
			if err := list.Set(s); err != nil {
				return err
			}
		}
		list.fromFile = true
		return nil
	}
	s, err := scalar(v)
	if err != nil {
		return err
	}
	if err := f.Value.Set(s); err != nil {
		return fmt.Errorf("invalid value %q: %w", s, err)
	}
	return nil
}

func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return fmt.Sprint(x), nil
	case json.Number:
		return x.String(), nil
	case nil:
		return "", errors.New("empty value")
	default:
		return "", fmt.Errorf("want a single value, got %T", v)
	}
}
