// Package rediscache is the shared cache tier (L2): a thin wrapper over a go-redis
// client that bounds every operation with a short timeout, stops calling Redis for a
// moment after a failure, logs failures at a limited rate and counts them.
//
// Callers treat every error from Get and Set as a cache miss: a request must never
// fail because Redis did. go-redis reconnects on its own; [Store.Subscribe] resumes
// its subscription after a reconnect and tells the caller, who may have missed
// messages meanwhile.
//
// # Too many operations at once
//
// At most one operation per pooled connection runs at a time; the others wait
// for a turn, for at most half their REDIS_TIMEOUT (the command keeps the other
// half). One that gets none is not attempted and fails with [ErrBusy], which is a
// miss like any other but is not taken for a Redis failure: the store keeps using
// Redis. Without this, a flood of requests queued in go-redis's pool until they
// timed out there, each such timeout put the whole replica into the backoff meant
// for a sick Redis, and every request, legitimate ones included, lost the shared
// tier for it.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

// ErrSkipped is returned by Get and Set while the store is backing off after a
// failure, without contacting Redis.
var ErrSkipped = errors.New("redis skipped after a recent failure")

// ErrBusy is returned when every connection stayed busy with this store's other
// operations for half the operation timeout; Redis was not asked.
var ErrBusy = errors.New("redis not asked: every connection busy")

// Options tunes a [Store].
type Options struct {
	// OpTimeout bounds each Get and Set, waiting for a turn included. Default
	// 100ms.
	OpTimeout time.Duration
	// Backoff is how long Get and Set skip Redis after a failure. Default 500ms.
	// Failures are logged once per redisconn.LogEvery.
	Backoff time.Duration
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// Store is a Redis-backed cache tier. It is safe for concurrent use.
type Store struct {
	rdb       redis.UniversalClient
	opTimeout time.Duration
	logger    *slog.Logger
	m         *metrics.Metrics

	// turns has one token per pooled connection; an operation holds one while
	// it runs. See the package documentation.
	turns   chan struct{}
	breaker *redisconn.Breaker
}

// New returns a store for a Redis URL in any form redisconn.Open takes (a
// single node, a Cluster, a Sentinel-managed primary). It does not connect:
// Redis being down at start is an outage like any other. It returns an error if
// the URL is invalid.
func New(url string, o Options) (*Store, error) {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 100 * time.Millisecond
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rdb, err := redisconn.Open(url, redisconn.Options{Timeout: o.OpTimeout})
	if err != nil {
		return nil, err
	}
	return &Store{
		rdb:       rdb,
		turns:     make(chan struct{}, redisconn.PoolSize(rdb)),
		opTimeout: o.OpTimeout,
		breaker:   redisconn.NewBreaker(o.Backoff),
		logger:    o.Logger,
		m:         o.Metrics,
	}, nil
}

// Close closes the client's connections.
func (s *Store) Close() error { return s.rdb.Close() }

// turn waits for a connection none of this store's operations is using, for at
// most half of ctx's remaining time, so that the command itself always has the
// other half: a command that then times out found Redis slow, not the queue
// long. Without an error, the caller must give the turn back with done.
// Errors: ErrBusy if no turn came in time, ctx's error if ctx was canceled.
func (s *Store) turn(ctx context.Context, op string) error {
	select {
	case s.turns <- struct{}{}:
		return nil
	default:
	}
	wait := s.opTimeout / 2
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl) / 2
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.turns <- struct{}{}:
		return nil
	case <-t.C:
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctx.Err()
		}
	}
	if s.m != nil {
		s.m.RedisBusy.WithLabelValues(op).Inc()
	}
	return ErrBusy
}

func (s *Store) done() { <-s.turns }

// Get returns the value under key. A missing key is (nil, false, nil). Errors mean
// Redis could not answer (ErrSkipped while backing off, ErrBusy when this store
// had too many operations running) and count as a miss.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if s.skipping() {
		return nil, false, ErrSkipped
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.turn(ctx, "get"); err != nil {
		return nil, false, err
	}
	defer s.done()
	b, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.fail(ctx, "get", err)
	}
	return b, true, nil
}

// Set stores value under key for ttl. Errors mean it was not stored.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.set(ctx, key, value, ttl, false)
}

// SetIfAbsent is Set unless key exists, in which case it stores nothing and
// returns nil. Errors mean Redis could not answer.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.set(ctx, key, value, ttl, true)
}

func (s *Store) set(ctx context.Context, key string, value []byte, ttl time.Duration, nx bool) error {
	if s.skipping() {
		return ErrSkipped
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.turn(ctx, "set"); err != nil {
		return err
	}
	defer s.done()
	var err error
	if nx {
		err = s.rdb.SetNX(ctx, key, value, ttl).Err()
	} else {
		err = s.rdb.Set(ctx, key, value, ttl).Err()
	}
	if err != nil {
		return s.fail(ctx, "set", err)
	}
	return nil
}

// SetAndPublish stores value under key for ttl, whether or not key exists, and
// publishes msg on channel, in one round trip (MULTI/EXEC). The transaction
// has one key, so on a Redis Cluster it runs on that key's node, which
// forwards the message to every node (PUBLISH, unlike SPUBLISH, is
// cluster-wide): subscribers hear it wherever they are connected. It does not skip
// while backing off: an invalidation must be attempted. It waits for a turn
// within its own, longer timeout. The error is non-nil if Redis did not confirm
// both.
func (s *Store) SetAndPublish(ctx context.Context, key string, value []byte, ttl time.Duration, channel, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.opTimeout, 500*time.Millisecond))
	defer cancel()
	if err := s.turn(ctx, "publish"); err != nil {
		return err
	}
	defer s.done()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, value, ttl)
		p.Publish(ctx, channel, msg)
		return nil
	})
	if err != nil {
		return s.fail(ctx, "publish", err)
	}
	return nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}

// Subscribe delivers every message published on channel to onMessage until ctx is
// done. onSubscribed runs each time the subscription is (re)established, including
// the first: messages published while disconnected are lost, so the caller should
// drop what they might have invalidated. It returns when ctx is done.
func (s *Store) Subscribe(ctx context.Context, channel string, onMessage func(payload string), onSubscribed func()) {
	ps := s.rdb.Subscribe(ctx, channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(
		redis.WithChannelHealthCheckInterval(time.Second),
		redis.WithChannelPingTimeout(time.Second),
		redis.WithChannelReconnectTimeout(time.Second),
	)
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch msg := msg.(type) {
			case *redis.Subscription:
				if msg.Kind == "subscribe" && msg.Channel == channel {
					s.logger.Info("subscribed to invalidations", "channel", channel)
					onSubscribed()
				}
			case *redis.Message:
				onMessage(msg.Payload)
			}
		}
	}
}

func (s *Store) skipping() bool { return s.breaker.Skip() }

// fail records a failed operation: back off, count, and log at a limited rate.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The caller went away; Redis may be fine.
		return err
	}
	log, suppressed := s.breaker.Fail()
	if s.m != nil {
		s.m.RedisErrors.WithLabelValues(op).Inc()
	}
	if log {
		s.logger.Warn("redis unavailable; serving from the in-process cache and the authorization server",
			"op", op, "err", err.Error(), "suppressed_since_last", suppressed)
	}
	return fmt.Errorf("redis %s: %w", op, err)
}
