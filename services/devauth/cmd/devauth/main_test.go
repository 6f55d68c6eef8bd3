package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/config"
)

const (
	testAPIKey   = "binary-test-api-key"
	testRVSecret = "binary-test-rv-secret"
)

// baseEnv is devauth's environment listening on addr; on port 0 it leaves
// PROPELAUTH_AUTH_URL unset, to follow the port bound.
func baseEnv(addr string) []string {
	env := []string{"DEVAUTH_LISTEN=" + addr}
	if !strings.HasSuffix(addr, ":0") {
		env = append(env, "PROPELAUTH_AUTH_URL=http://"+addr)
	}
	return append(env,
		"REQUEST_VALIDATION_CLIENT_ID=rv",
		"REQUEST_VALIDATION_CLIENT_SECRET="+testRVSecret,
		"PROPELAUTH_API_KEY="+testAPIKey,
		"DEVAUTH_TEST_API=true",
	)
}

// startDevauth starts the binary on port 0 with env and returns it and the
// address it bound.
func startDevauth(t *testing.T, env ...string) (*testenv.Process, string) {
	t.Helper()
	p := testenv.StartProcess(t, "devauth", testenv.Binary(t, "devauth"), testenv.ProcessOptions{
		Env: append(baseEnv("127.0.0.1:0"), env...), ReadyListener: "DEVAUTH_LISTEN", ReadyPath: "/healthz",
	})
	addr, err := p.Listening(t.Context(), "DEVAUTH_LISTEN")
	if err != nil {
		t.Fatal(err)
	}
	return p, addr
}

func TestBinaryServesAndStopsGracefully(t *testing.T) {
	t.Parallel()
	p, addr := startDevauth(t)
	_, port, _ := net.SplitHostPort(addr)

	resp, err := http.Get("http://" + addr + "/.well-known/oauth-authorization-server/oauth/2.1")
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	err = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	// PROPELAUTH_AUTH_URL is unset: the issuer names the port bound.
	if want := "http://localhost:" + port + "/oauth/2.1"; err != nil || md["issuer"] != want {
		t.Errorf("metadata issuer = %v (%v), want %s", md["issuer"], err, want)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/dev/tokens", strings.NewReader(`{"email":"alice@example.com"}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("mint via binary: %v %v", err, resp)
	}
	resp.Body.Close()

	// A request held by the hang fault must not delay shutdown.
	req, _ = http.NewRequest("POST", "http://"+addr+"/dev/faults", strings.NewReader(`{"mode":"hang"}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("setting the hang fault: %v %v", err, resp)
	}
	hung := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Post("http://"+addr+"/oauth/2.1/introspect", "application/x-www-form-urlencoded", strings.NewReader("token=x"))
		if err == nil {
			resp.Body.Close()
		}
		hung <- err
	}()
	waitIntrospections(t, addr, 1) // the request is now held by the fault

	// Without releasing it, Shutdown would time out and devauth exit 1.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if err := <-hung; err == nil {
		t.Error("the hung request got an answer; want the connection dropped")
	}
	out := p.Output()
	for _, want := range []string{`"msg":"starting devauth"`, `"msg":"devauth serving"`, `"msg":"stopped"`, `"REQUEST_VALIDATION_CLIENT_SECRET":"<set>"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{testAPIKey, testRVSecret, config.DemoClientSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret:\n%s", out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
}

// waitIntrospections polls /dev/stats until n introspections were counted.
func waitIntrospections(t *testing.T, addr string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/dev/stats", nil)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var s struct{ Introspections int64 }
			_ = json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
			if s.Introspections >= n {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("devauth never counted %d introspections", n)
}

func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "devauth")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	usersFile := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(usersFile, []byte(`{"users":[{"user_id":"1","email":"a@b.example","pasword":"typo"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	without := func(name string) []string {
		return slices.DeleteFunc(baseEnv("127.0.0.1:0"), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	}
	badConfig := filepath.Join(t.TempDir(), "devauth.yaml")
	if err := os.WriteFile(badConfig, []byte("mcp: {allowed_redirect_uris: [vscode]}"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        []string
		wantVar    string
		afterStart bool
	}{
		{"missing api key", without("PROPELAUTH_API_KEY"), "PROPELAUTH_API_KEY", false},
		{"missing rv secret", without("REQUEST_VALIDATION_CLIENT_SECRET"), "REQUEST_VALIDATION_CLIENT_SECRET", false},
		{"bad ttl", append(baseEnv("127.0.0.1:0"), "DEVAUTH_TOKEN_TTL=soon"), "DEVAUTH_TOKEN_TTL", false},
		{"bad client ttl", append(baseEnv("127.0.0.1:0"), "DEVAUTH_CLIENT_TTL=10s"), "DEVAUTH_CLIENT_TTL", false},
		{"bad cimd switch", append(baseEnv("127.0.0.1:0"), "DEVAUTH_CIMD_ALLOW_LOOPBACK=maybe"), "DEVAUTH_CIMD_ALLOW_LOOPBACK", false},
		{"bad url", append(baseEnv("127.0.0.1:0"), "PROPELAUTH_AUTH_URL=localhost"), "PROPELAUTH_AUTH_URL", false},
		{"unknown auto-approve user", append(baseEnv("127.0.0.1:0"), "DEVAUTH_AUTO_APPROVE=eve@example.com"), "DEVAUTH_AUTO_APPROVE", false},
		{"bad users file", append(baseEnv("127.0.0.1:0"), "DEVAUTH_USERS_FILE="+usersFile), "DEVAUTH_USERS_FILE", false},
		{"missing users file", append(baseEnv("127.0.0.1:0"), "DEVAUTH_USERS_FILE=/nonexistent/users.json"), "DEVAUTH_USERS_FILE", false},
		{"busy port", append(without("DEVAUTH_LISTEN"), "DEVAUTH_LISTEN="+busy.Addr().String()), "DEVAUTH_LISTEN", true},
		{"bad config file", append(baseEnv("127.0.0.1:0"), "DEVAUTH_CONFIG_FILE="+badConfig), "DEVAUTH_CONFIG_FILE", false},
		{"missing config file", append(baseEnv("127.0.0.1:0"), "DEVAUTH_CONFIG_FILE=/nonexistent/devauth.yaml"), "DEVAUTH_CONFIG_FILE", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartProcess(t, "devauth", bin, testenv.ProcessOptions{Env: tt.env})
			err := p.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1", err)
			}
			// A bad value stops devauth before it logs anything; a port
			// that turns out busy, after the start line.
			lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, tt.wantVar) || !strings.HasPrefix(last, "devauth: ") || (len(lines) > 1) != tt.afterStart {
				t.Errorf("output does not end with one line naming %s (after the start line: %v):\n%s", tt.wantVar, tt.afterStart, p.Output())
			}
			for _, l := range lines[:len(lines)-1] {
				if !json.Valid([]byte(l)) {
					t.Errorf("line %q before the error is not a JSON log line", l)
				}
			}
		})
	}
}

func TestBinaryListEnv(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "devauth")
	out, err := exec.Command(bin, "-list-env").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if !slices.Equal(got, config.EnvNames()) || !slices.IsSorted(got) {
		t.Errorf("-list-env = %v, want %v", got, config.EnvNames())
	}
	for _, want := range []string{"DEVAUTH_LISTEN", "PROPELAUTH_AUTH_URL", "PROPELAUTH_API_KEY", "LOG_LEVEL"} {
		if !slices.Contains(got, want) {
			t.Errorf("-list-env lacks %s", want)
		}
	}
	if err := exec.Command(bin, "-no-such-flag").Run(); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestBinaryUsersFileAndAutoApprove(t *testing.T) {
	t.Parallel()
	usersFile := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(usersFile, []byte(`{"users":[{"user_id":"carol-1","email":"carol@example.com","password":"pw","first_name":"Carol"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := startDevauth(t, "DEVAUTH_USERS_FILE="+usersFile, "DEVAUTH_AUTO_APPROVE=carol@example.com")
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/backend/v1/user/carol-1", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var u map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&u)
	resp.Body.Close()
	if resp.StatusCode != 200 || u["first_name"] != "Carol" {
		t.Errorf("user API = %d %v", resp.StatusCode, u)
	}
	req, _ = http.NewRequest("GET", "http://"+addr+"/api/backend/v1/user/8a1f0c2e-6b1d-4c55-9d3a-2f7e1b6a9c01", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("seeded alice still present with a users file: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
}

// TestBinaryCIMDLoopbackSwitch: devauth fetches a Client ID Metadata Document
// from a loopback address only with DEVAUTH_CIMD_ALLOW_LOOPBACK=true.
func TestBinaryCIMDLoopbackSwitch(t *testing.T) {
	t.Parallel()
	var fetches atomic.Int64
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"client_id":"http://%s/client.json","client_name":"Loopback CIMD","redirect_uris":["http://127.0.0.1:4300/cb"]}`, r.Host)
	}))
	t.Cleanup(host.Close)
	authorize := func(addr string) (int, string) {
		q := url.Values{
			"response_type": {"code"}, "client_id": {host.URL + "/client.json"}, "redirect_uri": {"http://127.0.0.1:4300/cb"},
			"code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S256"},
			"resource": {"http://localhost:8000/mcp"},
		}
		resp, err := http.Get("http://" + addr + "/oauth/2.1/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name   string
		env    []string
		status int
	}{
		{"default: refused", nil, http.StatusBadRequest},
		{"switched on", []string{"DEVAUTH_CIMD_ALLOW_LOOPBACK=true"}, http.StatusOK},
	} {
		_, addr := startDevauth(t, tc.env...)
		before := fetches.Load()
		status, body := authorize(addr)
		if status != tc.status {
			t.Errorf("%s: /authorize = %d, want %d\n%s", tc.name, status, tc.status, body)
		}
		if fetched := fetches.Load() > before; fetched != (tc.status == http.StatusOK) || (fetched && !strings.Contains(body, "Loopback CIMD")) {
			t.Errorf("%s: document fetched = %v; page:\n%s", tc.name, fetched, body)
		}
	}
}

// TestBinaryPrintMCPJSON: -print-mcp-json prints Cursor's mcp.json for a
// pre-registered client, the one `make run` shows, as PropelAuth's MCP guide
// writes it: the MCP URL and an "auth" block with the client's ID, its
// secret when it has one, and its scopes.
func TestBinaryPrintMCPJSON(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "devauth")
	file := filepath.Join(t.TempDir(), "devauth.yaml")
	if err := os.WriteFile(file, []byte(`
mcp:
  clients:
    - {client_id: web, type: confidential, client_secret: "${WEB_SECRET}", redirect_uris: [loopback]}
    - {client_id: cursor-public, type: public, redirect_uris: [cursor], scopes: [read:user_data]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	const mcpURL = "http://localhost:8000/mcp"
	type auth struct {
		ClientID     string   `json:"CLIENT_ID"`
		ClientSecret *string  `json:"CLIENT_SECRET"`
		Scopes       []string `json:"scopes"`
	}
	type mcpJSON struct {
		MCPServers map[string]struct {
			URL  string `json:"url"`
			Auth auth   `json:"auth"`
		} `json:"mcpServers"`
	}
	secret := func(s string) *string { return &s }
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want auth
	}{
		{"the demo client by default", nil, nil, auth{config.DemoClientID, secret(config.DemoClientSecret), []string{"read:user_data", "read:org_data"}}},
		{"the first configured client", []string{"DEVAUTH_CONFIG_FILE=" + file, "WEB_SECRET=web-secret"}, nil, auth{"web", secret("web-secret"), []string{"read:user_data", "read:org_data"}}},
		{"a public client has no secret", []string{"DEVAUTH_CONFIG_FILE=" + file, "WEB_SECRET=web-secret"}, []string{"-client", "cursor-public"}, auth{"cursor-public", nil, []string{"read:user_data"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, append([]string{"-print-mcp-json", mcpURL}, tc.args...)...)
			cmd.Env = append(baseEnv("127.0.0.1:0"), tc.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("-print-mcp-json: %v", err)
			}
			var got mcpJSON
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			s, ok := got.MCPServers["mcpauthz"]
			if len(got.MCPServers) != 1 || !ok || s.URL != mcpURL {
				t.Fatalf("mcpServers = %+v, want one server mcpauthz at %s", got.MCPServers, mcpURL)
			}
			if diff := cmp.Diff(tc.want, s.Auth); diff != "" {
				t.Errorf("auth block (-want +got):\n%s", diff)
			}
		})
	}
	for name, tc := range map[string]struct {
		env  []string
		args []string
		want string
	}{
		"unknown client": {nil, []string{"-print-mcp-json", mcpURL, "-client", "nope"}, `-client "nope": no such pre-registered client (demo-mcp-client)`},
		"no clients":     {[]string{"DEVAUTH_CONFIG_FILE=" + writeFile(t, "mcp: {clients: []}")}, []string{"-print-mcp-json", mcpURL}, "no pre-registered client"},
		"not a URL":      {nil, []string{"-print-mcp-json", "localhost:8000"}, "not an http(s) URL"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(baseEnv("127.0.0.1:0"), tc.env...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 {
				t.Fatalf("exit %v, stdout %q; want status 1 and nothing printed", err, out)
			}
			if line := strings.TrimSpace(stderr.String()); strings.Contains(line, "\n") || !strings.Contains(line, tc.want) {
				t.Errorf("stderr %q, want one line saying %q", line, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
