// Package service is the one `main` of authz, mcp-gateway and devauth: flags,
// configuration, logger, signals and exit codes behave the same in all three,
// and each cmd/<name>/main.go only describes its service.
//
// A binary's main is
//
//	func main() { service.Main(service.Service[config.Config]{Name: "authz", Load: config.Load, Serve: serve}) }
//
// and [Service.Run] is main without the process, for tests.
//
// # What every binary does
//
//   - -h or -help prints a usage listing every flag and every environment
//     variable with its default and description, and exits 0.
//   - -list-env prints the name of every variable the binary reads, sorted,
//     one per line; -list-env=json prints the declarations as JSON (what
//     docs/configuration.md and .env.example are generated from).
//   - -healthcheck URL GETs URL and exits 0 on 200, 1 otherwise, without
//     reading any configuration (containers have no curl).
//   - Arguments other than flags are an error: configuration comes from the
//     environment.
//   - Configuration is read once; an invalid value stops the binary with one
//     line "<name>: invalid configuration: <VARIABLE>: <why>" on stderr.
//   - The log is JSON lines on stderr, at LOG_LEVEL. It starts with
//     "starting <name>" and the effective configuration, secrets masked, and
//     a clean stop ends it with "stopped".
//   - SIGINT and SIGTERM (what docker compose and Kubernetes send) end the
//     context the service serves with; it then shuts down gracefully.
//   - The exit status is 0 after a clean stop, -h, -list-env or a healthy
//     -healthcheck, and 1 after any error, printed as one line
//     "<name>: <error>" on stderr.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/healthprobe"
)

// Config is what the skeleton needs of a service's configuration: its
// minimum log level (embed [envconf.Logging]) and a log value with secrets
// masked. Its variables are the `env` tags of its fields (package envconf).
type Config interface {
	Level() slog.Level
	slog.LogValuer
}

// Service describes one binary.
type Service[C Config] struct {
	// Name is the binary's name, which starts its error lines and its usage.
	Name string
	// Summary says in a sentence what the binary is, for -h.
	Summary string
	// Load reads and validates the configuration from getenv. Its error
	// should be an [*envconf.Error] naming the variable.
	Load func(getenv func(string) string) (C, error)
	// Flags, when set, adds the binary's own flags to fs (before they are
	// parsed) and returns what to do with them once the configuration is
	// loaded: a command that returns done runs instead of the service.
	Flags func(fs *flag.FlagSet) func(ctx context.Context, cfg C, stdout io.Writer) (done bool, err error)
	// Serve runs the service until ctx is done, then shuts it down and
	// returns nil; or returns the error that stopped it.
	Serve func(ctx context.Context, cfg C, env Env) error
}

// Env is what a service serves with.
type Env struct {
	// Logger writes JSON lines to stderr at LOG_LEVEL.
	Logger *slog.Logger
	// Getenv is the environment the configuration was read from, for what
	// the runtime reads itself (GOGC).
	Getenv func(string) string
	// Stdout is the process's standard output, which the log leaves free:
	// the gateway's audit log may go there (AUDIT_LOG=stdout).
	Stdout io.Writer
}

// Listen binds addr, the value of variable name (e.g. "MCP_LISTEN"), and
// logs the address actually bound as {"msg":"listening","listener":name,
// "addr":...}, once per listener: with port 0 that line is the only place the
// port is told. The error names the variable.
func (e Env) Listen(ctx context.Context, name, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listening on %s: %w", name, addr, err)
	}
	e.Logger.Info("listening", "listener", name, "addr", ln.Addr().String())
	return ln, nil
}

// Main runs s as the process: with the command line, the environment,
// stdout and stderr, and a context that ends on SIGINT or SIGTERM. It exits
// with status 0 after a clean stop and 1 after an error, which it prints as
// one line "<name>: <error>" on stderr.
func Main[C Config](s Service[C]) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := s.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", s.Name, oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to the one line a failed start prints.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// listEnv is the -list-env flag: a boolean that also takes "json".
type listEnv string

func (l *listEnv) String() string { return string(*l) }

func (l *listEnv) Set(v string) error {
	switch v {
	case "true", "json":
		*l = listEnv(v)
	case "false":
		*l = ""
	default:
		return fmt.Errorf("%q is not true or json", v)
	}
	return nil
}

func (l *listEnv) IsBoolFlag() bool { return true }

// Run is main without the process: it parses args, reads the configuration
// through getenv and serves until ctx is done. -h output, -list-env and the
// binary's own commands write to stdout; the log goes to stderr. It returns
// nil after a clean stop, -h, -list-env or a healthy -healthcheck.
func (s Service[C]) Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(s.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed to stdout
	var list listEnv
	fs.Var(&list, "list-env", "print the name of every environment variable "+s.Name+" reads, one per line, and exit; -list-env=json prints their declarations as JSON")
	healthcheck := fs.String("healthcheck", "", "GET `URL` and exit 0 if it answers 200, 1 otherwise (for container healthchecks)")
	var command func(context.Context, C, io.Writer) (bool, error)
	if s.Flags != nil {
		command = s.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s.usage(stdout, fs)
		}
		return fmt.Errorf("%v (see %s -h)", err, s.Name)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; configuration comes from the environment (see -list-env)", fs.Args())
	}
	if *healthcheck != "" {
		return healthprobe.Probe(ctx, *healthcheck)
	}
	var zero C
	switch list {
	case "true":
		_, err := fmt.Fprintln(stdout, strings.Join(envconf.Names(zero), "\n"))
		return err
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(envconf.Vars(zero))
	}

	cfg, err := s.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if command != nil {
		if done, err := command(ctx, cfg, stdout); done || err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.Level()}))
	logger.Info("starting "+s.Name, "config", cfg)
	if err := s.Serve(ctx, cfg, Env{Logger: logger, Getenv: getenv, Stdout: stdout}); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// usage prints the binary's flags and every variable it reads.
func (s Service[C]) usage(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n", s.Name)
	if s.Summary != "" {
		b.WriteString(wrap(s.Summary, 80, "") + "\n\n")
	}
	b.WriteString("Flags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	b.WriteString("\nEnvironment (docs/configuration.md explains every variable; an empty value means the default):\n")
	var zero C
	for _, v := range envconf.Vars(zero) {
		fmt.Fprintf(&b, "  %s", v.Name)
		var notes []string
		if d := v.ShownDefault(); d != "" {
			notes = append(notes, "default "+d)
		}
		if v.Required {
			notes = append(notes, "required")
		}
		if v.Min != "" || v.Max != "" {
			notes = append(notes, fmt.Sprintf("from %s to %s", orDash(v.Min), orDash(v.Max)))
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(notes, "; "))
		}
		b.WriteString("\n" + wrap(v.Desc, 80, "        ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// wrap breaks text into lines of at most width columns (a longer word keeps
// its own line), each starting with indent.
func wrap(text string, width int, indent string) string {
	var lines []string
	line := indent
	for _, w := range strings.Fields(text) {
		if line != indent && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
