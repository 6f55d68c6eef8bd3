// Package redisconn is how the services talk to Redis: it opens a client from a
// REDIS_URL with the short, retry-free timeouts a cache or a rate limiter needs,
// routes go-redis's own log lines into the service's structured log, and holds
// the [Breaker] with which a service stops calling a Redis that just failed.
//
// Redis is never essential to a request here: authz's shared cache tier and the
// gateway's shared rate limits fall back to in-process state, so a slow or dead
// Redis must cost a request one short timeout at most, and then nothing while
// the breaker is open.
//
// # URLs
//
// [Open] is the one place a REDIS_URL becomes a client, and it returns a
// redis.UniversalClient, the interface go-redis's single-node, Cluster and
// Sentinel clients share; callers use nothing else. Today it accepts the
// single-node form, redis[s]://[user:password@]host:port[/db] (go-redis
// ParseURL).
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/mcpauthz/mcpauthz/internal/ratelog"
)

// Options say how a service uses Redis.
type Options struct {
	// Timeout bounds every command, waiting for a pooled connection included;
	// connecting gets at least 250ms. Required.
	Timeout time.Duration
}

// minDialTimeout keeps a very short command timeout from failing every
// connection attempt: a TCP (and TLS) handshake needs a round trip or two more
// than a command.
const minDialTimeout = 250 * time.Millisecond

// Open returns a client for rawURL, which it does not contact: Redis being down
// at start is an outage like any other, and go-redis connects (and reconnects)
// on demand. Commands are bounded by o.Timeout, including the deadline of their
// context, and never retried: a retry would blow the caller's budget, and the
// caller's fallback is the retry. The pool holds go-redis's default number of
// connections unless the URL sets pool_size; see [PoolSize].
//
// It returns an error if rawURL is not a Redis URL or o.Timeout is not
// positive. The error does not repeat the URL, which may hold a password.
func Open(rawURL string, o Options) (redis.UniversalClient, error) {
	if o.Timeout <= 0 {
		return nil, errors.New("redisconn: Options.Timeout must be positive")
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the whole URL, password included
		}
		return nil, fmt.Errorf("parsing the Redis URL: %w", err)
	}
	// Per-command contexts carry the caller's deadline; without
	// ContextTimeoutEnabled go-redis would ignore it in favour of its socket
	// timeouts.
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = max(o.Timeout, minDialTimeout)
	opt.ReadTimeout = o.Timeout
	opt.WriteTimeout = o.Timeout
	opt.PoolTimeout = o.Timeout
	opt.MaxRetries = -1
	// Neither CLIENT SETINFO nor maintenance notifications serve a cache, and
	// each would add a command to every new connection.
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opt.PoolSize <= 0 {
		opt.PoolSize = defaultPoolSize()
	}
	return redis.NewClient(opt), nil
}

// defaultPoolSize is go-redis's default, made explicit so [PoolSize] knows it.
func defaultPoolSize() int { return 10 * runtime.GOMAXPROCS(0) }

// PoolSize returns the most connections c keeps open to one Redis server, for
// callers that bound their own concurrency by it.
func PoolSize(c redis.UniversalClient) int {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().PoolSize
	case *redis.ClusterClient:
		return c.Options().PoolSize
	}
	return defaultPoolSize()
}

// DriverLogger adapts logger to go-redis's process-wide logger
// (redis.SetLogger), so the driver's own messages about dial failures,
// reconnects and the pool land in the structured log at debug level instead of
// as bare lines on stderr.
func DriverLogger(logger *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return driverLogger{logger}
}

type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Printf(ctx context.Context, format string, v ...any) {
	d.l.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// LogEvery is the least time between two Redis failures a [Breaker] lets its
// owner log: an outage costs one log line per period, not one per request.
const LogEvery = 10 * time.Second

// A Breaker keeps a service from calling Redis for a while after a call
// failed, so that during an outage requests skip Redis at once instead of each
// waiting out a timeout, and says which failures to log. It is safe for
// concurrent use.
type Breaker struct {
	backoff time.Duration
	logs    ratelog.Limiter
	until   atomic.Int64 // unix nanoseconds until which Redis is skipped
	now     func() time.Time
}

// NewBreaker returns a breaker that skips Redis for backoff after each
// failure.
func NewBreaker(backoff time.Duration) *Breaker {
	return &Breaker{backoff: backoff, logs: ratelog.Limiter{Every: LogEvery}, now: time.Now}
}

// Skip reports whether Redis should not be called now: less than the backoff
// has passed since the last failure.
func (b *Breaker) Skip() bool {
	return b.now().UnixNano() < b.until.Load()
}

// Fail records a failed call: Redis is skipped for the backoff from now. It
// reports whether to log this failure (one per [LogEvery]) and, if so, how
// many failures went unlogged since the last one that was. The caller decides
// what is a failure of Redis: a call that failed because its caller went away
// is not one.
func (b *Breaker) Fail() (log bool, suppressed int64) {
	now := b.now()
	b.until.Store(now.Add(b.backoff).UnixNano())
	return b.logs.AllowAt(now)
}
