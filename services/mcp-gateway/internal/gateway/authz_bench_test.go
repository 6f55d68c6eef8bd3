package gateway_test

import (
	"testing"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
)

// BenchmarkAuthorizeCall measures the gateway's per-request cost of asking
// authz (a cached token, 32 concurrent callers): the CPU time of the client side
// in this process and of the authz process, per call. It is the floor of what
// BenchmarkWhoAmI's gateway adds to the baseline.
func BenchmarkAuthorizeCall(b *testing.B) {
	token := mint(b, []string{scopeUser})
	for _, tc := range []struct {
		name string
		user bool
	}{{"decision", false}, {"decision+user", true}} {
		b.Run(tc.name, func(b *testing.B) {
			az, err := authzclient.New(stack.Authz.Addr, authzclient.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer az.Close()
			req := &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP(), RequiredScopes: []string{scopeUser}, IncludeUser: tc.user, IncludeOrgs: tc.user}
			if _, err := az.Authorize(b.Context(), req); err != nil {
				b.Fatal(err)
			}
			self0, authz0 := cpuTime(b)
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := az.Authorize(b.Context(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			self1, authz1 := cpuTime(b)
			b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N), "client-cpu-µs/op")
			b.ReportMetric(float64((authz1-authz0).Microseconds())/float64(b.N), "authz-cpu-µs/op")
		})
	}
}
