package authzclient

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// replica is one in-process AuthzService that answers Authorize with a fixed
// error (or allows), so the test can see which replica a call reached. The real
// authz binary is exercised by the gateway's integration tests; this checks the
// connection's own policy (balancing, retry, health) in isolation.
type replica struct {
	authzv1.UnimplementedAuthzServiceServer
	name   string
	err    error
	calls  atomic.Int64
	addr   string
	health *health.Server
}

func (r *replica) Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	r.calls.Add(1)
	if r.err != nil {
		return nil, r.err
	}
	return &authzv1.AuthorizeResponse{Allowed: true, Principal: &authzv1.Principal{Subject: r.name}}, nil
}

func startReplica(t *testing.T, name string, err error) *replica {
	t.Helper()
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	r := &replica{name: name, err: err, addr: lis.Addr().String(), health: health.NewServer()}
	s := grpc.NewServer()
	authzv1.RegisterAuthzServiceServer(s, r)
	healthpb.RegisterHealthServer(s, r.health)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return r
}

func newClient(t *testing.T, observe Observer, replicas ...*replica) *Client {
	t.Helper()
	res := manual.NewBuilderWithScheme("test")
	var addrs []resolver.Address
	for _, r := range replicas {
		addrs = append(addrs, resolver.Address{Addr: r.addr})
	}
	res.InitialState(resolver.State{Addresses: addrs})
	c, err := New(res.Scheme()+":///authz", Options{Timeout: 3 * time.Second, Observe: observe, DialOptions: []grpc.DialOption{grpc.WithResolvers(res)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRoundRobin(t *testing.T) {
	t.Parallel()
	a, b := startReplica(t, "a", nil), startReplica(t, "b", nil)
	c := newClient(t, nil, a, b)
	// Wait until both subchannels are ready, then check that calls alternate.
	deadline := time.Now().Add(5 * time.Second)
	for a.calls.Load() == 0 || b.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("calls never reached both replicas: a=%d b=%d", a.calls.Load(), b.calls.Load())
		}
		if _, err := c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	a0, b0 := a.calls.Load(), b.calls.Load()
	for range 20 {
		if _, err := c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if da, db := a.calls.Load()-a0, b.calls.Load()-b0; da != 10 || db != 10 {
		t.Errorf("20 calls split %d/%d, want 10/10", da, db)
	}
}

func TestRetryUnavailableOnAnotherReplica(t *testing.T) {
	t.Parallel()
	bad := startReplica(t, "bad", status.Error(codes.Unavailable, "introspection down"))
	good := startReplica(t, "good", nil)
	var mu sync.Mutex
	observed := map[codes.Code]int{}
	c := newClient(t, func(method string, code codes.Code, d time.Duration) {
		if method != authzv1.AuthzService_Authorize_FullMethodName {
			t.Errorf("observed method %q", method)
		}
		mu.Lock()
		observed[code]++
		mu.Unlock()
	}, bad, good)
	waitBoth(t, c, bad, good)
	for range 20 {
		res, err := c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"})
		if err != nil {
			t.Fatalf("Authorize: %v (the UNAVAILABLE replica should have been retried elsewhere)", err)
		}
		if got := res.GetPrincipal().GetSubject(); got != "good" {
			t.Fatalf("answered by %q", got)
		}
	}
	if bad.calls.Load() == 0 {
		t.Error("the failing replica was never tried, so the retry was not exercised")
	}
	mu.Lock()
	defer mu.Unlock()
	if observed[codes.Unavailable] != 0 {
		t.Errorf("observer saw %d UNAVAILABLE results; retries should hide them", observed[codes.Unavailable])
	}
}

// waitBoth waits until both replicas have answered at least one call.
func waitBoth(t *testing.T, c *Client, a, b *replica) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for a.calls.Load() == 0 || b.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("calls never reached both replicas: %d/%d", a.calls.Load(), b.calls.Load())
		}
		_, _ = c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"})
	}
}

func TestNotServingReplicaGetsNoCalls(t *testing.T) {
	t.Parallel()
	sick, well := startReplica(t, "sick", nil), startReplica(t, "well", nil)
	sick.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	c := newClient(t, nil, sick, well)
	for range 20 {
		if _, err := c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := sick.calls.Load(); n != 0 {
		t.Errorf("NOT_SERVING replica got %d calls", n)
	}
	if err := c.Ready(t.Context()); err != nil {
		t.Errorf("Ready with one SERVING replica: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, err := New(addr, Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: "t"})
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Errorf("Authorize to nothing: %v, want UNAVAILABLE or DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v, want within the 500ms deadline", d)
	}
	if err := c.Ready(t.Context()); err == nil {
		t.Error("Ready() = nil with nothing listening")
	}
}
