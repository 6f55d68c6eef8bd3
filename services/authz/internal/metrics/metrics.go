// Package metrics defines authz's Prometheus metrics on a registry of its own, so
// nothing else in the process (or in tests running several instances) shares or
// double-registers them.
//
// # Metrics
//
//	authz_decisions_total{reason}                      Authorize outcomes: allowed, token_inactive, ...
//	authz_cache_lookups_total{cache,tier,result}       cache=token|user, tier=l1|l2, result=hit|miss|error|skipped
//	authz_introspections_total{result}                 active|inactive|error
//	authz_introspection_duration_seconds               histogram of calls to the introspection endpoint
//	authz_introspection_errors_total{kind}             timeout, network, status_5xx, client_auth, malformed, ...
//	authz_redis_errors_total{op}                       get|set|publish
//	authz_redis_busy_total{op}                         get|set|publish not attempted: every pooled connection busy for REDIS_TIMEOUT
//	authz_coalesced_waits_total{cache}                 requests that waited for another request's fetch
//	authz_upstream_in_flight{upstream}                 calls to the authorization server running now: introspection|user
//	authz_upstream_rejected_total{upstream}            calls refused (UNAVAILABLE) because INTROSPECTION_MAX_IN_FLIGHT were running
//	authz_user_fetches_total{result}                   ok|not_found|rate_limited|unauthorized|error
//	authz_user_fetch_retries_total                     429 retries
//	authz_user_fetch_duration_seconds                  histogram of calls to the user API
//	authz_invalidations_total{source}                  local (InvalidateToken here) | remote (pub/sub)
//	authz_l1_flushes_total                             L1 token cache cleared after a pub/sub (re)subscribe
//	authz_l1_entries{cache}, authz_l1_evictions_total{cache}
//	authz_grpc_requests_total{method,code}             unary calls and streams (WatchInvalidations, health Watch) by the code they ended with
//	authz_grpc_request_duration_seconds{method}        unary calls only: a stream lives as long as its caller
//	authz_grpc_caller_requests_total{caller,method}    with mTLS: calls by client certificate identity (first 100 identities; later ones as "other")
//	authz_watch_streams                                open WatchInvalidations streams
//	authz_watch_overflows_total                        resets sent because a watcher read too slowly and its buffer filled
//
// plus the standard go_* and process_* collectors.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every metric. Fields are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	Decisions             *prometheus.CounterVec
	CacheLookups          *prometheus.CounterVec
	Introspections        *prometheus.CounterVec
	IntrospectionDuration prometheus.Histogram
	IntrospectionErrors   *prometheus.CounterVec
	RedisErrors           *prometheus.CounterVec
	RedisBusy             *prometheus.CounterVec
	CoalescedWaits        *prometheus.CounterVec
	UpstreamInFlight      *prometheus.GaugeVec
	UpstreamRejected      *prometheus.CounterVec
	UserFetches           *prometheus.CounterVec
	UserFetchRetries      prometheus.Counter
	UserFetchDuration     prometheus.Histogram
	Invalidations         *prometheus.CounterVec
	L1Flushes             prometheus.Counter
	GRPCRequests          *prometheus.CounterVec
	GRPCDuration          *prometheus.HistogramVec
	CallerRequests        *prometheus.CounterVec
	WatchStreams          prometheus.Gauge
	WatchOverflows        prometheus.Counter
}

// Cache and tier label values.
const (
	CacheToken = "token"
	CacheUser  = "user"
	TierL1     = "l1"
	TierL2     = "l2"
)

// Upstream label values: the two APIs of the authorization server authz calls.
const (
	UpstreamIntrospection = "introspection"
	UpstreamUser          = "user"
)

// Lookup result label values.
const (
	ResultHit     = "hit"
	ResultMiss    = "miss"
	ResultError   = "error"
	ResultSkipped = "skipped"
)

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New creates the metrics on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_decisions_total", Help: "Authorize decisions by outcome.",
		}, []string{"reason"}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_cache_lookups_total", Help: "Cache lookups by cache, tier and result.",
		}, []string{"cache", "tier", "result"}),
		Introspections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_introspections_total", Help: "Calls to the introspection endpoint by result.",
		}, []string{"result"}),
		IntrospectionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "authz_introspection_duration_seconds", Help: "Latency of calls to the introspection endpoint.", Buckets: latencyBuckets,
		}),
		IntrospectionErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_introspection_errors_total", Help: "Failed introspections by kind.",
		}, []string{"kind"}),
		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_redis_errors_total", Help: "Failed or timed-out Redis operations by operation.",
		}, []string{"op"}),
		RedisBusy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_redis_busy_total", Help: "Redis operations not attempted because every pooled connection was busy with other operations for REDIS_TIMEOUT (a miss; Redis is not backed off).",
		}, []string{"op"}),
		CoalescedWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_coalesced_waits_total", Help: "Requests that waited for a concurrent identical fetch instead of making their own.",
		}, []string{"cache"}),
		UpstreamInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authz_upstream_in_flight", Help: "Calls to the authorization server running now, by API.",
		}, []string{"upstream"}),
		UpstreamRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_upstream_rejected_total", Help: "Calls to the authorization server refused because INTROSPECTION_MAX_IN_FLIGHT were already running, by API.",
		}, []string{"upstream"}),
		UserFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_user_fetches_total", Help: "Calls to the user API by result.",
		}, []string{"result"}),
		UserFetchRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authz_user_fetch_retries_total", Help: "User API calls retried after 429.",
		}),
		UserFetchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "authz_user_fetch_duration_seconds", Help: "Latency of calls to the user API.", Buckets: latencyBuckets,
		}),
		Invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_invalidations_total", Help: "Token invalidations applied to L1, by source.",
		}, []string{"source"}),
		L1Flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authz_l1_flushes_total", Help: "Times the L1 token cache was cleared because invalidations may have been missed while pub/sub was disconnected.",
		}),
		GRPCRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_grpc_requests_total", Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		GRPCDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "authz_grpc_request_duration_seconds", Help: "gRPC handler latency by method.", Buckets: latencyBuckets,
		}, []string{"method"}),
		CallerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_grpc_caller_requests_total", Help: "gRPC requests by verified client certificate identity (mTLS) and method.",
		}, []string{"caller", "method"}),
		WatchStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authz_watch_streams", Help: "Open WatchInvalidations streams.",
		}),
		WatchOverflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authz_watch_overflows_total", Help: "Resets sent to WatchInvalidations streams that read too slowly to keep every invalidation.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.Decisions, m.CacheLookups, m.Introspections, m.IntrospectionDuration, m.IntrospectionErrors,
		m.RedisErrors, m.RedisBusy, m.CoalescedWaits, m.UpstreamInFlight, m.UpstreamRejected, m.UserFetches, m.UserFetchRetries, m.UserFetchDuration,
		m.Invalidations, m.L1Flushes, m.GRPCRequests, m.GRPCDuration, m.CallerRequests,
		m.WatchStreams, m.WatchOverflows,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// RegisterL1 exports the size and evictions of an L1 cache named cache.
func (m *Metrics) RegisterL1(cache string, entries func() int, evictions func() uint64) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "authz_l1_entries", Help: "Entries in the in-process cache.", ConstLabels: prometheus.Labels{"cache": cache},
		}, func() float64 { return float64(entries()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authz_l1_evictions_total", Help: "Entries evicted from the in-process cache to make room.", ConstLabels: prometheus.Labels{"cache": cache},
		}, func() float64 { return float64(evictions()) }),
	)
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
