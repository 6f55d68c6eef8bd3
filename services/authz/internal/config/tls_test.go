package config

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "authz-test-ca")
	cert, key := ca.Issue(t, testenv.CertOptions{CommonName: "authz", DNSNames: []string{"authz"}, Server: true})
	_, otherKey := ca.Issue(t, testenv.CertOptions{CommonName: "other", Server: true})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		c, err := Load(envOf(minimal()))
		if err != nil || c.TLS != nil {
			t.Fatalf("Load = %v, TLS %v; want plaintext", err, c.TLS)
		}
	})
	t.Run("server TLS only", func(t *testing.T) {
		t.Parallel()
		e := minimal()
		e["AUTHZ_TLS_CERT"], e["AUTHZ_TLS_KEY"] = cert, key
		c, err := Load(envOf(e))
		if err != nil {
			t.Fatal(err)
		}
		if c.TLS == nil || len(c.TLS.Certificates) != 1 || c.TLS.ClientAuth != tls.NoClientCert || c.TLS.MinVersion != tls.VersionTLS13 {
			t.Errorf("TLS = %+v, want one certificate, no client auth, TLS 1.3", c.TLS)
		}
	})
	t.Run("mutual TLS with allow-list", func(t *testing.T) {
		t.Parallel()
		e := minimal()
		e["AUTHZ_TLS_CERT"], e["AUTHZ_TLS_KEY"], e["AUTHZ_TLS_CLIENT_CA"] = cert, key, ca.CertFile
		e["AUTHZ_GETUSER_CALLERS"] = "spiffe://mcpauthz/gateway, reporting,spiffe://mcpauthz/gateway"
		e["AUTHZ_INVALIDATE_CALLERS"] = "spiffe://mcpauthz/revoker spiffe://mcpauthz/revoker,admin"
		c, err := Load(envOf(e))
		if err != nil {
			t.Fatal(err)
		}
		if c.TLS == nil || c.TLS.ClientAuth != tls.RequireAndVerifyClientCert || c.TLS.ClientCAs == nil {
			t.Errorf("TLS = %+v, want RequireAndVerifyClientCert with the client CA", c.TLS)
		}
		if got := strings.Join(c.GetUserCallers, "|"); got != "spiffe://mcpauthz/gateway|reporting" {
			t.Errorf("GetUserCallers = %q", got)
		}
		if got := strings.Join(c.InvalidateCallers, "|"); got != "spiffe://mcpauthz/revoker|admin" {
			t.Errorf("InvalidateCallers = %q", got)
		}
	})

	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"key without cert", map[string]string{"AUTHZ_TLS_KEY": key}, "AUTHZ_TLS_CERT"},
		{"client CA without cert", map[string]string{"AUTHZ_TLS_CLIENT_CA": ca.CertFile}, "AUTHZ_TLS_CERT"},
		{"cert without key", map[string]string{"AUTHZ_TLS_CERT": cert}, "AUTHZ_TLS_KEY"},
		{"missing cert file", map[string]string{"AUTHZ_TLS_CERT": missing, "AUTHZ_TLS_KEY": key}, "AUTHZ_TLS_CERT"},
		{"missing key file", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": missing}, "AUTHZ_TLS_KEY"},
		{"key of another certificate", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": otherKey}, "AUTHZ_TLS_KEY"},
		{"garbage key", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": garbage}, "AUTHZ_TLS_KEY"},
		{"missing client CA", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": key, "AUTHZ_TLS_CLIENT_CA": missing}, "AUTHZ_TLS_CLIENT_CA"},
		{"garbage client CA", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": key, "AUTHZ_TLS_CLIENT_CA": garbage}, "AUTHZ_TLS_CLIENT_CA"},
		{"allow-list without TLS", map[string]string{"AUTHZ_GETUSER_CALLERS": "gateway"}, "AUTHZ_GETUSER_CALLERS"},
		{"allow-list without client CA", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": key, "AUTHZ_GETUSER_CALLERS": "gateway"}, "AUTHZ_GETUSER_CALLERS"},
		{"invalidate allow-list without TLS", map[string]string{"AUTHZ_INVALIDATE_CALLERS": "revoker"}, "AUTHZ_INVALIDATE_CALLERS"},
		{"invalidate allow-list without client CA", map[string]string{"AUTHZ_TLS_CERT": cert, "AUTHZ_TLS_KEY": key, "AUTHZ_INVALIDATE_CALLERS": "revoker"}, "AUTHZ_INVALIDATE_CALLERS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := minimal()
			for k, v := range tt.env {
				e[k] = v
			}
			_, err := Load(envOf(e))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("Load error = %v, want one naming %s", err, tt.wantVar)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}
