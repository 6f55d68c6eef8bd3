// Package ratelimit limits how many MCP requests one principal (the subject of an
// access token) may make, across every gateway replica.
//
// # Algorithm and store
//
// Both stores implement GCRA (the generic cell rate algorithm, a leaky bucket
// without a background drain): a principal may send [Limit.Burst] requests at
// once and then one every Period/Count. With a Redis URL the state lives in Redis
// (github.com/go-redis/redis_rate, one Lua script per request using Redis's own
// clock), so replicas share one budget per principal; without one, each replica
// keeps its own state in process.
//
// # Redis failures
//
// Rate limiting fails open as far as availability goes: a Redis error never fails a
// request. While Redis is unreachable the replica falls back to its in-process
// limiter (so a principal gets at most one budget per replica instead of one in
// all), logs once per redisconn.LogEvery and counts the error; after
// [Options.Backoff] it tries Redis again.
//
// # Keys
//
// A principal is stored under a SHA-256 of its name (see [Key]), so Redis holds no
// subject, client ID or token in clear; the value is a timestamp.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
)

// Limit is a rate: Count requests per Period, with bursts of up to Burst. The
// zero Limit is "no limit".
type Limit struct {
	Count  int
	Period time.Duration
	Burst  int
}

// Enabled reports whether l limits anything.
func (l Limit) Enabled() bool { return l.Count > 0 && l.Period > 0 }

// String renders l as RATE_LIMIT accepts it, plus the burst.
func (l Limit) String() string {
	if !l.Enabled() {
		return "off"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[l.Period]
	return fmt.Sprintf("%d/%s burst %d", l.Count, unit, l.Burst)
}

// MaxCount bounds the count of a rate: beyond it the limit means nothing.
const MaxCount = 1_000_000_000

// ParseRate parses a RATE_LIMIT value: "N/s", "N/m" or "N/h" (N requests per
// second, minute or hour), or a bare "N" per minute. "", "0" and "off" mean no
// limit. Burst defaults to N. It returns an error saying what is accepted.
func ParseRate(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" || strings.EqualFold(s, "off") {
		return Limit{}, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	period := time.Minute
	if hasUnit {
		switch strings.TrimSpace(unit) {
		case "s":
			period = time.Second
		case "m":
			period = time.Minute
		case "h":
			period = time.Hour
		default:
			return Limit{}, fmt.Errorf("%q: the unit must be s, m or h, as in 600/m", s)
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 || n > MaxCount {
		return Limit{}, fmt.Errorf("%q is not a rate such as 600/m, 10/s or 36000/h (or off)", s)
	}
	if n == 0 {
		return Limit{}, nil
	}
	return Limit{Count: n, Period: period, Burst: n}, nil
}

// Key returns the store key of a principal: a hex SHA-256 prefix (128 bits) of
// its name, so no identifier appears in Redis in clear.
func Key(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return "mcp-gateway:" + hex.EncodeToString(sum[:16])
}

// Result is the outcome of one [Limiter.Allow].
type Result struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// RetryAfter is, when not allowed, how long until the next request would be.
	RetryAfter time.Duration
}

// Options configures [New].
type Options struct {
	// Limit is the rate every principal gets; it must be enabled.
	Limit Limit
	// RedisURL, if set, is the shared store (redis://host:port/db); unset keeps
	// state per replica.
	RedisURL string
	// Logger receives Redis outages (rate-limited); discarded when nil.
	Logger *slog.Logger
	// Metrics counts decisions and Redis errors; a private set when nil.
	Metrics *metrics.Metrics
	// Timeout bounds each Redis call; 250ms when zero. A slow Redis costs a
	// request at most this much before the in-process limiter decides.
	Timeout time.Duration
	// Backoff is how long Redis is skipped after a failure; 1s when zero.
	Backoff time.Duration
	// MaxLocalKeys bounds the in-process state; 100000 when zero.
	MaxLocalKeys int
	// Now is the in-process limiter's clock; time.Now when nil.
	Now func() time.Time
}

// Limiter decides whether a principal's request is within its limit. It is safe
// for concurrent use.
type Limiter struct {
	limit   Limit
	rl      redis_rate.Limit
	rdb     redis.UniversalClient
	redis   *redis_rate.Limiter
	breaker *redisconn.Breaker
	local   *local
	log     *slog.Logger
	metrics *metrics.Metrics
	timeout time.Duration
	backoff time.Duration
}

// New returns a limiter. It returns an error for a disabled limit or an unusable
// Redis URL; an unreachable Redis is not an error (see the package
// documentation).
func New(o Options) (*Limiter, error) {
	if !o.Limit.Enabled() {
		return nil, errors.New("ratelimit: the limit is not enabled")
	}
	if o.Limit.Burst < 1 {
		o.Limit.Burst = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxLocalKeys <= 0 {
		o.MaxLocalKeys = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Limiter{
		limit:   o.Limit,
		rl:      redis_rate.Limit{Rate: o.Limit.Count, Period: o.Limit.Period, Burst: o.Limit.Burst},
		local:   newLocal(o.Now, o.MaxLocalKeys),
		log:     o.Logger,
		metrics: o.Metrics,
		timeout: o.Timeout,
		backoff: o.Backoff,
	}
	if o.RedisURL != "" {
		// One attempt within Timeout: the in-process limiter is the retry.
		rdb, err := redisconn.Open(o.RedisURL, redisconn.Options{Timeout: o.Timeout})
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		l.rdb = rdb
		l.redis = redis_rate.NewLimiter(rdb)
		l.breaker = redisconn.NewBreaker(o.Backoff)
	}
	return l, nil
}

// Limit returns the configured limit.
func (l *Limiter) Limit() Limit { return l.limit }

// Allow takes one request from principal's budget. It never fails: when Redis
// cannot answer, the in-process limiter decides.
func (l *Limiter) Allow(ctx context.Context, principal string) Result {
	key := Key(principal)
	if l.redis != nil && !l.breaker.Skip() {
		cctx, cancel := context.WithTimeout(ctx, l.timeout)
		res, err := l.redis.Allow(cctx, key, l.rl)
		cancel()
		if err == nil {
			r := Result{Allowed: res.Allowed > 0}
			if !r.Allowed {
				r.RetryAfter = res.RetryAfter
			}
			l.metrics.RateLimit(decision(r), "redis")
			return r
		}
		if ctx.Err() == nil {
			l.redisFailed(ctx, err)
		}
	}
	r := l.local.allow(key, l.limit)
	l.metrics.RateLimit(decision(r), "local")
	return r
}

func decision(r Result) string {
	if r.Allowed {
		return "allowed"
	}
	return "limited"
}

func (l *Limiter) redisFailed(ctx context.Context, err error) {
	log, suppressed := l.breaker.Fail()
	l.metrics.RateLimitRedisError()
	if log {
		l.log.WarnContext(ctx, "rate limiting: redis unavailable; limiting per replica until it answers",
			"error", err.Error(), "retry_in", l.backoff.String(), "suppressed_since_last", suppressed)
	}
}

// Close releases the Redis connections.
func (l *Limiter) Close() error {
	if l.rdb != nil {
		return l.rdb.Close()
	}
	return nil
}

// local is an in-process GCRA: per key, the theoretical arrival time (TAT) of
// the next request. A key whose TAT has passed is equivalent to no key, so each
// expires at its TAT; a full cache evicts an expired key or else one not used
// lately, erring towards allowing (bounded memory first).
type local struct {
	tat *clockcache.Cache[string, time.Time]
}

func newLocal(now func() time.Time, max int) *local {
	return &local{tat: clockcache.New(clockcache.Options[string, time.Time]{MaxEntries: max, Now: now})}
}

func (s *local) allow(key string, lim Limit) Result {
	interval := lim.Period / time.Duration(lim.Count)
	burst := interval * time.Duration(lim.Burst)
	var r Result
	s.tat.Compute(key, func(tat time.Time, found bool, now time.Time) (time.Time, time.Time, bool) {
		if !found {
			tat = now
		}
		next := tat.Add(interval)
		if allowAt := next.Add(-burst); now.Before(allowAt) {
			r = Result{RetryAfter: allowAt.Sub(now)}
			return tat, time.Time{}, false
		}
		r = Result{Allowed: true}
		return next, next, true
	})
	return r
}
