package app_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
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
	as := propelauthfake.NewServer()
	b.Cleanup(as.Close)
	now := time.Now().Unix()
	claims := func(tok string) (map[string]any, bool) {
		if !strings.HasPrefix(tok, "bench-") {
			return nil, false
		}
		return map[string]any{
			"active": true, "sub": seedusers.AliceID, "client_id": "0b2f4d6e8a0c2e4f6a8c0e2f4a6c8e0a",
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
		{"l1-hit-json-claims", func() error {
			req := authorizeReq(pick(), "read:user_data")
			req.ClaimsFormat = authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON
			_, err := withL1.client.Authorize(b.Context(), req)
			return err
		}},
		{"l1-hit-no-claims", func() error {
			req := authorizeReq(pick(), "read:user_data")
			req.ClaimsFormat = authzv1.ClaimsFormat_CLAIMS_FORMAT_NONE
			_, err := withL1.client.Authorize(b.Context(), req)
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
		b.Run(mode+"/interleaved", func(b *testing.B) {
			interleaved(b, mode == "parallel", cases[0].call, cases[1].call)
		})
		b.Run(mode+"/interleaved-json-claims", func(b *testing.B) {
			interleaved(b, mode == "parallel", cases[0].call, cases[2].call)
		})
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

// interleaved compares the no-op call with the L1-hit Authorize under the same
// machine load (these machines are shared, and load drifts between
// sub-benchmarks, skewing ratios of separately measured figures).
//
// Serial: one caller alternates the two calls and times each; the ratio of mean
// latencies is the ratio of single-caller throughputs. Parallel: 32 callers run
// short alternating phases (150ms of no-op calls, 150ms of Authorize, eight times)
// and count completed calls; the ratio of counts is the ratio of throughputs.
func interleaved(b *testing.B, parallel bool, noop, hit func() error) {
	if !parallel {
		var noopNS, hitNS, calls int64
		for b.Loop() {
			t0 := time.Now()
			if err := noop(); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := hit(); err != nil {
				b.Fatal(err)
			}
			noopNS += int64(t1.Sub(t0))
			hitNS += int64(time.Since(t1))
			calls++
		}
		b.ReportMetric(float64(noopNS)/float64(calls), "noop-ns/call")
		b.ReportMetric(float64(hitNS)/float64(calls), "l1hit-ns/call")
		b.ReportMetric(float64(noopNS)/float64(hitNS), "l1hit/noop-throughput")
		return
	}
	const workers, phases, phase = 32, 8, 150 * time.Millisecond
	var counts [2]atomic.Int64
	var cpu [2]time.Duration
	for range b.N {
		for p := range phases {
			call := [2]func() error{noop, hit}[p%2]
			cpu0 := processCPU()
			deadline := time.Now().Add(phase)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for time.Now().Before(deadline) {
						if err := call(); err != nil {
							b.Error(err)
							return
						}
						counts[p%2].Add(1)
					}
				})
			}
			wg.Wait()
			cpu[p%2] += processCPU() - cpu0
		}
	}
	secs := float64(b.N) * phases / 2 * phase.Seconds()
	n0, n1 := float64(counts[0].Load()), float64(counts[1].Load())
	b.ReportMetric(n0/secs, "noop-calls/s")
	b.ReportMetric(n1/secs, "l1hit-calls/s")
	b.ReportMetric(n1/n0, "l1hit/noop-throughput")
	// CPU time (client and server, user and system) per call does not depend on
	// how much of the machine other processes take: its ratio is the throughput
	// ratio on a machine of our own.
	b.ReportMetric(float64(cpu[0])/n0, "noop-cpu-ns/call")
	b.ReportMetric(float64(cpu[1])/n1, "l1hit-cpu-ns/call")
	b.ReportMetric((float64(cpu[0])/n0)/(float64(cpu[1])/n1), "l1hit/noop-cpu-efficiency")
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkResponseDecode is the caller's cost of decoding an allowed
// AuthorizeResponse, with the claims as a Struct, as JSON, and without them: most of what an L1-hit
// Authorize costs beyond the no-op call is spent here, on the client.
func BenchmarkResponseDecode(b *testing.B) {
	now := time.Now().Unix()
	claims, err := structpb.NewStruct(map[string]any{
		"active": true, "sub": seedusers.AliceID, "client_id": "0b2f4d6e8a0c2e4f6a8c0e2f4a6c8e0a",
		"scope": "read:user_data read:org_data", "aud": resourceURL, "iss": "http://localhost:9000/oauth/2.1",
		"exp": now + 3600, "iat": now,
	})
	if err != nil {
		b.Fatal(err)
	}
	p := &authzv1.Principal{
		Subject: seedusers.AliceID, ClientId: "0b2f4d6e8a0c2e4f6a8c0e2f4a6c8e0a",
		Scopes: []string{"read:user_data", "read:org_data"}, Audience: []string{resourceURL}, Issuer: "http://localhost:9000/oauth/2.1",
		ExpiresAt: &timestamppb.Timestamp{Seconds: now + 3600}, IssuedAt: &timestamppb.Timestamp{Seconds: now},
	}
	claimsJSON, err := protojson.Marshal(claims)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"with-claims", "with-json-claims", "without-claims"} {
		p.Claims, p.ClaimsJson = nil, nil
		switch name {
		case "with-claims":
			p.Claims = claims
		case "with-json-claims":
			p.ClaimsJson = claimsJSON
		}
		wire, err := proto.Marshal(&authzv1.AuthorizeResponse{Allowed: true, Principal: p})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				var r authzv1.AuthorizeResponse
				if err := proto.Unmarshal(wire, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
