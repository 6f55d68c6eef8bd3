package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkDocRecipes does what the README and the docs tell a user to do,
// against a demo stack started by run-stack.sh with DEVAUTH_TEST_API=true
// (mcpURL is the MCP URL it announced, env its environment), with the docs'
// default ports replaced by the stack's:
//
//   - the token recipe of docs/grpc-api.md ("Trying it with grpcurl") mints a
//     token that can call both tools, who_am_i and list_my_orgs;
//   - the audience examples of docs/security.md ("Tokens") are accepted or
//     refused as stated;
//   - the README's Claude Desktop snippet is valid JSON naming the MCP URL.
func checkDocRecipes(t *testing.T, mcpURL string, env map[string]string) {
	t.Helper()
	doc := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme, grpcAPI, security := doc("README.md"), doc("docs/grpc-api.md"), doc("docs/security.md")
	_, mcpPort, _ := net.SplitHostPort(env["MCP_LISTEN"])
	_, devauthPort, _ := net.SplitHostPort(env["DEVAUTH_LISTEN"])
	ports := strings.NewReplacer(":8000", ":"+mcpPort, ":9000", ":"+devauthPort)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	m := regexp.MustCompile(`curl -s -H 'Authorization: Bearer ([^']+)' \\\s+-d '([^']+)' \\\s+(\S+/dev/tokens)`).FindStringSubmatch(grpcAPI)
	if m == nil {
		t.Fatal("docs/grpc-api.md has no /dev/tokens recipe (curl -s -H 'Authorization: Bearer ...' -d '...' .../dev/tokens)")
	}
	apiKey, body, mintURL := m[1], ports.Replace(m[2]), ports.Replace(m[3])
	mint := func(body string) string {
		t.Helper()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		post(ctx, t, mintURL, apiKey, nil, []byte(body), &tok)
		if tok.AccessToken == "" {
			t.Fatalf("POST %s %s: no access_token", mintURL, body)
		}
		return tok.AccessToken
	}
	token := mint(body)
	gw := &gatewayProc{url: strings.TrimSuffix(mcpURL, "/mcp")}
	for _, tool := range []string{"who_am_i", "list_my_orgs"} {
		if res := callTool(ctx, t, gw, token, tool); res.status != http.StatusOK {
			t.Errorf("%s with docs/grpc-api.md's token (%s): %d, WWW-Authenticate %q", tool, body, res.status, res.header.Get("WWW-Authenticate"))
		} else if tool == "list_my_orgs" && !strings.Contains(fmt.Sprint(res.structured), "Acme") {
			t.Errorf("list_my_orgs does not list alice's org: %v", res.structured)
		}
	}

	m = regexp.MustCompile("(?s)with\\s+`MCP_SERVER_URL=http://localhost:8000`,\\s+a\\s+token\\s+for\\s+`([^`]+)`\\s+is\\s+accepted,\\s+and\\s+tokens\\s+for\\s+(.+?)\\s+are\\s+not\\.").FindStringSubmatch(security)
	if m == nil {
		t.Fatal("docs/security.md gives no audience examples (with `MCP_SERVER_URL=http://localhost:8000`, a token for `...` is accepted, and tokens for `...` are not.)")
	}
	refused := regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(m[2], -1)
	if len(refused) == 0 {
		t.Fatalf("no refused audience examples in %q", m[2])
	}
	examples := map[string]int{m[1]: http.StatusOK}
	for _, r := range refused {
		examples[r[1]] = http.StatusUnauthorized
	}
	for aud, want := range examples {
		res, _ := json.Marshal(ports.Replace(aud))
		tok := mint(`{"email":"alice@example.com","scopes":["read:user_data"],"resource":` + string(res) + `}`)
		if got := callTool(ctx, t, gw, tok, "who_am_i"); got.status != want {
			t.Errorf("token for audience %s: %d (%s), want %d as docs/security.md says", res, got.status, got.header.Get("WWW-Authenticate"), want)
		}
	}

	snippet := regexp.MustCompile(`\{ "mcpServers": \{ "mcpauthz": \{ "command": "npx".*\} \} \}`).FindString(readme)
	var desktop struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal([]byte(snippet), &desktop); err != nil {
		t.Fatalf("README.md's Claude Desktop snippet %q: %v", snippet, err)
	}
	if s := desktop.MCPServers["mcpauthz"]; s.Command != "npx" || strings.Join(s.Args, " ") != "-y mcp-remote http://localhost:8000/mcp" {
		t.Errorf("README.md's Claude Desktop snippet runs %q %q, want npx -y mcp-remote http://localhost:8000/mcp", s.Command, s.Args)
	}
}

// TestReadmeQuickStart: the README's quick start gives the two commands a
// newcomer needs, `make test` and `make run`, in its first shell block, and
// the Makefile has both targets; the sections other pages and guides point at
// (Quick start, Scaling, Documentation) exist.
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, h := range []string{"## Quick start", "## Scaling", "## Documentation"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(h) + `$`).MatchString(readme) {
			t.Errorf("README.md has no %q section", h)
		}
	}
	_, quick, _ := strings.Cut(readme, "\n## Quick start\n")
	quick, _, _ = strings.Cut(quick, "\n## ")
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(quick)
	if block == nil {
		t.Fatal("README.md's quick start has no ```sh block")
	}
	var commands []string
	for _, line := range strings.Split(strings.TrimSpace(block[1]), "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		commands = append(commands, strings.TrimSpace(cmd))
	}
	if want := []string{"make test", "make run"}; !slices.Equal(commands, want) {
		t.Errorf("README.md's quick start runs %q, want %q", commands, want)
	}
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"test", "run"} {
		if !regexp.MustCompile(`(?m)^` + target + `:`).Match(mk) {
			t.Errorf("the Makefile has no %q target, which README.md's quick start runs", target)
		}
	}
}
