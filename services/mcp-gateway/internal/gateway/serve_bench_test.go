package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// fixedAuthz answers every question with the same response, shared as the
// decision cache shares it: what remains is the gateway's own work.
type fixedAuthz struct{ res *authzv1.AuthorizeResponse }

func (a fixedAuthz) Authorize(context.Context, *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	return a.res, nil
}

func (fixedAuthz) GetUser(context.Context, string, bool) (*authzv1.User, error) {
	return &authzv1.User{UserId: "user-1"}, nil
}

func (fixedAuthz) Ready(context.Context) error { return nil }

// BenchmarkServeMCP measures the gateway's request path in process, with an
// authz that answers at once and without the network: the CPU time and
// allocations of the gateway and the go-sdk per request, for an allowed
// who_am_i and for the answers that stop at the decision. Compare runs of
// two builds with benchstat.
func BenchmarkServeMCP(b *testing.B) {
	cfg := loadConfig(b, nil)
	principal := &authzv1.Principal{Subject: "user-1", ClientId: "client-1", Scopes: []string{scopeUser}, ClaimsJson: []byte(`{"active":true,"sub":"user-1"}`)}
	ref := strings.Repeat("ab", 32)
	who := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`
	for _, tc := range []struct {
		name   string
		res    *authzv1.AuthorizeResponse
		token  string
		status int
	}{
		{"allowed", &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, User: &authzv1.User{UserId: "user-1"}, TokenRef: ref}, "tok", http.StatusOK},
		{"no-token", nil, "", http.StatusUnauthorized},
		{"expired", &authzv1.AuthorizeResponse{Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}, TokenRef: ref}, "tok", http.StatusUnauthorized},
		{"insufficient-scope", &authzv1.AuthorizeResponse{Principal: principal, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, MissingScopes: []string{scopeUser}}, TokenRef: ref}, "tok", http.StatusForbidden},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g, err := gateway.New(gateway.Options{Config: cfg, Authz: fixedAuthz{tc.res}, Tools: tools.BuiltIn()})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", strings.NewReader(who))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
				if tc.token != "" {
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				rec := httptest.NewRecorder()
				g.ServeHTTP(rec, req)
				if rec.Code != tc.status {
					b.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
				}
			}
		})
	}
}

// BenchmarkServeMCPAudit is BenchmarkServeMCP's allowed who_am_i and
// no-token cases with the audit log off and on (a file in a temporary
// directory), for the cost of the audit log per request: compare the two
// with benchstat. cpu-ns/op (the process's CPU time per request, the
// audit writer's included) is the figure to compare on a shared machine;
// dropped/op should be 0.
func BenchmarkServeMCPAudit(b *testing.B) {
	cfg := loadConfig(b, nil)
	principal := &authzv1.Principal{Subject: "user-1", ClientId: "client-1", Scopes: []string{scopeUser}, ClaimsJson: []byte(`{"active":true,"sub":"user-1"}`)}
	allowed := &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, User: &authzv1.User{UserId: "user-1"}, TokenRef: strings.Repeat("ab", 32)}
	who := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"a":1}}}`
	for _, tc := range []struct {
		name   string
		token  string
		status int
	}{{"allowed", "tok", http.StatusOK}, {"no-token", "", http.StatusUnauthorized}} {
		for _, on := range []bool{false, true} {
			name := tc.name + "/audit-off"
			if on {
				name = tc.name + "/audit-file"
			}
			b.Run(name, func(b *testing.B) {
				var l *audit.Logger
				var dropped atomic.Int64
				if on {
					var err error
					if l, err = audit.Open(filepath.Join(b.TempDir(), "audit.log"), audit.Options{Dropped: func() { dropped.Add(1) }}); err != nil {
						b.Fatal(err)
					}
				}
				g, err := gateway.New(gateway.Options{Config: cfg, Authz: fixedAuthz{allowed}, Tools: tools.BuiltIn(), Audit: l})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				cpu0, _ := cpuTime(b)
				for b.Loop() {
					req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", strings.NewReader(who))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", "application/json, text/event-stream")
					req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
					if tc.token != "" {
						req.Header.Set("Authorization", "Bearer "+tc.token)
					}
					rec := httptest.NewRecorder()
					g.ServeHTTP(rec, req)
					if rec.Code != tc.status {
						b.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
					}
				}
				// The writer's work counts: Close waits for it.
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				cpu1, _ := cpuTime(b)
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(dropped.Load())/float64(b.N), "dropped/op")
			})
		}
	}
}
