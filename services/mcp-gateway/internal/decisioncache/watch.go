package decisioncache

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stream is an open WatchInvalidations stream (the gRPC client stream
// implements it). Recv returns the next message, or an error once the stream
// has ended.
type Stream interface {
	Recv() (*authzv1.WatchInvalidationsResponse, error)
}

// OpenFunc opens a WatchInvalidations stream that lives until ctx is done or
// the stream breaks (authzclient.Client.WatchInvalidations). It returns an
// error when the stream cannot be opened.
type OpenFunc func(ctx context.Context) (Stream, error)

// Reconnection backoff after a stream fails: doubling from minBackoff up to
// maxBackoff, each delay drawn from its upper half so that gateways restarted
// together do not reconnect in step.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Watch keeps c in step with authz's invalidation stream until ctx is done:
// it opens the stream with open, brings c up on its first reset, applies every
// invalidation, and takes c down (dropping everything) when the stream ends,
// then opens a new one after a backoff. It logs each change of state, never a
// token. Refreshes run under ctx. It returns when ctx is done, leaving c down,
// once the refreshes in flight have ended (ctx's end cancels them); run it in a
// goroutine of its own.
func (c *Cache) Watch(ctx context.Context, open OpenFunc) {
	c.mu.Lock()
	c.refreshCtx = ctx
	c.mu.Unlock()
	// Down (below) stops new refreshes from starting before this waits.
	defer c.refreshWG.Wait()
	failures := 0
	// Until the stream has been up once, a failure to open it is what a
	// gateway started beside authz sees (compose, a rolling deploy): said at
	// INFO, and warned about only if it lasts past the grace.
	start, everUp, warned := time.Now(), false, false
	for {
		err := c.watchOnce(ctx, open)
		wasUp := c.Down()
		if ctx.Err() != nil {
			return
		}
		switch {
		case wasUp:
			failures, everUp = 0, true
			c.log.WarnContext(ctx, "decision cache off: the invalidation stream ended; every request asks authz until it is back", "error", err, "code", status.Code(err).String())
		case failures == 0 && status.Code(err) == codes.Unimplemented:
			c.log.WarnContext(ctx, "decision cache off: authz does not serve WatchInvalidations (an older version?); every request asks authz", "error", err)
		case failures == 0:
			c.log.InfoContext(ctx, "decision cache waiting for authz's invalidation stream; every request asks authz until it opens", "error", err, "code", status.Code(err).String())
		case !everUp && !warned && time.Since(start) >= c.openGrace:
			warned = true
			c.log.WarnContext(ctx, "decision cache off: cannot open the invalidation stream; every request asks authz until it opens", "error", err, "code", status.Code(err).String(), "since", time.Since(start).Round(time.Second).String())
		default:
			c.log.DebugContext(ctx, "invalidation stream still unavailable", "error", err, "attempts", failures+1)
		}
		delay := backoff(failures)
		failures++
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchOnce runs one stream until it ends and returns why.
func (c *Cache) watchOnce(ctx context.Context, open OpenFunc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if it is still open
	s, err := open(ctx)
	if err != nil {
		return err
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		switch {
		case m.GetReset_():
			if c.Reset() {
				c.log.InfoContext(ctx, "decision cache on: invalidation stream up", "ttl", c.ttl.String())
			} else {
				c.log.InfoContext(ctx, "decision cache dropped: authz may have missed invalidations")
			}
		case m.GetTokenRef() != "":
			c.Invalidate(m.GetTokenRef())
			c.logInvalidation(ctx, m.GetTokenRef())
		}
	}
}

// logInvalidation logs an invalidation at debug level, at most once per
// [invalidationLogEvery], with how many went unlogged since the last line (the
// metric mcp_gateway_decision_cache_invalidations_total counts them all).
func (c *Cache) logInvalidation(ctx context.Context, ref string) {
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	if ok, suppressed := c.invalLog.AllowAt(c.now()); ok {
		c.log.DebugContext(ctx, "token invalidated", tokenref.Attr(ref), "unlogged_since_last", suppressed)
	}
}

// backoff returns the delay before the attempt after failures failed ones.
func backoff(failures int) time.Duration {
	d := maxBackoff
	if failures < 16 {
		d = min(minBackoff<<failures, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}
