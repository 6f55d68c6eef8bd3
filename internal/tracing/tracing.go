// Package tracing sets up OpenTelemetry tracing for authz and the gateway
// from the standard OTEL_* variables, and wraps the clients and servers each
// service builds so that one request is one trace across them.
//
// # On or off
//
// Tracing is off unless a variable asks for an exporter: OTEL_TRACES_EXPORTER
// set to otlp or console, or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), which
// means otlp. OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turns it off
// whatever else is set. (The SDK's own default exporter is otlp to
// localhost; a service that nobody asked to trace should not send anything
// anywhere.) Off, [Start] installs a no-op provider and every wrapper of this
// package returns what it wraps unchanged, so an untraced service runs the
// code it ran before tracing existed.
//
// # Globals
//
// [Start] sets OpenTelemetry's global tracer provider and propagator, and
// the wrappers ([Transport], [GRPCClientOptions], [GRPCServerOptions]) read
// them: instrumentation libraries default to the globals, and a package that
// makes HTTP calls (the gateway's upstream clients, say) can wrap its
// transport with one call, without a provider passed down to it. Start must
// therefore run before the clients and servers are built.
//
// # What crosses a process
//
// Only W3C trace context (traceparent, tracestate) is propagated, not W3C
// baggage: baggage from a client would otherwise travel to authz and the
// authorization server unread and unbounded. Spans carry no token, no secret
// and no personal data but the subject: the HTTP wrappers record method,
// URL, status and peer, never headers or bodies; the gRPC wrappers record the
// method and status, never messages.
//
// # Variables
//
// [OTel] declares the variables a service validates at start (package
// envconf); the OTLP exporters read the rest of their OTEL_EXPORTER_OTLP_*
// variables (TLS, timeout, compression) from the process environment
// themselves, and the batch span processor its OTEL_BSP_* ones.
package tracing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/ratelog"
)

// OTel declares the OTEL_* variables a service reads; a service's Config
// embeds it. Call [OTel.Check] from the service's Load.
type OTel struct {
	TracesExporter []string `env:"OTEL_TRACES_EXPORTER" defaultText:"otlp when an OTLP endpoint is set, else none" desc:"where spans go: otlp, console (stdout), both, or none; unset with no OTLP endpoint, tracing is off"`
	Endpoint       string   `env:"OTEL_EXPORTER_OTLP_ENDPOINT" check:"url" desc:"OTLP collector base URL, e.g. http://otel-collector:4318 (http/protobuf; traces go to {}/v1/traces) or http://otel-collector:4317 (grpc); setting it turns tracing on"`
	TracesEndpoint string   `env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" check:"url" defaultText:"from OTEL_EXPORTER_OTLP_ENDPOINT" desc:"OTLP URL for traces only, used as given (no /v1/traces added); setting it turns tracing on"`
	Protocol       string   `env:"OTEL_EXPORTER_OTLP_PROTOCOL" envDefault:"http/protobuf" desc:"OTLP transport: http/protobuf or grpc"`
	TracesProtocol string   `env:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" defaultText:"OTEL_EXPORTER_OTLP_PROTOCOL" desc:"OTLP transport for traces: http/protobuf or grpc"`
	Headers        string   `env:"OTEL_EXPORTER_OTLP_HEADERS" secret:"true" desc:"headers sent to the collector, key=value pairs separated by commas (e.g. an API key)"`
	TracesHeaders  string   `env:"OTEL_EXPORTER_OTLP_TRACES_HEADERS" secret:"true" desc:"headers sent with traces only, as OTEL_EXPORTER_OTLP_HEADERS"`
	ServiceName    string   `env:"OTEL_SERVICE_NAME" defaultText:"the binary's name (authz, mcp-gateway)" desc:"service.name of the spans"`
	Sampler        string   `env:"OTEL_TRACES_SAMPLER" envDefault:"parentbased_always_on" desc:"always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"`
	SamplerArg     string   `env:"OTEL_TRACES_SAMPLER_ARG" defaultText:"1.0 for the ratio samplers" desc:"sampling probability from 0 to 1, for traceidratio and parentbased_traceidratio"`
	SDKDisabled    bool     `env:"OTEL_SDK_DISABLED" envDefault:"false" desc:"true turns tracing off whatever else is set"`
}

// Exporters and protocols supported.
const (
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
	ExporterNone    = "none"

	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

var samplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// Check validates the values the loader cannot check one by one. It returns
// an [*envconf.Error] naming the first bad variable.
func (c OTel) Check() error {
	for _, e := range c.TracesExporter {
		switch e {
		case ExporterOTLP, ExporterConsole:
		case ExporterNone:
			if len(c.TracesExporter) > 1 {
				return envconf.Errorf("OTEL_TRACES_EXPORTER", "none cannot be combined with other exporters")
			}
		default:
			return envconf.Errorf("OTEL_TRACES_EXPORTER", "%q is not otlp, console or none (the zipkin and jaeger exporters are not built in; send OTLP to a collector)", e)
		}
	}
	for _, p := range []struct{ name, v string }{{"OTEL_EXPORTER_OTLP_PROTOCOL", c.Protocol}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", c.TracesProtocol}} {
		switch p.v {
		case "", ProtocolHTTP, ProtocolGRPC:
		case "http/json":
			return envconf.Errorf(p.name, "http/json is not supported by the Go exporters; use http/protobuf or grpc")
		default:
			return envconf.Errorf(p.name, "%q is not http/protobuf or grpc", p.v)
		}
	}
	for _, h := range []struct{ name, v string }{{"OTEL_EXPORTER_OTLP_HEADERS", c.Headers}, {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", c.TracesHeaders}} {
		for i, kv := range strings.Split(h.v, ",") {
			if h.v == "" {
				break
			}
			// The value is a secret: say which member is wrong, never what it holds.
			if k, _, ok := strings.Cut(kv, "="); !ok || strings.TrimSpace(k) == "" {
				return envconf.Errorf(h.name, "member %d is not key=value", i+1)
			}
		}
	}
	if !slices.Contains(samplers, c.Sampler) {
		return envconf.Errorf("OTEL_TRACES_SAMPLER", "%q is not one of %s", c.Sampler, strings.Join(samplers, ", "))
	}
	if c.SamplerArg != "" {
		if _, err := c.ratio(); err != nil {
			return err
		}
	}
	return nil
}

// ratio is OTEL_TRACES_SAMPLER_ARG as a probability, 1 when unset.
func (c OTel) ratio() (float64, error) {
	if c.SamplerArg == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(c.SamplerArg, 64)
	if err != nil || f < 0 || f > 1 {
		return 0, envconf.Errorf("OTEL_TRACES_SAMPLER_ARG", "%q is not a probability from 0 to 1", c.SamplerArg)
	}
	return f, nil
}

// Enabled reports whether the variables ask for tracing (see the package
// documentation).
func (c OTel) Enabled() bool {
	if c.SDKDisabled || slices.Equal(c.TracesExporter, []string{ExporterNone}) {
		return false
	}
	return len(c.TracesExporter) > 0 || c.Endpoint != "" || c.TracesEndpoint != ""
}

// exporters are the exporters asked for: otlp when only an endpoint is set.
func (c OTel) exporters() []string {
	if len(c.TracesExporter) == 0 {
		return []string{ExporterOTLP}
	}
	return c.TracesExporter
}

func (c OTel) protocol() string { return cmp.Or(c.TracesProtocol, c.Protocol, ProtocolHTTP) }

func (c OTel) sampler() (sdktrace.Sampler, error) {
	ratio, err := c.ratio()
	if err != nil {
		return nil, err
	}
	switch c.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	}
	return nil, envconf.Errorf("OTEL_TRACES_SAMPLER", "%q is not one of %s", c.Sampler, strings.Join(samplers, ", "))
}

// active is whether [Start] turned tracing on in this process: the wrappers
// return what they wrap unchanged when it did not.
var active atomic.Bool

// Active reports whether tracing is on in this process.
func Active() bool { return active.Load() }

// Tracing is this process's tracing, from [Start].
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when off
}

// Start sets up tracing as cfg says, with service name defaultName unless
// OTEL_SERVICE_NAME is set, and installs it as OpenTelemetry's global
// provider and propagator (see the package documentation). Exporter errors
// (a collector down) are logged through logger, at most one line per 10s.
// It returns an error for configuration [OTel.Check] refuses or an exporter
// that cannot be built; call [Tracing.Shutdown] to flush spans at the end.
func Start(ctx context.Context, cfg OTel, defaultName string, logger *slog.Logger) (*Tracing, error) {
	if !cfg.Enabled() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		active.Store(false)
		return &Tracing{}, nil
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	sampler, err := cfg.sampler()
	if err != nil {
		return nil, err
	}
	detectors := []resource.Option{
		resource.WithAttributes(semconv.ServiceName(defaultName)),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
		resource.WithTelemetrySDK(),
	}
	if cfg.ServiceName != "" {
		detectors = append(detectors, resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	}
	res, err := resource.New(ctx, detectors...)
	if err != nil && res == nil {
		return nil, envconf.Errorf("OTEL_RESOURCE_ATTRIBUTES", "%v", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	for _, e := range cfg.exporters() {
		exp, err := newExporter(ctx, e, cfg.protocol())
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	errLog := &ratelog.Limiter{Every: 10 * time.Second}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if ok, unlogged := errLog.Allow(); ok {
			logger.Warn("tracing: exporting spans failed", "error", err.Error(), "unlogged_since_last", unlogged)
		}
	}))
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	active.Store(true)
	logger.Info("tracing on", "exporters", cfg.exporters(), "protocol", cfg.protocol(), "sampler", cfg.Sampler)
	return &Tracing{provider: tp}, nil
}

func newExporter(ctx context.Context, name, protocol string) (sdktrace.SpanExporter, error) {
	switch {
	case name == ExporterConsole:
		return stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
	case protocol == ProtocolGRPC:
		// Endpoint, headers, TLS, timeout and compression come from
		// OTEL_EXPORTER_OTLP_* as the exporter reads them.
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating the OTLP gRPC trace exporter: %w", err)
		}
		return exp, nil
	default:
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating the OTLP HTTP trace exporter: %w", err)
		}
		return exp, nil
	}
}

// Enabled reports whether t exports spans.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Shutdown exports the spans still buffered and stops the exporters, within
// ctx. It returns the exporters' errors; with tracing off it does nothing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	active.Store(false)
	if err := t.provider.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flushing spans: %w", err)
	}
	return nil
}

// FlushTimeout bounds [Flush]: spans still buffered when a service stops get
// this long to reach the collector, within the 10s docker compose and
// Kubernetes allow between SIGTERM and SIGKILL once the service has drained.
const FlushTimeout = 2 * time.Second

// Flush shuts t down (see [Tracing.Shutdown]) within [FlushTimeout], even
// after ctx, the service's, has ended, and logs an error through logger:
// for a service's deferred call at the end of its run.
func Flush(ctx context.Context, t *Tracing, logger *slog.Logger) {
	if !t.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FlushTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		logger.Warn("tracing: spans lost at shutdown", "error", err.Error())
	}
}

// Tracer returns the tracer of instrumentation scope name (a package path)
// from the global provider: a no-op one while tracing is off.
func Tracer(name string) trace.Tracer { return otel.GetTracerProvider().Tracer(name) }

// Transport returns base wrapped so that every request is a client span
// named spanName (e.g. "introspect"), child of the span in the request's
// context, and carries its trace context in traceparent and tracestate
// headers. With tracing off it returns base itself. Wrap a transport once,
// when building the client, after [Start].
//
// The span records the method, the URL (without user info), the peer and the
// status; never headers, so never an Authorization header, nor the body.
func Transport(base http.RoundTripper, spanName string) http.RoundTripper {
	if !Active() {
		return base
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base, otelhttp.WithSpanNameFormatter(func(string, *http.Request) string { return spanName }))
}

// healthService is the gRPC health service: its checks (and client-side
// health watching, one stream per connection for its life) are not traced.
const healthService = "/grpc.health.v1.Health/"

// filter traces every RPC but health checks and the methods named in skip
// (full method names, e.g. authzv1.AuthzService_WatchInvalidations_FullMethodName:
// a stream that lasts as long as a connection is no request to follow).
func filter(skip []string) otelgrpc.Filter {
	return func(info *stats.RPCTagInfo) bool {
		return !strings.HasPrefix(info.FullMethodName, healthService) && !slices.Contains(skip, info.FullMethodName)
	}
}

// GRPCClientOptions returns the dial options that trace a client's calls and
// send their trace context to the server in gRPC metadata, except health
// checks and the methods in skip; none while tracing is off.
func GRPCClientOptions(skip ...string) []grpc.DialOption {
	if !Active() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(filter(skip))))}
}

// GRPCServerOptions returns the server options that trace every call but
// health checks and the methods in skip, as children of the trace context
// the client sent; none while tracing is off.
func GRPCServerOptions(skip ...string) []grpc.ServerOption {
	if !Active() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(filter(skip))))}
}

// ClientParent returns ctx with the trace context a client sent as the
// remote parent of the span about to start, and the links that span should
// carry. An MCP message's own context, params._meta's traceparent and
// tracestate (metaParent, metaState), comes first: it is what the MCP client
// meant, and a transport other than HTTP carries nothing else. Failing that
// (absent or invalid), the HTTP headers' traceparent and tracestate are the
// parent. When both are valid and differ, the headers' context (an HTTP hop
// in between, say) is returned as a link. Only W3C trace context is read,
// as [Start] propagates only that.
func ClientParent(ctx context.Context, h http.Header, metaParent, metaState string) (context.Context, []trace.Link) {
	var prop propagation.TraceContext
	fromHeader := trace.SpanContextFromContext(prop.Extract(ctx, propagation.HeaderCarrier(h)))
	if metaParent != "" {
		carrier := propagation.MapCarrier{"traceparent": metaParent}
		if metaState != "" {
			carrier["tracestate"] = metaState
		}
		if fromMeta := trace.SpanContextFromContext(prop.Extract(ctx, carrier)); fromMeta.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, fromMeta)
			if fromHeader.IsValid() && !fromHeader.Equal(fromMeta) {
				return ctx, []trace.Link{{SpanContext: fromHeader}}
			}
			return ctx, nil
		}
	}
	if fromHeader.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, fromHeader)
	}
	return ctx, nil
}
