package app_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

// TestUnknownTokenFlood: a flood of distinct unknown tokens, sent by callers that
// give up before the authorization server, which takes 20 s, answers,
// costs at most INTROSPECTION_MAX_IN_FLIGHT introspections and
// INTROSPECTION_MAX_CONNS connections, and its goroutines end with its callers;
// cached tokens, in L1 and in Redis, keep being answered; a new token gets
// UNAVAILABLE (with pushback) instead of waiting. The same for GetUser with
// distinct unknown user IDs. Before the bounds, each distinct token cost an
// introspection, goroutines and a connection of its own until the server
// answered.
//
// Not parallel: it counts the process's goroutines, which other tests' instances
// would change.
func TestUnknownTokenFlood(t *testing.T) {
	const maxInFlight, maxConns, flood = 16, 32, 1000
	as := newAS(t)
	rd := testenv.StartRedis(t)
	inst := start(t, "flood", env(as, rd.URL(), map[string]string{
		"INTROSPECTION_MAX_IN_FLIGHT": fmt.Sprint(maxInFlight),
		"INTROSPECTION_MAX_CONNS":     fmt.Sprint(maxConns),
		"INTROSPECTION_TIMEOUT":       "60s",
	}))
	other := start(t, "flood-other", env(as, rd.URL(), nil))
	waitSubscribed(t, inst, other)
	cached := mint(as)
	mustAllow(t, inst, cached) // in inst's L1
	shared := mint(as)
	mustAllow(t, other, shared) // in Redis, not in inst's L1

	as.SetFault(faults.OK, 20*time.Second)
	openBefore, _ := as.Conns()
	introspections, userFetches := as.Introspections(), as.UserFetches()
	goroutines := runtime.NumGoroutine()

	// What may stay once the callers are gone: the fetches in flight, each with
	// its HTTP connection's goroutines at both ends (about 5), and room for
	// timers and the like.
	settles := func(what string, fetches int) {
		t.Helper()
		bound := goroutines + fetches*8
		eventually(t, 10*time.Second, fmt.Sprintf("goroutines after the %s flood to fall to at most %d (%d before)", what, bound, goroutines), func() bool {
			return runtime.NumGoroutine() <= bound
		})
		t.Logf("goroutines after the %s flood: %d (bound %d)", what, runtime.NumGoroutine(), bound)
	}

	// The flood. Its callers stay until every introspection slot is taken (how
	// long that takes depends on the machine's load, so it is waited for, not
	// timed), then all give up at once.
	var wg sync.WaitGroup
	floodCtx, giveUp := context.WithTimeout(t.Context(), 30*time.Second)
	defer giveUp()
	for i := range flood {
		wg.Go(func() {
			_, _ = inst.client.Authorize(floodCtx, authorizeReq(fmt.Sprintf("flood-%d-%d", time.Now().UnixNano(), i)))
		})
	}
	eventually(t, 20*time.Second, "every introspection slot to be taken", func() bool {
		return as.Introspections()-introspections >= maxInFlight
	})
	// Meanwhile, cached tokens are answered: from L1, and from Redis.
	for range 20 {
		mustAllow(t, inst, cached)
	}
	mustAllow(t, inst, shared)
	giveUp()
	wg.Wait()
	settles("token", maxInFlight)
	if n := as.IntrospectionsOf(shared); n != 1 {
		t.Errorf("the token cached in Redis was introspected %d times, want once (by the other replica)", n)
	}
	if n := testutil.ToFloat64(inst.Metrics.RedisErrors.WithLabelValues("get")); n != 0 {
		t.Errorf("redis get errors during the flood = %v, want 0 (the shared tier stays in use)", n)
	}
	if n := as.Introspections() - introspections; n > maxInFlight {
		t.Errorf("introspections during the flood = %d, want at most INTROSPECTION_MAX_IN_FLIGHT = %d", n, maxInFlight)
	}

	// A new token while every slot is taken: UNAVAILABLE at once, with pushback.
	var md metadata.MD
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	asked := time.Now()
	refused := mint(as)
	_, err := inst.client.Authorize(ctx, authorizeReq(refused), grpc.Trailer(&md))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("new token during the flood = %v, want Unavailable", err)
	} else if ref := unavailableInfo(t, err, "INTROSPECTION_BUSY"); ref != hexKey(inst, refused) {
		t.Errorf("token_ref of the refusal = %q, want the token's %q", ref, hexKey(inst, refused))
	}
	t.Logf("a new token during the flood: %v after %v", status.Code(err), time.Since(asked).Round(time.Millisecond))
	if diff := cmp.Diff([]string{"-1"}, md.Get("grpc-retry-pushback-ms")); diff != "" {
		t.Errorf("pushback (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(inst.Metrics.UpstreamRejected.WithLabelValues(metrics.UpstreamIntrospection)); n < 1 {
		t.Errorf("rejected introspections = %v, want at least 1", n)
	}

	// The same for unknown user IDs, which go to the same server.
	userCtx, giveUpUsers := context.WithTimeout(t.Context(), 30*time.Second)
	defer giveUpUsers()
	for i := range flood / 5 {
		wg.Go(func() {
			_, _ = inst.client.GetUser(userCtx, &authzv1.GetUserRequest{UserId: fmt.Sprintf("ghost-%d", i)})
		})
	}
	eventually(t, 20*time.Second, "every user fetch slot to be taken", func() bool {
		return as.UserFetches()-userFetches >= maxInFlight
	})
	giveUpUsers()
	wg.Wait()
	settles("user", 2*maxInFlight)
	if n := as.UserFetches() - userFetches; n > maxInFlight {
		t.Errorf("user fetches during the flood = %d, want at most INTROSPECTION_MAX_IN_FLIGHT = %d", n, maxInFlight)
	}
	md = nil
	ctx, cancel = context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err = inst.client.GetUser(ctx, &authzv1.GetUserRequest{UserId: "ghost-late"}, grpc.Trailer(&md))
	if status.Code(err) != codes.Unavailable || len(md.Get("grpc-retry-pushback-ms")) != 1 {
		t.Errorf("new user during the flood = %v with pushback %q, want Unavailable with pushback", err, md.Get("grpc-retry-pushback-ms"))
	}

	// Both APIs share the bound on connections.
	if _, peak := as.Conns(); peak > openBefore+maxConns {
		t.Errorf("connections to the authorization server peaked at %d, want at most %d open before + INTROSPECTION_MAX_CONNS = %d", peak, openBefore, maxConns)
	}
	open, peak := as.Conns()
	t.Logf("flood of %d tokens and %d user IDs: %d introspections, %d user fetches, AS connections %d open (peak %d), goroutines %d before, %d after",
		flood, flood/5, as.Introspections()-introspections, as.UserFetches()-userFetches, open, peak, goroutines, runtime.NumGoroutine())
}
