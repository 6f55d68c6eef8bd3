package decisioncache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
)

// fakeAuthz serves WatchInvalidations (when watch is set) and hands each
// stream it opens to the test.
type fakeAuthz struct {
	authzv1.UnimplementedAuthzServiceServer
	streams chan *serverStream
}

// serverStream is one open stream on the fake: send messages on send, end it
// with an error (or nil) on end.
type serverStream struct {
	send chan *authzv1.WatchInvalidationsResponse
	end  chan error
}

func (f *fakeAuthz) WatchInvalidations(_ *authzv1.WatchInvalidationsRequest, s grpc.ServerStreamingServer[authzv1.WatchInvalidationsResponse]) error {
	ss := &serverStream{send: make(chan *authzv1.WatchInvalidationsResponse), end: make(chan error, 1)}
	select {
	case f.streams <- ss:
	case <-s.Context().Done():
		return s.Context().Err()
	}
	for {
		select {
		case m := <-ss.send:
			if err := s.Send(m); err != nil {
				return err
			}
		case err := <-ss.end:
			return err
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
}

// unimplementedAuthz is an authz that predates WatchInvalidations.
type unimplementedAuthz struct {
	authzv1.UnimplementedAuthzServiceServer
}

// serve starts a gRPC server with svc on loopback and returns a client of it.
func serve(t *testing.T, svc authzv1.AuthzServiceServer) *authzclient.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authzv1.RegisterAuthzServiceServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	c, err := authzclient.New(ln.Addr().String(), authzclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// watch runs c.Watch against client until the test ends, and returns a
// channel closed when Watch has returned and a function that stops it.
func watch(t *testing.T, c *decisioncache.Cache, client *authzclient.Client) (done <-chan struct{}, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		c.Watch(ctx, func(ctx context.Context) (decisioncache.Stream, error) { return client.WatchInvalidations(ctx) })
	}()
	t.Cleanup(func() { cancel(); <-ch })
	return ch, cancel
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what, cond)
}

func next(t *testing.T, f *fakeAuthz) *serverStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not open a stream within 10s")
		return nil
	}
}

var reset = &authzv1.WatchInvalidationsResponse{Reset_: true}

func keep(t *testing.T, c *decisioncache.Cache, token string) {
	t.Helper()
	req := &authzv1.AuthorizeRequest{Token: token, Resource: "http://gw.test/mcp", RequiredScopes: []string{"s"}}
	_, ticket := c.Get(req)
	if !c.Put(ticket, &authzv1.AuthorizeResponse{Allowed: true, Principal: &authzv1.Principal{Subject: "u"}, TokenRef: "ref-" + token, ReusableUntil: timestamppb.New(time.Now().Add(time.Hour))}) {
		t.Fatalf("the cache did not keep a decision for %s", token)
	}
}

// TestWatch follows one cache through a stream's life over real gRPC: down
// until the first reset, invalidations applied, down (and empty) when the
// stream ends, up again on the next stream, down when the watcher stops.
func TestWatch(t *testing.T) {
	t.Parallel()
	f := &fakeAuthz{streams: make(chan *serverStream)}
	client := serve(t, f)
	logs := &testenv.LogBuffer{}
	c := decisioncache.New(decisioncache.Options{TTL: time.Minute, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	done, stop := watch(t, c, client)

	s := next(t, f)
	if c.Up() {
		t.Fatal("the cache is up before the stream's reset")
	}
	// An invalidation before the reset does not bring the cache up.
	s.send <- &authzv1.WatchInvalidationsResponse{TokenRef: "ref-x"}
	s.send <- reset
	waitFor(t, "the first reset brings the cache up", c.Up)
	keep(t, c, "a")
	keep(t, c, "b")
	s.send <- &authzv1.WatchInvalidationsResponse{TokenRef: "ref-a"}
	waitFor(t, "the invalidation drops a's decision", func() bool { return c.Len() == 1 })
	s.send <- &authzv1.WatchInvalidationsResponse{} // empty: ignored
	s.send <- reset
	waitFor(t, "a later reset drops everything", func() bool { return c.Len() == 0 })
	if !c.Up() {
		t.Fatal("a later reset took the cache down")
	}

	keep(t, c, "b")
	s.end <- status.Error(codes.Unavailable, "replica going away")
	waitFor(t, "the stream's end takes the cache down", func() bool { return !c.Up() })
	if c.Len() != 0 {
		t.Errorf("Len = %d after the stream ended, want 0", c.Len())
	}

	s = next(t, f)
	s.send <- reset
	waitFor(t, "the new stream brings the cache up", c.Up)
	// A stream the server ends cleanly is still an end.
	s.end <- nil
	waitFor(t, "a clean end takes the cache down", func() bool { return !c.Up() })
	s = next(t, f)
	s.send <- reset
	waitFor(t, "the third stream brings the cache up", c.Up)

	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context ending")
	}
	if c.Up() {
		t.Error("the cache is up after Watch returned")
	}
	out := logs.String()
	for _, want := range []string{
		`"msg":"decision cache on: invalidation stream up"`,
		`"msg":"decision cache dropped: authz may have missed invalidations"`,
		`"msg":"decision cache off: the invalidation stream ended; every request asks authz until it is back"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if n := strings.Count(out, `"msg":"decision cache on: invalidation stream up"`); n != 3 {
		t.Errorf("logged the stream up %d times, want 3 (once per stream)", n)
	}
}

// TestWatchUnimplemented: against an authz without WatchInvalidations the
// cache stays down, the watcher keeps trying, and warns once.
func TestWatchUnimplemented(t *testing.T) {
	t.Parallel()
	client := serve(t, unimplementedAuthz{})
	logs := &testenv.LogBuffer{}
	c := decisioncache.New(decisioncache.Options{TTL: time.Minute, Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	watch(t, c, client)
	waitFor(t, "the watcher retries", func() bool { return strings.Count(logs.String(), "invalidation stream still unavailable") >= 2 })
	if c.Up() {
		t.Error("the cache is up without a stream")
	}
	if n := strings.Count(logs.String(), "authz does not serve WatchInvalidations"); n != 1 {
		t.Errorf("warned %d times about the missing RPC, want 1:\n%s", n, logs.String())
	}
}

// TestWatchUnreachable: with nothing listening the cache stays down, Watch says
// so at INFO first (authz may be starting), warns once the grace has passed,
// and still returns promptly when told to stop.
func TestWatchUnreachable(t *testing.T) {
	t.Parallel()
	client, err := authzclient.New(testenv.FreeAddr(t), authzclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	logs := &testenv.LogBuffer{}
	c := decisioncache.New(decisioncache.Options{TTL: time.Minute, OpenGrace: 2 * time.Second, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	done, stop := watch(t, c, client)
	waitFor(t, "the watcher says it waits", func() bool {
		return strings.Contains(logs.String(), `"level":"INFO","msg":"decision cache waiting for authz's invalidation stream`)
	})
	if strings.Contains(logs.String(), "WARN") {
		t.Errorf("warned before the grace had passed:\n%s", logs.String())
	}
	waitFor(t, "the watcher warns", func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"decision cache off: cannot open the invalidation stream`)
	})
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context ending")
	}
	if c.Up() {
		t.Error("the cache is up without a stream")
	}
}

// TestWatchInvalidationLogLimited: a burst of invalidations on the stream
// logs one debug line per period, the next one counting those left out,
// instead of one line per token.
func TestWatchInvalidationLogLimited(t *testing.T) {
	t.Parallel()
	f := &fakeAuthz{streams: make(chan *serverStream)}
	client := serve(t, f)
	logs := &testenv.LogBuffer{}
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC).UnixNano())
	c := decisioncache.New(decisioncache.Options{
		TTL:    time.Minute,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    func() time.Time { return time.Unix(0, now.Load()) },
	})
	watch(t, c, client)
	s := next(t, f)
	s.send <- reset
	waitFor(t, "the reset brings the cache up", c.Up)

	// invalidate sends n invalidations, the last of token last, and waits
	// until the cache has applied them all.
	invalidate := func(n int, last string) {
		keep(t, c, last)
		for i := range n - 1 {
			s.send <- &authzv1.WatchInvalidationsResponse{TokenRef: fmt.Sprint("ref-burst-", i)}
		}
		s.send <- &authzv1.WatchInvalidationsResponse{TokenRef: "ref-" + last}
		waitFor(t, "the invalidations are applied", func() bool { return c.Len() == 0 })
	}
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			if m["msg"] == "token invalidated" {
				out = append(out, m)
			}
		}
		return out
	}

	invalidate(500, "x")
	if got := lines(); len(got) != 1 || got[0]["unlogged_since_last"] != 0.0 {
		t.Fatalf("after a burst of 500: %d lines (first %v), want 1 with unlogged_since_last 0", len(got), got[0])
	}
	now.Add(int64(10 * time.Second))
	invalidate(1, "y")
	// The cache drops the entry before it logs: wait for the line.
	waitFor(t, "the line for ref-y", func() bool { return len(lines()) >= 2 })
	got := lines()
	if len(got) != 2 || got[1]["unlogged_since_last"] != 499.0 || got[1]["token_ref"] != "ref-y" {
		t.Fatalf("one period later: %d lines (last %v), want 2, the second for ref-y with unlogged_since_last 499", len(got), got[len(got)-1])
	}
}
