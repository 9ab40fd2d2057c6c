package rego

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"github.com/rs/zerolog"
)

// opaLogger lets OPA's plugin manager and bundle plugin log through zerolog,
// so meshproof has one log stream in one format.
type opaLogger struct {
	log zerolog.Logger
}

var _ logging.Logger = opaLogger{}

func (l opaLogger) Debug(f string, a ...any) { l.log.Debug().Msg(fmt.Sprintf(f, a...)) }
func (l opaLogger) Info(f string, a ...any)  { l.log.Info().Msg(fmt.Sprintf(f, a...)) }
func (l opaLogger) Warn(f string, a ...any)  { l.log.Warn().Msg(fmt.Sprintf(f, a...)) }
func (l opaLogger) Error(f string, a ...any) { l.log.Error().Msg(fmt.Sprintf(f, a...)) }

func (l opaLogger) WithFields(fields map[string]any) logging.Logger {
	return opaLogger{log: l.log.With().Fields(fields).Logger()}
}

func (l opaLogger) GetLevel() logging.Level {
	switch l.log.GetLevel() {
	case zerolog.DebugLevel, zerolog.TraceLevel:
		return logging.Debug
	case zerolog.InfoLevel:
		return logging.Info
	case zerolog.WarnLevel:
		return logging.Warn
	default:
		return logging.Error
	}
}

// SetLevel is ignored: meshproof's --log-level owns the level.
func (l opaLogger) SetLevel(logging.Level) {}

// printHook sends Rego print() output to the log at info level.
type printHook struct {
	log zerolog.Logger
}

func (h printHook) Print(ctx print.Context, msg string) error {
	ev := h.log.Info().Str("component", "rego-print")
	if ctx.Location != nil {
		ev = ev.Str("location", ctx.Location.String())
	}
	ev.Msg(msg)
	return nil
}
