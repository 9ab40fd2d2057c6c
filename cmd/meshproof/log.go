package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// logOptions are the logging flags every subcommand shares.
type logOptions struct {
	Format string
	Level  string
}

func (o logOptions) logger(w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(o.Level)
	if err != nil || o.Level == "" {
		return zerolog.Nop(), fmt.Errorf("log-level %q: want debug, info, warn or error", o.Level)
	}
	switch o.Format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	default:
		return zerolog.Nop(), fmt.Errorf("log-format %q: want json or console", o.Format)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func defaultLogOptions() logOptions {
	format := "json"
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		format = "console" // a person is watching
	}
	return logOptions{Format: format, Level: "info"}
}
