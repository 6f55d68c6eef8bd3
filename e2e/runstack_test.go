package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

var runStack = filepath.Join(repoRoot, "scripts", "run-stack.sh")

// stackEnv returns a minimal environment for run-stack.sh with every port free and
// no .env, so neither the developer's settings nor busy default ports interfere.
func stackEnv(t *testing.T, binDir string) map[string]string {
	t.Helper()
	return map[string]string{
		"PATH":                 os.Getenv("PATH"),
		"HOME":                 os.Getenv("HOME"),
		"RUN_ENV_FILE":         filepath.Join(t.TempDir(), "no.env"),
		"RUN_LOG_DIR":          filepath.Join(t.TempDir(), "logs"),
		"MCPAUTHZ_BIN_DIR":     binDir,
		"MCP_LISTEN":           stackAddr(t),
		"AUTHZ_LISTEN":         stackAddr(t),
		"AUTHZ_METRICS_LISTEN": stackAddr(t),
		"MCP_METRICS_LISTEN":   stackAddr(t),
		"DEVAUTH_LISTEN":       stackAddr(t),
	}
}

// stackAddr returns a free loopback address for a process the script starts
// later: run-stack.sh needs its ports in advance (it derives the URLs it
// prints from them), so they are picked as testenv picks redis-server's.
func stackAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t)
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// busyAddr returns the address of a listener held open until the test ends.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestRunStackRejectsBadConfig: a bad or busy port (and the like) stops `make run`
// before anything starts, with exactly one line that names the variable.
func TestRunStackRejectsBadConfig(t *testing.T) {
	slow(t)
	t.Parallel()
	busy := busyAddr(t)
	_, busyPort, _ := net.SplitHostPort(busy)
	same := testenv.FreeAddr(t)
	// Held on 127.0.0.2 only: binding the same port on every interface fails,
	// though nothing answers at 127.0.0.1.
	elsewhere, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { elsewhere.Close() })
	_, elsewherePort, _ := net.SplitHostPort(elsewhere.Addr().String())
	cases := []struct {
		name    string
		env     map[string]string
		wantVar string
		want    string // also in the line
	}{
		{"MCP port out of range", map[string]string{"MCP_LISTEN": ":99999"}, "MCP_LISTEN", "out of range"},
		{"MCP port zero", map[string]string{"MCP_LISTEN": "127.0.0.1:0"}, "MCP_LISTEN", "out of range"},
		{"authz address without port", map[string]string{"AUTHZ_LISTEN": "localhost"}, "AUTHZ_LISTEN", "not a listen address"},
		{"metrics port not a number", map[string]string{"AUTHZ_METRICS_LISTEN": ":http"}, "AUTHZ_METRICS_LISTEN", "not a listen address"},
		{"devauth address with a path", map[string]string{"DEVAUTH_LISTEN": "localhost:9000/x"}, "DEVAUTH_LISTEN", "not a listen address"},
		{"MCP port busy", map[string]string{"MCP_LISTEN": busy}, "MCP_LISTEN", "already in use"},
		{"authz port busy", map[string]string{"AUTHZ_LISTEN": ":" + busyPort}, "AUTHZ_LISTEN", "already in use"},
		{"metrics port busy", map[string]string{"AUTHZ_METRICS_LISTEN": busy}, "AUTHZ_METRICS_LISTEN", "already in use"},
		{"gateway ops port busy", map[string]string{"MCP_METRICS_LISTEN": busy}, "MCP_METRICS_LISTEN", "already in use"},
		{"every interface, port taken on another address", map[string]string{"DEVAUTH_LISTEN": ":" + elsewherePort}, "DEVAUTH_LISTEN", "already in use"},
		{"devauth port busy", map[string]string{"DEVAUTH_LISTEN": "0.0.0.0:" + busyPort}, "DEVAUTH_LISTEN", "already in use"},
		{"two services on one port", map[string]string{"MCP_LISTEN": same, "AUTHZ_METRICS_LISTEN": same}, "AUTHZ_METRICS_LISTEN", "MCP_LISTEN"},
		{"Redis not answering", map[string]string{"REDIS_URL": "redis://" + testenv.FreeAddr(t) + "/0"}, "REDIS_URL", "nothing answers"},
		{"Redis URL malformed", map[string]string{"REDIS_URL": "localhost:6379"}, "REDIS_URL", "not a redis://"},
		{"bad timeout", map[string]string{"RUN_TIMEOUT": "soon"}, "RUN_TIMEOUT", "seconds"},
		{"upstreams file missing", map[string]string{"UPSTREAMS_FILE": filepath.Join(t.TempDir(), "upstreams.yaml")}, "UPSTREAMS_FILE", "not a readable file"},
		{"example upstream port busy", map[string]string{"UPSTREAMS_FILE": exampleUpstreams, "IDENTITY_UPSTREAM_LISTEN": busy}, "IDENTITY_UPSTREAM_LISTEN", "already in use"},
		{"devauth URL on another port", map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:1"}, "PROPELAUTH_AUTH_URL", "DEVAUTH_LISTEN"},
		// PropelAuth mode starts no devauth, so its busy port does not matter; the
		// run then stops at the (empty) binary directory.
		{"PropelAuth mode skips devauth", map[string]string{"PROPELAUTH_AUTH_URL": "https://1234.propelauthtest.com", "DEVAUTH_LISTEN": busy}, "MCPAUTHZ_BIN_DIR", "authz is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := stackEnv(t, t.TempDir())
			for k, v := range tc.env {
				env[k] = v
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", runStack)
			cmd.Env = envList(env)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("run-stack.sh: %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
			}
			line := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "run-stack: ") {
				t.Errorf("stderr is not one \"run-stack: ...\" line:\n%s", &stderr)
			}
			if !strings.Contains(line, tc.wantVar) || !strings.Contains(line, tc.want) {
				t.Errorf("error line %q does not name %s and say %q", line, tc.wantVar, tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout not empty:\n%s", &stdout)
			}
		})
	}
}

// runStackError runs the script with env, which must make it stop before
// starting anything, and returns its one error line.
func runStackError(t *testing.T, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", runStack)
	cmd.Env = envList(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("run-stack.sh: %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	return strings.TrimRight(stderr.String(), "\n")
}

// TestRunStackListensOnLoopbackByDefault: every *_LISTEN the script sets by
// default is on 127.0.0.1. Each default is read back from the error the
// script gives when that default's port is taken (by this test, or by
// whatever already listens there), so the test needs none of the default
// ports free.
func TestRunStackListensOnLoopbackByDefault(t *testing.T) {
	slow(t)
	t.Parallel()
	defaults := map[string]string{
		"MCP_LISTEN":           "127.0.0.1:8000",
		"AUTHZ_LISTEN":         "127.0.0.1:50051",
		"AUTHZ_METRICS_LISTEN": "127.0.0.1:9091",
		"MCP_METRICS_LISTEN":   "127.0.0.1:9092",
		"DEVAUTH_LISTEN":       "127.0.0.1:9000",
	}
	for v, addr := range defaults {
		// If the port cannot be bound, something listens there already, which
		// makes it just as taken for the script.
		if ln, err := net.Listen("tcp", addr); err == nil {
			t.Cleanup(func() { ln.Close() })
		}
		t.Run(v, func(t *testing.T) {
			env := stackEnv(t, t.TempDir())
			delete(env, v)
			_, port, _ := net.SplitHostPort(addr)
			want := "run-stack: " + v + "=" + addr + ": port " + port + " is already in use"
			if line := runStackError(t, env); !strings.HasPrefix(line, want) {
				t.Errorf("error line %q, want it to start with %q", line, want)
			}
		})
	}
}

// stack is a running run-stack.sh.
type stack struct {
	cmd    *exec.Cmd
	env    map[string]string
	stdout *lockedBuffer
	stderr *lockedBuffer
	ready  chan string // the MCP URL from the "ready: " line
	done   chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startStack(t *testing.T, env map[string]string) *stack {
	t.Helper()
	s := &stack{
		cmd:    exec.Command("bash", runStack),
		env:    env,
		stdout: &lockedBuffer{},
		stderr: &lockedBuffer{},
		ready:  make(chan string, 1),
		done:   make(chan struct{}),
	}
	s.cmd.Env = envList(env)
	s.cmd.Stderr = s.stderr
	pr, pw := io.Pipe()
	s.cmd.Stdout = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.stdout, line)
			if u, ok := strings.CutPrefix(line, "ready: "); ok {
				s.ready <- u
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		s.err = s.cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(15 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		}
		if t.Failed() {
			t.Logf("run-stack.sh stdout:\n%s\nstderr:\n%s", s.stdout, s.stderr)
			logs, _ := filepath.Glob(filepath.Join(env["RUN_LOG_DIR"], "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s ---\n%s", filepath.Base(l), b)
			}
		}
	})
	return s
}

// waitReady returns the MCP URL the script announces once every service is
// healthy, or "" if the script exited first.
func (s *stack) waitReady(t *testing.T) string {
	t.Helper()
	select {
	case u := <-s.ready:
		return u
	case <-s.done:
		return ""
	case <-time.After(45 * time.Second):
		t.Fatal("run-stack.sh not ready after 45s")
	}
	return ""
}

// startReadyStack starts run-stack.sh with stackEnv changed by edit and waits
// until it is ready. A port taken by another process between stackAddr and the
// script's check is not this test's failure: it tries again with new ports.
func startReadyStack(t *testing.T, binDir string, edit func(env map[string]string)) (*stack, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		env := stackEnv(t, binDir)
		if edit != nil {
			edit(env)
		}
		s := startStack(t, env)
		if u := s.waitReady(t); u != "" {
			return s, u
		}
		if attempt == 3 || !strings.Contains(s.stderr.String(), "already in use") {
			t.Fatalf("run-stack.sh exited before it was ready: %v\n%s", s.err, s.stderr)
		}
	}
}

// waitExit waits for the script to exit and returns how.
func (s *stack) waitExit(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-s.done:
		return s.cmd.ProcessState
	case <-time.After(20 * time.Second):
		t.Fatal("run-stack.sh did not exit within 20s")
	}
	return nil
}

// children returns the services (devauth, authz, mcp-gateway) whose parent is
// pid, from /proc.
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so cut at the last ')'.
		i := bytes.LastIndexByte(b, ')')
		fields := strings.Fields(string(b[i+1:]))
		comm := string(b[bytes.IndexByte(b, '(')+1 : i])
		if _, ok := ours[comm]; ok && len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out[p] = comm
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	fields := strings.Fields(string(b[i+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// listening returns the TCP addresses process pid listens on: its sockets
// (/proc/pid/fd) matched against the kernel's tables of listening sockets.
func listening(t *testing.T, pid int) []netip.AddrPort {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil {
			if ino, ok := strings.CutPrefix(link, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	var out []netip.AddrPort
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, procAddr(t, f[1]))
		}
	}
	return out
}

// procAddr decodes an address of /proc/net/tcp{,6}: hex, in 32-bit words of
// host (little-endian) byte order, then ":" and the port in hex.
func procAddr(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	raw, err1 := hex.DecodeString(hexIP)
	port, err2 := strconv.ParseUint(hexPort, 16, 16)
	if err1 != nil || err2 != nil || (len(raw) != 4 && len(raw) != 16) {
		t.Fatalf("cannot decode socket address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port))
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// stackBinDir returns the directory holding all three binaries.
func stackBinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(testenv.Binary(t, authz))
	for _, name := range []string{gateway, devauth} {
		if d := filepath.Dir(testenv.Binary(t, name)); d != dir {
			t.Fatalf("binaries in %s and %s", dir, d)
		}
	}
	return dir
}

// TestRunStack starts the demo stack as `make run` does, checks it serves and
// says how to connect, and stops it the two ways it can stop.
func TestRunStack(t *testing.T) {
	slow(t)
	t.Parallel()
	binDir := stackBinDir(t)

	t.Run("SIGINT stops everything", func(t *testing.T) {
		t.Parallel()
		s, mcpURL := startReadyStack(t, binDir, nil)
		env := s.env

		_, mcpPort, _ := net.SplitHostPort(env["MCP_LISTEN"])
		_, devauthPort, _ := net.SplitHostPort(env["DEVAUTH_LISTEN"])
		wantURL := "http://localhost:" + mcpPort + "/mcp"
		if mcpURL != wantURL {
			t.Errorf("announced MCP URL %q, want %q", mcpURL, wantURL)
		}
		out := s.stdout.String()
		for _, want := range []string{
			"alice@example.com / alice-password",
			"npx @modelcontextprotocol/inspector --transport http --server-url " + wantURL,
			"claude mcp add --transport http mcpauthz " + wantURL,
			`{ "mcpServers": { "mcpauthz": { "url": "` + wantURL + `" } } }`,
			`{ "mcpServers": { "mcpauthz": { "command": "npx", "args": ["-y", "mcp-remote", "` + wantURL + `"] } } }`,
			"http://localhost:" + devauthPort,
			fmt.Sprintf("Listening on loopback only: gateway %s (ops %s), authz %s (metrics %s), devauth %s",
				env["MCP_LISTEN"], env["MCP_METRICS_LISTEN"], env["AUTHZ_LISTEN"], env["AUTHZ_METRICS_LISTEN"], env["DEVAUTH_LISTEN"]),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		for _, unwanted := range []string{"WARNING", "test API"} {
			if strings.Contains(out, unwanted) {
				t.Errorf("output says %q:\n%s", unwanted, out)
			}
		}
		// With no DEVAUTH_CONFIG_FILE: the demo client, confidential.
		if !strings.Contains(out, "devauth's MCP settings (PropelAuth's MCP dashboard page): the defaults") {
			t.Errorf("output does not say devauth runs with its default settings:\n%s", out)
		}
		checkGuideClient(t, out, wantURL, "demo-mcp-client", "demo-mcp-client-secret")

		for _, addr := range []string{env["MCP_LISTEN"], env["AUTHZ_METRICS_LISTEN"], env["DEVAUTH_LISTEN"]} {
			if code, body := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
				t.Errorf("GET %s/healthz: %d %s", addr, code, body)
			}
		}
		// The pieces are wired to each other: the gateway advertises devauth, and
		// an unauthenticated MCP request gets a challenge, not an error.
		code, body := get(t, "http://"+env["MCP_LISTEN"]+"/.well-known/oauth-protected-resource/mcp")
		var prm struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
		}
		if err := json.Unmarshal(body, &prm); code != http.StatusOK || err != nil {
			t.Errorf("protected resource metadata: %d %v %s", code, err, body)
		}
		if want := "http://localhost:" + devauthPort + "/oauth/2.1"; prm.Resource != wantURL || len(prm.AuthorizationServers) != 1 || prm.AuthorizationServers[0] != want {
			t.Errorf("protected resource metadata %+v, want resource %s, authorization server %s", prm, wantURL, want)
		}
		if code, body := get(t, "http://"+env["DEVAUTH_LISTEN"]+"/.well-known/oauth-authorization-server/oauth/2.1"); code != http.StatusOK {
			t.Errorf("devauth metadata: %d %s", code, body)
		}

		kids := children(t, s.cmd.Process.Pid)
		if len(kids) != 3 {
			t.Errorf("run-stack.sh has children %v, want the three services", kids)
		}
		// What the services bound: loopback only, on the configured ports.
		ports := map[uint16]string{}
		for pid, name := range kids {
			for _, ap := range listening(t, pid) {
				if !ap.Addr().IsLoopback() {
					t.Errorf("%s listens on %s, not loopback", name, ap)
				}
				ports[ap.Port()] = name
			}
		}
		for _, v := range []string{"MCP_LISTEN", "AUTHZ_LISTEN", "AUTHZ_METRICS_LISTEN", "DEVAUTH_LISTEN"} {
			ap := netip.MustParseAddrPort(env[v])
			if ports[ap.Port()] == "" {
				t.Errorf("no service listens on %s (%s); listening: %v", ap, v, ports)
			}
		}
		if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		st := s.waitExit(t)
		if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("run-stack.sh ended with %v, want death by SIGINT (so make sees the interrupt)", st)
		}
		for pid, name := range kids {
			if alive(pid) {
				t.Errorf("%s (pid %d) still running after run-stack.sh exited", name, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for _, name := range []string{devauth, authz, gateway} {
			b, err := os.ReadFile(filepath.Join(env["RUN_LOG_DIR"], name+".log"))
			if err != nil || len(b) == 0 {
				t.Errorf("%s log: %v, %d bytes", name, err, len(b))
			}
			if bytes.Contains(b, []byte("demo-introspection-secret")) || bytes.Contains(b, []byte("demo-api-key")) {
				t.Errorf("%s log contains a secret", name)
			}
		}
		if _, err := os.Stat(filepath.Join(env["RUN_LOG_DIR"], ".gitignore")); err != nil {
			t.Errorf("the log directory does not ignore itself: %v", err)
		}
	})

	t.Run("with REDIS_URL, SIGTERM stops everything", func(t *testing.T) {
		t.Parallel()
		rdb := testenv.StartRedis(t)
		// A configuration whose first client is public, as in the guide.
		config := filepath.Join(t.TempDir(), "devauth.yaml")
		if err := os.WriteFile(config, []byte("mcp:\n  clients:\n    - {client_id: cursor-guide, type: public, redirect_uris: [cursor], scopes: [read:user_data]}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, mcpURL := startReadyStack(t, binDir, func(env map[string]string) {
			env["REDIS_URL"] = rdb.URL()
			env["DEVAUTH_CONFIG_FILE"] = config
		})
		env := s.env
		out := s.stdout.String()
		if !strings.Contains(out, "Cache: Redis") {
			t.Errorf("output does not say the cache is Redis:\n%s", out)
		}
		if !strings.Contains(out, "devauth's MCP settings (PropelAuth's MCP dashboard page): "+config) {
			t.Errorf("output does not name DEVAUTH_CONFIG_FILE's file:\n%s", out)
		}
		checkGuideClient(t, out, mcpURL, "cursor-guide", "")
		if code, body := get(t, "http://"+env["AUTHZ_METRICS_LISTEN"]+"/readyz"); code != http.StatusOK {
			t.Errorf("authz /readyz with Redis: %d %s", code, body)
		}
		kids := children(t, s.cmd.Process.Pid)
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		st := s.waitExit(t)
		if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("run-stack.sh ended with %v, want death by SIGTERM", st)
		}
		for pid, name := range kids {
			if alive(pid) {
				t.Errorf("%s (pid %d) still running after run-stack.sh exited", name, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	t.Run("DEVAUTH_TEST_API: the banner says so, and the docs' recipes work", func(t *testing.T) {
		t.Parallel()
		s, mcpURL := startReadyStack(t, binDir, func(env map[string]string) { env["DEVAUTH_TEST_API"] = "true" })
		env := s.env
		_, devauthPort, _ := net.SplitHostPort(env["DEVAUTH_LISTEN"])
		if want := "devauth test API is ON (DEVAUTH_TEST_API): anyone who reaches http://localhost:" + devauthPort + "/dev/"; !strings.Contains(s.stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, s.stdout)
		}
		checkDocRecipes(t, mcpURL, env)
	})

	t.Run("a crashed service stops the rest", func(t *testing.T) {
		t.Parallel()
		s, _ := startReadyStack(t, binDir, nil)
		kids := children(t, s.cmd.Process.Pid)
		var authzPID int
		for pid, name := range kids {
			if name == authz {
				authzPID = pid
			}
		}
		if authzPID == 0 {
			t.Fatalf("no authz among the children %v", kids)
		}
		if err := syscall.Kill(authzPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		st := s.waitExit(t)
		if st.ExitCode() != 1 {
			t.Errorf("run-stack.sh exit status %d, want 1", st.ExitCode())
		}
		if line := strings.TrimSpace(s.stderr.String()); strings.Contains(line, "\n") || !strings.HasPrefix(line, "run-stack: authz exited") {
			t.Errorf("stderr is not one line saying authz exited:\n%s", line)
		}
		for pid, name := range kids {
			if alive(pid) {
				t.Errorf("%s (pid %d) still running after run-stack.sh exited", name, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}
