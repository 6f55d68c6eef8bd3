package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// The services' Redis operations, as they use them: single-key reads and
// writes, a one-key script (the rate limiter's), and one transaction that
// writes a key and publishes on a channel (authz's invalidation). With keys
// spread over every slot of a Cluster, none may fail with CROSSSLOT: no
// operation needs two keys in one slot, so none needs a hash tag.
func exerciseOperations(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ps := c.Subscribe(ctx, "mcpauthz:invalidate")
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil { // the subscription's confirmation
		t.Fatalf("subscribing: %v", err)
	}
	script := redis.NewScript(`redis.call("SET", KEYS[1], ARGV[1]); return redis.call("GET", KEYS[1])`)
	for i := range 64 {
		key := fmt.Sprintf("mcpauthz:intro:%02x", i)
		if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "v" {
			t.Fatalf("GET %s = %q, %v", key, v, err)
		}
		if v, err := script.Run(ctx, c, []string{"rate:" + key}, "1").Text(); err != nil || v != "1" {
			t.Fatalf("script on rate:%s = %q, %v", key, v, err)
		}
		if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, "0\n", time.Minute)
			p.Publish(ctx, "mcpauthz:invalidate", key)
			return nil
		}); err != nil {
			t.Fatalf("MULTI SET %s PUBLISH: %v", key, err)
		}
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil || msg.Payload != key {
			t.Fatalf("subscriber got %v, %v; want %s", msg, err, key)
		}
	}
}

// TestOpenCluster: the Cluster form opens a Cluster client that serves
// every operation over all slots, and sees a failover as soon as the cluster
// has promoted a replica, not at go-redis's periodic reload of the slot map
// (a minute): the commands that fail meanwhile reload it, and so do the
// failed reconnections of a client that only subscribes.
func TestOpenCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 6-node Redis Cluster and fails one over (about 10s): go test without -short (make test) runs it")
	}
	t.Parallel()
	rc := testenv.StartRedisCluster(t, 3, 1)
	c, err := Open(rc.URL(), Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("Open(%s) = %T, want a Cluster client", rc.URL(), c)
	}
	exerciseOperations(t, c)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const key = "k"
	old, err := rc.PrimaryOf(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// A second client that only subscribes, as an idle replica's
	// invalidation subscription does, on a channel of the same slot as key:
	// it sends no command whose failure would reload the slot map, so only
	// its own failed reconnections can move it to the promoted replica.
	msgs := subscribe(t, ctx, rc.URL(), key)
	old.Stop()
	killed := time.Now()
	// Commands fail while the cluster notices; they go on failing as a
	// client would send them.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil && c.Set(ctx, key, "v", time.Minute).Err() != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if _, err := rc.WaitPromoted(ctx, key, old); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	// Bounded well below go-redis's one-minute reload, so that a client
	// that waits for it fails.
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("SET %s still failing 10s after the cluster promoted a replica", key)
	}
	setAgain := time.Since(promoted)
	heard := hear(t, ctx, c, key, msgs, promoted)
	t.Logf("primary of %q killed; replica promoted after %v; after the promotion the client's SET worked again after %v, the subscriber heard a message after %v",
		key, promoted.Sub(killed).Round(time.Millisecond), setAgain.Round(time.Millisecond), heard.Round(time.Millisecond))
}

// TestOpenSentinel: the Sentinel form opens a client of the primary the
// Sentinels name, which serves every operation and, once they have promoted
// a replica, reaches the new primary, as does a subscription.
func TestOpenSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a primary, a replica and three Sentinels and fails over (about 10s): go test without -short (make test) runs it")
	}
	t.Parallel()
	rs := testenv.StartRedisSentinel(t, 1, 3)
	c, err := Open(rs.URL(), Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	exerciseOperations(t, c)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	old, err := rs.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, ctx, rs.URL(), "k")
	old.Stop()
	killed := time.Now()
	np, err := rs.WaitPromoted(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	testenv.Eventually(t, 10*time.Second, "a SET to reach the new primary", func() bool {
		return c.Set(ctx, "k", "v", time.Minute).Err() == nil
	})
	setAgain := time.Since(promoted)
	if v, err := np.Do(ctx, "GET", "k"); err != nil || v != "$1" {
		t.Errorf("GET k on the new primary %s = %q, %v; want the value just set", np.Addr, v, err)
	}
	heard := hear(t, ctx, c, "k", msgs, promoted)
	t.Logf("primary killed; replica promoted after %v; after the promotion the client's SET worked again after %v, the subscriber heard a message after %v",
		promoted.Sub(killed).Round(time.Millisecond), setAgain.Round(time.Millisecond), heard.Round(time.Millisecond))
}

// subscribe opens a client of rawURL that only subscribes to channel, as an
// idle replica's invalidation subscription does, and returns its messages.
func subscribe(t *testing.T, ctx context.Context, rawURL, channel string) <-chan *redis.Message {
	t.Helper()
	sub, err := Open(rawURL, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	ps := sub.Subscribe(ctx, channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatalf("subscribing: %v", err)
	}
	return ps.Channel(redis.WithChannelHealthCheckInterval(time.Second))
}

// hear publishes on channel through c until msgs delivers a message, and
// returns how long after since that took: messages published while the
// subscriber reconnects are lost. It fails t after 10s.
func hear(t *testing.T, ctx context.Context, c redis.UniversalClient, channel string, msgs <-chan *redis.Message, since time.Time) time.Duration {
	t.Helper()
	for {
		if err := c.Publish(ctx, channel, "m").Err(); err != nil {
			t.Fatalf("PUBLISH: %v", err)
		}
		select {
		case <-msgs:
			return time.Since(since)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(since) > 10*time.Second {
			t.Fatalf("the subscriber heard nothing 10s after the promotion")
		}
	}
}

func TestMain(m *testing.M) {
	if u := os.Getenv(tlsChildEnv); u != "" {
		tlsChild(u)
		os.Exit(0)
	}
	// go-redis logs every refused dial during a failover on stderr; the
	// services route those lines to their debug log, and so do the tests.
	redis.SetLogger(DriverLogger(slog.New(slog.DiscardHandler)))
	os.Exit(m.Run())
}
