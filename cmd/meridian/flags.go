package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// envName is the environment variable that also sets flag name.
func envName(name string) string {
	return "MERIDIAN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv gives every flag its MERIDIAN_<FLAG> environment variable, so no
// flag can be added without one.
func bindEnv(flags []cli.Flag) []cli.Flag {
	for _, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.StringSliceFlag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.IntFlag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.Int64Flag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.Float64Flag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.DurationFlag:
			f.EnvVars = []string{envName(f.Name)}
		case *cli.BoolFlag:
			f.EnvVars = []string{envName(f.Name)}
		default:
			panic(fmt.Sprintf("bindEnv: flag type %T not handled", f))
		}
	}
	return flags
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
	}
}

// newLogger builds the process logger from the global flags.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, cli.Exit(fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.String("log-level")), 2)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, cli.Exit(fmt.Sprintf("--log-format %q: want text or json", c.String("log-format")), 2)
	}
}

// usageError is a bad flag value: exit code 2 with a message naming the flag.
func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), 2)
}
