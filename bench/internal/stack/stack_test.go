package stack

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestDNSAnswersA(t *testing.T) {
	t.Parallel()
	d, err := StartDNS(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	got, err := d.lookup(t.Context(), "authz.mcpload.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"127.0.0.1", "127.0.0.2"}, got); diff != "" {
		t.Errorf("LookupHost (-want +got):\n%s", diff)
	}
	if _, err := d.lookup(t.Context(), "\x00bad"); err == nil {
		t.Error("lookup of an invalid name succeeded")
	}
	if _, err := StartDNS(netip.MustParseAddr("::1")); err == nil {
		t.Error("StartDNS accepted an IPv6 address")
	}
}

// TestDNSTargetBalancesGRPC proves the two-replica set-up: a gRPC client with
// round_robin over the DNS target reaches servers on 127.0.0.1 and 127.0.0.2.
func TestDNSTargetBalancesGRPC(t *testing.T) {
	t.Parallel()
	port, err := freePortOn("127.0.0.1", "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	var hits [2]atomic.Int64
	for i, host := range []string{"127.0.0.1", "127.0.0.2"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			hits[i].Add(1)
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(s, health.NewServer())
		go s.Serve(ln)
		t.Cleanup(s.Stop)
	}
	d, err := StartDNS(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	conn, err := grpc.NewClient(d.Target("authz.mcpload.test", port),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := healthpb.NewHealthClient(conn)
	// Round robin picks only connected servers, and the second may connect a
	// moment after the first: call until both are reached, within a bound.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
		if hits[0].Load() > 0 && hits[1].Load() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hits[0].Load() == 0 || hits[1].Load() == 0 {
		t.Errorf("calls per server = %d, %d: want both reached", hits[0].Load(), hits[1].Load())
	}
}

func TestRSS(t *testing.T) {
	t.Parallel()
	n, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 {
		t.Errorf("RSS of this test = %d bytes, implausibly small", n)
	}
	if _, err := RSS(-1); err == nil {
		t.Error("RSS(-1) succeeded")
	}
}

func TestCPUTime(t *testing.T) {
	t.Parallel()
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime(-1) succeeded")
	}
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU until the tick counter moves (bounded).
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		if now, _ := CPUTime(os.Getpid()); now > before {
			return
		}
	}
	t.Errorf("CPU time did not advance after 5s of spinning (x=%d)", x)
}

func TestSumCounter(t *testing.T) {
	t.Parallel()
	text := `# HELP authz_grpc_requests_total gRPC requests by method and status code.
# TYPE authz_grpc_requests_total counter
authz_grpc_requests_total{code="OK",method="/authz.v1.AuthzService/Authorize"} 1200
authz_grpc_requests_total{code="NotFound",method="/authz.v1.AuthzService/GetUser"} 3
authz_grpc_requests_total{code="OK",method="/grpc.health.v1.Health/Check"} 50
authz_grpc_requests_total_other{method="/authz.v1.AuthzService/Authorize"} 7
authz_grpc_requests_total{code="OK",method="/authz.v1.AuthzService/GetUser"} 2.5e+01 1700000000000
`
	got, err := sumCounter(strings.NewReader(text), "authz_grpc_requests_total", `method="/authz.v1.`)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1228 {
		t.Errorf("sum = %v, want 1228 (Authorize and GetUser, not health, not other metrics)", got)
	}
	if _, err := sumCounter(strings.NewReader(`authz_grpc_requests_total{method="/authz.v1.X"} nope`), "authz_grpc_requests_total", "/authz.v1."); err == nil {
		t.Error("a malformed value was accepted")
	}
}
