package testenv

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// everythingScript is the entry point of the npm package
// @modelcontextprotocol/server-everything, pinned in e2e/ts/package.json and
// installed by `make test-deps` (npm ci in e2e/ts).
const everythingScript = "e2e/ts/node_modules/@modelcontextprotocol/server-everything/dist/index.js"

// loopbackPreload makes every listen(port) of the Node process bind
// 127.0.0.1: server-everything listens on all interfaces and has no setting
// for it, and test servers bind loopback only.
const loopbackPreload = `const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if ((typeof args[0] === "number" || typeof args[0] === "string") &&
      (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
`

// EverythingCommand returns the argv that runs server-everything in the given
// mode ("stdio" or "streamableHttp") with node, bound to loopback. It fails
// tb when node or the package is missing, saying how to install them.
func EverythingCommand(tb testing.TB, mode string) []string {
	tb.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatal("node not found on PATH: run `make test-deps` (it installs the Debian packages nodejs and npm)")
	}
	script, err := EverythingScript()
	if err != nil {
		tb.Fatal(err)
	}
	preload := filepath.Join(tb.TempDir(), "loopback.cjs")
	if err := os.WriteFile(preload, []byte(loopbackPreload), 0o600); err != nil {
		tb.Fatal(err)
	}
	return []string{node, "--require", preload, script, mode}
}

// EverythingScript returns the path of server-everything's dist/index.js in
// this repository's e2e/ts/node_modules.
func EverythingScript() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, everythingScript)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run `make test-deps` (npm ci in e2e/ts installs @modelcontextprotocol/server-everything)", p)
	}
	return p, nil
}

// repoRoot finds the repository root (the directory with go.work) above the
// working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (a directory with go.work) not found above the working directory")
		}
		dir = parent
	}
}

// Everything is server-everything in streamableHttp mode, on a loopback port
// of its own. It keeps sessions (Mcp-Session-Id) in memory, so restarting it
// forgets them.
type Everything struct {
	// URL is its MCP endpoint, http://127.0.0.1:PORT/mcp.
	URL string

	argv []string
	port int

	mu   sync.Mutex
	proc *Process
}

// StartEverything starts server-everything over streamable HTTP and waits
// until it answers. It is stopped when tb ends. Under -short it skips tb:
// starting Node takes seconds on a busy machine, and `make test` runs it.
func StartEverything(tb testing.TB) *Everything {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts server-everything (Node): go test without -short runs it")
	}
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	e := &Everything{
		URL:  "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp",
		argv: EverythingCommand(tb, "streamableHttp"),
		port: port,
	}
	e.Start(tb)
	return e
}

// Start starts the server (again) on its port and waits until it answers.
func (e *Everything) Start(tb testing.TB) {
	tb.Helper()
	p := StartProcess(tb, "server-everything", e.argv[0], ProcessOptions{
		Args: e.argv[1:],
		Env:  []string{"PORT=" + strconv.Itoa(e.port)},
	})
	e.mu.Lock()
	e.proc = p
	e.mu.Unlock()
	// Any HTTP answer will do: GET /mcp without a session is a 400.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(e.URL)
		if err == nil {
			resp.Body.Close()
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			tb.Fatalf("server-everything did not answer at %s: %v\n%s", e.URL, err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server at once, as a crash would.
func (e *Everything) Kill() {
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	p.Kill()
}

// Process returns the running server process.
func (e *Everything) Process() *Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc
}
