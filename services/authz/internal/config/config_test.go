package config

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func minimal() map[string]string {
	return map[string]string{
		"PROPELAUTH_AUTH_URL":              "https://auth.example.com/",
		"REQUEST_VALIDATION_CLIENT_ID":     "client",
		"REQUEST_VALIDATION_CLIENT_SECRET": "s3cr3t-value",
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: ":50051", MetricsListen: ":9091",
		AuthURL: "https://auth.example.com", ClientID: "client", ClientSecret: "s3cr3t-value",
		IntrospectionURL: "https://auth.example.com/oauth/2.1/introspect", IntrospectionAuth: "client_secret_basic",
		CacheTTL: time.Minute, NegativeCacheTTL: 10 * time.Second, UserCacheTTL: 30 * time.Second, UserNegativeCacheTTL: 5 * time.Second,
		IntrospectTimeout: 5 * time.Second, MaxInFlight: 64, MaxConns: 128, ClockSkew: 30 * time.Second, RedisTimeout: 100 * time.Millisecond,
		L1MaxEntries: 100000, Issuer: "https://auth.example.com/oauth/2.1", Logging: envconf.Logging{LogLevel: slog.LevelInfo},
		OTel: tracing.OTel{Protocol: "http/protobuf", Sampler: "parentbased_always_on"},
	}
	if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(Config{}, "ScopeHierarchy")); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestOverrides(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["INTROSPECTION_URL"] = "https://kc.example.com/realms/x/protocol/openid-connect/token/introspect"
	e["AUTHORIZATION_SERVER"] = "https://kc.example.com/realms/x"
	e["INTROSPECTION_AUTH_METHOD"] = "client_secret_post"
	e["SCOPE_HIERARCHY"] = "admin=read"
	e["L1_MAX_ENTRIES"] = "0"
	e["NEGATIVE_CACHE_TTL"] = "0s"
	e["LOG_LEVEL"] = "DEBUG"
	c, err := Load(envOf(e))
	if err != nil {
		t.Fatal(err)
	}
	if c.IntrospectionURL != e["INTROSPECTION_URL"] || c.Issuer != e["AUTHORIZATION_SERVER"] || c.IntrospectionAuth != "client_secret_post" ||
		c.L1MaxEntries != 0 || c.NegativeCacheTTL != 0 || c.LogLevel != slog.LevelDebug || !c.ScopeHierarchy.Grants([]string{"admin"}, "read") {
		t.Errorf("overrides not applied: %+v", c)
	}
	// Another provider without PropelAuth at all.
	delete(e, "PROPELAUTH_AUTH_URL")
	if _, err := Load(envOf(e)); err != nil {
		t.Errorf("INTROSPECTION_URL + AUTHORIZATION_SERVER without PROPELAUTH_AUTH_URL: %v", err)
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, key, value, wantVar string }{
		{"no auth URL", "PROPELAUTH_AUTH_URL", "", "PROPELAUTH_AUTH_URL"},
		{"auth URL relative", "PROPELAUTH_AUTH_URL", "/auth", "PROPELAUTH_AUTH_URL"},
		{"auth URL with credentials", "PROPELAUTH_AUTH_URL", "https://u:p@auth", "PROPELAUTH_AUTH_URL"},
		{"auth URL with a query", "PROPELAUTH_AUTH_URL", "https://auth.example.com?x=1", "PROPELAUTH_AUTH_URL"},
		{"introspection URL", "INTROSPECTION_URL", "ftp://x", "INTROSPECTION_URL"},
		{"client id", "REQUEST_VALIDATION_CLIENT_ID", "", "REQUEST_VALIDATION_CLIENT_ID"},
		{"client secret", "REQUEST_VALIDATION_CLIENT_SECRET", "", "REQUEST_VALIDATION_CLIENT_SECRET"},
		{"auth method", "INTROSPECTION_AUTH_METHOD", "none", "INTROSPECTION_AUTH_METHOD"},
		{"listen", "AUTHZ_LISTEN", "50051", "AUTHZ_LISTEN"},
		{"listen port", "AUTHZ_LISTEN", ":99999", "AUTHZ_LISTEN"},
		{"metrics listen", "AUTHZ_METRICS_LISTEN", "x", "AUTHZ_METRICS_LISTEN"},
		{"redis", "REDIS_URL", "mysql://x", "REDIS_URL"},
		{"cache ttl", "CACHE_TTL", "60", "CACHE_TTL"},
		{"cache ttl zero", "CACHE_TTL", "0s", "CACHE_TTL"},
		{"negative ttl", "NEGATIVE_CACHE_TTL", "-1s", "NEGATIVE_CACHE_TTL"},
		{"user ttl", "USER_CACHE_TTL", "forever", "USER_CACHE_TTL"},
		{"user negative ttl", "USER_NEGATIVE_CACHE_TTL", "-1s", "USER_NEGATIVE_CACHE_TTL"},
		{"user negative ttl too long", "USER_NEGATIVE_CACHE_TTL", "2h", "USER_NEGATIVE_CACHE_TTL"},
		{"max in flight zero", "INTROSPECTION_MAX_IN_FLIGHT", "0", "INTROSPECTION_MAX_IN_FLIGHT"},
		{"max in flight not a number", "INTROSPECTION_MAX_IN_FLIGHT", "many", "INTROSPECTION_MAX_IN_FLIGHT"},
		{"max conns zero", "INTROSPECTION_MAX_CONNS", "0", "INTROSPECTION_MAX_CONNS"},
		{"max conns too many", "INTROSPECTION_MAX_CONNS", "1000000", "INTROSPECTION_MAX_CONNS"},
		{"timeout", "INTROSPECTION_TIMEOUT", "0s", "INTROSPECTION_TIMEOUT"},
		{"redis timeout", "REDIS_TIMEOUT", "100", "REDIS_TIMEOUT"},
		{"redis timeout too long", "REDIS_TIMEOUT", "1m", "REDIS_TIMEOUT"},
		{"skew", "CLOCK_SKEW", "1h", "CLOCK_SKEW"},
		{"hierarchy", "SCOPE_HIERARCHY", "a=b=c", "SCOPE_HIERARCHY"},
		{"l1", "L1_MAX_ENTRIES", "lots", "L1_MAX_ENTRIES"},
		{"issuer", "AUTHORIZATION_SERVER", "not a url", "AUTHORIZATION_SERVER"},
		{"log level", "LOG_LEVEL", "chatty", "LOG_LEVEL"},
		{"allow-list without TLS", "AUTHZ_GETUSER_CALLERS", "reporting", "AUTHZ_GETUSER_CALLERS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := minimal()
			e[tt.key] = tt.value
			_, err := Load(envOf(e))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("Load error = %v, want one naming %s", err, tt.wantVar)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tt.wantVar) {
				t.Errorf("error %q is not one line naming %s", msg, tt.wantVar)
			}
		})
	}
}

func TestRedisPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["REDIS_URL"] = "redis://user:hunter2@localhost:6379/0"
	e["PROPELAUTH_API_KEY"] = "api-key-value"
	c, err := Load(envOf(e))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	out := b.String()
	for _, secret := range []string{"hunter2", "api-key-value", "s3cr3t-value"} {
		if strings.Contains(out, secret) {
			t.Errorf("logged config contains %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"REDIS_URL":"redis://user:xxxxx@localhost:6379/0"`, `"PROPELAUTH_API_KEY":"<set>"`, `"REQUEST_VALIDATION_CLIENT_ID":"client"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logged config lacks %s: %s", want, out)
		}
	}
	e["REDIS_URL"] = "redis://user:hunter2@localhost:notaport/x"
	if _, err := Load(envOf(e)); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad REDIS_URL error %v leaks the password or is nil", err)
	}
}

func TestEnvVars(t *testing.T) {
	t.Parallel()
	want := []string{
		"AUTHORIZATION_SERVER", "AUTHZ_GETUSER_CALLERS", "AUTHZ_INVALIDATE_CALLERS", "AUTHZ_LISTEN", "AUTHZ_METRICS_LISTEN",
		"AUTHZ_TLS_CERT", "AUTHZ_TLS_CLIENT_CA", "AUTHZ_TLS_KEY", "CACHE_TTL", "CLOCK_SKEW",
		"INTROSPECTION_AUTH_METHOD", "INTROSPECTION_MAX_CONNS", "INTROSPECTION_MAX_IN_FLIGHT", "INTROSPECTION_TIMEOUT",
		"INTROSPECTION_URL", "L1_MAX_ENTRIES", "LOG_LEVEL",
		"NEGATIVE_CACHE_TTL",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"PROPELAUTH_API_KEY", "PROPELAUTH_AUTH_URL", "REDIS_TIMEOUT", "REDIS_URL",
		"REQUEST_VALIDATION_CLIENT_ID", "REQUEST_VALIDATION_CLIENT_SECRET", "SCOPE_HIERARCHY", "USER_CACHE_TTL",
		"USER_NEGATIVE_CACHE_TTL",
	}
	if diff := cmp.Diff(want, EnvVars()); diff != "" {
		t.Errorf("EnvVars (-want +got):\n%s", diff)
	}
	// Every variable listed is one Load really reads.
	read := map[string]bool{}
	_, _ = Load(func(k string) string { read[k] = true; return minimal()[k] })
	for _, v := range want {
		if !read[v] {
			t.Errorf("%s is listed but Load never reads it", v)
		}
	}
}
