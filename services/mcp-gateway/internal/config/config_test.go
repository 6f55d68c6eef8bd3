package config

import (
	"errors"
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	got, err := Load(env(map[string]string{EnvPropelAuthAuthURL: "http://localhost:9000/"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:              ":8000",
		MetricsListen:       ":9092",
		ServerURL:           "http://localhost:8000",
		AuthzAddr:           "localhost:50051",
		Scopes:              []string{"read:user_data"},
		AuthorizationServer: "http://localhost:9000/oauth/2.1",
		AuthzTimeout:        2 * time.Second,
		LogLevel:            slog.LevelInfo,
		MaxInFlight:         512,
		BodyTimeout:         10 * time.Second,
		MaxConnections:      4096,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
	if got.OneListener() {
		t.Error("OneListener() by default")
	}
	if got, want := got.Resource(), "http://localhost:8000/mcp"; got != want {
		t.Errorf("Resource() = %q, want %q", got, want)
	}
	if got, want := got.ResourceMetadataURL(), "http://localhost:8000/.well-known/oauth-protected-resource/mcp"; got != want {
		t.Errorf("ResourceMetadataURL() = %q, want %q", got, want)
	}
}

func TestLoadAll(t *testing.T) {
	t.Parallel()
	got, err := Load(env(map[string]string{
		EnvListen:              "127.0.0.1:9999",
		EnvMetricsListen:       "127.0.0.1:9999",
		EnvServerURL:           "HTTPS://MCP.Example.com:443/",
		EnvAuthzAddr:           "dns:///authz:50051",
		EnvScopes:              "read:user_data, read:org_data read:user_data",
		EnvAuthorizationServer: "https://auth.example.com/",
		EnvPropelAuthAuthURL:   "https://ignored.example.com",
		EnvAuthzTimeout:        "500ms",
		EnvAllowedOrigins:      "http://localhost:6274, https://app.example.com:8443",
		EnvToolsListAll:        "true",
		EnvLogLevel:            "debug",
		EnvMaxInFlight:         "64",
		EnvBodyTimeout:         "2s",
		EnvMaxConnections:      "5000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:              "127.0.0.1:9999",
		MetricsListen:       "127.0.0.1:9999",
		ServerURL:           "https://mcp.example.com",
		AuthzAddr:           "dns:///authz:50051",
		Scopes:              []string{"read:user_data", "read:org_data"},
		AuthorizationServer: "https://auth.example.com/",
		AuthzTimeout:        500 * time.Millisecond,
		AllowedOrigins:      []string{"http://localhost:6274", "https://app.example.com:8443"},
		ToolsListAll:        true,
		LogLevel:            slog.LevelDebug,
		MaxInFlight:         64,
		BodyTimeout:         2 * time.Second,
		MaxConnections:      5000,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
	if !got.OneListener() {
		t.Error("OneListener() false with MCP_METRICS_LISTEN = MCP_LISTEN")
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	base := map[string]string{EnvPropelAuthAuthURL: "http://localhost:9000"}
	tests := []struct {
		name    string
		set     map[string]string
		wantVar string
	}{
		{"no auth server", map[string]string{EnvPropelAuthAuthURL: ""}, EnvPropelAuthAuthURL},
		{"bad auth url", map[string]string{EnvPropelAuthAuthURL: "localhost:9000"}, EnvPropelAuthAuthURL},
		{"bad issuer", map[string]string{EnvAuthorizationServer: "ftp://x"}, EnvAuthorizationServer},
		{"relative metadata url", map[string]string{EnvASMetadataURL: "/.well-known/oauth-authorization-server"}, EnvASMetadataURL},
		{"listen no port", map[string]string{EnvListen: "localhost"}, EnvListen},
		{"metrics listen no port", map[string]string{EnvMetricsListen: "127.0.0.1"}, EnvMetricsListen},
		{"server url relative", map[string]string{EnvServerURL: "/mcp"}, EnvServerURL},
		{"server url with path", map[string]string{EnvServerURL: "https://x.example.com/mcp"}, EnvServerURL},
		{"server url with query", map[string]string{EnvServerURL: "https://x.example.com?a=b"}, EnvServerURL},
		{"scope with quote", map[string]string{EnvScopes: `read"x`}, EnvScopes},
		{"scope only separators", map[string]string{EnvScopes: " , "}, EnvScopes},
		{"scope over authz's length", map[string]string{EnvScopes: strings.Repeat("s", scopes.MaxLength+1)}, EnvScopes},
		{"scope with a control byte", map[string]string{EnvScopes: "read:\x01x"}, EnvScopes},
		{"scope with non-ASCII", map[string]string{EnvScopes: "lire:données"}, EnvScopes},
		{"more scopes than authz takes", map[string]string{EnvScopes: scopeList(scopes.MaxCount + 1)}, EnvScopes},
		{"timeout garbage", map[string]string{EnvAuthzTimeout: "soon"}, EnvAuthzTimeout},
		{"timeout zero", map[string]string{EnvAuthzTimeout: "0s"}, EnvAuthzTimeout},
		{"timeout huge", map[string]string{EnvAuthzTimeout: "1h"}, EnvAuthzTimeout},
		{"origin with path", map[string]string{EnvAllowedOrigins: "http://a.example.com/x"}, EnvAllowedOrigins},
		{"origin wildcard", map[string]string{EnvAllowedOrigins: "*"}, EnvAllowedOrigins},
		{"list all", map[string]string{EnvToolsListAll: "yes please"}, EnvToolsListAll},
		{"log level", map[string]string{EnvLogLevel: "loud"}, EnvLogLevel},
		{"in flight zero", map[string]string{EnvMaxInFlight: "0"}, EnvMaxInFlight},
		{"in flight garbage", map[string]string{EnvMaxInFlight: "many"}, EnvMaxInFlight},
		{"body timeout garbage", map[string]string{EnvBodyTimeout: "10"}, EnvBodyTimeout},
		{"body timeout zero", map[string]string{EnvBodyTimeout: "0s"}, EnvBodyTimeout},
		{"body timeout huge", map[string]string{EnvBodyTimeout: "1h"}, EnvBodyTimeout},
		{"connections negative", map[string]string{EnvMaxConnections: "-1"}, EnvMaxConnections},
		{"connections fraction", map[string]string{EnvMaxConnections: "1.5"}, EnvMaxConnections},
		{"connections garbage", map[string]string{EnvMaxConnections: "lots"}, EnvMaxConnections},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range tt.set {
				m[k] = v
			}
			_, err := Load(env(m))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load() error = %v, want *config.Error", err)
			}
			if cerr.Var != tt.wantVar {
				t.Errorf("error names %s, want %s (%v)", cerr.Var, tt.wantVar, err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantVar+": ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line starting with the variable", err)
			}
		})
	}
}

// scopeList returns n distinct scopes, none of them a tool's.
func scopeList(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "scope:%d ", i)
	}
	return b.String()
}

// TestScopeLimits: SCOPES may use authz's limits to the full: the longest
// scope, and as many scopes as authz takes. (With the tools' scopes counted,
// gateway.New checks the count: TestScopesWithTools.)
func TestScopeLimits(t *testing.T) {
	t.Parallel()
	for name, list := range map[string]string{
		"longest scope":         strings.Repeat("s", scopes.MaxLength),
		"every printable class": "a!#[]~:/",
		"most scopes":           scopeList(scopes.MaxCount),
	} {
		if _, err := Load(env(map[string]string{EnvPropelAuthAuthURL: "http://localhost:9000", EnvScopes: list})); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEnvNamesSorted(t *testing.T) {
	t.Parallel()
	names := EnvNames()
	for _, want := range []string{
		EnvListen, EnvMetricsListen, EnvServerURL, EnvAuthzAddr, EnvScopes, EnvAuthorizationServer, EnvASMetadataURL,
		EnvPropelAuthAuthURL, EnvAuthzTimeout, EnvAllowedOrigins, EnvToolsListAll, EnvLogLevel,
		EnvMaxInFlight, EnvBodyTimeout, EnvMaxConnections,
	} {
		if !slices.Contains(names, want) {
			t.Errorf("EnvNames() = %v lacks %s", names, want)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("EnvNames() not sorted/unique at %d: %v", i, names)
		}
	}
}
