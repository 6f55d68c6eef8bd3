package server

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/watch"
)

// gatedStream is a WatchInvalidations stream whose Send blocks until the test
// releases it, like a caller that does not read.
type gatedStream struct {
	grpc.ServerStream
	ctx     context.Context
	entered chan *authzv1.WatchInvalidationsResponse
	release chan struct{}
}

func (g *gatedStream) Context() context.Context { return g.ctx }

func (g *gatedStream) Send(m *authzv1.WatchInvalidationsResponse) error {
	g.entered <- m
	<-g.release
	return nil
}

func newGated(ctx context.Context) *gatedStream {
	return &gatedStream{ctx: ctx, entered: make(chan *authzv1.WatchInvalidationsResponse), release: make(chan struct{})}
}

// sent waits for the handler to send a message and returns it; the handler
// stays blocked in Send until the next release.
func (g *gatedStream) sent(t *testing.T) string {
	t.Helper()
	m := <-g.entered
	if m.GetReset_() {
		return "reset"
	}
	return m.GetTokenRef()
}

// TestWatchSlowCaller: while the handler is stuck sending to a caller that does
// not read, invalidations beyond the buffer become one reset, and the publisher
// never waits. The handler ends with UNAVAILABLE when the hub closes and with
// CANCELED when the caller goes away.
func TestWatchSlowCaller(t *testing.T) {
	t.Parallel()
	hub := watch.New(watch.Options{Buffer: 4})
	s := New(Options{Metrics: metrics.New(), Watch: hub})
	g := newGated(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.WatchInvalidations(&authzv1.WatchInvalidationsRequest{}, g) }()

	var got []string
	got = append(got, g.sent(t))
	g.release <- struct{}{}
	hub.Publish("a")
	got = append(got, g.sent(t)) // the handler is now blocked sending "a"
	for _, ref := range []string{"b", "c", "d", "e", "f"} {
		hub.Publish(ref) // never blocks, though nobody reads
	}
	g.release <- struct{}{}
	got = append(got, g.sent(t)) // the overflow's reset replaced b..f
	g.release <- struct{}{}
	hub.Publish("g")
	got = append(got, g.sent(t))
	want := []string{"reset", "a", "reset", "g"}
	if len(got) != len(want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sent %v, want %v", got, want)
		}
	}
	g.release <- struct{}{}
	hub.Close()
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Errorf("after hub Close: %v, want UNAVAILABLE", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	g2 := newGated(ctx)
	s2 := New(Options{Metrics: metrics.New(), Watch: watch.New(watch.Options{})})
	go func() { done <- s2.WatchInvalidations(&authzv1.WatchInvalidationsRequest{}, g2) }()
	if m := g2.sent(t); m != "reset" {
		t.Fatalf("first message %q, want a reset", m)
	}
	cancel()
	g2.release <- struct{}{}
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Errorf("after the caller went away: %v, want CANCELED", err)
	}
}
