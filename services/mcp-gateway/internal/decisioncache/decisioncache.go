// Package decisioncache keeps authz's allowed decisions while authz itself
// would give them again from its cache (and at most DECISION_CACHE_TTL), so
// that requests with one token cost one call to authz per cached answer,
// without delaying any revocation: a reused decision is the answer asking
// authz again would get.
//
// # What is kept
//
// Only allowed decisions, under a [Key]: a SHA-256 of the token (never the
// token itself), the resource, the required scopes in order, and
// include_user/include_orgs. A decision is kept until the earliest of TTL
// after it was stored, the token's expiry, and the end of authz's own cached
// answer (AuthorizeResponse.reusable_until: the cached introspection's, and
// the cached user's when include_user was asked). Not kept: denials (the next
// request asks authz again), decisions whose requested user lookup failed (a
// passing failure would otherwise stick for TTL), decisions without a
// token_ref (from an authz that predates WatchInvalidations: nothing could
// invalidate them) and decisions without reusable_until (authz did not cache
// the answer, or predates the field). Such an answer also drops the decision
// already kept for the same question, if any: it is newer.
//
// A kept response is shared by every request it answers: nothing may modify
// it, or anything it points to (packages caller and tools only read).
//
// # Revocation
//
// authz streams invalidations (WatchInvalidations): the token_ref of every
// token invalidated through InvalidateToken on any replica, or reset, meaning
// "drop everything". [Cache.Watch] applies them, and the cache holds to four
// rules:
//
//   - It is used only while the stream is up: from the stream's first message
//     (always a reset) until the stream ends. When it ends everything is
//     dropped, and every request asks authz until a new stream has sent its
//     reset.
//   - An invalidation drops every decision of that token (an index maps
//     token_ref to keys).
//   - A sequence number, bumped by every invalidation, reset and stream end,
//     is read when a lookup misses ([Cache.Get] returns it in a [Ticket]) and
//     compared when authz's answer is stored ([Cache.Put]), per token: the
//     answer is not kept if its token was invalidated after the ticket was
//     issued, or if a reset or stream end came after it. An invalidation of
//     one token does not stop another token's answer from being kept: with
//     one generation for everything, a busy invalidation stream made every
//     answer that overlapped any invalidation uncacheable.
//   - For [InvalidationGrace] after a token's invalidation, no decision of
//     that token is kept: another authz replica may not have dropped the token
//     from its own cache yet when this gateway hears of it, and may still
//     answer from that cache.
//
// Which invalidation a ticket overlapped is known only for the invalidations
// still remembered (at most [Options.MaxEntries], each for its grace): when
// one is forgotten, or cannot be remembered because too many are, every
// ticket issued before it stops being able to store anything (a floor on
// sequence numbers), which costs at worst one more call to authz per request
// in flight.
//
// What the stream cannot tell: a token the authorization server revoked
// without authz hearing of it (no InvalidateToken) stays allowed in authz's own
// cache for up to its CACHE_TTL, and here no longer (reusable_until).
//
// # Refresh-ahead
//
// With [Options.Refresh] set, a hit on a decision older than TTL/2
// ([RefreshAfterDivisor]) is answered from the cache as usual and also starts
// one background call to authz with the same question (as Caffeine's
// refreshAfterWrite), so that a token in steady use keeps a fresh decision
// instead of missing once per TTL. Its answer is stored through the same
// ticket as a miss's, so the rules above hold: an invalidation, reset or
// stream end during the call means it is not kept, and an answer that may not
// be kept (the token was revoked, say) drops the decision at once. A refresh
// never extends a decision: it only replaces it with a newer one; if authz
// fails to answer, the decision expires when it would have. Bounds: at most
// one refresh per key in flight, at most [MaxRefreshes] in all (beyond that a
// hit does not refresh), a key's next attempt no sooner than TTL/4
// ([RefreshRetryDivisor]) after the last, none for a decision the token's
// expiry or authz's cached answer bounds before its TTL (authz would answer a
// refresh from the same cached answer: nothing to gain). A refresh holds a
// copy of the request, token included, only until authz answers (within
// AUTHZ_TIMEOUT), never logs it, and runs under [Cache.Watch]'s context,
// which waits for it.
//
// The cost: a token in steady use makes about two calls to authz per TTL
// instead of one, none of them on a request's path.
//
// # Size and concurrency
//
// At most about [Options.MaxEntries] decisions, in an internal/clockcache:
// a Put into a full cache evicts a decision not used lately (CLOCK), which
// costs at worst one more call to authz, and expired decisions are swept by
// a Put at most once per TTL. [Cache.Get] takes no lock of the cache's own,
// only a read lock of one of the clockcache's shards; everything that changes
// the decisions or their index runs under the cache's lock.
package decisioncache

import (
	"cmp"
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/internal/ratelog"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxEntries bounds the decisions kept when [Options.MaxEntries] is 0.
// One decision of a routed call, with its principal and JSON claims, holds
// about 1.4 KiB (TestBytesPerDecision); one with a user more.
const DefaultMaxEntries = 100_000

// InvalidationGrace is how long after a token's invalidation no decision of
// that token is kept. It covers the time the invalidation takes to reach every
// authz replica (Redis pub/sub, normally milliseconds).
const InvalidationGrace = 5 * time.Second

// Refresh-ahead timing, as fractions of the TTL: a decision is refreshed once
// it is older than TTL/RefreshAfterDivisor, and a key's next refresh starts no
// sooner than TTL/RefreshRetryDivisor after the last one started, so a failing
// authz is asked at most twice more per decision's life.
const (
	RefreshAfterDivisor = 2
	RefreshRetryDivisor = 4
)

// MaxRefreshes bounds the refreshes in flight at once; a hit that would start
// one more is served without refreshing, and its decision simply expires.
const MaxRefreshes = 64

// RefreshFunc asks authz req's question again, for refresh-ahead
// (authzclient.Client.Authorize with the gateway's AUTHZ_TIMEOUT). ctx is not
// a request's: it ends only when [Cache.Watch] returns. An error leaves the
// decision as it was.
type RefreshFunc func(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error)

// Options configures [New].
type Options struct {
	// TTL is the longest a decision is kept; it must be positive.
	TTL time.Duration
	// MaxEntries bounds the decisions kept (see the package documentation);
	// [DefaultMaxEntries] when 0.
	MaxEntries int
	// Metrics records lookups, invalidations, resets and the stream's state;
	// a private set when nil.
	Metrics *metrics.Metrics
	// Logger receives the stream's state changes; discarded when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Refresh, if set, refreshes decisions ahead of their expiry (see the
	// package documentation); without it a decision is asked again only when
	// a request misses.
	Refresh RefreshFunc
	// OpenGrace is how long [Cache.Watch] may fail to open its first stream
	// before it warns (authz may be starting too); [DefaultOpenGrace] when 0.
	OpenGrace time.Duration
}

// DefaultOpenGrace is [Options.OpenGrace]'s default.
const DefaultOpenGrace = 10 * time.Second

// Key identifies one question to authz. It holds a hash of the token, never
// the token.
type Key struct {
	token    [sha256.Size]byte
	resource string
	scopes   string
	user     bool
	orgs     bool
}

// KeyOf returns the key of req.
func KeyOf(req *authzv1.AuthorizeRequest) Key {
	return Key{
		token:    sha256.Sum256([]byte(req.GetToken())),
		resource: req.GetResource(),
		// Scope tokens cannot contain a space (RFC 6749 §3.3).
		scopes: strings.Join(req.GetRequiredScopes(), " "),
		user:   req.GetIncludeUser(),
		orgs:   req.GetIncludeOrgs(),
	}
}

// Ticket is what [Cache.Put] needs to store authz's answer to a question
// [Cache.Get] could not answer. The zero Ticket stores nothing.
type Ticket struct {
	key   Key
	seq   uint64 // Cache.seq when the ticket was issued
	valid bool
}

// grace is what the cache remembers of a token's latest invalidation.
type grace struct {
	until time.Time // no decision of the token is kept before then
	seq   uint64    // Cache.seq the invalidation set
}

type entry struct {
	res *authzv1.AuthorizeResponse
	ref string
	// refreshAt is when a hit may start a refresh (unix nanoseconds); zero
	// when a refresh is pointless (the token or authz's cached answer ends
	// before the TTL). Read by
	// Get, written under Cache.mu.
	refreshAt atomic.Int64
}

// Cache holds allowed decisions. It is safe for concurrent use. It starts
// down (unused) until [Cache.Watch] has opened the invalidation stream.
type Cache struct {
	ttl     time.Duration
	max     int
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	refresh RefreshFunc
	// openGrace is Options.OpenGrace.
	openGrace time.Duration

	// invalLog bounds the per-invalidation debug line to one per
	// [invalidationLogEvery], with a count of those left out.
	invalLog ratelog.Limiter

	// up and seq are read by Get without c.mu and written under it. seq is
	// bumped by every invalidation, reset and stream end; a ticket carries its
	// value at issue.
	up  atomic.Bool
	seq atomic.Uint64
	// entries is changed only under mu, which its OnRemove (unindex) relies
	// on to keep refs in step.
	entries *clockcache.Cache[Key, *entry]

	mu         sync.Mutex
	refreshCtx context.Context  // what refreshes run under: Watch's ctx, or Background
	refreshing map[Key]struct{} // keys whose refresh is in flight
	refreshWG  sync.WaitGroup   // refreshes in flight, waited for by Watch
	// floor is the lowest ticket seq that may still store: raised to seq by a
	// reset or stream end, and to a forgotten invalidation's seq when its
	// grace is swept.
	floor     uint64
	refs      map[string][]Key // token_ref to the keys of its decisions
	graces    map[string]grace
	noneUntil time.Time // no decision is kept before then (too many graces to track)
	lastSweep time.Time
}

// invalidationLogEvery is the least time between two "token invalidated"
// debug lines; a busy invalidation stream would otherwise log one per token.
const invalidationLogEvery = 10 * time.Second

// New returns an empty cache, down until [Cache.Watch] brings it up. It
// panics if opts.TTL is not positive: the gateway creates a cache only when
// DECISION_CACHE_TTL is set.
func New(opts Options) *Cache {
	if opts.TTL <= 0 {
		panic("decisioncache: TTL must be positive")
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cache{
		ttl:     opts.TTL,
		max:     opts.MaxEntries,
		metrics: opts.Metrics,
		log:     opts.Logger,
		now:     opts.Now,
		refresh: opts.Refresh,
		refs:    make(map[string][]Key),

		openGrace: cmp.Or(opts.OpenGrace, DefaultOpenGrace),
		graces:    make(map[string]grace),

		refreshCtx: context.Background(),
		refreshing: make(map[Key]struct{}),
	}
	c.entries = clockcache.New(clockcache.Options[Key, *entry]{
		MaxEntries: opts.MaxEntries,
		Now:        opts.Now,
		// All decisions of one token share a shard; SHA-256 spreads tokens.
		Hash:     func(k Key) uint64 { return clockcache.DigestHash(k.token) },
		OnRemove: c.unindex,
	})
	c.lastSweep = c.now()
	c.invalLog.Every = invalidationLogEvery
	c.metrics.DecisionCacheStreamUp(false)
	return c
}

// TTL returns the longest a decision is kept.
func (c *Cache) TTL() time.Duration { return c.ttl }

// Get returns the kept allowed decision for req, or nil and a [Ticket] with
// which to [Cache.Put] authz's answer. The returned response is shared: the
// caller must not modify it. A hit on a decision past its refresh point may
// start a refresh of it in the background (with a copy of req, token
// included, held only until authz answers).
func (c *Cache) Get(req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, Ticket) {
	k := KeyOf(req)
	if !c.up.Load() {
		c.metrics.DecisionCacheLookup("stream_down")
		return nil, Ticket{}
	}
	// seq before the lookup: a ticket must not be newer than the miss it
	// answers, or a Put could store past an invalidation it did not see.
	seq := c.seq.Load()
	if e, ok := c.entries.Get(k); ok {
		c.metrics.DecisionCacheLookup("hit")
		if c.refresh != nil {
			if at := e.refreshAt.Load(); at != 0 {
				if now := c.now(); now.UnixNano() >= at {
					c.startRefresh(k, e, req, now)
				}
			}
		}
		return e.res, Ticket{}
	}
	c.metrics.DecisionCacheLookup("miss")
	return nil, Ticket{key: k, seq: seq, valid: true}
}

// startRefresh starts a refresh of e, the decision for k that a hit found past
// its refresh point, unless one is in flight, it is no longer e's time, or
// too many are in flight.
func (c *Cache) startRefresh(k Key, e *entry, req *authzv1.AuthorizeRequest, now time.Time) {
	c.mu.Lock()
	_, inFlight := c.refreshing[k]
	if cur, _ := c.entries.Get(k); !c.up.Load() || cur != e || now.UnixNano() < e.refreshAt.Load() || inFlight {
		c.mu.Unlock()
		return
	}
	// Whether it starts or not, this decision's next attempt waits.
	e.refreshAt.Store(now.Add(c.ttl / RefreshRetryDivisor).UnixNano())
	if len(c.refreshing) >= MaxRefreshes {
		c.mu.Unlock()
		c.metrics.DecisionCacheRefresh("skipped")
		return
	}
	c.refreshing[k] = struct{}{}
	c.refreshWG.Add(1)
	t := Ticket{key: k, seq: c.seq.Load(), valid: true}
	ctx, ref := c.refreshCtx, e.ref
	c.mu.Unlock()

	req = proto.CloneOf(req)
	go func() {
		defer c.refreshWG.Done()
		defer func() {
			c.mu.Lock()
			delete(c.refreshing, k)
			c.mu.Unlock()
		}()
		res, err := c.refresh(ctx, req)
		if err != nil {
			c.metrics.DecisionCacheRefresh("error")
			c.log.DebugContext(ctx, "decision refresh failed; the decision expires as usual", tokenref.Attr(ref), "error", err, "code", status.Code(err).String())
			return
		}
		c.metrics.DecisionCacheRefresh(c.put(t, res).String())
	}()
}

// Put keeps res, authz's answer to the question t came from, if it may be
// kept (see the package documentation), and reports whether it did. From then
// on res is shared: the caller must not modify it. An answer that may not be
// kept (a denial, say) drops the decision held for that question, if any: it
// is newer.
func (c *Cache) Put(t Ticket, res *authzv1.AuthorizeResponse) bool {
	return c.put(t, res) == stored
}

// putResult is what [Cache.put] did, named as in the refreshes metric.
type putResult int

const (
	discarded putResult = iota // not kept, though allowed: t is stale, or the token in its grace
	stored
	denied // not keepable: any decision for the question was dropped
)

func (r putResult) String() string {
	switch r {
	case stored:
		return "stored"
	case denied:
		return "denied"
	}
	return "discarded"
}

func (c *Cache) put(t Ticket, res *authzv1.AuthorizeResponse) putResult {
	if !t.valid {
		return discarded
	}
	now := c.now()
	full := now.Add(c.ttl)
	expires := full
	if exp := res.GetPrincipal().GetExpiresAt(); exp != nil && exp.AsTime().Before(expires) {
		expires = exp.AsTime()
	}
	// Never past authz's own cached answer: until then asking authz again
	// would get this same answer, barring an invalidation (which the
	// stream brings).
	if until := res.GetReusableUntil(); until != nil && until.AsTime().Before(expires) {
		expires = until.AsTime()
	}
	if !keepable(t.key, res) || !now.Before(expires) {
		c.drop(t.key)
		return denied
	}
	ref := res.GetTokenRef()
	e := &entry{res: res, ref: ref}
	if expires.Equal(full) {
		e.refreshAt.Store(now.Add(c.ttl / RefreshAfterDivisor).UnixNano())
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// Sweep first: forgetting an invalidation raises the floor, which the
	// check below then applies.
	if now.Sub(c.lastSweep) >= c.ttl {
		c.sweep(now)
	}
	if !c.up.Load() || t.seq < c.floor || now.Before(c.noneUntil) {
		// A reset or stream end since t was issued, or an invalidation that
		// is no longer remembered: it already dropped whatever it had to.
		return discarded
	}
	if g, ok := c.graces[ref]; ok && (now.Before(g.until) || g.seq > t.seq) {
		// This token was invalidated recently, or after t was issued.
		return discarded
	}
	// Set drops the decision held for the question, and any it evicts, from
	// the index (unindex); an expiry that has just passed stores nothing.
	kept := c.entries.Set(t.key, e, expires)
	if kept {
		c.refs[ref] = append(c.refs[ref], t.key)
	}
	c.metrics.DecisionCacheEntries(c.entries.Len())
	if !kept {
		return denied
	}
	return stored
}

// drop drops the decision for k, if any.
func (c *Cache) drop(k Key) {
	c.mu.Lock()
	before := c.entries.Len()
	c.entries.Delete(k)
	n := c.entries.Len()
	c.mu.Unlock()
	if n != before {
		c.metrics.DecisionCacheEntries(n)
	}
}

// keepable reports whether res is an allowed decision that may be kept for
// the question k.
func keepable(k Key, res *authzv1.AuthorizeResponse) bool {
	switch {
	case !res.GetAllowed() || res.GetPrincipal() == nil || res.GetTokenRef() == "" || res.GetReusableUntil() == nil:
		return false
	case k.user && (res.GetUser() == nil || res.GetUserError() != ""):
		return false
	}
	return true
}

// Invalidate drops every decision of the token named ref (a token_ref) and
// keeps none of it for [InvalidationGrace].
func (c *Cache) Invalidate(ref string) {
	now := c.now()
	c.mu.Lock()
	seq := c.seq.Add(1)
	// Deleting unindexes, which changes c.refs[ref] under the loop.
	for _, k := range slices.Clone(c.refs[ref]) {
		c.entries.Delete(k)
	}
	delete(c.refs, ref)
	if _, known := c.graces[ref]; !known && len(c.graces) >= c.max {
		c.sweep(now)
	}
	if _, known := c.graces[ref]; known || len(c.graces) < c.max {
		c.graces[ref] = grace{until: now.Add(InvalidationGrace), seq: seq}
	} else {
		// Too many invalidations to track one by one: keep nothing for a
		// while, and nothing fetched before this one.
		c.noneUntil = now.Add(InvalidationGrace)
		c.floor = seq
	}
	n := c.entries.Len()
	c.mu.Unlock()
	c.metrics.DecisionCacheInvalidation()
	c.metrics.DecisionCacheEntries(n)
}

// Reset drops every decision and marks the cache up: the stream has started,
// or authz says it may have missed invalidations. It reports whether the cache
// was down before.
func (c *Cache) Reset() (wasDown bool) {
	c.mu.Lock()
	wasDown = !c.up.Load()
	c.clear()
	// Up only once cleared: Get, which takes no lock, must not serve a
	// decision from before.
	c.up.Store(true)
	c.mu.Unlock()
	c.metrics.DecisionCacheReset("reset")
	c.metrics.DecisionCacheEntries(0)
	c.metrics.DecisionCacheStreamUp(true)
	return wasDown
}

// Down drops every decision and marks the cache down (unused) until the next
// [Cache.Reset]: the stream has ended. It reports whether the cache was up.
func (c *Cache) Down() (wasUp bool) {
	c.mu.Lock()
	wasUp = c.up.Load()
	c.up.Store(false)
	c.clear()
	c.mu.Unlock()
	if wasUp {
		c.metrics.DecisionCacheReset("stream_end")
	}
	c.metrics.DecisionCacheEntries(0)
	c.metrics.DecisionCacheStreamUp(false)
	return wasUp
}

// Up reports whether the cache is in use (the invalidation stream is up).
func (c *Cache) Up() bool { return c.up.Load() }

// Len returns the number of decisions held, expired or not.
func (c *Cache) Len() int { return c.entries.Len() }

// clear drops every entry and voids every ticket issued so far; c.mu must be
// held.
func (c *Cache) clear() {
	c.floor = c.seq.Add(1)
	c.entries.Clear()
	clear(c.refs)
}

// sweep drops expired entries and graces; c.mu must be held.
func (c *Cache) sweep(now time.Time) {
	c.entries.Sweep()
	for ref, g := range c.graces {
		if !now.Before(g.until) {
			// Once forgotten, it can no longer void the tickets issued
			// before it one by one: void them all.
			c.floor = max(c.floor, g.seq)
			delete(c.graces, ref)
		}
	}
	c.lastSweep = now
}

// unindex drops k, whose decision e left the entries, from the index, and
// counts an eviction. It is the entries' OnRemove: it runs within the
// entries' methods, which are called only under c.mu.
func (c *Cache) unindex(k Key, e *entry, evicted bool) {
	if evicted {
		c.metrics.DecisionCacheEvictions(1)
	}
	keys := c.refs[e.ref]
	if i := slices.Index(keys, k); i >= 0 {
		keys = slices.Delete(keys, i, i+1)
	}
	if len(keys) == 0 {
		delete(c.refs, e.ref)
	} else {
		c.refs[e.ref] = keys
	}
}
