package config

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func required() map[string]string {
	return map[string]string{EnvValidationID: "rv", EnvValidationSecret: "rvs", EnvAPIKey: "key"}
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
		APIKey: "key", TokenTTL: time.Hour, Scopes: []string{"read:user_data", "read:org_data"}, LogLevel: slog.LevelInfo,
		ClientTTL: 24 * time.Hour, CIMDAllowLoopback: false,
		MCP: DefaultMCP([]string{"read:user_data", "read:org_data"}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
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
		{"trailing slash trimmed", with(EnvAuthURL, "https://auth.example.com/"), func(c Config) bool { return c.BaseURL == "https://auth.example.com" }, ""},
		{"path kept", with(EnvAuthURL, "https://x.example/base/"), func(c Config) bool { return c.Issuer() == "https://x.example/base/oauth/2.1" }, ""},
		{"comma scopes", with(EnvScopes, "a,b, a"), func(c Config) bool { return slices.Equal(c.Scopes, []string{"a", "b"}) }, ""},
		{"ttl", with(EnvTokenTTL, "15m"), func(c Config) bool { return c.TokenTTL == 15*time.Minute }, ""},
		{"test api", with(EnvTestAPI, "true"), func(c Config) bool { return c.TestAPI }, ""},
		{"client ttl", with(EnvClientTTL, "90m"), func(c Config) bool { return c.ClientTTL == 90*time.Minute }, ""},
		{"cimd loopback", with(EnvCIMDLoopback, "1"), func(c Config) bool { return c.CIMDAllowLoopback }, ""},
		{"auto approve lowercased", with(EnvAutoApprove, "Alice@Example.com"), func(c Config) bool { return c.AutoApprove == seedusers.AliceEmail }, ""},
		{"log level", with(EnvLogLevel, "debug"), func(c Config) bool { return c.LogLevel == slog.LevelDebug }, ""},
		{"listen loopback", with(EnvListen, "127.0.0.1:0"), func(c Config) bool { return c.Listen == "127.0.0.1:0" }, ""},
		{"missing api key", map[string]string{EnvValidationID: "a", EnvValidationSecret: "b"}, nil, EnvAPIKey},
		{"missing rv id", map[string]string{EnvAPIKey: "a", EnvValidationSecret: "b"}, nil, EnvValidationID},
		{"missing rv secret", map[string]string{EnvAPIKey: "a", EnvValidationID: "b"}, nil, EnvValidationSecret},
		{"rv id with colon", with(EnvValidationID, "a:b"), nil, EnvValidationID},
		{"bad url", with(EnvAuthURL, "localhost:9000"), nil, EnvAuthURL},
		{"ftp url", with(EnvAuthURL, "ftp://x.example"), nil, EnvAuthURL},
		{"url with query", with(EnvAuthURL, "http://x.example/?a=b"), nil, EnvAuthURL},
		{"url no host", with(EnvAuthURL, "http:///path"), nil, EnvAuthURL},
		{"bad ttl", with(EnvTokenTTL, "an hour"), nil, EnvTokenTTL},
		{"ttl too short", with(EnvTokenTTL, "10ms"), nil, EnvTokenTTL},
		{"bad scope", with(EnvScopes, `a "b"`), nil, EnvScopes},
		{"no scopes", with(EnvScopes, " , "), nil, EnvScopes},
		{"bad bool", with(EnvTestAPI, "yes please"), nil, EnvTestAPI},
		{"bad cimd bool", with(EnvCIMDLoopback, "loopback"), nil, EnvCIMDLoopback},
		{"bad client ttl", with(EnvClientTTL, "a day"), nil, EnvClientTTL},
		{"client ttl too short", with(EnvClientTTL, "30s"), nil, EnvClientTTL},
		{"client ttl too long", with(EnvClientTTL, "1000h"), nil, EnvClientTTL},
		{"bad level", with(EnvLogLevel, "loud"), nil, EnvLogLevel},
		{"bad listen", with(EnvListen, "9000"), nil, EnvListen},
		{"bad port", with(EnvListen, ":99999"), nil, EnvListen},
		{"auto approve not email", with(EnvAutoApprove, "alice"), nil, EnvAutoApprove},
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
	c, err := Load(env(with(EnvValidationSecret, "super-secret-1", EnvAPIKey, "super-secret-2")))
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
