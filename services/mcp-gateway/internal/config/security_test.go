package config

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
)

func withBase(m map[string]string) map[string]string {
	m["PROPELAUTH_AUTH_URL"] = "http://localhost:9000"
	return m
}

func TestAuthzTLS(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "gw-test-ca")
	cert, key := ca.Issue(t, testenv.CertOptions{CommonName: "mcp-gateway", Client: true})
	_, otherKey := ca.Issue(t, testenv.CertOptions{CommonName: "other", Client: true})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	c, err := Load(env(withBase(map[string]string{})))
	if err != nil || c.AuthzTLS != nil {
		t.Fatalf("default: %v, AuthzTLS %v; want plaintext", err, c.AuthzTLS)
	}
	c, err = Load(env(withBase(map[string]string{"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": key, "AUTHZ_TLS_SERVER_NAME": "authz.internal"})))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthzTLS == nil || c.AuthzTLS.RootCAs == nil || len(c.AuthzTLS.Certificates) != 1 || c.AuthzTLS.ServerName != "authz.internal" || c.AuthzTLS.MinVersion != tls.VersionTLS13 {
		t.Errorf("AuthzTLS = %+v, want the CA, one client certificate, the server name, TLS 1.3", c.AuthzTLS)
	}
	// Server name alone: TLS with the system roots, no client certificate.
	c, err = Load(env(withBase(map[string]string{"AUTHZ_TLS_SERVER_NAME": "authz.example.com"})))
	if err != nil || c.AuthzTLS == nil || c.AuthzTLS.RootCAs != nil || len(c.AuthzTLS.Certificates) != 0 {
		t.Errorf("server name only: %v, %+v; want TLS with the system roots", err, c.AuthzTLS)
	}

	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"missing CA", map[string]string{"AUTHZ_TLS_CA": missing}, "AUTHZ_TLS_CA"},
		{"garbage CA", map[string]string{"AUTHZ_TLS_CA": garbage}, "AUTHZ_TLS_CA"},
		{"key without cert", map[string]string{"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TLS_KEY": key}, "AUTHZ_TLS_CERT"},
		{"cert without key", map[string]string{"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TLS_CERT": cert}, "AUTHZ_TLS_KEY"},
		{"missing cert", map[string]string{"AUTHZ_TLS_CERT": missing, "AUTHZ_TLS_KEY": key}, "AUTHZ_TLS_CERT"},
		{"missing key", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": missing}, "AUTHZ_TLS_KEY"},
		{"key of another certificate", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": otherKey}, "AUTHZ_TLS_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(env(withBase(tt.env)))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %v, want one line naming %s", err, tt.wantVar)
			}
		})
	}
}

func TestRateLimitConfig(t *testing.T) {
	t.Parallel()
	c, err := Load(env(withBase(map[string]string{})))
	if err != nil || c.RateLimit.Enabled() {
		t.Fatalf("default: %v, %+v; want rate limiting off", err, c.RateLimit)
	}
	c, err = Load(env(withBase(map[string]string{"RATE_LIMIT": "600/m", "RATE_LIMIT_BURST": "50", "REDIS_URL": "redis://:hunter2@localhost:6379/1"})))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ratelimit.Limit{Count: 600, Period: time.Minute, Burst: 50}, c.RateLimit); diff != "" {
		t.Errorf("RateLimit (-want +got):\n%s", diff)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	if strings.Contains(b.String(), "hunter2") || !strings.Contains(b.String(), `"RATE_LIMIT":"600/m","RATE_LIMIT_BURST":50`) {
		t.Errorf("logged config leaks the Redis password or lacks the limit: %s", b.String())
	}

	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"bad rate", map[string]string{"RATE_LIMIT": "lots"}, "RATE_LIMIT"},
		{"bad unit", map[string]string{"RATE_LIMIT": "5/d"}, "RATE_LIMIT"},
		{"burst without rate", map[string]string{"RATE_LIMIT_BURST": "5"}, "RATE_LIMIT_BURST"},
		{"zero burst", map[string]string{"RATE_LIMIT": "5/s", "RATE_LIMIT_BURST": "0"}, "RATE_LIMIT_BURST"},
		{"bad burst", map[string]string{"RATE_LIMIT": "5/s", "RATE_LIMIT_BURST": "x"}, "RATE_LIMIT_BURST"},
		{"bad redis URL", map[string]string{"REDIS_URL": "http://:hunter2@x"}, "REDIS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(env(withBase(tt.env)))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %v, want one line naming %s", err, tt.wantVar)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q leaks the Redis password", err)
			}
		})
	}
}
