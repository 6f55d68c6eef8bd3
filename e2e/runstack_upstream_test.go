package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// exampleUpstreams is the upstreams file `make run UPSTREAMS_FILE=...` is
// documented with.
var exampleUpstreams = filepath.Join(repoRoot, "examples", "upstreams.yaml")

// TestRunStackWithUpstreams: `make run UPSTREAMS_FILE=examples/upstreams.yaml`
// starts the example upstream too, on loopback, says in the banner what each
// upstream offers, and a token from the demo login reaches both upstreams'
// tools through the gateway: server-everything over stdio, and
// identity-upstream, which answers only requests whose identity assertion
// verifies, with the caller the gateway vouched for.
func TestRunStackWithUpstreams(t *testing.T) {
	slow(t)
	t.Parallel()
	binDir := stackBinDir(t)
	if d := filepath.Dir(testenv.Binary(t, "identity-upstream")); d != binDir {
		t.Fatalf("binaries in %s and %s", binDir, d)
	}
	// The stdio upstream runs from e2e/ts/node_modules.
	if _, err := testenv.EverythingScript(); err != nil {
		t.Fatal(err)
	}
	s, mcpURL := startReadyStack(t, binDir, func(env map[string]string) {
		env["UPSTREAMS_FILE"] = exampleUpstreams
		env["IDENTITY_UPSTREAM_LISTEN"] = stackAddr(t)
		env["DEVAUTH_TEST_API"] = "true"
	})
	env := s.env
	out := s.stdout.String()
	for _, want := range []string{
		"  Upstreams (UPSTREAMS_FILE=" + exampleUpstreams + "), behind the same login:\n",
		", identity-upstream " + env["IDENTITY_UPSTREAM_LISTEN"] + "\n",
		"identity-upstream}.log",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	// What each upstream offers, as the gateway logged its catalog.
	for name, min := range map[string]int{"everything": 10, "identity": 1} {
		m := regexp.MustCompile(`(?m)^    ` + name + `: (\d+) tools, \d+ prompts, \d+ resources, \d+ resource templates$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("banner has no catalog line for upstream %s:\n%s", name, out)
			continue
		}
		if n, _ := strconv.Atoi(m[1]); n < min {
			t.Errorf("banner: upstream %s has %d tools, want at least %d", name, n, min)
		}
	}

	// The example upstream listens where the banner says, on loopback only.
	up := 0
	for pid, comm := range procChildren(t, s.cmd.Process.Pid) {
		if comm != "identity-upstre" { // comm holds 15 characters
			continue
		}
		up = pid
		for _, ap := range listening(t, pid) {
			if !ap.Addr().IsLoopback() || ap.String() != env["IDENTITY_UPSTREAM_LISTEN"] {
				t.Errorf("identity-upstream listens on %s, want %s only", ap, env["IDENTITY_UPSTREAM_LISTEN"])
			}
		}
	}
	if up == 0 {
		t.Error("run-stack.sh did not start identity-upstream")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, devauthPort, _ := strings.Cut(env["DEVAUTH_LISTEN"], ":")
	mint, _ := json.Marshal(map[string]any{"email": seedusers.AliceEmail, "scopes": []string{"read:user_data"}, "resource": mcpURL})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	post(ctx, t, "http://127.0.0.1:"+devauthPort+"/dev/tokens", "demo-api-key", nil, mint, &tok)

	echo := mcpRequest(ctx, t, mcpURL, tok.AccessToken, "tools/call", `{"name":"everything_echo","arguments":{"message":"through the gateway"}}`)
	if !strings.Contains(string(echo), "through the gateway") {
		t.Errorf("everything_echo: %s", echo)
	}
	who := mcpRequest(ctx, t, mcpURL, tok.AccessToken, "tools/call", `{"name":"identity_whoami","arguments":{}}`)
	var res struct {
		Result struct {
			StructuredContent struct {
				Sub      string `json:"sub"`
				ClientID string `json:"client_id"`
			} `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal(who, &res); err != nil || res.Result.StructuredContent.Sub != seedusers.AliceID {
		t.Errorf("identity_whoami: %v, want alice's user ID %s: %s", err, seedusers.AliceID, who)
	}
}

// procChildren returns the comm names of the processes whose parent is pid.
func procChildren(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	matches, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range matches {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		comm := string(b[bytes.IndexByte(b, '(')+1 : i])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			p, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			out[p] = comm
		}
	}
	return out
}

// mcpRequest sends one JSON-RPC request to the MCP endpoint with a bearer
// token and returns the final JSON-RPC message of the answer (JSON, or the
// last event of an event stream). It fails t on anything but HTTP 200 or on
// a JSON-RPC error.
func mcpRequest(ctx context.Context, t *testing.T, mcpURL, token, method, params string) []byte {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, params)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, mcpURL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s (WWW-Authenticate %q): %s", method, params, resp.Status, resp.Header.Get("WWW-Authenticate"), raw)
	}
	msg := raw
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				msg = []byte(data)
			}
		}
	}
	var rpc struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(msg, &rpc); err != nil || rpc.Error != nil {
		t.Fatalf("%s %s: %v: %s", method, params, err, raw)
	}
	return msg
}
