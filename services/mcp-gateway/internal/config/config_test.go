package config

import (
	"errors"
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"log/slog"
	"maps"
	"net"
	"os"
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
	got, err := Load(env(map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000/"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:              ":8000",
		MetricsListen:       ":9092",
		ServerURL:           "http://localhost:8000",
		AuthzAddr:           "localhost:50051",
		Scopes:              []string{"read:user_data"},
		AuthURL:             "http://localhost:9000/",
		AuthorizationServer: "http://localhost:9000/oauth/2.1",
		AuthzTimeout:        2 * time.Second,
		Logging:             envconf.Logging{LogLevel: slog.LevelInfo},
		MaxInFlight:         512,
		BodyTimeout:         10 * time.Second,
		MaxConnections:      4096,
		DecisionCacheTTL:    time.Minute,
		GOGC:                "400",
		OTel:                tracing.OTel{Protocol: "http/protobuf", Sampler: "parentbased_always_on"},
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
		"MCP_LISTEN":                  "127.0.0.1:9999",
		"MCP_METRICS_LISTEN":          "127.0.0.1:9999",
		"MCP_SERVER_URL":              "HTTPS://MCP.Example.com:443/",
		"AUTHZ_ADDR":                  "dns:///authz:50051",
		"SCOPES":                      "read:user_data, read:org_data read:user_data",
		"AUTHORIZATION_SERVER":        "https://auth.example.com/",
		"PROPELAUTH_AUTH_URL":         "https://ignored.example.com",
		"AUTHZ_TIMEOUT":               "500ms",
		"MCP_ALLOWED_ORIGINS":         "http://localhost:6274, https://app.example.com:8443",
		"TOOLS_LIST_ALL":              "true",
		"LOG_LEVEL":                   "debug",
		"MCP_MAX_IN_FLIGHT":           "64",
		"MCP_BODY_TIMEOUT":            "2s",
		"MCP_MAX_CONNECTIONS":         "5000",
		"DECISION_CACHE_TTL":          "5s",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.25",
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
		AuthURL:             "https://ignored.example.com",
		AuthorizationServer: "https://auth.example.com/",
		AuthzTimeout:        500 * time.Millisecond,
		AllowedOrigins:      []string{"http://localhost:6274", "https://app.example.com:8443"},
		ToolsListAll:        true,
		Logging:             envconf.Logging{LogLevel: slog.LevelDebug},
		MaxInFlight:         64,
		BodyTimeout:         2 * time.Second,
		MaxConnections:      5000,
		DecisionCacheTTL:    5 * time.Second,
		GOGC:                "400",
		OTel:                tracing.OTel{Endpoint: "http://otel-collector:4318", Protocol: "http/protobuf", Sampler: "parentbased_traceidratio", SamplerArg: "0.25"},
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
	base := map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000"}
	tests := []struct {
		name    string
		set     map[string]string
		wantVar string
	}{
		{"no auth server", map[string]string{"PROPELAUTH_AUTH_URL": ""}, "PROPELAUTH_AUTH_URL"},
		{"bad auth url", map[string]string{"PROPELAUTH_AUTH_URL": "localhost:9000"}, "PROPELAUTH_AUTH_URL"},
		{"bad issuer", map[string]string{"AUTHORIZATION_SERVER": "ftp://x"}, "AUTHORIZATION_SERVER"},
		{"relative metadata url", map[string]string{"AUTHORIZATION_SERVER_METADATA_URL": "/.well-known/oauth-authorization-server"}, "AUTHORIZATION_SERVER_METADATA_URL"},
		{"listen no port", map[string]string{"MCP_LISTEN": "localhost"}, "MCP_LISTEN"},
		{"metrics listen no port", map[string]string{"MCP_METRICS_LISTEN": "127.0.0.1"}, "MCP_METRICS_LISTEN"},
		{"server url relative", map[string]string{"MCP_SERVER_URL": "/mcp"}, "MCP_SERVER_URL"},
		{"server url with path", map[string]string{"MCP_SERVER_URL": "https://x.example.com/mcp"}, "MCP_SERVER_URL"},
		{"server url with query", map[string]string{"MCP_SERVER_URL": "https://x.example.com?a=b"}, "MCP_SERVER_URL"},
		{"scope with quote", map[string]string{"SCOPES": `read"x`}, "SCOPES"},
		{"scope only separators", map[string]string{"SCOPES": " , "}, "SCOPES"},
		{"scope over authz's length", map[string]string{"SCOPES": strings.Repeat("s", scopes.MaxLength+1)}, "SCOPES"},
		{"scope with a control byte", map[string]string{"SCOPES": "read:\x01x"}, "SCOPES"},
		{"scope with non-ASCII", map[string]string{"SCOPES": "lire:données"}, "SCOPES"},
		{"more scopes than authz takes", map[string]string{"SCOPES": scopeList(scopes.MaxCount + 1)}, "SCOPES"},
		{"timeout garbage", map[string]string{"AUTHZ_TIMEOUT": "soon"}, "AUTHZ_TIMEOUT"},
		{"timeout zero", map[string]string{"AUTHZ_TIMEOUT": "0s"}, "AUTHZ_TIMEOUT"},
		{"timeout huge", map[string]string{"AUTHZ_TIMEOUT": "1h"}, "AUTHZ_TIMEOUT"},
		{"origin with path", map[string]string{"MCP_ALLOWED_ORIGINS": "http://a.example.com/x"}, "MCP_ALLOWED_ORIGINS"},
		{"origin wildcard", map[string]string{"MCP_ALLOWED_ORIGINS": "*"}, "MCP_ALLOWED_ORIGINS"},
		{"list all", map[string]string{"TOOLS_LIST_ALL": "yes please"}, "TOOLS_LIST_ALL"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"in flight zero", map[string]string{"MCP_MAX_IN_FLIGHT": "0"}, "MCP_MAX_IN_FLIGHT"},
		{"in flight garbage", map[string]string{"MCP_MAX_IN_FLIGHT": "many"}, "MCP_MAX_IN_FLIGHT"},
		{"body timeout garbage", map[string]string{"MCP_BODY_TIMEOUT": "10"}, "MCP_BODY_TIMEOUT"},
		{"body timeout zero", map[string]string{"MCP_BODY_TIMEOUT": "0s"}, "MCP_BODY_TIMEOUT"},
		{"body timeout huge", map[string]string{"MCP_BODY_TIMEOUT": "1h"}, "MCP_BODY_TIMEOUT"},
		{"connections negative", map[string]string{"MCP_MAX_CONNECTIONS": "-1"}, "MCP_MAX_CONNECTIONS"},
		{"connections fraction", map[string]string{"MCP_MAX_CONNECTIONS": "1.5"}, "MCP_MAX_CONNECTIONS"},
		{"connections garbage", map[string]string{"MCP_MAX_CONNECTIONS": "lots"}, "MCP_MAX_CONNECTIONS"},
		{"trace exporter unknown", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{"trace endpoint relative", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"trace protocol http/json", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"trace sampler arg", map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
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
		if _, err := Load(env(map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000", "SCOPES": list})); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEnvNamesSorted(t *testing.T) {
	t.Parallel()
	names := EnvNames()
	for _, want := range []string{
		"MCP_LISTEN", "MCP_METRICS_LISTEN", "MCP_SERVER_URL", "AUTHZ_ADDR", "SCOPES", "AUTHORIZATION_SERVER", "AUTHORIZATION_SERVER_METADATA_URL",
		"PROPELAUTH_AUTH_URL", "AUTHZ_TIMEOUT", "MCP_ALLOWED_ORIGINS", "TOOLS_LIST_ALL", "LOG_LEVEL",
		"MCP_MAX_IN_FLIGHT", "MCP_BODY_TIMEOUT", "MCP_MAX_CONNECTIONS",
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

// TestServerURLFollowsTheListenPort: unset, MCP_SERVER_URL is
// http://localhost:<port of MCP_LISTEN>, the port bound when MCP_LISTEN asks
// for port 0.
func TestServerURLFollowsTheListenPort(t *testing.T) {
	t.Parallel()
	base := map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			m[k] = v
		}
		return m
	}
	c, err := Load(env(with("MCP_LISTEN", "127.0.0.1:8123")))
	if err != nil || c.ServerURL != "http://localhost:8123" {
		t.Errorf("MCP_LISTEN=127.0.0.1:8123: ServerURL %q, %v; want http://localhost:8123", c.ServerURL, err)
	}
	c, err = Load(env(with("MCP_LISTEN", "127.0.0.1:0")))
	if err != nil || c.ServerURL != "" {
		t.Fatalf("MCP_LISTEN=127.0.0.1:0: ServerURL %q, %v; want it left for Bound", c.ServerURL, err)
	}
	c.Bound(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 43210})
	if c.ServerURL != "http://localhost:43210" || c.Resource() != "http://localhost:43210/mcp" {
		t.Errorf("after Bound: ServerURL %q, Resource %q", c.ServerURL, c.Resource())
	}
	c, err = Load(env(with("MCP_LISTEN", "127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	c.ServerURL = "https://mcp.example.com"
	c.Bound(&net.TCPAddr{Port: 1})
	if c.ServerURL != "https://mcp.example.com" {
		t.Errorf("Bound replaced a set MCP_SERVER_URL: %q", c.ServerURL)
	}
}

// TestOneListenerNotWithPortZero: MCP_METRICS_LISTEN equal to MCP_LISTEN
// shares its listener, except with port 0, where each asks for a port of its
// own.
func TestOneListenerNotWithPortZero(t *testing.T) {
	t.Parallel()
	for listen, want := range map[string]bool{"127.0.0.1:8000": true, "127.0.0.1:0": false, ":0": false} {
		c, err := Load(env(map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000", "MCP_LISTEN": listen, "MCP_METRICS_LISTEN": listen}))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.OneListener(); got != want {
			t.Errorf("both %s: OneListener() = %v, want %v", listen, got, want)
		}
	}
}

// TestLoadUpstreamsFile: UPSTREAMS_FILE is read at start, ${VAR} from the
// same environment, and a mistake in it is one line naming the variable, the
// file and the key.
func TestLoadUpstreamsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "upstreams:\n  - name: docs\n    url: http://docs/mcp\n    headers: {X-Api-Key: \"${DOCS_KEY}\"}\n")
	bad := write("bad.yaml", "upstreams:\n  - name: docs\n    url: http://docs/mcp\n  - name: Docs\n    url: http://docs/mcp\n")
	base := map[string]string{"PROPELAUTH_AUTH_URL": "http://localhost:9000", "DOCS_KEY": "k"}

	with := func(kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c, err := Load(env(with("UPSTREAMS_FILE", good)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstreams == nil || len(c.Upstreams.Upstreams) != 1 || c.Upstreams.Upstreams[0].Headers["X-Api-Key"] != "k" {
		t.Errorf("Upstreams = %+v", c.Upstreams)
	}
	if c, err := Load(env(base)); err != nil || c.Upstreams != nil {
		t.Errorf("without UPSTREAMS_FILE: Upstreams %v, err %v", c.Upstreams, err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{with("UPSTREAMS_FILE", bad), "UPSTREAMS_FILE: " + bad + `: upstreams[1].name: "Docs" must be 1 to 32 of a-z, 0-9 and '-'`},
		{with("UPSTREAMS_FILE", good, "DOCS_KEY", ""), "UPSTREAMS_FILE: " + good + ": upstreams[0].headers.X-Api-Key: ${DOCS_KEY}: the environment variable DOCS_KEY is not set"},
		{with("UPSTREAMS_FILE", dir+"/none.yaml"), "UPSTREAMS_FILE: open " + dir + "/none.yaml: no such file or directory"},
	} {
		_, err := Load(env(tt.env))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Load = %v\nwant %s", err, tt.want)
		}
		var cerr *Error
		if !errors.As(err, &cerr) || cerr.Var != "UPSTREAMS_FILE" {
			t.Errorf("error %v does not name UPSTREAMS_FILE", err)
		}
	}
}
