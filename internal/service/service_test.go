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
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

type testConfig struct {
	Listen string `env:"T_LISTEN" envDefault:"127.0.0.1:0" check:"listen" desc:"listen address"`
	Secret string `env:"T_SECRET,required" secret:"true" desc:"a secret that is never printed"`
	envconf.Logging
}

func (c testConfig) LogValue() slog.Value { return envconf.LogValue(c) }

func loadTest(getenv func(string) string) (testConfig, error) {
	var c testConfig
	return c, envconf.Load(&c, getenv)
}

// testService serves by listening on T_LISTEN until ctx is done; with
// T_FAIL set it fails instead.
var testService = Service[testConfig]{
	Name:    "testsvc",
	Summary: "testsvc is a service for the skeleton's tests.",
	Load:    loadTest,
	Serve: func(ctx context.Context, cfg testConfig, env Env) error {
		if env.Getenv("T_FAIL") != "" {
			return errors.New("serving failed")
		}
		ln, err := env.Listen(ctx, "T_LISTEN", cfg.Listen)
		if err != nil {
			return err
		}
		defer ln.Close()
		env.Logger.Debug("debug line")
		<-ctx.Done()
		return nil
	},
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func run(t *testing.T, ctx context.Context, s Service[testConfig], env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb testenv.LogBuffer
	err = s.Run(ctx, args, envOf(env), &out, &errb)
	return out.String(), errb.String(), err
}

func TestHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		out, logs, err := run(t, t.Context(), testService, nil, arg)
		if err != nil || logs != "" {
			t.Fatalf("%s: %v, stderr %q", arg, err, logs)
		}
		for _, want := range []string{
			"Usage: testsvc", "testsvc is a service", "-list-env", "-healthcheck URL",
			"T_LISTEN (default 127.0.0.1:0)", "listen address", "T_SECRET (required)", "LOG_LEVEL (default info)", "debug, info, warn or error",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s output lacks %q:\n%s", arg, want, out)
			}
		}
	}
}

func TestListEnv(t *testing.T) {
	t.Parallel()
	out, _, err := run(t, t.Context(), testService, nil, "-list-env")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("LOG_LEVEL\nT_LISTEN\nT_SECRET\n", out); diff != "" {
		t.Errorf("-list-env (-want +got):\n%s", diff)
	}
	out, _, err = run(t, t.Context(), testService, nil, "-list-env=json")
	if err != nil {
		t.Fatal(err)
	}
	var vars []envconf.Var
	if err := json.Unmarshal([]byte(out), &vars); err != nil {
		t.Fatalf("-list-env=json: %v\n%s", err, out)
	}
	if diff := cmp.Diff(envconf.Vars(testConfig{}), vars); diff != "" {
		t.Errorf("-list-env=json (-want +got):\n%s", diff)
	}
}

func TestCommandLineErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"serve"}, `unexpected arguments ["serve"]; configuration comes from the environment (see -list-env)`},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined: -nope (see testsvc -h)"},
		{"bad -list-env", []string{"-list-env=yaml"}, "-list-env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := run(t, t.Context(), testService, map[string]string{"T_SECRET": "s"}, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || out != "" {
				t.Errorf("Run(%q) = %v, stdout %q; want an error saying %q", tt.args, err, out, tt.want)
			}
		})
	}
}

func TestInvalidConfiguration(t *testing.T) {
	t.Parallel()
	_, logs, err := run(t, t.Context(), testService, map[string]string{"T_SECRET": "hunter2", "T_LISTEN": "nope"})
	if err == nil || err.Error() != `invalid configuration: T_LISTEN: "nope" is not host:port or :port (e.g. :8000, 127.0.0.1:8000, 127.0.0.1:0)` {
		t.Errorf("Run = %v", err)
	}
	var e *envconf.Error
	if !errors.As(err, &e) || e.Var != "T_LISTEN" {
		t.Errorf("error %v does not unwrap to an *envconf.Error naming T_LISTEN", err)
	}
	if logs != "" {
		t.Errorf("logged before the configuration was valid: %s", logs)
	}
	_, _, err = run(t, t.Context(), testService, nil)
	if err == nil || err.Error() != "invalid configuration: T_SECRET: required but not set" {
		t.Errorf("Run without T_SECRET = %v", err)
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	// No configuration is needed to probe.
	if _, _, err := run(t, t.Context(), testService, nil, "-healthcheck", srv.URL+"/healthz"); err != nil {
		t.Errorf("-healthcheck of a healthy URL: %v", err)
	}
	if _, _, err := run(t, t.Context(), testService, nil, "-healthcheck", srv.URL+"/nothing"); err == nil {
		t.Error("-healthcheck of a 404 succeeded")
	}
}

// TestServeLogsAndStops: the log starts with the configuration, secrets
// masked, at LOG_LEVEL; every listener is logged with the address bound; a
// cancelled context stops the service cleanly.
func TestServeLogsAndStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var logs testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- testService.Run(ctx, nil, envOf(map[string]string{"T_SECRET": "hunter2", "LOG_LEVEL": "debug"}), io.Discard, &logs)
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no listening line:\n%s", logs.String())
		}
		for line := range strings.Lines(logs.String()) {
			var l struct{ Msg, Listener, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" && l.Listener == "T_LISTEN" {
				addr = l.Addr
			}
		}
	}
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Errorf("the logged address %s does not accept connections: %v", addr, err)
	} else {
		c.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	out := logs.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("logged the secret:\n%s", out)
	}
	for _, want := range []string{`"msg":"starting testsvc","config":{"T_LISTEN":"127.0.0.1:0","T_SECRET":"<set>","LOG_LEVEL":"DEBUG"}`, `"msg":"debug line"`, `"msg":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for line := range strings.Lines(out) {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
}

func TestServeError(t *testing.T) {
	t.Parallel()
	_, logs, err := run(t, t.Context(), testService, map[string]string{"T_SECRET": "s", "T_FAIL": "1"})
	if err == nil || err.Error() != "serving failed" {
		t.Errorf("Run = %v, want the serving error", err)
	}
	if strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("logged a clean stop after an error:\n%s", logs)
	}
}

func TestBusyListenerNamesTheVariable(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	_, _, err = run(t, t.Context(), testService, map[string]string{"T_SECRET": "s", "T_LISTEN": busy.Addr().String()})
	if err == nil || !strings.HasPrefix(err.Error(), "T_LISTEN: listening on "+busy.Addr().String()+": ") {
		t.Errorf("Run on a busy port = %v", err)
	}
}

func TestCommandRunsInsteadOfServing(t *testing.T) {
	t.Parallel()
	s := testService
	s.Flags = func(fs *flag.FlagSet) func(context.Context, testConfig, io.Writer) (bool, error) {
		say := fs.String("say", "", "print `WORD` and exit")
		return func(_ context.Context, cfg testConfig, w io.Writer) (bool, error) {
			if *say == "" {
				return false, nil
			}
			_, err := fmt.Fprintf(w, "%s %s\n", *say, cfg.Listen)
			return true, err
		}
	}
	out, logs, err := run(t, t.Context(), s, map[string]string{"T_SECRET": "s"}, "-say", "hello")
	if err != nil || out != "hello 127.0.0.1:0\n" || logs != "" {
		t.Errorf("Run -say hello = %v, stdout %q, stderr %q", err, out, logs)
	}
	if help, _, _ := run(t, t.Context(), s, nil, "-h"); !strings.Contains(help, "-say WORD") {
		t.Errorf("-h lacks the binary's own flag:\n%s", help)
	}
}

// TestMainStopsOnSIGTERM runs Main in a child process (this test binary) and
// sends SIGTERM, as docker compose stop does: the service stops cleanly and
// the process exits 0. A configuration error exits 1 with one line.
func TestMainStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	p := testenv.StartProcess(t, "testsvc", os.Args[0], testenv.ProcessOptions{
		Env: []string{"SERVICE_TEST_MAIN=1", "T_SECRET=s"},
	})
	addr, err := p.Listening(t.Context(), "T_LISTEN")
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		t.Fatal("no address")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0\n%s", err, p.Output())
	}
	if !strings.Contains(p.Output(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", p.Output())
	}

	bad := testenv.StartProcess(t, "testsvc", os.Args[0], testenv.ProcessOptions{
		Env: []string{"SERVICE_TEST_MAIN=1"},
	})
	err = bad.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit without T_SECRET: %v, want status 1", err)
	}
	if got := strings.TrimSpace(bad.Output()); got != "testsvc: invalid configuration: T_SECRET: required but not set" {
		t.Errorf("output %q", got)
	}
}

// TestMain runs Main as the child process of TestMainStopsOnSIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("SERVICE_TEST_MAIN") == "1" {
		os.Args = os.Args[:1]
		Main(testService)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
