package tracing

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
)

// load reads OTel from env as a service's Load does, Check included.
func load(t *testing.T, env map[string]string) (OTel, error) {
	t.Helper()
	var c OTel
	if err := envconf.Load(&c, func(k string) string { return env[k] }); err != nil {
		return c, err
	}
	return c, c.Check()
}

func TestEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"protocol and sampler only", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "x"}, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{"exporter otlp, default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"exporter console", map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{"exporter none beats an endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
		{"SDK disabled beats an endpoint", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Enabled(); got != tt.want {
				t.Errorf("Enabled() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"},
		{"none with another", map[string]string{"OTEL_TRACES_EXPORTER": "none,otlp"}, "OTEL_TRACES_EXPORTER"},
		{"endpoint without scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"endpoint with credentials", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw@collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"http/json", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"traces protocol", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{"headers not key=value", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t,justasecret"}, "OTEL_EXPORTER_OTLP_HEADERS"},
		{"unknown sampler", map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"},
		{"ratio over 1", map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"},
		{"ratio not a number", map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"},
		{"disabled not a bool", map[string]string{"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tt.env)
			var cerr *envconf.Error
			if !errors.As(err, &cerr) || cerr.Var != tt.wantVar {
				t.Fatalf("error %v, want an *envconf.Error about %s", err, tt.wantVar)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "justasecret") || strings.Contains(err.Error(), "pw@") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

func TestCheckAccepts(t *testing.T) {
	t.Parallel()
	c, err := load(t, map[string]string{
		"OTEL_TRACES_EXPORTER":               "otlp, console",
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4317",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
		"OTEL_EXPORTER_OTLP_HEADERS":         "api-key=abc,x-tenant=1",
		"OTEL_TRACES_SAMPLER":                "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":            "0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"otlp", "console"}, c.exporters()); diff != "" {
		t.Errorf("exporters (-want +got):\n%s", diff)
	}
	if got := c.protocol(); got != ProtocolHTTP {
		t.Errorf("protocol() = %q, want the traces-only one, %q", got, ProtocolHTTP)
	}
	s, err := c.sampler()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Description(); !strings.Contains(got, "TraceIDRatioBased{0.1}") || !strings.HasPrefix(got, "ParentBased") {
		t.Errorf("sampler %s, want ParentBased with TraceIDRatioBased{0.1}", got)
	}
}

const (
	headerParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	metaParent   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

func TestClientParent(t *testing.T) {
	t.Parallel()
	header := func(tp, ts string) http.Header {
		h := http.Header{}
		if tp != "" {
			h.Set("Traceparent", tp)
		}
		if ts != "" {
			h.Set("Tracestate", ts)
		}
		return h
	}
	tests := []struct {
		name                  string
		h                     http.Header
		metaParent, metaState string
		wantParent            string // traceparent of the parent, "" for none
		wantState             string
		wantLink              string // traceparent of the link, "" for none
	}{
		{"nothing", header("", ""), "", "", "", "", ""},
		{"header", header(headerParent, "congo=t61rcWkgMzE"), "", "", headerParent, "congo=t61rcWkgMzE", ""},
		{"_meta", header("", ""), metaParent, "rojo=00f067aa0ba902b7", metaParent, "rojo=00f067aa0ba902b7", ""},
		{"_meta first, header linked", header(headerParent, ""), metaParent, "", metaParent, "", headerParent},
		{"same in both", header(metaParent, ""), metaParent, "", metaParent, "", ""},
		{"invalid _meta: the header", header(headerParent, ""), "00-00000000000000000000000000000000-b7ad6b7169203331-01", "", headerParent, "", ""},
		{"garbage _meta, no header", header("", ""), "not a traceparent", "x=y", "", "", ""},
		{"garbage header", header("00-xyz", ""), "", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, links := ClientParent(t.Context(), tt.h, tt.metaParent, tt.metaState)
			sc := trace.SpanContextFromContext(ctx)
			if got := traceparent(sc); got != tt.wantParent {
				t.Errorf("parent %q, want %q", got, tt.wantParent)
			}
			if sc.IsValid() && !sc.IsRemote() {
				t.Error("parent is not remote")
			}
			if got := sc.TraceState().String(); got != tt.wantState {
				t.Errorf("tracestate %q, want %q", got, tt.wantState)
			}
			var gotLink string
			if len(links) > 1 {
				t.Fatalf("%d links", len(links))
			}
			if len(links) == 1 {
				gotLink = traceparent(links[0].SpanContext)
			}
			if gotLink != tt.wantLink {
				t.Errorf("link %q, want %q", gotLink, tt.wantLink)
			}
		})
	}
}

func traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// TestOffWrapsNothing: with tracing off, which is every test process that
// never called Start, the wrappers hand back what they were given.
func TestOffWrapsNothing(t *testing.T) {
	t.Parallel()
	if Active() {
		t.Fatal("tracing is on in a process that never started it")
	}
	base := &http.Transport{}
	if got := Transport(base, "x"); got != base {
		t.Errorf("Transport returned %T, want the transport given", got)
	}
	if got := GRPCClientOptions(); got != nil {
		t.Errorf("GRPCClientOptions() = %v, want none", got)
	}
	if got := GRPCServerOptions(); got != nil {
		t.Errorf("GRPCServerOptions() = %v, want none", got)
	}
}
