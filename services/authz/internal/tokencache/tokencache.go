// Package tokencache caches introspection results in two tiers: an in-process
// [clockcache] (L1, at most L1_MAX_ENTRIES results) in front of Redis (L2)
// shared by every replica.
//
// # What is cached, and for how long
//
// The introspection result, never the decision: expiry, audience and scopes are
// checked again on every hit. A result lives min(CacheTTL, exp-now); an inactive
// token, or one whose exp passed more than ClockSkew ago, lives NegativeTTL. An
// active result whose exp has passed by less than ClockSkew is not cached: the
// decision still allows it, but the authorization server is about to call the
// token inactive, and a cached copy would keep it usable past exp. Entries are
// keyed by SHA-256 over (introspection endpoint, token), so the raw token is
// never held in memory longer than a request, nor written to Redis or logs.
//
// # Concurrency and floods
//
// Concurrent misses for one key are coalesced ([flight]): one replica makes at
// most one L2 read and one introspection per key at a time, and every waiter gets
// its result. The fetch runs detached from the first caller's context so that
// caller giving up does not fail the others; but when every caller has gone
// before the introspection started, the fetch stops.
//
// Introspections are bounded by Options.Limiter (INTROSPECTION_MAX_IN_FLIGHT): a
// miss that finds no free slot within a short wait fails with
// [admission.ErrBusy]. A flood of distinct unknown tokens therefore costs at most
// that many introspections, and their goroutines and connections, at a time; each
// of its misses costs one Redis GET, and a SET only after an introspection (see
// rediscache for how Redis is kept from queueing).
//
// # Invalidation
//
// Invalidation is per key and free of races: a result fetched (from L2 or the
// authorization server) across an invalidation of its key is neither kept in L1
// nor written to L2, and invalidating one key costs other keys nothing. In Redis
// the entry is replaced by a tombstone that lives Options.TombstoneTTL (longer
// than any fetch), and fetches write L2 only where no entry exists, so a fetch on
// another replica that read the authorization server before the revocation cannot
// put its result back after the invalidation. A reset (the Redis subscription
// re-established, so invalidations may have been missed) clears L1 and marks
// every fetch in flight stale.
//
// # Redis trouble
//
// Any Redis error is a cache miss (see rediscache). Invalidation writes the L2
// tombstone and publishes the key on a channel every replica subscribes to; each
// drops the key from L1. When a replica's subscription is re-established after a
// disconnect, it clears its L1, since it may have missed invalidations meanwhile.
// Both events are passed on (Options.OnInvalidate, OnReset) to whoever relays
// them further, such as the WatchInvalidations streams.
package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/internal/ratelog"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/admission"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/flight"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// Defaults for [Options].
const (
	DefaultKeyPrefix    = "mcpauthz:intro:"
	DefaultChannel      = "mcpauthz:invalidate"
	DefaultTombstoneTTL = 10 * time.Second
)

// tombstone is the L2 value of an invalidated key: an entry that expired in 1970,
// which every reader takes for a miss (versions before tombstones log a warning).
var tombstone = []byte("0\n")

// ErrInvalidationIncomplete is returned (wrapped) by [Cache.Invalidate] when the
// local tier was cleared but Redis could not be told, so other replicas may still
// hold the token.
var ErrInvalidationIncomplete = errors.New("invalidation not propagated to other replicas")

// Fetcher introspects tokens; [*introspect.Client] is one.
type Fetcher interface {
	Introspect(ctx context.Context, token string) ([]byte, *tokeninfo.Result, error)
	Endpoint() string
}

// Tier says where a result came from.
type Tier uint8

// The tiers.
const (
	TierL1 Tier = iota + 1
	TierL2
	TierOrigin
)

// String returns the tier's log name.
func (t Tier) String() string {
	switch t {
	case TierL1:
		return "l1"
	case TierL2:
		return "l2"
	case TierOrigin:
		return "introspection"
	}
	return "unknown"
}

// Options configures a [Cache].
type Options struct {
	Fetcher Fetcher
	// L1Max bounds the in-process tier; 0 disables it.
	L1Max int
	// Store is the shared tier; nil means in-process only.
	Store *rediscache.Store
	// CacheTTL bounds how long a result is reused (required, > 0).
	CacheTTL time.Duration
	// NegativeTTL is how long inactive and expired results are reused; 0 disables
	// negative caching.
	NegativeTTL time.Duration
	// ClockSkew is the decision's allowance for an exp in the past (CLOCK_SKEW);
	// see the package documentation.
	ClockSkew time.Duration
	// Limiter bounds introspections in flight; nil means no bound.
	Limiter *admission.Limiter
	// TombstoneTTL is how long an invalidated key's L2 entry stays a tombstone.
	// It must exceed the longest time from an introspection's answer to its L2
	// write (the introspection timeout plus the Redis timeout). Default
	// DefaultTombstoneTTL.
	TombstoneTTL time.Duration
	// KeyPrefix and Channel name the Redis keys and the invalidation channel.
	KeyPrefix, Channel string
	Logger             *slog.Logger
	Metrics            *metrics.Metrics
	// Now defaults to time.Now.
	Now func() time.Time
	// OnInvalidate, if set, is told the full hex cache key of every token
	// invalidated here or, through Redis, on any replica (our own publishes come
	// back too, so it may hear a key twice), after it left L1. It must not block.
	OnInvalidate func(ref string)
	// OnReset, if set, is called whenever invalidations may have been missed (the
	// Redis subscription was (re)established), after L1 was cleared. It must not
	// block.
	OnReset func()
}

// Cache is the two-tier introspection cache. It is safe for concurrent use.
type Cache struct {
	fetcher     Fetcher
	prefix      []byte // endpoint + "\n": the start of every hashed key
	l1          *clockcache.Cache[Key, *tokeninfo.Result]
	store       *rediscache.Store
	cacheTTL    time.Duration
	negativeTTL time.Duration
	clockSkew   time.Duration
	limiter     *admission.Limiter
	tombTTL     time.Duration
	keyPrefix   string
	channel     string
	logger      *slog.Logger
	m           *metrics.Metrics
	now         func() time.Time
	// flights coalesces misses and knows, per key, which fetch an invalidation
	// overtook.
	flights   flight.Group[Key, Found]
	bufPool   sync.Pool
	errLogs   ratelog.Limiter
	busyLogs  ratelog.Limiter
	invalLogs ratelog.Limiter

	onInvalidate func(ref string)
	onReset      func()

	l1Hit, l1Miss, l2Hit, l2Miss, l2Err, l2Skip, coalesced countAdder
}

type countAdder interface{ Inc() }

// New returns a cache. It returns an error if a required option is missing.
func New(o Options) (*Cache, error) {
	if o.Fetcher == nil || o.CacheTTL <= 0 || o.Metrics == nil {
		return nil, errors.New("tokencache: Fetcher, CacheTTL and Metrics are required")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnInvalidate == nil {
		o.OnInvalidate = func(string) {}
	}
	if o.OnReset == nil {
		o.OnReset = func() {}
	}
	if o.TombstoneTTL <= 0 {
		o.TombstoneTTL = DefaultTombstoneTTL
	}
	c := &Cache{
		fetcher:     o.Fetcher,
		prefix:      []byte(o.Fetcher.Endpoint() + "\n"),
		store:       o.Store,
		cacheTTL:    o.CacheTTL,
		negativeTTL: o.NegativeTTL,
		clockSkew:   o.ClockSkew,
		limiter:     o.Limiter,
		tombTTL:     o.TombstoneTTL,
		keyPrefix:   o.KeyPrefix,
		channel:     o.Channel,
		logger:      o.Logger,
		m:           o.Metrics,
		now:         o.Now,
		errLogs:     ratelog.Limiter{Every: 5 * time.Second},
		busyLogs:    ratelog.Limiter{Every: 5 * time.Second},
		invalLogs:   ratelog.Limiter{Every: 5 * time.Second},

		onInvalidate: o.OnInvalidate,
		onReset:      o.OnReset,
	}
	c.l1 = clockcache.New(clockcache.Options[Key, *tokeninfo.Result]{MaxEntries: o.L1Max, Now: o.Now, Hash: clockcache.DigestHash})
	lookups := o.Metrics.CacheLookups
	c.l1Hit = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL1, metrics.ResultHit)
	c.l1Miss = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL1, metrics.ResultMiss)
	c.l2Hit = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL2, metrics.ResultHit)
	c.l2Miss = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL2, metrics.ResultMiss)
	c.l2Err = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL2, metrics.ResultError)
	c.l2Skip = lookups.WithLabelValues(metrics.CacheToken, metrics.TierL2, metrics.ResultSkipped)
	c.coalesced = o.Metrics.CoalescedWaits.WithLabelValues(metrics.CacheToken)
	o.Metrics.RegisterL1(metrics.CacheToken, c.l1.Len, c.l1.Evictions)
	c.bufPool.New = func() any { b := make([]byte, 0, 512); return &b }
	return c, nil
}

// Key is a token's cache key (see [Cache.Key]).
type Key = [sha256.Size]byte

// Key returns the cache key of token: SHA-256 over the endpoint, a newline and the
// token. Tokens are printable ASCII and endpoints contain no newline, so distinct
// pairs never share an input.
func (c *Cache) Key(token string) Key {
	bp := c.bufPool.Get().(*[]byte)
	b := append(append((*bp)[:0], c.prefix...), token...)
	k := sha256.Sum256(b)
	*bp = b[:0]
	c.bufPool.Put(bp)
	return k
}

// FullRef is the reference callers and watchers use for a token (AuthorizeResponse
// token_ref): its whole cache key in lowercase hex, which is also the payload of
// the invalidation channel. Logs carry the part of it internal/tokenref says.
func FullRef(k Key) string {
	var b [2 * len(k)]byte
	hex.Encode(b[:], k[:])
	return string(b[:]) // one allocation per Authorize, not two
}

// Found is what a lookup answers with.
type Found struct {
	Result *tokeninfo.Result
	Tier   Tier
	// Until is when the cached result expires: until then, unless the token
	// is invalidated, lookups answer with it without introspecting. Zero when
	// the result was not cached (see [Cache.ttl]), or was invalidated while
	// it was being fetched.
	Until time.Time
}

// Lookup returns the introspection result for token from the first tier that has
// it, introspecting on a miss.
//
// Errors: one unwrapping to introspect.ErrUnavailable when the authorization server
// gave no usable answer (nothing cached), one unwrapping to admission.ErrBusy when
// Options.Limiter had no slot for the introspection, or ctx's error if ctx ended
// while waiting. Redis failures are never returned.
func (c *Cache) Lookup(ctx context.Context, token string) (*tokeninfo.Result, Tier, error) {
	f, err := c.LookupKeyed(ctx, c.Key(token), token)
	return f.Result, f.Tier, err
}

// LookupKeyed is [Cache.Lookup] for a caller that already has token's key k
// (from [Cache.Key]), saving a second hash, and that wants to know until when
// the result stays cached ([Found.Until]). Its errors are Lookup's.
func (c *Cache) LookupKeyed(ctx context.Context, k Key, token string) (Found, error) {
	if r, until, ok := c.l1.GetUntil(k); ok {
		c.l1Hit.Inc()
		return Found{r, TierL1, until}, nil
	}
	c.l1Miss.Inc()
	f, joined, err := c.flights.Do(ctx, k, func(call *flight.Call[Key, Found]) (Found, error) {
		return c.fetch(call, k, token)
	})
	if joined {
		c.coalesced.Inc()
	}
	if err != nil {
		return Found{}, err
	}
	return f, nil
}

// fetch runs once per key at a time: L1 again (a flight may have just finished),
// then L2, then, given a slot, the introspection endpoint. Until the
// introspection starts, it stops as soon as every caller has gone.
func (c *Cache) fetch(call *flight.Call[Key, Found], k Key, token string) (Found, error) {
	ctx := call.Context()
	if r, until, ok := c.l1.GetUntil(k); ok {
		return Found{r, TierL1, until}, nil
	}
	var redisKey string
	if c.store != nil {
		redisKey = c.keyPrefix + hex.EncodeToString(k[:])
		if r, exp, ok := c.getL2(ctx, k, redisKey); ok {
			until := time.Unix(0, exp)
			if !call.Keep(func() { c.l1.Set(k, r, until) }) {
				return Found{r, TierL2, time.Time{}}, nil // invalidated meanwhile
			}
			return Found{r, TierL2, until}, nil
		}
	}
	release, err := c.limiter.Acquire(ctx)
	if err != nil {
		if errors.Is(err, admission.ErrBusy) {
			c.busy(k)
			return Found{}, fmt.Errorf("introspecting token: %w", err)
		}
		return Found{}, err // every caller has gone
	}
	if !call.Commit() {
		release()
		return Found{}, ctx.Err()
	}
	start := time.Now()
	raw, res, err := c.fetcher.Introspect(ctx, token)
	release()
	c.m.IntrospectionDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.introspectionFailed(k, err)
		return Found{}, fmt.Errorf("introspecting token: %w", err)
	}
	if res.Active {
		c.m.Introspections.WithLabelValues("active").Inc()
	} else {
		c.m.Introspections.WithLabelValues("inactive").Inc()
	}
	now := c.now()
	ttl := c.ttl(res, now)
	if ttl <= 0 {
		return Found{Result: res, Tier: TierOrigin}, nil
	}
	exp := now.Add(ttl)
	if !call.Keep(func() { c.l1.Set(k, res, exp) }) {
		return Found{Result: res, Tier: TierOrigin}, nil // invalidated meanwhile
	}
	if c.store != nil {
		v := strconv.AppendInt(make([]byte, 0, 16+len(raw)), exp.UnixMilli(), 10)
		v = append(append(v, '\n'), raw...)
		// Only where no entry exists: an invalidation's tombstone must win over a
		// result fetched before it. A failure is logged and counted by the store.
		_ = c.store.SetIfAbsent(ctx, redisKey, v, ttl)
	}
	return Found{res, TierOrigin, exp}, nil
}

// ttl is min(CacheTTL, exp-now) for an active token; NegativeTTL for an inactive
// one and for one past exp by more than the clock skew (its verdict, expired,
// cannot change); zero (not cached) for one past exp within the skew.
func (c *Cache) ttl(r *tokeninfo.Result, now time.Time) time.Duration {
	if !r.Active {
		return c.negativeTTL
	}
	ttl := c.cacheTTL
	if r.Has&tokeninfo.HasExp != 0 {
		left := time.Unix(r.Exp, 0).Sub(now)
		if left <= 0 {
			if -left < c.clockSkew {
				return 0
			}
			return c.negativeTTL
		}
		ttl = min(ttl, left)
	}
	return ttl
}

// getL2 reads and decodes an L2 entry: "<expiry unix ms>\n<introspection JSON>".
func (c *Cache) getL2(ctx context.Context, k Key, redisKey string) (*tokeninfo.Result, int64, bool) {
	v, ok, err := c.store.Get(ctx, redisKey)
	switch {
	case errors.Is(err, rediscache.ErrSkipped), errors.Is(err, rediscache.ErrBusy):
		c.l2Skip.Inc()
		return nil, 0, false
	case err != nil:
		c.l2Err.Inc()
		return nil, 0, false
	case !ok:
		c.l2Miss.Inc()
		return nil, 0, false
	}
	r, exp, err := decodeL2(v, c.now().UnixNano())
	if err != nil || r == nil {
		if err != nil {
			c.logger.Warn("ignoring undecodable L2 entry", tokenref.Attr(FullRef(k)), "err", err.Error())
		}
		c.l2Miss.Inc()
		return nil, 0, false
	}
	c.l2Hit.Inc()
	return r, exp, true
}

// decodeL2 returns the result and expiry (unix ns) of an L2 entry; an expired
// entry (such as a tombstone) has a nil result and no error.
func decodeL2(v []byte, now int64) (*tokeninfo.Result, int64, error) {
	for i, b := range v {
		if b != '\n' {
			continue
		}
		ms, err := strconv.ParseInt(string(v[:i]), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("bad expiry: %w", err)
		}
		exp := time.UnixMilli(ms).UnixNano()
		if exp <= now {
			return nil, exp, nil
		}
		r, err := introspect.Parse(v[i+1:])
		if err != nil {
			return nil, 0, err
		}
		return r, exp, nil
	}
	return nil, 0, errors.New("no expiry header")
}

func (c *Cache) introspectionFailed(k Key, err error) {
	kind := "unknown"
	var ie *introspect.Error
	if errors.As(err, &ie) {
		kind = string(ie.Kind)
	}
	c.m.Introspections.WithLabelValues("error").Inc()
	c.m.IntrospectionErrors.WithLabelValues(kind).Inc()
	level := slog.LevelWarn
	if kind == string(introspect.KindAuth) {
		level = slog.LevelError
	}
	if ok, suppressed := c.errLogs.Allow(); ok {
		c.logger.Log(context.Background(), level, "introspection failed",
			tokenref.Attr(FullRef(k)), "kind", kind, "err", err.Error(), "suppressed_since_last", suppressed)
	}
}

// busy logs, at a limited rate, that an introspection found no free slot.
func (c *Cache) busy(k Key) {
	if ok, suppressed := c.busyLogs.Allow(); ok {
		c.logger.Warn("introspection refused: INTROSPECTION_MAX_IN_FLIGHT reached", tokenref.Attr(FullRef(k)), "suppressed_since_last", suppressed)
	}
}

// Invalidate drops token from L1 here and, with Redis, from L2 and from every
// replica's L1, and tells OnInvalidate. A fetch of token in flight here does not
// keep its result. If Redis could not be told, the error unwraps to
// ErrInvalidationIncomplete; the local tier is cleared and OnInvalidate told
// regardless.
func (c *Cache) Invalidate(ctx context.Context, token string) error {
	k := c.Key(token)
	c.dropLocal(k)
	c.m.Invalidations.WithLabelValues("local").Inc()
	h := FullRef(k)
	// Watchers hear of it after the shared tier is cleared (when it can be), so a
	// watcher that asks again at once is not answered from a stale L2 entry.
	defer c.onInvalidate(h)
	if c.store == nil {
		return nil
	}
	if err := c.store.SetAndPublish(ctx, c.keyPrefix+h, tombstone, c.tombTTL, c.channel, h); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidationIncomplete, err)
	}
	// Again: a fetch here may have read the old L2 entry before the tombstone
	// replaced it. (Our own message comes back too, but later.)
	c.dropLocal(k)
	if ok, suppressed := c.invalLogs.Allow(); ok {
		c.logger.Info("token invalidated", tokenref.Attr(h), "suppressed_since_last", suppressed)
	}
	return nil
}

// dropLocal drops k from L1 and keeps a fetch of k in flight from storing.
func (c *Cache) dropLocal(k Key) {
	c.flights.Invalidate(k, func() { c.l1.Delete(k) })
}

// Sweep drops expired entries from L1 and returns how many it dropped.
func (c *Cache) Sweep() int { return c.l1.Sweep() }

// Run applies invalidations published by other replicas until ctx is done. Without
// Redis it returns at once.
func (c *Cache) Run(ctx context.Context) {
	if c.store == nil {
		return
	}
	c.store.Subscribe(ctx, c.channel, c.applyRemote, c.reset)
}

// reset clears L1 and keeps every fetch in flight from storing, when
// invalidations may have been missed.
func (c *Cache) reset() {
	c.flights.InvalidateAll(c.l1.Clear)
	c.m.L1Flushes.Inc()
	c.onReset()
}

func (c *Cache) applyRemote(payload string) {
	var k Key
	if len(payload) != 2*len(k) {
		return
	}
	if _, err := hex.Decode(k[:], []byte(payload)); err != nil {
		return
	}
	c.dropLocal(k)
	c.m.Invalidations.WithLabelValues("remote").Inc()
	// Re-encoded rather than passed on: a publisher may have used upper case.
	c.onInvalidate(FullRef(k))
}

// L1Len returns the number of entries in the in-process tier.
func (c *Cache) L1Len() int { return c.l1.Len() }
