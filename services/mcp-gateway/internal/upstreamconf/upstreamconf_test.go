package upstreamconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// defaults is an upstream as the file gives it with only name and url.
func defaults(name, url string) Upstream {
	return Upstream{
		Name:             name,
		URL:              url,
		Include:          []string{"*"},
		Timeout:          DefaultTimeout,
		Identity:         IdentityJWT,
		Refresh:          DefaultRefresh,
		MaxResponseBytes: DefaultMaxResponseBytes,
		Sessions:         SessionsPerCaller,
		MaxSessions:      DefaultMaxSessions,
		SessionIdle:      DefaultSessionIdle,
		MaxConcurrent:    DefaultMaxConcurrent,
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		env  func(string) string
		want *File
	}{
		{
			name: "lone upstream, defaults",
			yaml: "upstreams:\n  - name: docs\n    url: http://docs:8080/mcp\n",
			want: &File{BuiltinTools: true, StartTimeout: DefaultStartTimeout, Identity: Identity{TTL: 5 * time.Minute},
				Upstreams: []Upstream{defaults("docs", "http://docs:8080/mcp")}},
		},
		{
			name: "the contract's example, several upstreams",
			yaml: `
identity:
  signing_key_file: keys/identity.pem
  previous_key_files: [/secrets/old.pem]
  ttl: 2m
builtin_tools: false
start_timeout: 3s
upstreams:
  - name: everything
    url: http://everything:3001/mcp
    scopes: [read:user_data]
    tools:
      trigger-long-running-operation: {scopes: [write:jobs]}
    include: ["*"]
    exclude: ["get-env", "toggle-*"]
    timeout: 5s
    identity: none
    headers: {x-api-key: "${API_KEY}", X-Literal: "$$5 off"}
    sessions: shared
    max_sessions: 7
    session_idle: 1m
    refresh: 0s
    max_response_bytes: 65536
    max_concurrent: 3
  - name: local
    command: [node, server.js, "--token=${TOKEN}"]
    env: {B: two, A: "${TOKEN}"}
    dir: work
    prefix: ""
`,
			env: env("API_KEY", "k-123", "TOKEN", "t"),
			want: &File{
				BuiltinTools: false,
				StartTimeout: 3 * time.Second,
				Identity:     Identity{SigningKeyFile: "/etc/gw/keys/identity.pem", PreviousKeyFiles: []string{"/secrets/old.pem"}, TTL: 2 * time.Minute},
				Upstreams: []Upstream{
					func() Upstream {
						u := defaults("everything", "http://everything:3001/mcp")
						u.Prefix = "everything_"
						u.Scopes = []string{"read:user_data"}
						u.Tools = map[string]Tool{"trigger-long-running-operation": {Scopes: []string{"write:jobs"}}}
						u.Exclude = []string{"get-env", "toggle-*"}
						u.Timeout = 5 * time.Second
						u.Identity = IdentityNone
						u.Headers = map[string]string{"X-Api-Key": "k-123", "X-Literal": "$5 off"}
						u.Sessions = SessionsShared
						u.MaxSessions = 7
						u.SessionIdle = time.Minute
						u.Refresh = 0
						u.MaxResponseBytes = 65536
						u.MaxConcurrent = 3
						return u
					}(),
					func() Upstream {
						u := defaults("local", "")
						u.Command = []string{"node", "server.js", "--token=t"}
						u.Env = []string{"A=t", "B=two"}
						u.Dir = "/etc/gw/work"
						return u
					}(),
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.yaml), "/etc/gw", tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseErrors: every mistake is one line naming the key path.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	const head = "upstreams:\n  - name: a\n    url: http://a/mcp\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "the file is empty; it needs an upstreams list"},
		{"not yaml", "upstreams: [", "not YAML: line 1: did not find expected node content"},
		{"two documents", head + "---\n" + head, "more than one YAML document; the file holds one"},
		{"no upstreams", "builtin_tools: true\n", "upstreams: missing: list at least one upstream"},
		{"empty upstreams", "upstreams: []\n", "upstreams: empty: list at least one upstream"},
		{"unknown top key", head + "upstream: x\n", "upstream: unknown key (known here: builtin_tools, identity, start_timeout, upstreams)"},
		{"unknown upstream key", head + "    timeuot: 3s\n", "upstreams[0].timeuot: unknown key (known here: command, dir, env, exclude, headers, identity, include, max_concurrent, max_response_bytes, max_sessions, name, prefix, refresh, scopes, session_idle, sessions, timeout, tools, url)"},
		{"repeated key", head + "    url: http://b/mcp\n", "upstreams[0].url: given twice"},
		{"bad name", "upstreams:\n  - name: a\n    url: http://a/mcp\n  - name: Docs\n    url: http://d/mcp\n", `upstreams[1].name: "Docs" must be 1 to 32 of a-z, 0-9 and '-'`},
		{"duplicate name", head + "  - name: a\n    command: [x]\n", `upstreams[1].name: "a" is also the name of upstreams[0]`},
		{"no name", "upstreams:\n  - url: http://a/mcp\n", "upstreams[0].name: missing: every upstream needs a name"},
		{"both transports", head + "    command: [x]\n", "upstreams[0]: sets both url and command; set one"},
		{"no transport", "upstreams:\n  - name: a\n", "upstreams[0]: sets neither url (streamable HTTP) nor command (stdio); set one"},
		{"bad url", "upstreams:\n  - name: a\n    url: ftp://a/mcp\n", `upstreams[0].url: "ftp://a/mcp" is not an absolute http(s) URL`},
		{"url with credentials", "upstreams:\n  - name: a\n    url: http://u:secret@a/mcp\n", `upstreams[0].url: "http://u:xxxxx@a/mcp" must not carry credentials`},
		{"empty command", "upstreams:\n  - name: a\n    command: []\n", "upstreams[0].command: must name the program to run, then its arguments"},
		{"env on http", head + "    env: {A: b}\n", "upstreams[0].env: applies to stdio upstreams (command) only"},
		{"headers on stdio", "upstreams:\n  - name: a\n    command: [x]\n    headers: {A: b}\n", "upstreams[0].headers: applies to HTTP upstreams (url) only"},
		{"sessions on stdio", "upstreams:\n  - name: a\n    command: [x]\n    sessions: shared\n", "upstreams[0].sessions: applies to HTTP upstreams (url) only"},
		{"unset variable", head + "    headers: {X-Key: \"${NOPE}\"}\n", "upstreams[0].headers.X-Key: ${NOPE}: the environment variable NOPE is not set"},
		{"unterminated reference", head + "    headers: {X-Key: \"${NOPE\"}\n", "upstreams[0].headers.X-Key: unterminated ${ (write $$ for a literal $)"},
		{"bad reference", head + "    headers: {X-Key: \"${1x}\"}\n", "upstreams[0].headers.X-Key: ${1x} does not name an environment variable"},
		{"reserved header", head + "    headers: {Mcp-Session-Id: x}\n", `upstreams[0].headers.Mcp-Session-Id: header "Mcp-Session-Id" is set by the gateway and may not be configured`},
		{"hop-by-hop header", head + "    headers: {connection: x}\n", `upstreams[0].headers.connection: header "connection" is set by the gateway and may not be configured`},
		{"same header twice", head + "    headers: {X-A: x, x-a: y}\n", "upstreams[0].headers.x-a: the same header as another key (header names ignore case)"},
		{"bad scope", head + "    scopes: [\"read user\"]\n", `upstreams[0].scopes[0]: invalid scope "read user" (RFC 6749 scope-token: printable ASCII except space, '"' and '\')`},
		{"tool scopes not a list", head + "    tools:\n      t: {scopes: write}\n", "upstreams[0].tools.t.scopes: must be a list"},
		{"tool unknown key", head + "    tools:\n      t: {scope: [x]}\n", "upstreams[0].tools.t.scope: unknown key (known here: scopes)"},
		{"bad glob", head + "    include: [\"[a\"]\n", `upstreams[0].include[0]: "[a" is not a glob (path.Match syntax: *, ?, [a-z], \ escapes)`},
		{"timeout not a duration", head + "    timeout: 30\n", `upstreams[0].timeout: "30" is not a duration such as 30s or 5m`},
		{"timeout too long", head + "    timeout: 1h\n", "upstreams[0].timeout: 1h0m0s is out of range: must be from 1ms to 10m0s"},
		{"refresh too short", head + "    refresh: 10ms\n", "upstreams[0].refresh: 10ms is out of range: must be from 1s to 24h0m0s, or 0"},
		{"bool", "builtin_tools: yes\n" + head, `builtin_tools: must be true or false, got "yes"`},
		{"integer", head + "    max_response_bytes: 4MiB\n", `upstreams[0].max_response_bytes: "4MiB" is not a whole number`},
		{"integer range", head + "    max_sessions: 0\n", "upstreams[0].max_sessions: 0 is out of range: must be from 1 to 1000000"},
		{"identity mode", head + "    identity: token\n", `upstreams[0].identity: "token" must be jwt or none`},
		{"sessions mode", head + "    sessions: pooled\n", `upstreams[0].sessions: "pooled" must be per_caller or shared`},
		{"prefix", head + "    prefix: \"a b\"\n", `upstreams[0].prefix: "a b" must be at most 32 of A-Z, a-z, 0-9, '_', '.' and '-'`},
		{"ttl", "identity: {ttl: 1h}\n" + head, "identity.ttl: 1h0m0s is out of range: must be from 10s to 10m0s"},
		{"ttl fraction", "identity: {ttl: 90.5s}\n" + head, "identity.ttl: 1m30.5s must be a whole number of seconds"},
		{"null string", head + "    prefix:\n", "upstreams[0].prefix: must be a string"},
		{"anchor", "identity: &a {ttl: 1m}\n" + head, "identity: anchors and aliases are not supported; write the value out"},
		{"alias value", "upstreams:\n  - &u {name: a, url: http://a/mcp}\n  - *u\n", "upstreams[0]: anchors and aliases are not supported; write the value out"},
		{"merge key", "upstreams:\n  - name: a\n    url: http://a/mcp\n    <<: {timeout: 1s}\n", "upstreams[0].<<: unknown key (known here: command, dir, env, exclude, headers, identity, include, max_concurrent, max_response_bytes, max_sessions, name, prefix, refresh, scopes, session_idle, sessions, timeout, tools, url)"},
		{"upstream not a mapping", "upstreams: [docs]\n", "upstreams[0]: must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), "", env())
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestPrefixDefault(t *testing.T) {
	t.Parallel()
	f, err := Parse([]byte("upstreams:\n  - {name: a, url: http://a/mcp}\n  - {name: b, url: http://b/mcp, prefix: B.}\n  - {name: c, url: http://c/mcp, prefix: ''}\n"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range f.Upstreams {
		got = append(got, u.Prefix)
	}
	if diff := cmp.Diff([]string{"a_", "B.", ""}, got); diff != "" {
		t.Errorf("prefixes (-want +got):\n%s", diff)
	}
}

func TestServes(t *testing.T) {
	t.Parallel()
	u := Upstream{Include: []string{"get-*", "echo"}, Exclude: []string{"get-env"}}
	for name, want := range map[string]bool{"get-sum": true, "echo": true, "get-env": false, "trigger": false, "echoes": false} {
		if got := u.Serves(name); got != want {
			t.Errorf("Serves(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	getenv := env("A", "1", "LONG_NAME_2", "two")
	for in, want := range map[string]string{
		"plain":                "plain",
		"${A}":                 "1",
		"x${A}y${LONG_NAME_2}": "x1ytwo",
		"$$":                   "$",
		"$${A}":                "${A}",
		"$A":                   "$A",
		"cost $5":              "cost $5",
		"trailing $":           "trailing $",
	} {
		got, err := expand(in, getenv)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := filepath.Join(dir, "upstreams.yaml")
	if err := os.WriteFile(name, []byte("identity: {signing_key_file: k.pem}\nupstreams:\n  - {name: a, url: http://a/mcp, timeout: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(name, nil)
	if want := name + `: upstreams[0].timeout: "1" is not a duration such as 30s or 5m`; err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %q", err, want)
	}
	if err := os.WriteFile(name, []byte("identity: {signing_key_file: k.pem}\nupstreams:\n  - {name: a, url: http://a/mcp}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "k.pem"); f.Identity.SigningKeyFile != want {
		t.Errorf("signing key file %q, want %q (relative to the file)", f.Identity.SigningKeyFile, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load of a missing file = %v, want an error naming it", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("#"+strings.Repeat("x", MaxFileBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, nil); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a huge file = %v, want a size error", err)
	}
}

// FuzzParse: any bytes give a validated File or one-line error, never a
// panic; what is accepted has valid, unique names and one transport each.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"upstreams:\n  - name: a\n    url: http://a/mcp\n",
		"upstreams:\n  - {name: a, command: [x, \"${A}\"], env: {K: v}}\n  - {name: b, url: http://b/mcp, headers: {X-K: \"$${B}\"}}\n",
		"identity: {ttl: 1m, signing_key_file: k.pem}\nbuiltin_tools: false\nupstreams: [{name: x, url: 'http://x', tools: {t: {scopes: [a]}}, include: ['*'], exclude: ['[a-z]*']}]\n",
		"x: &a [*a]\n", "upstreams: [{<<: {name: a}}]", "{", "- - -", "upstreams:\n  - name: a\n    url: http://a/mcp\n    url: http://b/mcp\n",
	} {
		f.Add([]byte(seed))
	}
	getenv := env("A", "1")
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data, "/d", getenv)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		names := map[string]bool{}
		for _, u := range file.Upstreams {
			if !nameRE.MatchString(u.Name) || names[u.Name] {
				t.Fatalf("accepted name %q", u.Name)
			}
			names[u.Name] = true
			if (u.URL == "") == (u.Command == nil) {
				t.Fatalf("upstream %q: url %q, command %q", u.Name, u.URL, u.Command)
			}
			if len(u.Prefix) > MaxPrefixLen || !prefixRE.MatchString(u.Prefix) {
				t.Fatalf("accepted prefix %q", u.Prefix)
			}
		}
		if len(file.Upstreams) == 0 {
			t.Fatal("accepted a file without upstreams")
		}
	})
}
