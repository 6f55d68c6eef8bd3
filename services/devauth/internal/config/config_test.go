package config

import (
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func required() map[string]string {
	return map[string]string{"REQUEST_VALIDATION_CLIENT_ID": "rv", "REQUEST_VALIDATION_CLIENT_SECRET": "rvs", "PROPELAUTH_API_KEY": "key"}
}

func with(kv ...string) map[string]string {
	m := required()
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	got, err := Load(env(required()))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: ":9000", BaseURL: "http://localhost:9000", ValidationClientID: "rv", ValidationClientSecret: "rvs",
		APIKey: "key", TokenTTL: time.Hour, Scopes: []string{"read:user_data", "read:org_data"}, Logging: envconf.Logging{LogLevel: slog.LevelInfo},
		ClientTTL: 24 * time.Hour, CIMDAllowLoopback: false,
		MCP: DefaultMCP([]string{"read:user_data", "read:org_data"}),
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Users")); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if got.Issuer() != "http://localhost:9000/oauth/2.1" {
		t.Errorf("Issuer = %q", got.Issuer())
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantVar string // the variable the error must name; "" = success
	}{
		{"trailing slash trimmed", with("PROPELAUTH_AUTH_URL", "https://auth.example.com/"), func(c Config) bool { return c.BaseURL == "https://auth.example.com" }, ""},
		{"path kept", with("PROPELAUTH_AUTH_URL", "https://x.example/base/"), func(c Config) bool { return c.Issuer() == "https://x.example/base/oauth/2.1" }, ""},
		{"comma scopes", with("DEVAUTH_SCOPES", "a,b, a"), func(c Config) bool { return slices.Equal(c.Scopes, []string{"a", "b"}) }, ""},
		{"ttl", with("DEVAUTH_TOKEN_TTL", "15m"), func(c Config) bool { return c.TokenTTL == 15*time.Minute }, ""},
		{"test api", with("DEVAUTH_TEST_API", "true"), func(c Config) bool { return c.TestAPI }, ""},
		{"client ttl", with("DEVAUTH_CLIENT_TTL", "90m"), func(c Config) bool { return c.ClientTTL == 90*time.Minute }, ""},
		{"cimd loopback", with("DEVAUTH_CIMD_ALLOW_LOOPBACK", "1"), func(c Config) bool { return c.CIMDAllowLoopback }, ""},
		{"auto approve lowercased", with("DEVAUTH_AUTO_APPROVE", "Alice@Example.com"), func(c Config) bool { return c.AutoApprove == seedusers.AliceEmail }, ""},
		{"auto approve unknown user", with("DEVAUTH_AUTO_APPROVE", "eve@example.com"), nil, "DEVAUTH_AUTO_APPROVE"},
		{"missing users file", with("DEVAUTH_USERS_FILE", "/nonexistent/users.json"), nil, "DEVAUTH_USERS_FILE"},
		{"log level", with("LOG_LEVEL", "debug"), func(c Config) bool { return c.LogLevel == slog.LevelDebug }, ""},
		{"listen loopback", with("DEVAUTH_LISTEN", "127.0.0.1:0"), func(c Config) bool { return c.Listen == "127.0.0.1:0" }, ""},
		{"missing api key", map[string]string{"REQUEST_VALIDATION_CLIENT_ID": "a", "REQUEST_VALIDATION_CLIENT_SECRET": "b"}, nil, "PROPELAUTH_API_KEY"},
		{"missing rv id", map[string]string{"PROPELAUTH_API_KEY": "a", "REQUEST_VALIDATION_CLIENT_SECRET": "b"}, nil, "REQUEST_VALIDATION_CLIENT_ID"},
		{"missing rv secret", map[string]string{"PROPELAUTH_API_KEY": "a", "REQUEST_VALIDATION_CLIENT_ID": "b"}, nil, "REQUEST_VALIDATION_CLIENT_SECRET"},
		{"rv id with colon", with("REQUEST_VALIDATION_CLIENT_ID", "a:b"), nil, "REQUEST_VALIDATION_CLIENT_ID"},
		{"bad url", with("PROPELAUTH_AUTH_URL", "localhost:9000"), nil, "PROPELAUTH_AUTH_URL"},
		{"ftp url", with("PROPELAUTH_AUTH_URL", "ftp://x.example"), nil, "PROPELAUTH_AUTH_URL"},
		{"url with query", with("PROPELAUTH_AUTH_URL", "http://x.example/?a=b"), nil, "PROPELAUTH_AUTH_URL"},
		{"url no host", with("PROPELAUTH_AUTH_URL", "http:///path"), nil, "PROPELAUTH_AUTH_URL"},
		{"bad ttl", with("DEVAUTH_TOKEN_TTL", "an hour"), nil, "DEVAUTH_TOKEN_TTL"},
		{"ttl too short", with("DEVAUTH_TOKEN_TTL", "10ms"), nil, "DEVAUTH_TOKEN_TTL"},
		{"bad scope", with("DEVAUTH_SCOPES", `a "b"`), nil, "DEVAUTH_SCOPES"},
		{"no scopes", with("DEVAUTH_SCOPES", " , "), nil, "DEVAUTH_SCOPES"},
		{"bad bool", with("DEVAUTH_TEST_API", "yes please"), nil, "DEVAUTH_TEST_API"},
		{"bad cimd bool", with("DEVAUTH_CIMD_ALLOW_LOOPBACK", "loopback"), nil, "DEVAUTH_CIMD_ALLOW_LOOPBACK"},
		{"bad client ttl", with("DEVAUTH_CLIENT_TTL", "a day"), nil, "DEVAUTH_CLIENT_TTL"},
		{"client ttl too short", with("DEVAUTH_CLIENT_TTL", "30s"), nil, "DEVAUTH_CLIENT_TTL"},
		{"client ttl too long", with("DEVAUTH_CLIENT_TTL", "1000h"), nil, "DEVAUTH_CLIENT_TTL"},
		{"bad level", with("LOG_LEVEL", "loud"), nil, "LOG_LEVEL"},
		{"bad listen", with("DEVAUTH_LISTEN", "9000"), nil, "DEVAUTH_LISTEN"},
		{"bad port", with("DEVAUTH_LISTEN", ":99999"), nil, "DEVAUTH_LISTEN"},
		{"auto approve not email", with("DEVAUTH_AUTO_APPROVE", "alice"), nil, "DEVAUTH_AUTO_APPROVE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(tt.env))
			if tt.wantVar == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !tt.check(c) {
					t.Errorf("unexpected config %+v", c)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("err = %v, want an *Error naming %s", err, tt.wantVar)
			}
			if !strings.HasPrefix(err.Error(), tt.wantVar+": ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line naming %s", err, tt.wantVar)
			}
		})
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := Load(env(with("REQUEST_VALIDATION_CLIENT_SECRET", "super-secret-1", "PROPELAUTH_API_KEY", "super-secret-2")))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	out := b.String()
	if strings.Contains(out, "super-secret") {
		t.Errorf("secret in log: %s", out)
	}
	for _, name := range EnvNames() {
		if !strings.Contains(out, name) {
			t.Errorf("log lacks %s", name)
		}
	}
}

func TestEnvNamesSortedAndComplete(t *testing.T) {
	t.Parallel()
	names := EnvNames()
	if !slices.IsSorted(names) {
		t.Errorf("EnvNames not sorted: %v", names)
	}
	read := map[string]bool{}
	_, _ = Load(func(k string) string { read[k] = true; return required()[k] })
	for k := range read {
		if !slices.Contains(names, k) {
			t.Errorf("Load reads %s, which EnvNames omits", k)
		}
	}
	if len(read) != len(names) {
		t.Errorf("Load read %d variables, EnvNames lists %d", len(read), len(names))
	}
}

// TestBaseURLFollowsTheListenPort: unset, PROPELAUTH_AUTH_URL is
// http://localhost:<port of DEVAUTH_LISTEN>, the port bound when
// DEVAUTH_LISTEN asks for port 0.
func TestBaseURLFollowsTheListenPort(t *testing.T) {
	t.Parallel()
	c, err := Load(env(with("DEVAUTH_LISTEN", "127.0.0.1:9123")))
	if err != nil || c.BaseURL != "http://localhost:9123" {
		t.Errorf("DEVAUTH_LISTEN=127.0.0.1:9123: BaseURL %q, %v", c.BaseURL, err)
	}
	c, err = Load(env(with("DEVAUTH_LISTEN", "127.0.0.1:0")))
	if err != nil || c.BaseURL != "" {
		t.Fatalf("DEVAUTH_LISTEN=127.0.0.1:0: BaseURL %q, %v; want it left for Bound", c.BaseURL, err)
	}
	c.Bound(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 43210})
	if c.Issuer() != "http://localhost:43210/oauth/2.1" {
		t.Errorf("after Bound: issuer %q", c.Issuer())
	}
	c, err = Load(env(with("DEVAUTH_LISTEN", "127.0.0.1:0", "PROPELAUTH_AUTH_URL", "http://devauth.test:9000/")))
	if err != nil {
		t.Fatal(err)
	}
	c.Bound(&net.TCPAddr{Port: 1})
	if c.BaseURL != "http://devauth.test:9000" {
		t.Errorf("Bound replaced a set PROPELAUTH_AUTH_URL: %q", c.BaseURL)
	}
}
