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
package metrics

import (
	"net/http"
	"strings"
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
	}
	m.reg.MustRegister(m.requests, m.requestDuration, m.authzDuration, m.decisions, m.rateLimits, m.rateLimitErrors,
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
	m.requests.WithLabelValues(method, tool, status).Inc()
	m.requestDuration.WithLabelValues(method).Observe(d.Seconds())
}

// ObserveAuthz records one call to authz; fullMethod is the gRPC method name
// ("/authz.v1.AuthzService/Authorize"), labelled by its last element.
func (m *Metrics) ObserveAuthz(fullMethod string, code codes.Code, d time.Duration) {
	rpc := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	m.authzDuration.WithLabelValues(rpc, code.String()).Observe(d.Seconds())
}

// Decision records the outcome of one authorization.
func (m *Metrics) Decision(decision string) {
	m.decisions.WithLabelValues(decision).Inc()
}

// RateLimit records one rate-limit check.
func (m *Metrics) RateLimit(decision, store string) {
	m.rateLimits.WithLabelValues(decision, store).Inc()
}

// RateLimitRedisError records one failed Redis call of the rate limiter.
func (m *Metrics) RateLimitRedisError() { m.rateLimitErrors.Inc() }
