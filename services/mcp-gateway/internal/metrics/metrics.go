// Package metrics defines the gateway's Prometheus metrics on a registry of its
// own (no global state), served at /metrics.
//
//   - mcp_gateway_requests_total{method,tool,status}: MCP requests by JSON-RPC
//     method, tool (tools/call only) and HTTP status.
//   - mcp_gateway_request_duration_seconds{method}: time to answer them.
//   - mcp_gateway_authz_call_duration_seconds{rpc,code}: calls to authz, after
//     retries, by RPC and gRPC code.
//   - mcp_gateway_authz_decisions_total{decision}: "allowed", a denial reason
//     (e.g. "insufficient_scope"), or "error" when authz could not decide.
//   - mcp_gateway_rate_limit_decisions_total{decision,store}: rate-limit checks
//     (RATE_LIMIT) by decision ("allowed", "limited") and the store that
//     decided ("redis", or "local" when REDIS_URL is unset or Redis failed).
//   - mcp_gateway_rate_limit_redis_errors_total: Redis failures of the rate
//     limiter (each request then decided in process, never failed).
//   - mcp_gateway_in_flight_requests: MCP requests being served past the
//     token check (what MCP_MAX_IN_FLIGHT bounds).
//   - mcp_gateway_in_flight_rejected_total: requests refused with 503 because
//     MCP_MAX_IN_FLIGHT were in flight.
//   - mcp_gateway_audit_events_dropped_total: audit events (AUDIT_LOG) lost
//     because the writer fell behind or a write failed (package audit).
//
// With DECISION_CACHE_TTL set (package decisioncache):
//
//   - mcp_gateway_decision_cache_lookups_total{result}: "hit" (authz not
//     called), "miss", or "stream_down" (the invalidation stream is not up, so
//     nothing is served from the cache).
//   - mcp_gateway_decision_cache_invalidations_total: token invalidations
//     received from authz.
//   - mcp_gateway_decision_cache_resets_total{cause}: times the whole cache was
//     dropped: "reset" (authz asked, e.g. on a new stream) or "stream_end".
//   - mcp_gateway_decision_cache_refreshes_total{result}: background refreshes
//     of decisions past their refresh point (refresh-ahead): "stored" (the
//     decision was renewed), "denied" (authz's answer may not be kept, e.g. a
//     revoked token: the decision was dropped), "discarded" (allowed, but an
//     invalidation came first), "error" (authz did not answer: the decision
//     expires as usual), "skipped" (too many refreshes in flight).
//   - mcp_gateway_decision_cache_evictions_total: entries dropped to stay
//     within the size bound.
//   - mcp_gateway_decision_cache_entries: decisions held.
//   - mcp_gateway_decision_cache_stream_up: 1 while the invalidation stream is
//     up (the cache may be used), else 0.
//
// With UPSTREAMS_FILE set (package federation), per upstream:
//
//   - mcp_gateway_upstream_calls_total{upstream,method,outcome}: routed calls
//     by outcome ("ok", "rpc_error", "unavailable", "timeout", "too_large",
//     "protocol", "canceled", "invalid").
//   - mcp_gateway_upstream_call_duration_seconds{upstream,method}: their
//     latency, the upstream's time only.
//   - mcp_gateway_upstream_catalog_entries{upstream,kind}: tools, resources,
//     resource templates and prompts listed ("tool", "resource",
//     "resource_template", "prompt"); 0 while the upstream is down.
//   - mcp_gateway_upstream_catalog_refreshes_total{upstream,result}: catalog
//     fetches, "ok" or "error".
//   - mcp_gateway_upstream_catalog_conflicts_total{upstream}: entries left
//     out of the catalog because their name was taken after start.
//   - mcp_gateway_upstream_up{upstream}: 1 while the last exchange worked
//     (stdio: the child runs), else 0.
//   - mcp_gateway_upstream_sessions{upstream}: upstream sessions held.
//   - mcp_gateway_upstream_restarts_total{upstream}: stdio child restarts.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// Metrics holds the gateway's collectors.
type Metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	authzDuration   *prometheus.HistogramVec
	decisions       *prometheus.CounterVec
	rateLimits      *prometheus.CounterVec
	rateLimitErrors prometheus.Counter

	inFlight         atomic.Pointer[func() int64]
	inFlightRejected prometheus.Counter
	auditDropped     prometheus.Counter

	dcLookups       *prometheus.CounterVec
	dcInvalidations prometheus.Counter
	dcResets        *prometheus.CounterVec
	dcRefreshes     *prometheus.CounterVec
	dcEvictions     prometheus.Counter
	dcEntries       prometheus.Gauge
	dcStreamUp      prometheus.Gauge

	upCalls     *prometheus.CounterVec
	upDuration  *prometheus.HistogramVec
	upEntries   *prometheus.GaugeVec
	upRefreshes *prometheus.CounterVec
	upConflicts *prometheus.CounterVec
	upUp        *prometheus.GaugeVec
	upSessions  *prometheus.GaugeVec
	upRestarts  *prometheus.CounterVec

	// The series every MCP request touches, by label values.
	requestSeries  children[[3]string, prometheus.Counter]
	durationSeries children[string, prometheus.Observer]
	decisionSeries children[string, prometheus.Counter]
	lookupSeries   children[string, prometheus.Counter]
}

// children holds some of a vector's children by their label values, so that
// the request path reads a map instead of WithLabelValues, which hashes and
// checks every label value each time. A child is created on first use, as
// WithLabelValues creates it: /metrics shows the same series. Its zero value
// is empty and ready; it is safe for concurrent use.
type children[K comparable, M any] struct {
	mu sync.RWMutex
	m  map[K]M
}

// get returns the child of k, made with create the first time.
func (c *children[K, M]) get(k K, create func() M) M {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok = c.m[k]; !ok {
		if c.m == nil {
			c.m = make(map[K]M)
		}
		v = create()
		c.m[k] = v
	}
	return v
}

// latencyBuckets resolve sub-millisecond cache hits as well as slow outliers.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// New registers the gateway's metrics, plus the Go runtime and process
// collectors, on a new registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_requests_total",
			Help: "MCP requests by JSON-RPC method, tool (tools/call only) and HTTP status.",
		}, []string{"method", "tool", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcp_gateway_request_duration_seconds",
			Help:    "Time to answer MCP requests, by JSON-RPC method.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		authzDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcp_gateway_authz_call_duration_seconds",
			Help:    "Latency of calls to authz (after retries), by RPC and gRPC code.",
			Buckets: latencyBuckets,
		}, []string{"rpc", "code"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_authz_decisions_total",
			Help: `Authorization decisions: "allowed", the denial reason, or "error".`,
		}, []string{"decision"}),
		rateLimits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_rate_limit_decisions_total",
			Help: `Per-principal rate-limit checks by decision ("allowed", "limited") and store ("redis", "local").`,
		}, []string{"decision", "store"}),
		rateLimitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_gateway_rate_limit_redis_errors_total",
			Help: "Redis failures of the rate limiter; those requests were decided by the in-process limiter.",
		}),
		inFlightRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_gateway_in_flight_rejected_total",
			Help: "MCP requests refused with 503 because MCP_MAX_IN_FLIGHT requests were in flight.",
		}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_gateway_audit_events_dropped_total",
			Help: "Audit events (AUDIT_LOG) lost because the writer fell behind (a slow disk or stdout) or a write failed.",
		}),
		dcLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_decision_cache_lookups_total",
			Help: `Decision cache lookups by result: "hit" (authz not called), "miss", "stream_down" (cache unusable).`,
		}, []string{"result"}),
		dcInvalidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_gateway_decision_cache_invalidations_total",
			Help: "Token invalidations received on the WatchInvalidations stream.",
		}),
		dcResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_decision_cache_resets_total",
			Help: `Times the whole decision cache was dropped, by cause ("reset" message, "stream_end").`,
		}, []string{"cause"}),
		dcRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_decision_cache_refreshes_total",
			Help: `Background refreshes of cached decisions by result: "stored", "denied" (decision dropped), "discarded", "error", "skipped" (too many in flight).`,
		}, []string{"result"}),
		dcEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_gateway_decision_cache_evictions_total",
			Help: "Decision cache entries evicted to stay within the size bound.",
		}),
		dcEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcp_gateway_decision_cache_entries",
			Help: "Decisions held by the decision cache.",
		}),
		dcStreamUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcp_gateway_decision_cache_stream_up",
			Help: "1 while the WatchInvalidations stream is up and the decision cache may be used, else 0.",
		}),
		upCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_upstream_calls_total",
			Help: `Calls routed to upstreams, by upstream, JSON-RPC method and outcome ("ok", "rpc_error", "unavailable", "timeout", "too_large", "protocol", "canceled", "invalid").`,
		}, []string{"upstream", "method", "outcome"}),
		upDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcp_gateway_upstream_call_duration_seconds",
			Help:    "Latency of calls routed to upstreams, by upstream and JSON-RPC method.",
			Buckets: latencyBuckets,
		}, []string{"upstream", "method"}),
		upEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcp_gateway_upstream_catalog_entries",
			Help: `Entries each upstream contributes to the lists, by kind ("tool", "resource", "resource_template", "prompt"); 0 while it is down.`,
		}, []string{"upstream", "kind"}),
		upRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_upstream_catalog_refreshes_total",
			Help: `Catalog fetches from upstreams, by result ("ok", "error").`,
		}, []string{"upstream", "result"}),
		upConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_upstream_catalog_conflicts_total",
			Help: "Upstream entries left out of the catalog because another upstream or a built-in tool had their name first.",
		}, []string{"upstream"}),
		upUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcp_gateway_upstream_up",
			Help: "1 while the last exchange with the upstream worked (stdio: its process runs), else 0.",
		}, []string{"upstream"}),
		upSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcp_gateway_upstream_sessions",
			Help: "Upstream MCP sessions held by this replica.",
		}, []string{"upstream"}),
		upRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_gateway_upstream_restarts_total",
			Help: "Restarts of stdio upstream processes.",
		}, []string{"upstream"}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mcp_gateway_in_flight_requests",
		Help: "MCP requests being served past the token check (bounded by MCP_MAX_IN_FLIGHT).",
	}, func() float64 {
		if f := m.inFlight.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.reg.MustRegister(m.requests, m.requestDuration, m.authzDuration, m.decisions, m.rateLimits, m.rateLimitErrors,
		inFlight, m.inFlightRejected, m.auditDropped,
		m.dcLookups, m.dcInvalidations, m.dcResets, m.dcRefreshes, m.dcEvictions, m.dcEntries, m.dcStreamUp,
		m.upCalls, m.upDuration, m.upEntries, m.upRefreshes, m.upConflicts, m.upUp, m.upSessions, m.upRestarts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry, for tests that read values back.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveRequest records one answered MCP request.
func (m *Metrics) ObserveRequest(method, tool, status string, d time.Duration) {
	m.requestSeries.get([3]string{method, tool, status}, func() prometheus.Counter {
		return m.requests.WithLabelValues(method, tool, status)
	}).Inc()
	m.durationSeries.get(method, func() prometheus.Observer {
		return m.requestDuration.WithLabelValues(method)
	}).Observe(d.Seconds())
}

// ObserveAuthz records one call to authz; fullMethod is the gRPC method name
// ("/authz.v1.AuthzService/Authorize"), labelled by its last element.
func (m *Metrics) ObserveAuthz(fullMethod string, code codes.Code, d time.Duration) {
	rpc := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	m.authzDuration.WithLabelValues(rpc, code.String()).Observe(d.Seconds())
}

// Decision records the outcome of one authorization.
func (m *Metrics) Decision(decision string) {
	m.decisionSeries.get(decision, func() prometheus.Counter { return m.decisions.WithLabelValues(decision) }).Inc()
}

// RateLimit records one rate-limit check.
func (m *Metrics) RateLimit(decision, store string) {
	m.rateLimits.WithLabelValues(decision, store).Inc()
}

// RateLimitRedisError records one failed Redis call of the rate limiter.
func (m *Metrics) RateLimitRedisError() { m.rateLimitErrors.Inc() }

// ObserveInFlight makes mcp_gateway_in_flight_requests read f, which must be
// safe to call from any goroutine.
func (m *Metrics) ObserveInFlight(f func() int64) { m.inFlight.Store(&f) }

// InFlightRejected records one request refused at MCP_MAX_IN_FLIGHT.
func (m *Metrics) InFlightRejected() { m.inFlightRejected.Inc() }

// AuditDropped counts an audit event that was lost.
func (m *Metrics) AuditDropped() { m.auditDropped.Inc() }

// DecisionCacheLookup records one decision cache lookup: "hit", "miss" or
// "stream_down".
func (m *Metrics) DecisionCacheLookup(result string) {
	m.lookupSeries.get(result, func() prometheus.Counter { return m.dcLookups.WithLabelValues(result) }).Inc()
}

// DecisionCacheInvalidation records one token invalidation received.
func (m *Metrics) DecisionCacheInvalidation() { m.dcInvalidations.Inc() }

// DecisionCacheReset records one drop of the whole cache: cause "reset" or
// "stream_end".
func (m *Metrics) DecisionCacheReset(cause string) { m.dcResets.WithLabelValues(cause).Inc() }

// DecisionCacheRefresh records the end of one background refresh: "stored",
// "denied", "discarded", "error", or "skipped".
func (m *Metrics) DecisionCacheRefresh(result string) { m.dcRefreshes.WithLabelValues(result).Inc() }

// DecisionCacheEvictions records n entries evicted for room.
func (m *Metrics) DecisionCacheEvictions(n int) { m.dcEvictions.Add(float64(n)) }

// DecisionCacheEntries sets the number of decisions held.
func (m *Metrics) DecisionCacheEntries(n int) { m.dcEntries.Set(float64(n)) }

// DecisionCacheStreamUp sets whether the invalidation stream is up.
func (m *Metrics) DecisionCacheStreamUp(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.dcStreamUp.Set(v)
}

// UpstreamCatalog sets the entries of kind upstream contributes to the lists.
func (m *Metrics) UpstreamCatalog(upstream, kind string, n int) {
	m.upEntries.WithLabelValues(upstream, kind).Set(float64(n))
}

// UpstreamRefresh records one catalog fetch: result "ok" or "error".
func (m *Metrics) UpstreamRefresh(upstream, result string) {
	m.upRefreshes.WithLabelValues(upstream, result).Inc()
}

// UpstreamConflicts records n entries of upstream left out for a name taken.
func (m *Metrics) UpstreamConflicts(upstream string, n int) {
	m.upConflicts.WithLabelValues(upstream).Add(float64(n))
}

// Upstream records the metrics of one upstream's connection: its calls, up,
// sessions and restarts, with the series a routed call touches looked up
// once instead of on every call (WithLabelValues hashes and checks every
// label value each time). It is safe for concurrent use.
type Upstream struct {
	m    *Metrics
	name string
	up   prometheus.Gauge

	// calls holds the series of each method and outcome seen.
	calls children[[2]string, upstreamCall]
}

type upstreamCall struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// Upstream returns the metrics of upstream's calls. Its
// mcp_gateway_upstream_up series exists from now on, at 0 (down) until
// [Upstream.Up] says otherwise.
func (m *Metrics) Upstream(upstream string) *Upstream {
	return &Upstream{m: m, name: upstream, up: m.upUp.WithLabelValues(upstream)}
}

// CallDone records one call routed to the upstream.
func (u *Upstream) CallDone(method, outcome string, d time.Duration) {
	c := u.calls.get([2]string{method, outcome}, func() upstreamCall {
		return upstreamCall{u.m.upCalls.WithLabelValues(u.name, method, outcome), u.m.upDuration.WithLabelValues(u.name, method)}
	})
	c.count.Inc()
	c.duration.Observe(d.Seconds())
}

// Up sets whether the upstream is reachable.
func (u *Upstream) Up(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	u.up.Set(v)
}

// Sessions sets the sessions held with the upstream.
func (u *Upstream) Sessions(n int) { u.m.upSessions.WithLabelValues(u.name).Set(float64(n)) }

// Restarted records one restart of the upstream's stdio process.
func (u *Upstream) Restarted() { u.m.upRestarts.WithLabelValues(u.name).Inc() }
