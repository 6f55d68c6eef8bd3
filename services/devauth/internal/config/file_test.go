package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/redirects"
)

var defaultScopes = []string{"read:user_data", "read:org_data"}

// TestExampleFileIsTheDefault: devauth.example.yaml, which docs/devauth.md and the guide
// tell users to copy, says exactly what devauth does without a file.
func TestExampleFileIsTheDefault(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "devauth.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, scopes, err := ParseMCP(data, nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultMCP(defaultScopes), got); diff != "" {
		t.Errorf("devauth.example.yaml differs from the defaults (-default +file):\n%s", diff)
	}
	if diff := cmp.Diff(defaultScopes, scopes); diff != "" {
		t.Errorf("scopes (-default +file):\n%s", diff)
	}
	// Every template the code knows is documented in the file.
	for _, name := range redirects.TemplateNames() {
		if !strings.Contains(string(data), "#   "+name+" ") {
			t.Errorf("devauth.example.yaml does not document the template %q", name)
		}
	}
}

func TestParseMCP(t *testing.T) {
	t.Parallel()
	getenv := env(map[string]string{"WEB_SECRET": "from-the-environment"})
	tests := []struct {
		name      string
		yaml      string
		envScopes []string
		check     func(t *testing.T, m MCP, scopes []string)
		wantErr   string // a substring of the error; "" = success
	}{
		{name: "empty file", yaml: "", check: func(t *testing.T, m MCP, scopes []string) {
			if diff := cmp.Diff(DefaultMCP(defaultScopes), m); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		}},
		{name: "guide setup", yaml: `
mcp:
  allowed_redirect_uris: [cursor, "https://app.example.com/cb"]
  scopes:
    - {name: "read:user_data", description: "Read your profile"}
    - {name: "tools:execute"}
  dcr: false
  clients:
    - client_id: cursor-client
      type: public
      redirect_uris: [cursor]
      scopes: ["read:user_data"]
    - client_id: web
      name: "  Web app  "
      type: confidential
      client_secret: ${WEB_SECRET}
      redirect_uris: ["https://app.example.com/cb"]
`, check: func(t *testing.T, m MCP, scopes []string) {
			want := MCP{
				Enabled:             true,
				AllowedRedirectURIs: []string{"cursor://anysphere.cursor-mcp/oauth/callback", "http://localhost:8787/callback", "https://app.example.com/cb"},
				ScopeDescriptions:   map[string]string{"read:user_data": "Read your profile"},
				DCR:                 false,
				TokenAuthMethods:    AllTokenAuthMethods,
				Clients: []Client{
					{ID: "cursor-client", RedirectURIs: []string{"cursor://anysphere.cursor-mcp/oauth/callback", "http://localhost:8787/callback"}, Scopes: []string{"read:user_data"}},
					{ID: "web", Name: "Web app", Confidential: true, Secret: "from-the-environment",
						RedirectURIs: []string{"https://app.example.com/cb"}, Scopes: []string{"read:user_data", "tools:execute"}},
				},
			}
			if diff := cmp.Diff(want, m); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"read:user_data", "tools:execute"}, scopes); diff != "" {
				t.Errorf("scopes (-want +got):\n%s", diff)
			}
		}},
		{name: "no clients", yaml: "mcp: {clients: []}", check: func(t *testing.T, m MCP, _ []string) {
			if len(m.Clients) != 0 {
				t.Errorf("clients = %v, want none", m.Clients)
			}
		}},
		{name: "DEVAUTH_SCOPES reach the demo client", yaml: "mcp: {enabled: false}", envScopes: []string{"a", "b"}, check: func(t *testing.T, m MCP, scopes []string) {
			if m.Enabled || !slices.Equal(scopes, []string{"a", "b"}) || !slices.Equal(m.Clients[0].Scopes, scopes) {
				t.Errorf("enabled %v, scopes %v, demo client's %v", m.Enabled, scopes, m.Clients[0].Scopes)
			}
		}},
		{name: "narrowed auth methods", yaml: "mcp: {token_endpoint_auth_methods: [client_secret_basic, none, none]}", check: func(t *testing.T, m MCP, _ []string) {
			if !slices.Equal(m.TokenAuthMethods, []string{"client_secret_basic", "none"}) {
				t.Errorf("methods = %v", m.TokenAuthMethods)
			}
		}},
		{name: "a client pattern within a broader one", yaml: `
mcp:
  allowed_redirect_uris: ["http://127.0.0.1/*"]
  clients: [{client_id: cli, type: public, redirect_uris: ["http://127.0.0.1/cli/*", "http://127.0.0.1:8080/cb"]}]
`, check: func(t *testing.T, m MCP, _ []string) {
			if len(m.Clients) != 1 {
				t.Errorf("clients = %v", m.Clients)
			}
		}},

		{name: "unknown key", yaml: "mcp: {dcr: true, allowed_clients: [cursor]}", wantErr: "field allowed_clients not found"},
		{name: "top-level typo", yaml: "mpc: {}", wantErr: "field mpc not found"},
		{name: "not YAML", yaml: "mcp: [", wantErr: "yaml"},
		{name: "two documents", yaml: "mcp: {}\n---\nmcp: {}\n", wantErr: "more than one YAML document"},
		{name: "wrong type", yaml: "mcp: {dcr: sometimes}", wantErr: "sometimes"},
		{name: "duplicate key", yaml: "mcp: {dcr: true, dcr: false}", wantErr: "already defined"},
		{name: "unknown template", yaml: "mcp: {allowed_redirect_uris: [vscode]}", wantErr: `mcp.allowed_redirect_uris: "vscode" is neither a URI nor a template (chatgpt, claude, cursor, loopback)`},
		{name: "remote http", yaml: `mcp: {allowed_redirect_uris: ["http://app.example.com/cb"]}`, wantErr: "mcp.allowed_redirect_uris"},
		{name: "star in the middle", yaml: `mcp: {allowed_redirect_uris: ["https://*.example.com/cb"]}`, wantErr: "only at the end of the path"},
		{name: "star after a partial segment", yaml: `mcp: {allowed_redirect_uris: ["https://app.example.com/cb*"]}`, wantErr: `must end a path that ends in "/"`},
		{name: "scopes twice", yaml: "mcp: {scopes: [{name: a}]}", envScopes: []string{"a"}, wantErr: "DEVAUTH_SCOPES is set too"},
		{name: "no scopes", yaml: "mcp: {scopes: []}", wantErr: "mcp.scopes: must list at least one scope"},
		{name: "bad scope", yaml: `mcp: {scopes: [{name: "a b"}]}`, wantErr: "mcp.scopes[0].name"},
		{name: "duplicate scope", yaml: `mcp: {scopes: [{name: a}, {name: a}]}`, wantErr: "mcp.scopes[1].name"},
		{name: "offline_access scope", yaml: `mcp: {scopes: [{name: offline_access}]}`, wantErr: "offline_access"},
		{name: "unknown auth method", yaml: `mcp: {token_endpoint_auth_methods: [private_key_jwt]}`, wantErr: "private_key_jwt"},
		{name: "no auth method", yaml: `mcp: {token_endpoint_auth_methods: []}`, wantErr: "at least one method"},
		{name: "demo client outside the allow list", yaml: `mcp: {allowed_redirect_uris: [loopback]}`, wantErr: "the demo client demo-mcp-client (set mcp.clients to replace it): redirect URI \"cursor://anysphere.cursor-mcp/oauth/callback\" is not in mcp.allowed_redirect_uris"},
		{name: "client outside the allow list", yaml: `mcp: {allowed_redirect_uris: [cursor], clients: [{client_id: c, type: public, redirect_uris: [claude]}]}`, wantErr: "mcp.clients[0]: redirect URI \"https://claude.ai/api/mcp/auth_callback\" is not in mcp.allowed_redirect_uris"},
		{name: "client pattern broader than the allow list", yaml: `mcp: {allowed_redirect_uris: ["http://127.0.0.1/cb"], clients: [{client_id: c, type: public, redirect_uris: [loopback]}]}`, wantErr: "is not in mcp.allowed_redirect_uris"},
		{name: "public client without none", yaml: `mcp: {token_endpoint_auth_methods: [client_secret_post], clients: [{client_id: c, type: public, redirect_uris: [cursor]}]}`, wantErr: "mcp.clients[0]: a public client needs none"},
		{name: "demo client without a secret method", yaml: `mcp: {token_endpoint_auth_methods: [none]}`, wantErr: "a confidential client needs client_secret_basic or client_secret_post"},
		{name: "client without id", yaml: `mcp: {clients: [{type: public, redirect_uris: [cursor]}]}`, wantErr: "mcp.clients[0]: client_id \"\""},
		{name: "client id with a colon", yaml: `mcp: {clients: [{client_id: "a:b", type: public, redirect_uris: [cursor]}]}`, wantErr: "client_id \"a:b\""},
		{name: "client id of DCR", yaml: `mcp: {clients: [{client_id: dcr_x, type: public, redirect_uris: [cursor]}]}`, wantErr: "reserved"},
		{name: "client id twice", yaml: `mcp: {clients: [{client_id: a, type: public, redirect_uris: [cursor]}, {client_id: a, type: public, redirect_uris: [cursor]}]}`, wantErr: "mcp.clients[1]: client_id \"a\" is used twice"},
		{name: "client without type", yaml: `mcp: {clients: [{client_id: a, redirect_uris: [cursor]}]}`, wantErr: "mcp.clients[0]: type"},
		{name: "public client with a secret", yaml: `mcp: {clients: [{client_id: a, type: public, client_secret: s, redirect_uris: [cursor]}]}`, wantErr: "a public client has no secret"},
		{name: "confidential client without a secret", yaml: `mcp: {clients: [{client_id: a, type: confidential, redirect_uris: [cursor]}]}`, wantErr: "mcp.clients[0]: client_secret: a confidential client needs one"},
		{name: "secret from an unset variable", yaml: `mcp: {clients: [{client_id: a, type: confidential, client_secret: "${NOT_SET}", redirect_uris: [cursor]}]}`, wantErr: "${NOT_SET} is not set"},
		{name: "client without redirect URIs", yaml: `mcp: {clients: [{client_id: a, type: public}]}`, wantErr: "redirect_uris: must list"},
		{name: "client with an unknown scope", yaml: `mcp: {clients: [{client_id: a, type: public, redirect_uris: [cursor], scopes: [admin]}]}`, wantErr: `scopes: "admin" is not in mcp.scopes`},
		{name: "client with no scope", yaml: `mcp: {clients: [{client_id: a, type: public, redirect_uris: [cursor], scopes: []}]}`, wantErr: "scopes: must list at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, scopes, err := ParseMCP([]byte(tt.yaml), tt.envScopes, getenv)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, m, scopes)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}

// TestLoadConfigFile: the file is read through Load, and any problem with it
// is one line naming DEVAUTH_CONFIG_FILE and the file.
func TestLoadConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "mcp: {dcr: false, clients: [{client_id: c, type: confidential, client_secret: \"${C_SECRET}\", redirect_uris: [cursor]}]}")
	c, err := Load(env(with("DEVAUTH_CONFIG_FILE", good, "C_SECRET", "s3cret-value")))
	if err != nil {
		t.Fatal(err)
	}
	if c.ConfigFile != good || c.MCP.DCR || c.MCP.Clients[0].Secret != "s3cret-value" || !slices.Equal(c.Scopes, defaultScopes) {
		t.Errorf("config from %s: %+v", good, c)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	if strings.Contains(b.String(), "s3cret-value") || !strings.Contains(b.String(), `"dcr":false`) {
		t.Errorf("logged configuration leaks the client secret or lacks the settings: %s", b.String())
	}

	for name, tc := range map[string]struct{ file, want string }{
		"missing":  {filepath.Join(dir, "nope.yaml"), "no such file"},
		"too big":  {write("big.yaml", "#"+strings.Repeat("x", maxConfigFile)), "larger than"},
		"bad file": {write("bad.yaml", "mcp: {dcr: maybe}"), "maybe"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(env(with("DEVAUTH_CONFIG_FILE", tc.file)))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != "DEVAUTH_CONFIG_FILE" {
				t.Fatalf("err = %v, want an *Error naming %s", err, "DEVAUTH_CONFIG_FILE")
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "DEVAUTH_CONFIG_FILE"+": "+tc.file+": ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line naming %s, the file and %q", msg, "DEVAUTH_CONFIG_FILE", tc.want)
			}
		})
	}
}

// FuzzParseMCP: any file gives settings or an error, never a panic, and
// accepted settings keep every client within the allow list.
func FuzzParseMCP(f *testing.F) {
	for _, s := range []string{
		"", "mcp: {}", "mcp: {allowed_redirect_uris: [cursor, loopback], dcr: false}",
		"mcp: {clients: [{client_id: a, type: public, redirect_uris: [\"http://127.0.0.1/x/*\"]}]}",
		"mcp: {scopes: [{name: a, description: b}], clients: [{client_id: c, type: confidential, client_secret: \"${S}\", redirect_uris: [chatgpt]}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, scopes, err := ParseMCP(data, nil, env(map[string]string{"S": "x"}))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			return
		}
		allow, err := redirects.NewAllowList(m.AllowedRedirectURIs)
		if err != nil {
			t.Fatalf("accepted allow list %v does not build: %v", m.AllowedRedirectURIs, err)
		}
		for _, c := range m.Clients {
			for _, r := range c.RedirectURIs {
				if !allow.Covers(r) {
					t.Errorf("client %s: %q outside the allow list %v", c.ID, r, m.AllowedRedirectURIs)
				}
			}
			for _, s := range c.Scopes {
				if !slices.Contains(scopes, s) {
					t.Errorf("client %s: scope %q outside %v", c.ID, s, scopes)
				}
			}
		}
	})
}
