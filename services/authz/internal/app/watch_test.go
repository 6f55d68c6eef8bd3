package app_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/app"
)

// watcher is an open WatchInvalidations stream whose messages a goroutine
// forwards, so that tests can wait for one with a bound.
type watcher struct {
	msgs   chan *authzv1.WatchInvalidationsResponse
	end    chan error // the stream's final error (io.EOF for a clean end)
	cancel context.CancelFunc
}

func watch(t *testing.T, inst *instance) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := inst.client.WatchInvalidations(ctx, &authzv1.WatchInvalidationsRequest{})
	if err != nil {
		t.Fatalf("WatchInvalidations: %v", err)
	}
	w := &watcher{msgs: make(chan *authzv1.WatchInvalidationsResponse, 100), end: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				w.end <- err
				return
			}
			w.msgs <- m
		}
	}()
	return w
}

// next returns the stream's next message, failing the test if none comes within
// timeout or the stream ends.
func (w *watcher) next(t *testing.T, timeout time.Duration) *authzv1.WatchInvalidationsResponse {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.end:
		t.Fatalf("watch stream ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no watch message within %v", timeout)
	}
	return nil
}

// nextRef skips resets and returns the next token_ref.
func (w *watcher) nextRef(t *testing.T, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := w.next(t, time.Until(deadline))
		if !m.GetReset_() {
			return m.GetTokenRef()
		}
	}
}

func wantReset(t *testing.T, m *authzv1.WatchInvalidationsResponse) {
	t.Helper()
	if !m.GetReset_() || m.GetTokenRef() != "" {
		t.Fatalf("message = %v, want a reset without a token_ref", m)
	}
}

// authorizeRef authorizes tok on inst and returns the answer's token_ref.
func authorizeRef(t *testing.T, inst *instance, tok string) string {
	t.Helper()
	resp, err := inst.client.Authorize(t.Context(), authorizeReq(tok, "read:user_data"))
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	if len(resp.GetTokenRef()) != 64 {
		t.Fatalf("token_ref = %q, want 64 hex digits", resp.GetTokenRef())
	}
	return resp.GetTokenRef()
}

// TestWatchWithoutRedis: on a lone replica, the stream starts with a reset and
// carries every InvalidateToken made there, named as Authorize named the token;
// the open streams gauge follows the stream.
func TestWatchWithoutRedis(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := start(t, "watch-solo", env(as, "", nil))
	w := watch(t, inst)
	wantReset(t, w.next(t, 5*time.Second))
	eventually(t, 5*time.Second, "the open streams gauge to count the stream", func() bool {
		return testutil.ToFloat64(inst.Metrics.WatchStreams) == 1
	})

	for _, tok := range []string{mint(as), mint(as)} {
		ref := authorizeRef(t, inst, tok)
		if _, err := inst.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
			t.Fatalf("InvalidateToken: %v", err)
		}
		if got := w.nextRef(t, 5*time.Second); got != ref {
			t.Errorf("watched token_ref %q, want Authorize's %q", got, ref)
		}
	}
	// A denied answer names its token too, the same way.
	unknown := "never-issued-token"
	resp, err := inst.client.Authorize(t.Context(), authorizeReq(unknown))
	if err != nil || resp.GetAllowed() || resp.GetTokenRef() != hexKey(inst, unknown) {
		t.Errorf("Authorize of an unknown token = %v, %v; want a denial with token_ref %s", resp, err, hexKey(inst, unknown))
	}

	w.cancel()
	// The stream is counted by its code as it ends, just after the gauge drops.
	canceled := inst.Metrics.GRPCRequests.WithLabelValues(authzv1.AuthzService_WatchInvalidations_FullMethodName, codes.Canceled.String())
	eventually(t, 5*time.Second, "the gauge to drop and the stream to count as canceled when the caller goes away", func() bool {
		return testutil.ToFloat64(inst.Metrics.WatchStreams) == 0 && testutil.ToFloat64(canceled) == 1
	})
}

// TestWatchAcrossReplicas: InvalidateToken on replica a reaches a watcher of
// replica b (through Redis) with the token_ref b's own Authorize returned, and a
// watcher of a too.
func TestWatchAcrossReplicas(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	rd := testenv.StartRedis(t)
	a := start(t, "watch-a", env(as, rd.URL(), nil))
	b := start(t, "watch-b", env(as, rd.URL(), nil))
	// Invalidations published before b subscribes would not reach it (b would
	// send a reset instead, which proves nothing here).
	waitSubscribed(t, a, b)
	wa, wb := watch(t, a), watch(t, b)
	wantReset(t, wa.next(t, 5*time.Second))
	wantReset(t, wb.next(t, 5*time.Second))

	tok := mint(as)
	ref := authorizeRef(t, b, tok)
	if refA := authorizeRef(t, a, tok); refA != ref {
		t.Fatalf("replicas name one token differently: %q and %q", refA, ref)
	}
	if _, err := a.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
		t.Fatalf("InvalidateToken: %v", err)
	}
	if got := wb.nextRef(t, 5*time.Second); got != ref {
		t.Errorf("replica b's watcher got %q, want %q", got, ref)
	}
	if got := wa.nextRef(t, 5*time.Second); got != ref {
		t.Errorf("replica a's watcher got %q, want %q", got, ref)
	}
}

// TestWatchResetOnRedisRestart: a replica that lost its Redis subscription may
// have missed invalidations, so its watchers get a reset once it is back.
func TestWatchResetOnRedisRestart(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	rd := testenv.StartRedis(t)
	inst := start(t, "watch-restart", env(as, rd.URL(), nil))
	waitSubscribed(t, inst)
	w := watch(t, inst)
	wantReset(t, w.next(t, 5*time.Second))

	rd.Stop()
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	// go-redis reconnects with a backoff; the resubscription can take seconds.
	wantReset(t, w.next(t, 20*time.Second))
	if n := testutil.ToFloat64(inst.Metrics.L1Flushes); n < 2 {
		t.Errorf("L1 flushes = %v, want the resubscription counted", n)
	}
}

// TestShutdownEndsWatchStreams: an open watch stream does not hold up shutdown
// (GracefulStop would otherwise wait for it until ShutdownTimeout), and its
// caller is told UNAVAILABLE, to watch another replica.
func TestShutdownEndsWatchStreams(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := startWithOptions(t, "watch-shutdown", env(as, "", nil), testLogger("watch-shutdown"), func(o *app.Options) {
		o.ShutdownTimeout = time.Minute
	})
	w := watch(t, inst)
	wantReset(t, w.next(t, 5*time.Second))

	start := time.Now()
	inst.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown with an open watch stream took %v, want it prompt", d)
	}
	select {
	case err := <-w.end:
		if status.Code(err) != codes.Unavailable || errors.Is(err, io.EOF) {
			t.Errorf("stream ended with %v, want UNAVAILABLE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch stream did not end at shutdown")
	}
	if want := `"msg":"ending invalidation watch streams","instance":"watch-shutdown","streams":1`; !strings.Contains(logs.String(), want) {
		t.Errorf("the log lacks %s", want)
	}
}
