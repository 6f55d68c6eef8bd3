package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	mcpstack "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// python is Debian's interpreter, where `make test-deps` installs python3-jwt
// (a python3 earlier on PATH, such as pyenv's, may not have it).
const python = "/usr/bin/python3"

// docBlock is a fenced code block of a Markdown file and the HTML comment
// line right above it ("" when there is none).
type docBlock struct {
	lang, comment, code string
}

// docBlocks returns the fenced code blocks of a Markdown file.
func docBlocks(t *testing.T, rel string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	var out []docBlock
	re := regexp.MustCompile("(?ms)(?:^(<!--[^\n]*-->)\n)?^```([a-z]*)\n(.*?)^```$")
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out = append(out, docBlock{comment: m[1], lang: m[2], code: m[3]})
	}
	return out
}

// taggedBlock returns the one block of lang whose comment starts with tag.
func taggedBlock(t *testing.T, blocks []docBlock, lang, tag string) string {
	t.Helper()
	var found []string
	for _, b := range blocks {
		if b.lang == lang && strings.HasPrefix(b.comment, "<!-- "+tag) {
			found = append(found, b.code)
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/federation.md: %d %s blocks marked %q, want 1", len(found), lang, tag)
	}
	return found[0]
}

// setConst replaces the value of the snippet's top-level constant name
// (NAME = "..." in Python, const NAME = '...'; in TypeScript).
func setConst(t *testing.T, code, name, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^((?:const )?` + name + ` = )(["'])[^"']*(["'])`)
	if !re.MatchString(code) {
		t.Fatalf("the snippet does not set %s:\n%s", name, code)
	}
	return re.ReplaceAllString(code, "${1}${2}"+value+"${3}")
}

// captureUpstream is an MCP server (go-sdk, streamable HTTP, stateless) with
// one tool, whoami, that records the identity assertion each call carried.
type captureUpstream struct {
	url string
	mu  sync.Mutex
	ids []string
}

func startCaptureUpstream(t *testing.T) *captureUpstream {
	t.Helper()
	c := &captureUpstream{}
	server := mcp.NewServer(&mcp.Implementation{Name: "capture", Version: "1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Records the identity assertion."},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, struct{}, error) {
			c.mu.Lock()
			c.ids = append(c.ids, req.Extra.Header.Get("X-Mcpauthz-Identity"))
			c.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "recorded"}}}, struct{}{}, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	c.url = "http://" + ln.Addr().String() + "/mcp"
	return c
}

func (c *captureUpstream) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) == 0 {
		return ""
	}
	return c.ids[len(c.ids)-1]
}

// TestFederationDocsVerifiers runs the identity checks docs/federation.md
// shows for Python (PyJWT) and TypeScript (jose), as written there, against
// an assertion the gateway really sent to an upstream: each returns the
// caller the gateway vouched for, and refuses the assertion for another
// audience and with a broken signature. The FastMCP wiring block is only
// compiled: FastMCP cannot be installed here (no PyPI).
func TestFederationDocsVerifiers(t *testing.T) {
	slow(t)
	t.Parallel()
	if out, err := exec.Command(python, "-c", "import jwt, cryptography").CombinedOutput(); err != nil {
		t.Fatalf("%s with PyJWT: %v\n%s\n(`make test-deps` installs Debian's python3-jwt)", python, err, out)
	}
	if _, err := testenv.EverythingScript(); err != nil { // e2e/ts/node_modules, where jose is
		t.Fatal(err)
	}
	blocks := docBlocks(t, "docs/federation.md")
	pyVerify := taggedBlock(t, blocks, "python", "tested:")
	pyFastMCP := taggedBlock(t, blocks, "python", "syntax-checked only")
	tsVerify := taggedBlock(t, blocks, "ts", "tested:")

	up := startCaptureUpstream(t)
	file := filepath.Join(t.TempDir(), "upstreams.yaml")
	if err := os.WriteFile(file, []byte("upstreams:\n  - name: capture\n    url: "+up.url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mcpstack.New(t, mcpstack.Options{Authz: 1, Gateways: 1, GatewayEnv: []string{"UPSTREAMS_FILE=" + file}})
	issuer := s.Gateways[0].URL

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mint, _ := json.Marshal(map[string]any{"email": seedusers.AliceEmail, "scopes": []string{"read:user_data"}, "resource": s.Resource})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	post(ctx, t, s.Devauth.URL+"/dev/tokens", s.Options.Credentials.APIKey, nil, mint, &tok)
	mcpRequest(ctx, t, s.Resource, tok.AccessToken, "tools/call", `{"name":"whoami","arguments":{}}`)
	assertion := up.last()
	if strings.Count(assertion, ".") != 2 {
		t.Fatalf("the upstream received no identity assertion (%q)", assertion)
	}
	// A signature that does not verify: the last character of the signature
	// changed (its low bits may be padding, so change it to one that differs
	// in the high bits too).
	last := assertion[len(assertion)-1]
	swap := byte('A')
	if last >= 'A' && last <= 'Z' {
		swap = 'g'
	}
	forged := assertion[:len(assertion)-10] + strings.Repeat(string(swap), 10)

	want := map[string]any{"sub": seedusers.AliceID, "scopes": []any{"read:user_data"}}
	// refusedPy and refusedTS are what each library's error says (on the
	// program's stderr) when it refuses: a refusal for any other reason (a
	// missing module, a syntax error) is a failure of the test.
	cases := []struct {
		name                 string
		audience             string
		assertion            string
		refusedPy, refusedTS string // "": accepted
	}{
		{"the gateway's assertion", up.url, assertion, "", ""},
		{"another audience", "http://other.internal:8081/mcp", assertion, "jwt.exceptions.InvalidAudienceError", `code: 'ERR_JWT_CLAIM_VALIDATION_FAILED'`},
		{"a broken signature", up.url, forged, "jwt.exceptions.InvalidSignatureError", `code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'`},
	}

	t.Run("Python", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		dir := t.TempDir()
		for _, tc := range cases {
			code := setConst(t, setConst(t, pyVerify, "GATEWAY", issuer), "AUDIENCE", tc.audience)
			prog := filepath.Join(dir, "verify.py")
			driver := code + "\n\nimport json, sys\nprint(json.dumps(caller(sys.argv[1])))\n"
			if err := os.WriteFile(prog, []byte(driver), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(ctx, python, prog, tc.assertion).Output()
			checkVerifier(t, "Python: "+tc.name, tc.refusedPy, out, err, want)
		}
		// The FastMCP block uses caller and jwt from the first one.
		prog := filepath.Join(dir, "fastmcp_server.py")
		if err := os.WriteFile(prog, []byte(pyVerify+"\n"+pyFastMCP), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(ctx, python, "-m", "py_compile", prog).CombinedOutput(); err != nil {
			t.Errorf("the FastMCP block does not compile: %v\n%s", err, out)
		}
	})

	t.Run("TypeScript", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		node, err := exec.LookPath("node")
		if err != nil {
			t.Fatal("node not found on PATH: `make test-deps` installs it")
		}
		dir := t.TempDir()
		// ESM resolves "jose" from a node_modules above the file.
		if err := os.Symlink(filepath.Join(repoRoot, "e2e", "ts", "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
			t.Fatal(err)
		}
		for i, tc := range cases {
			code := setConst(t, setConst(t, tsVerify, "GATEWAY", issuer), "AUDIENCE", tc.audience)
			mod := fmt.Sprintf("verify%d.mjs", i)
			if err := os.WriteFile(filepath.Join(dir, mod), []byte(code), 0o600); err != nil {
				t.Fatal(err)
			}
			driver := filepath.Join(dir, fmt.Sprintf("driver%d.mjs", i))
			src := "import { caller } from './" + mod + "';\nconsole.log(JSON.stringify(await caller(process.argv[2])));\n"
			if err := os.WriteFile(driver, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(ctx, node, driver, tc.assertion).Output()
			checkVerifier(t, "TypeScript: "+tc.name, tc.refusedTS, out, err, want)
		}
	})
}

// checkVerifier checks what a verifier program printed: the caller's sub and
// scopes when it should accept (refused ""), else a failure whose stderr
// says refused.
func checkVerifier(t *testing.T, name, refused string, out []byte, err error, want map[string]any) {
	t.Helper()
	var stderr string
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		stderr = string(ee.Stderr)
	}
	if refused != "" {
		switch {
		case err == nil:
			t.Errorf("%s: accepted (%s), want a refusal", name, out)
		case !strings.Contains(stderr, refused):
			t.Errorf("%s: failed (%v), but not with %s:\n%s", name, err, refused, stderr)
		default:
			t.Logf("%s: refused as it should (%s)", name, refused)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: %v\n%s", name, err, stderr)
		return
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Errorf("%s: printed %q: %v", name, out, err)
		return
	}
	if d := cmp.Diff(want["sub"], got["sub"]); d != "" {
		t.Errorf("%s: sub (-want +got):\n%s", name, d)
	}
	if d := cmp.Diff(want["scopes"], got["scopes"]); d != "" {
		t.Errorf("%s: scopes (-want +got):\n%s", name, d)
	}
	if id, _ := got["client_id"].(string); id == "" {
		if id, _ = got["clientId"].(string); id == "" {
			t.Errorf("%s: no client ID in %s", name, out)
		}
	}
}
