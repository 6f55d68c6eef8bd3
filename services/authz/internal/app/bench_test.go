package app_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/propelauthtest"
)

// BenchmarkLoopback measures Authorize over real loopback gRPC against the floor of
// a no-op unary call (health Check) on the same kind of connection, in one run:
//
//	noop     grpc.health.v1.Health/Check
//	l1-hit   Authorize answered from the in-process cache
//	l2-hit   Authorize answered from Redis (an instance with L1_MAX_ENTRIES=0):
//	         GET, then parsing the stored introspection JSON
//	miss     Authorize of a new token: L1 miss, Redis miss, introspection over HTTP
//	         to a local endpoint, Redis write
//
// Hits cycle through 256 warm tokens. "serial" is one caller (latency); "parallel"
// is 32 concurrent callers (throughput). Client and server share the machine's
// cores, so client-side costs (such as decoding the claims Struct) count too.
func BenchmarkLoopback(b *testing.B) {
	as := propelauthtest.New()
	b.Cleanup(as.Close)
	now := time.Now().Unix()
	claims := func(tok string) (map[string]any, bool) {
		if !strings.HasPrefix(tok, "bench-") {
			return nil, false
		}
		return map[string]any{
			"active": true, "sub": "8a1f0c2e-6b1d-4c55-9d3a-2f7e1b6a9c01", "client_id": "0b2f4d6e8a0c2e4f6a8c0e2f4a6c8e0a",
			"scope": "read:user_data read:org_data", "aud": resourceURL, "iss": as.Issuer(),
			"exp": now + 3600, "iat": now,
		}, true
	}
	as.SetTokenFunc(claims)
	rd := testenv.StartRedis(b)
	quiet := slog.New(slog.DiscardHandler)
	withL1 := startWithLogger(b, "bench-l1", env(as, rd.URL(), nil), quiet)
	noL1 := startWithLogger(b, "bench-l2", env(as, rd.URL(), map[string]string{"L1_MAX_ENTRIES": "0"}), quiet)

	// A pool of warm tokens, so concurrent callers rarely ask about the same token
	// at once: concurrent lookups of one key would coalesce into one Redis read and
	// flatter the L2 figure.
	hot := make([]string, 256)
	for i := range hot {
		hot[i] = fmt.Sprintf("bench-hot-%03d-0123456789abcdef0123456789abcdef", i)
		mustAllow(b, withL1, hot[i])
		mustAllow(b, noL1, hot[i])
	}
	var seq, next atomic.Int64
	pick := func() string { return hot[next.Add(1)%int64(len(hot))] }
	cases := []struct {
		name string
		call func() error
	}{
		{"noop", func() error {
			_, err := withL1.health.Check(b.Context(), &healthpb.HealthCheckRequest{})
			return err
		}},
		{"l1-hit", func() error {
			_, err := withL1.client.Authorize(b.Context(), authorizeReq(pick(), "read:user_data"))
			return err
		}},
		{"l2-hit", func() error {
			_, err := noL1.client.Authorize(b.Context(), authorizeReq(pick(), "read:user_data"))
			return err
		}},
		{"miss", func() error {
			tok := fmt.Sprintf("bench-miss-%d-%d", now, seq.Add(1))
			_, err := withL1.client.Authorize(b.Context(), authorizeReq(tok, "read:user_data"))
			return err
		}},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, c := range cases {
			b.Run(mode+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				if mode == "serial" {
					for b.Loop() {
						if err := c.call(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := c.call(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
