package decisioncache

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
)

const ttl = 10 * time.Second

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(t0.UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newCache(tb testing.TB, max int) (*Cache, *clock, *metrics.Metrics) {
	tb.Helper()
	clk := newClock()
	m := metrics.New()
	c := New(Options{TTL: ttl, MaxEntries: max, Metrics: m, Now: clk.now})
	tb.Cleanup(func() { checkIndex(tb, c) })
	return c, clk, m
}

// checkIndex fails tb unless the token_ref index lists exactly the entries,
// each once.
func checkIndex(tb testing.TB, c *Cache) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	entries := map[Key]*entry{}
	for k, e := range c.entries.All() {
		entries[k] = e
	}
	n := 0
	for ref, keys := range c.refs {
		if len(keys) == 0 {
			tb.Errorf("index holds an empty list for %s", ref)
		}
		for _, k := range keys {
			n++
			if e := entries[k]; e == nil || e.ref != ref {
				tb.Errorf("index lists a key under %s that has no entry of that ref", ref)
			}
		}
	}
	if n != len(entries) || n != c.entries.Len() {
		tb.Errorf("index lists %d keys, cache holds %d entries (Len %d)", n, len(entries), c.entries.Len())
	}
}

func request(token string, scopes ...string) *authzv1.AuthorizeRequest {
	return &authzv1.AuthorizeRequest{Token: token, Resource: "http://gw.test/mcp", RequiredScopes: scopes}
}

// allowed is authz's allowed answer for token (its token_ref is "ref-"+token).
// authz's own cache keeps it for a day (reusable_until), longer than any TTL
// here.
func allowed(token string, exp time.Time) *authzv1.AuthorizeResponse {
	p := &authzv1.Principal{Subject: "user-" + token, Scopes: []string{"read:user_data"}}
	if !exp.IsZero() {
		p.ExpiresAt = timestamppb.New(exp)
	}
	return &authzv1.AuthorizeResponse{Allowed: true, Principal: p, TokenRef: "ref-" + token, ReusableUntil: timestamppb.New(t0.Add(24 * time.Hour))}
}

// reusableUntil is allowed with authz's cache ending at until; nil: an authz
// that does not say.
func reusableUntil(token string, until *timestamppb.Timestamp) *authzv1.AuthorizeResponse {
	res := allowed(token, time.Time{})
	res.ReusableUntil = until
	return res
}

// fetch is what the gateway does: Get, and on a miss Put authz's answer.
// It reports whether the answer came from the cache.
func fetch(c *Cache, req *authzv1.AuthorizeRequest, answer *authzv1.AuthorizeResponse) (hit bool) {
	res, ticket := c.Get(req)
	if res != nil {
		return true
	}
	c.Put(ticket, answer)
	return false
}

func counter(tb testing.TB, m *metrics.Metrics, name, labelValue string) float64 {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if labelValue != "" && !slices.ContainsFunc(mt.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == labelValue }) {
				continue
			}
			switch {
			case mt.GetCounter() != nil:
				return mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				return mt.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestEdgeCases walks the cache through one scenario per row, each on a cache
// that is up, and checks whether the last request was answered from it.
func TestEdgeCases(t *testing.T) {
	t.Parallel()
	exp := func(d time.Duration) time.Time { return t0.Add(d) }
	tests := []struct {
		name string
		run  func(c *Cache, clk *clock) (hit bool)
		want bool
	}{
		{"first request misses", func(c *Cache, _ *clock) bool {
			return fetch(c, request("a", "s"), allowed("a", time.Time{}))
		}, false},
		{"second request hits", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"hit just before the TTL", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			clk.advance(ttl - time.Nanosecond)
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"miss at the TTL", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", exp(time.Hour)))
			clk.advance(ttl)
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"miss at the token's exp before the TTL", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", exp(2*time.Second)))
			clk.advance(2 * time.Second)
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"hit before the token's exp", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", exp(2*time.Second)))
			clk.advance(2*time.Second - time.Millisecond)
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"hit just before authz's cache ends", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), reusableUntil("a", timestamppb.New(exp(3*time.Second))))
			clk.advance(3*time.Second - time.Nanosecond)
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"miss when authz's cache ends, before the TTL", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), reusableUntil("a", timestamppb.New(exp(3*time.Second))))
			clk.advance(3 * time.Second)
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"not kept without reusable_until (authz did not cache it, or is older)", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), reusableUntil("a", nil))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"not kept when authz's cache has already ended", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), reusableUntil("a", timestamppb.New(exp(0))))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"an answer without reusable_until drops the kept decision", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Put(Ticket{key: KeyOf(request("a", "s")), seq: c.seq.Load(), valid: true}, reusableUntil("a", nil))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"already expired token not kept", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", exp(0)))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"another token misses", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("b", "s"), nil)
		}, false},
		{"other scopes miss", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s", "t"), nil)
		}, false},
		{"fewer scopes miss", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s", "t"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"another resource misses", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			r := request("a", "s")
			r.Resource = "http://other.test/mcp"
			return fetch(c, r, nil)
		}, false},
		{"include_user misses a decision without the user", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			r := request("a", "s")
			r.IncludeUser = true
			return fetch(c, r, nil)
		}, false},
		{"include_orgs misses a decision without orgs", func(c *Cache, _ *clock) bool {
			r := request("a", "s")
			r.IncludeUser = true
			res := allowed("a", time.Time{})
			res.User = &authzv1.User{UserId: "u"}
			fetch(c, r, res)
			r2 := request("a", "s")
			r2.IncludeUser, r2.IncludeOrgs = true, true
			return fetch(c, r2, nil)
		}, false},
		{"decision with the user hits", func(c *Cache, _ *clock) bool {
			r := request("a", "s")
			r.IncludeUser = true
			res := allowed("a", time.Time{})
			res.User = &authzv1.User{UserId: "u"}
			fetch(c, r, res)
			return fetch(c, r, nil)
		}, true},
		{"decision whose user lookup failed not kept", func(c *Cache, _ *clock) bool {
			r := request("a", "s")
			r.IncludeUser = true
			res := allowed("a", time.Time{})
			res.UserError = "the user API is unavailable"
			fetch(c, r, res)
			return fetch(c, r, nil)
		}, false},
		{"denial not kept", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), &authzv1.AuthorizeResponse{Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE}, TokenRef: "ref-a"})
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"allowed without principal not kept", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), &authzv1.AuthorizeResponse{Allowed: true, TokenRef: "ref-a"})
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"allowed without token_ref not kept", func(c *Cache, _ *clock) bool {
			res := allowed("a", time.Time{})
			res.TokenRef = ""
			fetch(c, request("a", "s"), res)
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"invalidation drops every decision of the token", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			fetch(c, request("a", "s", "t"), allowed("a", time.Time{}))
			c.Invalidate("ref-a")
			return fetch(c, request("a", "s"), nil) || fetch(c, request("a", "s", "t"), nil)
		}, false},
		{"invalidation keeps other tokens", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			fetch(c, request("b", "s"), allowed("b", time.Time{}))
			c.Invalidate("ref-a")
			return fetch(c, request("b", "s"), nil)
		}, true},
		{"unknown invalidation is harmless", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Invalidate("ref-nobody")
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"decision fetched across another token's invalidation kept", func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Invalidate("ref-other")
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"decision fetched across its own token's invalidation not kept", func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Invalidate("ref-a")
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"decision fetched across its invalidation not kept after the grace", func(c *Cache, clk *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Invalidate("ref-a")
			clk.advance(InvalidationGrace) // a slow answer
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"decision fetched across a forgotten invalidation not kept", func(c *Cache, clk *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Invalidate("ref-a")
			clk.advance(ttl) // the next Put sweeps the grace away
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"decision fetched after a forgotten invalidation kept", func(c *Cache, clk *clock) bool {
			c.Invalidate("ref-a")
			clk.advance(ttl)
			fetch(c, request("b", "s"), allowed("b", time.Time{})) // sweeps
			return fetch(c, request("a", "s"), allowed("a", time.Time{})) || fetch(c, request("a", "s"), nil)
		}, true},
		{"decision fetched across many invalidations of other tokens kept", func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			for i := range 100 {
				c.Invalidate(fmt.Sprint("ref-other-", i))
			}
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"refresh-style store across another token's invalidation kept", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			fetch(c, request("b", "s"), allowed("b", time.Time{}))
			c.Invalidate("ref-b")
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"decision fetched before a reset not kept", func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Reset()
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"decision fetched before the stream ended not kept", func(c *Cache, _ *clock) bool {
			_, ticket := c.Get(request("a", "s"))
			c.Down()
			c.Reset()
			c.Put(ticket, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"invalidated token not kept during the grace", func(c *Cache, clk *clock) bool {
			c.Invalidate("ref-a")
			clk.advance(InvalidationGrace - time.Millisecond)
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"invalidated token kept after the grace", func(c *Cache, clk *clock) bool {
			c.Invalidate("ref-a")
			clk.advance(InvalidationGrace)
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"other tokens kept during a grace", func(c *Cache, _ *clock) bool {
			c.Invalidate("ref-a")
			fetch(c, request("b", "s"), allowed("b", time.Time{}))
			return fetch(c, request("b", "s"), nil)
		}, true},
		{"reset drops everything", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Reset()
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"nothing served once the stream ended", func(c *Cache, _ *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Down()
			return fetch(c, request("a", "s"), allowed("a", time.Time{})) || fetch(c, request("a", "s"), nil)
		}, false},
		{"nothing kept until the next reset", func(c *Cache, _ *clock) bool {
			c.Down()
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Reset()
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"kept again after the next reset", func(c *Cache, _ *clock) bool {
			c.Down()
			c.Reset()
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, true},
		{"refetched after expiry, then invalidated", func(c *Cache, clk *clock) bool {
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			clk.advance(ttl)
			fetch(c, request("a", "s"), allowed("a", time.Time{}))
			c.Invalidate("ref-a")
			return fetch(c, request("a", "s"), nil)
		}, false},
		{"zero ticket stores nothing", func(c *Cache, _ *clock) bool {
			c.Put(Ticket{}, allowed("a", time.Time{}))
			return fetch(c, request("a", "s"), nil)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk, _ := newCache(t, 0)
			c.Reset()
			if got := tt.run(c, clk); got != tt.want {
				t.Errorf("hit = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDownUntilReset(t *testing.T) {
	t.Parallel()
	c, _, m := newCache(t, 0)
	if c.Up() {
		t.Fatal("a new cache is up before any stream")
	}
	res, ticket := c.Get(request("a", "s"))
	if res != nil || ticket.valid {
		t.Fatalf("Get on a down cache = %v, %+v; want nothing", res, ticket)
	}
	if c.Put(ticket, allowed("a", time.Time{})) || c.Len() != 0 {
		t.Fatal("a down cache kept a decision")
	}
	if !c.Reset() || c.Reset() {
		t.Error("Reset does not report the down-to-up change once")
	}
	if !c.Down() || c.Down() {
		t.Error("Down does not report the up-to-down change once")
	}
	if got := counter(t, m, "mcp_gateway_decision_cache_lookups_total", "stream_down"); got != 1 {
		t.Errorf("stream_down lookups = %v, want 1", got)
	}
	if got := counter(t, m, "mcp_gateway_decision_cache_resets_total", "reset"); got != 2 {
		t.Errorf("resets{reset} = %v, want 2", got)
	}
	if got := counter(t, m, "mcp_gateway_decision_cache_resets_total", "stream_end"); got != 1 {
		t.Errorf("resets{stream_end} = %v, want 1", got)
	}
	if got := counter(t, m, "mcp_gateway_decision_cache_stream_up", ""); got != 0 {
		t.Errorf("stream_up = %v, want 0", got)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	c, _, m := newCache(t, 0)
	c.Reset()
	fetch(c, request("a", "s"), allowed("a", time.Time{}))
	fetch(c, request("a", "s"), nil)
	fetch(c, request("a", "s"), nil)
	c.Invalidate("ref-a")
	for name, want := range map[string]float64{
		"mcp_gateway_decision_cache_lookups_total/hit":     2,
		"mcp_gateway_decision_cache_lookups_total/miss":    1,
		"mcp_gateway_decision_cache_invalidations_total/":  1,
		"mcp_gateway_decision_cache_entries/":              0,
		"mcp_gateway_decision_cache_stream_up/":            1,
		"mcp_gateway_decision_cache_resets_total/reset":    1,
		"mcp_gateway_decision_cache_evictions_total/":      0,
		"mcp_gateway_decision_cache_lookups_total/nothing": 0,
	} {
		metric, label, _ := cutLast(name)
		if got := counter(t, m, metric, label); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func cutLast(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// TestBounded: a full cache evicts to stay within MaxEntries, and the index
// stays exact.
func TestBounded(t *testing.T) {
	t.Parallel()
	c, _, m := newCache(t, 3)
	c.Reset()
	for i := range 10 {
		tok := fmt.Sprint("t", i)
		fetch(c, request(tok, "s"), allowed(tok, time.Time{}))
		if c.Len() > 3 {
			t.Fatalf("Len = %d after %d puts, want at most 3", c.Len(), i+1)
		}
		checkIndex(t, c)
	}
	if got := counter(t, m, "mcp_gateway_decision_cache_evictions_total", ""); got != 7 {
		t.Errorf("evictions = %v, want 7", got)
	}
	if !fetch(c, request("t9", "s"), nil) {
		t.Error("the latest decision was evicted")
	}
}

// TestBoundedKeepsDecisionsInUse: a full cache evicts decisions not used
// lately, not one in use: a token in steady use keeps its decision while a
// stream of other tokens passes through.
func TestBoundedKeepsDecisionsInUse(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, 3)
	c.Reset()
	fetch(c, request("steady", "s"), allowed("steady", time.Time{}))
	for i := range 50 {
		if !fetch(c, request("steady", "s"), nil) {
			t.Fatalf("the decision in use was evicted after %d other tokens", i)
		}
		tok := fmt.Sprint("passing-", i)
		fetch(c, request(tok, "s"), allowed(tok, time.Time{}))
	}
}

// TestSweep: expired decisions and graces leave memory within about a TTL,
// even for tokens never seen again.
func TestSweep(t *testing.T) {
	t.Parallel()
	c, clk, _ := newCache(t, 0)
	c.Reset()
	for i := range 100 {
		tok := fmt.Sprint("t", i)
		fetch(c, request(tok, "s"), allowed(tok, time.Time{}))
		c.Invalidate("gone-" + tok)
	}
	clk.advance(ttl)
	fetch(c, request("new", "s"), allowed("new", time.Time{}))
	c.mu.Lock()
	entries, graces := c.entries.Len(), len(c.graces)
	c.mu.Unlock()
	if entries != 1 || graces != 0 {
		t.Errorf("after a TTL: %d entries, %d graces; want 1, 0", entries, graces)
	}
}

// TestTooManyGraces: past MaxEntries live graces the cache keeps nothing for
// a grace period rather than forget one, and nothing fetched before the
// invalidation it could not remember.
func TestTooManyGraces(t *testing.T) {
	t.Parallel()
	c, clk, _ := newCache(t, 2)
	c.Reset()
	_, before := c.Get(request("y", "s"))
	for i := range 3 {
		c.Invalidate(fmt.Sprint("ref-", i))
	}
	if fetch(c, request("x", "s"), allowed("x", time.Time{})); fetch(c, request("x", "s"), nil) {
		t.Error("kept a decision while invalidations were not tracked one by one")
	}
	clk.advance(InvalidationGrace)
	if fetch(c, request("x", "s"), allowed("x", time.Time{})); !fetch(c, request("x", "s"), nil) {
		t.Error("kept nothing after the grace period")
	}
	if c.Put(before, allowed("y", time.Time{})) {
		t.Error("kept a decision fetched before an invalidation it could not remember")
	}
	// Invalidating a token already remembered needs no new room.
	c.Invalidate("ref-1")
	c.mu.Lock()
	g, ok := c.graces["ref-1"]
	c.mu.Unlock()
	if seq := c.seq.Load(); !ok || g.seq != seq {
		t.Errorf("re-invalidating a remembered token: grace %+v (known %v), want seq %d", g, ok, seq)
	}
}

// TestNoRawToken: the cache holds a hash of the token, never the token.
func TestNoRawToken(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, 0)
	c.Reset()
	token := "secret-token-value-1234567890"
	fetch(c, request(token, "s"), allowed("x", time.Time{}))
	n := 0
	for k := range c.entries.All() {
		n++
		if s := fmt.Sprintf("%+v", k); strings.Contains(s, token) {
			t.Errorf("key holds the raw token: %s", s)
		}
	}
	if n != 1 {
		t.Errorf("the cache holds %d decisions, want 1", n)
	}
}

func TestNewPanicsWithoutTTL(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("New with a zero TTL did not panic")
		}
	}()
	New(Options{})
}

// TestConcurrent runs lookups, stores, invalidations, resets and stream ends
// at once (go test -race), then checks the index and that no decision of an
// invalidated token survived its invalidation.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, 50)
	c.Reset()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				tok := fmt.Sprint("t", (w*7+i)%80)
				req := request(tok, "s")
				if i%3 == 0 {
					req.RequiredScopes = append(req.RequiredScopes, "t")
				}
				if res, ticket := c.Get(req); res == nil {
					c.Put(ticket, allowed(tok, time.Time{}))
				} else if !res.GetAllowed() {
					t.Error("served a decision that is not allowed")
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 500 {
			c.Invalidate(fmt.Sprint("ref-t", i%80))
			if i%100 == 0 {
				c.Down()
				c.Reset()
			}
		}
	})
	wg.Wait()
	checkIndex(t, c)
	if c.Len() > 50 {
		t.Errorf("Len = %d, want at most 50", c.Len())
	}
	c.Invalidate("ref-t1")
	if res, _ := c.Get(request("t1", "s")); res != nil {
		t.Error("an invalidated token is still served")
	}
}

// TestConcurrentOtherInvalidations: while one goroutine invalidates token A
// over and over, other goroutines fetch token B and store authz's answers;
// every answer for B is kept (go test -race). Then one more fetch of A races
// with A's invalidation and is never kept.
func TestConcurrentOtherInvalidations(t *testing.T) {
	t.Parallel()
	c, _, m := newCache(t, 0)
	c.Reset()
	stop := make(chan struct{})
	var invalidator sync.WaitGroup
	invalidator.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				c.Invalidate("ref-a")
			}
		}
	})
	var (
		wg         sync.WaitGroup
		stores     atomic.Int64
		kept       atomic.Int64
		hitsBefore = counter(t, m, "mcp_gateway_decision_cache_lookups_total", "hit")
	)
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				req := request("b", fmt.Sprint("s", w, "-", i%5))
				res, ticket := c.Get(req)
				if res != nil {
					continue
				}
				stores.Add(1)
				if c.Put(ticket, allowed("b", time.Time{})) {
					kept.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	invalidator.Wait()
	if stores.Load() == 0 || kept.Load() != stores.Load() {
		t.Errorf("kept %d of %d answers for b while a was being invalidated, want all", kept.Load(), stores.Load())
	}
	if hits := counter(t, m, "mcp_gateway_decision_cache_lookups_total", "hit") - hitsBefore; hits == 0 {
		t.Error("no lookup of b hit")
	}

	for range 200 {
		_, ticket := c.Get(request("a", "s"))
		done := make(chan struct{})
		go func() { c.Invalidate("ref-a"); close(done) }()
		<-done
		if c.Put(ticket, allowed("a", time.Time{})) {
			t.Fatal("kept a decision of a fetched before a's invalidation")
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		failures int
		lo, hi   time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{6, 2500 * time.Millisecond, 5 * time.Second},
		{10, 2500 * time.Millisecond, 5 * time.Second},
		{100, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := backoff(tt.failures)
			if d < tt.lo || d > tt.hi {
				t.Errorf("backoff(%d) = %v, want within [%v, %v]", tt.failures, d, tt.lo, tt.hi)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%d) has no jitter: always %v", tt.failures, seen)
		}
	}
}

// TestBytesPerDecision measures the memory a kept decision holds: 20,000
// decisions as authz sends them for a routed call (a PropelAuth-sized
// principal with JSON claims, decoded from the wire as gRPC does), each under
// its own token: about 1.4 KiB (2026-12-07), as docs/operations.md says. It
// fails above 2 KiB.
func TestBytesPerDecision(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the cache with 20,000 decisions: go test without -short runs it")
	}
	const n = 20_000
	c, _, _ := newCache(t, 2*n) // room to spare in every shard: no eviction
	c.Reset()
	claims := []byte(`{"active":true,"aud":["https://mcp.example.com/mcp"],"client_id":"8f1c2b7e4a9d4f0b9a6e3c2d1f0e9d8c","exp":1800003600,"iat":1800000000,"iss":"https://auth.example.com","scope":"read:user_data read:org_data","sub":"2a4c6e8f-0b1d-4f3a-9c5e-7d9f1b3d5e7f","token_type":"Bearer"}`)
	wire, err := proto.Marshal(&authzv1.AuthorizeResponse{
		Allowed: true,
		Principal: &authzv1.Principal{
			Subject: "2a4c6e8f-0b1d-4f3a-9c5e-7d9f1b3d5e7f", ClientId: "8f1c2b7e4a9d4f0b9a6e3c2d1f0e9d8c",
			Scopes: []string{"read:user_data", "read:org_data"}, Audience: []string{"https://mcp.example.com/mcp"},
			Issuer: "https://auth.example.com", ExpiresAt: timestamppb.New(t0.Add(time.Hour)), IssuedAt: timestamppb.New(t0),
			ClaimsJson: claims,
		},
		TokenRef:      strings.Repeat("ab", 32),
		ReusableUntil: timestamppb.New(t0.Add(time.Minute)),
	})
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	// The requests (and their tokens) are the caller's, not the cache's.
	reqs := make([]*authzv1.AuthorizeRequest, n)
	for i := range reqs {
		reqs[i] = &authzv1.AuthorizeRequest{Token: fmt.Sprintf("tok-%040d", i), Resource: "https://mcp.example.com/mcp", RequiredScopes: []string{"read:user_data"}, ClaimsFormat: authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON}
	}
	before := heap()
	for i, req := range reqs {
		res := &authzv1.AuthorizeResponse{}
		if err := proto.Unmarshal(wire, res); err != nil {
			t.Fatal(err)
		}
		res.TokenRef = fmt.Sprintf("%064x", i) // one token each
		if fetch(c, req, res) {
			t.Fatal("a new token hit")
		}
	}
	after := heap()
	if c.Len() != n {
		t.Fatalf("Len = %d, want %d", c.Len(), n)
	}
	per := float64(after-before) / n
	t.Logf("%d decisions: %.0f bytes each (heap %d -> %d)", n, per, before, after)
	if per > 2048 {
		t.Errorf("%.0f bytes per decision, want at most 2 KiB", per)
	}
	runtime.KeepAlive(reqs)
}
