package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries of this repository, by name, as `make build` writes them to bin/.
var commands = map[string]string{
	"authz":       "github.com/mcpauthz/mcpauthz/services/authz/cmd/authz",
	"mcp-gateway": "github.com/mcpauthz/mcpauthz/services/mcp-gateway/cmd/mcp-gateway",
	"devauth":     "github.com/mcpauthz/mcpauthz/services/devauth/cmd/devauth",
	// The load tool's baselines: the gateway's tools without authentication,
	// and a no-op gRPC call.
	"mcp-floor": "github.com/mcpauthz/mcpauthz/services/mcp-gateway/cmd/mcp-floor",
	// The example upstream of federation, which verifies the gateway's
	// identity assertions.
	"identity-upstream": "github.com/mcpauthz/mcpauthz/examples/identity-upstream",
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary returns the path of one of this repository's commands ("authz",
// "mcp-gateway", "devauth", "mcp-floor", "identity-upstream"). With
// $MCPAUTHZ_BIN_DIR set (`make test` sets it after `make build`) it uses the
// binary there; otherwise it builds it, so plain `go test` works too.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := BuildBinary(name)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BuildBinary is [Binary] for TestMain, where no testing.TB exists yet: it
// returns an error instead of failing a test.
//
// It builds with `go run -exec echo`, which prints the path of the binary
// instead of running it: the go command keeps executables it builds for `go
// run` in its build cache, so every test process of a `go test ./...` (and
// every later run, until a source changes) shares one link of each binary
// instead of linking its own.
func BuildBinary(name string) (string, error) {
	pkg, ok := commands[name]
	if !ok {
		return "", fmt.Errorf("testenv.Binary: unknown command %q", name)
	}
	if dir := os.Getenv("MCPAUTHZ_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("MCPAUTHZ_BIN_DIR is set but %s is missing: run `make build`", p)
		}
		return p, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p, nil
	}
	cache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %v", err)
	}
	// The first build of a version is printed from a temporary directory
	// the go command removes on exit; it is in the cache by then, and the
	// second call prints where.
	for range 2 {
		out, err := exec.Command("go", "run", "-exec", "echo", pkg).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr)
		}
		p := strings.TrimSpace(string(out))
		if _, err := os.Stat(p); err == nil && strings.HasPrefix(p, strings.TrimSpace(string(cache))+string(filepath.Separator)) {
			built[name] = p
			return p, nil
		}
	}
	return "", fmt.Errorf("go run -exec echo %s: the go command did not keep the binary in its build cache", pkg)
}

// Process is a running command whose output is captured for the test to inspect.
type Process struct {
	Name string

	cmd  *exec.Cmd
	out  *LogBuffer
	done chan struct{}
	err  error
}

// ProcessOptions describes a command to start.
type ProcessOptions struct {
	// Env is added to a minimal environment (PATH and HOME only), so the developer's
	// own variables never leak into a test.
	Env []string
	// Args are the command-line arguments.
	Args []string
	// ReadyURL, if set, is polled with GET until it answers 200.
	ReadyURL string
	// ReadyListener and ReadyPath, if set, wait for a binary started on port
	// 0: once it logs the address it bound for the variable ReadyListener
	// (see [Process.Listening]), http://<that address><ReadyPath> is polled
	// like ReadyURL.
	ReadyListener, ReadyPath string
	// ReadyTimeout bounds the wait for ReadyURL or ReadyListener; default 20s.
	ReadyTimeout time.Duration
	// LogFile, if set, receives the process's output too (created or
	// truncated), for a command such as the load tool that keeps logs.
	LogFile string
}

// StartProcess starts bin and, if opts.ReadyURL is set, waits until it is ready. The
// process is stopped with SIGTERM (then SIGKILL) when tb ends, and its output is
// logged if tb failed.
func StartProcess(tb testing.TB, name, bin string, opts ProcessOptions) *Process {
	tb.Helper()
	p, err := NewProcess(name, bin, opts)
	if p != nil {
		tb.Cleanup(func() {
			p.Stop()
			if tb.Failed() {
				tb.Logf("--- output of %s ---\n%s", name, p.Output())
			}
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// NewProcess is [StartProcess] for TestMain, where no testing.TB exists yet. The
// caller must Stop the process. If the process starts but does not get ready, it
// returns the process (still to be stopped) and an error with its output.
func NewProcess(name, bin string, opts ProcessOptions) (*Process, error) {
	cmd := exec.Command(bin, opts.Args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, opts.Env...)
	// The process dies with this one, so an interrupted test or load run
	// leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, cmd: cmd, out: &LogBuffer{}, done: make(chan struct{})}
	var out io.Writer = p.out
	var logFile *os.File
	if opts.LogFile != "" {
		f, err := os.Create(opts.LogFile)
		if err != nil {
			return nil, fmt.Errorf("creating the log of %s: %v", name, err)
		}
		logFile, out = f, io.MultiWriter(p.out, f)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	// A child of the process (a shell's) can hold the output pipe open after
	// the process exits; don't wait for it for long.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
	}()
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	url := opts.ReadyURL
	if opts.ReadyListener != "" {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		addr, err := p.Listening(ctx, opts.ReadyListener)
		cancel()
		if err != nil {
			return p, err
		}
		url, timeout = "http://"+addr+opts.ReadyPath, timeout-time.Since(start)
	}
	if url != "" {
		if err := p.WaitReady(url, timeout); err != nil {
			return p, fmt.Errorf("%s: %v\n%s", name, err, p.Output())
		}
	}
	return p, nil
}

// WaitReady polls url until it answers 200, the process exits, or timeout passes.
func (p *Process) WaitReady(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before %s was ready: %v", url, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v (last error: %v)", url, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Listening waits until the process logs that it listens for listener, the
// variable naming the listen address (a JSON line {"msg":"listening",
// "listener":"MCP_LISTEN","addr":"127.0.0.1:43125"}, as every binary here
// logs once per listener), and returns the address bound. It fails when the
// process exits first or ctx ends.
func (p *Process) Listening(ctx context.Context, listener string) (string, error) {
	for {
		out, changed := p.out.next()
		if addr, ok := ListeningAddr(out, listener); ok {
			return addr, nil
		}
		select {
		case <-changed:
		case <-p.done:
			out, _ = p.out.next()
			if addr, ok := ListeningAddr(out, listener); ok {
				return addr, nil
			}
			return "", fmt.Errorf("%s exited before listening on %s: %v\n%s", p.Name, listener, p.err, out)
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no listening line for %s: %w\n%s", p.Name, listener, context.Cause(ctx), out)
		}
	}
}

// ListeningAddr finds in log, JSON lines, the address a binary logged it
// listens on for listener.
func ListeningAddr(log, listener string) (string, bool) {
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `"listening"`) {
			continue
		}
		var l struct{ Msg, Listener, Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" && l.Listener == listener && l.Addr != "" {
			return l.Addr, true
		}
	}
	return "", false
}

// Pid returns the process ID, e.g. to read its CPU time from /proc.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error { <-p.done; return p.err }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to 10s, then kills. Stopping twice is harmless.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill stops the process at once, as a crash would.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// LogBuffer is an io.Writer safe for concurrent use that keeps everything written
// to it, for capturing a logger's or a process's output and searching it for leaks.
// The zero value is ready to use.
type LogBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed at the next Write
}

// Write appends p; it never fails.
func (s *LogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// next returns what was written so far and a channel closed at the next
// Write.
func (s *LogBuffer) next() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.b.String(), s.changed
}

// String returns everything written so far.
func (s *LogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreeAddr returns "127.0.0.1:PORT" with a port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}
