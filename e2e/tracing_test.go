package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	procstack "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// span is one exported span, with the service that exported it.
type span struct {
	service string
	*tracepb.Span
}

func (s span) traceID() string  { return hex.EncodeToString(s.TraceId) }
func (s span) id() string       { return hex.EncodeToString(s.SpanId) }
func (s span) parentID() string { return hex.EncodeToString(s.ParentSpanId) }

func (s span) attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return anyValue(kv.Value)
		}
	}
	return ""
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	}
	return protojson.Format(v)
}

// collector is an OTLP trace receiver over both protocols DESIGN names: the
// gRPC TraceService and HTTP POST /v1/traces (protobuf), as a collector
// serves them on 4317 and 4318. It keeps every span and every raw request.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	grpcAddr, httpURL string

	mu    sync.Mutex
	spans []span
	raw   [][]byte // every request as received, to search for secrets
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, c)
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	c.grpcAddr = gl.Addr().String()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		req := &collectorpb.ExportTraceServiceRequest{}
		if err == nil && r.Header.Get("Content-Type") == "application/x-protobuf" {
			err = proto.Unmarshal(b, req)
		} else if err == nil {
			err = fmt.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(req)
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	c.httpURL = "http://" + hl.Addr().String()
	return c
}

// Export is the gRPC TraceService.
func (c *collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.add(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// checkNoSecrets fails t when nothing was exported or when an export, in
// the bytes the collector received, holds the token, alice's email, one of
// the stack's credentials' secrets or one of more.
func (c *collector) checkNoSecrets(t *testing.T, s *procstack.Stack, token string, more ...string) {
	t.Helper()
	secrets := append([]string{token, seedusers.AliceEmail}, s.Options.Credentials.Secrets()...)
	secrets = append(secrets, more...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.raw) == 0 {
		t.Error("nothing exported")
	}
	for _, raw := range c.raw {
		for _, sec := range secrets {
			if sec == "" {
				t.Fatalf("an empty secret to look for in %q", secrets)
			}
			if bytes.Contains(raw, []byte(sec)) {
				t.Errorf("an export holds %.12q...", sec)
			}
		}
	}
}

// auditEvent is what the tracing tests read of an audit event.
type auditEvent struct {
	Method   string `json:"method"`
	Upstream string `json:"upstream"`
	Tool     string `json:"tool"`
	Decision string `json:"decision"`
	TraceID  string `json:"trace_id"`

	line string // as written
}

// auditEvents reads the events of the audit log file (none while it does
// not exist yet), skipping a line that does not decode (one being written).
func auditEvents(t *testing.T, file string) []auditEvent {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var evs []auditEvent
	for line := range strings.Lines(string(b)) {
		ev := auditEvent{line: strings.TrimSpace(line)}
		if json.Unmarshal([]byte(line), &ev) == nil {
			evs = append(evs, ev)
		}
	}
	return evs
}

func (c *collector) add(req *collectorpb.ExportTraceServiceRequest) {
	raw, _ := proto.Marshal(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = append(c.raw, raw)
	for _, rs := range req.ResourceSpans {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = anyValue(kv.Value)
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, span{service, s})
			}
		}
	}
}

// trace returns the spans of traceID.
func (c *collector) trace(traceID string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.traceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}

// gatewaySpans returns the gateway's MCP request spans of method, in the
// order they were exported.
func (c *collector) gatewaySpans(method string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.service == "mcp-gateway" && s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.attr("mcp.method.name") == method {
			out = append(out, s)
		}
	}
	return out
}

// headerTransport adds a bearer token, and a traceparent when set, to every
// request, as an MCP client inside a traced application does.
type headerTransport struct {
	token, traceparent string
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+h.token)
	if h.traceparent != "" {
		r.Header.Set("Traceparent", h.traceparent)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestTracing runs authz and the gateway as processes exporting to an OTLP
// receiver started here (authz over gRPC, the gateway over HTTP/protobuf)
// and follows MCP calls made with the go-sdk client:
//
//   - the first call of a token is one trace: the gateway's request span,
//     its gRPC client span, authz's Authorize span and authz's introspection
//     span, each the parent of the next;
//   - a second call, its token cached in authz, has no introspection span,
//     and who_am_i's user fetch is a span under Authorize;
//   - a traceparent the client sends in the HTTP headers, or in
//     params._meta, is the parent of the gateway's span (_meta first, the
//     header then a link);
//   - no exported byte holds the token or a shared secret, and no span
//     names alice's email.
func TestTracing(t *testing.T) {
	slow(t)
	t.Parallel()
	col := startCollector(t)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	otel := []string{"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_TRACES_SAMPLER=parentbased_always_on"}
	s := procstack.New(t, procstack.Options{
		Authz: 1, Gateways: 1,
		AuthzEnv: append(slices.Clone(otel), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+col.grpcAddr),
		// No decision cache: every call's trace crosses into authz.
		GatewayEnv: append(slices.Clone(otel), "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT="+col.httpURL, "AUDIT_LOG="+auditFile, "DECISION_CACHE_TTL=0"),
	})
	token := mintToken(t, s)
	endpoint := "http://" + s.Gateways[0].Addr + "/mcp"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	connect := func(traceparent string) *mcp.ClientSession {
		t.Helper()
		client := mcp.NewClient(&mcp.Implementation{Name: "tracing-test", Version: "1.0.0"}, nil)
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   endpoint,
			HTTPClient: &http.Client{Transport: headerTransport{token: token, traceparent: traceparent}},
		}, nil)
		if err != nil {
			t.Fatalf("connecting: %v", err)
		}
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	whoAmI := func(cs *mcp.ClientSession, meta mcp.Meta) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "who_am_i", Arguments: map[string]any{}, Meta: meta})
		if err != nil || res.IsError {
			t.Fatalf("who_am_i: %v %v", res, err)
		}
	}
	// waitFor waits until the gateway has exported n request spans of
	// method, and every span of their traces has arrived (authz exports on
	// its own schedule).
	waitFor := func(method string, n, spansPerTrace int) []span {
		t.Helper()
		var got []span
		testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d %s spans with %d spans in their traces", n, method, spansPerTrace), func() bool {
			got = col.gatewaySpans(method)
			if len(got) < n {
				return false
			}
			for _, g := range got[:n] {
				if len(col.trace(g.traceID())) < spansPerTrace {
					return false
				}
			}
			return true
		})
		return got[:n]
	}

	// The session's first request meets an uncached token. Whatever its
	// method (initialize, for the protocol the go-sdk speaks), its trace
	// goes down to the introspection.
	cs := connect("")
	whoAmI(cs, nil)
	whoAmI(cs, nil)
	calls := waitFor("tools/call", 2, 3)
	var first span
	col.mu.Lock()
	for _, sp := range col.spans {
		if sp.service == "mcp-gateway" && sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			first = sp
			break
		}
	}
	col.mu.Unlock()
	testenv.Eventually(t, 20*time.Second, "the first request's trace", func() bool { return len(col.trace(first.traceID())) >= 4 })

	t.Run("first call is one trace down to the introspection", func(t *testing.T) {
		tr := col.trace(first.traceID())
		t.Logf("the first request's trace:\n%s", dump(tr))
		chain := []struct{ service, name string }{
			{"mcp-gateway", first.Name},
			{"mcp-gateway", "authz.v1.AuthzService/Authorize"},
			{"authz", "authz.v1.AuthzService/Authorize"},
			{"authz", "introspect token"},
		}
		parent := ""
		for i, want := range chain {
			sp, ok := findSpan(tr, want.service, want.name, parent)
			if !ok {
				t.Fatalf("no %s span %q with parent %q in the trace:\n%s", want.service, want.name, parent, dump(tr))
			}
			if i == 0 && sp.parentID() != "" {
				t.Errorf("the gateway's span has a parent %s; the client sent no trace context", sp.parentID())
			}
			parent = sp.id()
		}
		if a, _ := findSpan(tr, "authz", "authz.v1.AuthzService/Authorize", ""); a.attr("mcpauthz.cache_tier") != "introspection" {
			t.Errorf("authz's span: cache tier %q, want introspection", a.attr("mcpauthz.cache_tier"))
		}
		if n := count(tr, "introspect token"); n != 1 {
			t.Errorf("%d introspection spans, want 1:\n%s", n, dump(tr))
		}
	})

	t.Run("cached call has no introspection span", func(t *testing.T) {
		for _, call := range calls {
			tr := col.trace(call.traceID())
			if n := count(tr, "introspect token"); n != 0 {
				t.Errorf("tools/call trace has %d introspection spans:\n%s", n, dump(tr))
			}
			if call.Name != "tools/call who_am_i" || call.attr("gen_ai.tool.name") != "who_am_i" || call.attr("http.response.status_code") != "200" || call.attr("mcpauthz.decision") != "allowed" {
				t.Errorf("gateway span %q: %v", call.Name, call.Attributes)
			}
			if call.attr("enduser.id") != seedusers.AliceID {
				t.Errorf("gateway span enduser.id %q, want alice's subject %q", call.attr("enduser.id"), seedusers.AliceID)
			}
			az, ok := findSpan(tr, "authz", "authz.v1.AuthzService/Authorize", "")
			if !ok {
				t.Fatalf("no Authorize span:\n%s", dump(tr))
			}
			if tier := az.attr("mcpauthz.cache_tier"); tier != "l1" {
				t.Errorf("cache tier %q, want l1", tier)
			}
		}
		// who_am_i asks for the user: the first call fetches it (a span
		// under Authorize), the second finds it cached.
		tr := col.trace(calls[0].traceID())
		az, _ := findSpan(tr, "authz", "authz.v1.AuthzService/Authorize", "")
		if _, ok := findSpan(tr, "authz", "fetch user", az.id()); !ok {
			t.Errorf("no user fetch span under Authorize in the first who_am_i:\n%s", dump(tr))
		}
	})

	const (
		headerTrace = "0af7651916cd43dd8448eb211c80319c"
		headerSpan  = "b7ad6b7169203331"
		metaTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
		metaSpan    = "00f067aa0ba902b7"
	)
	t.Run("client trace context is the parent", func(t *testing.T) {
		traced := connect("00-" + headerTrace + "-" + headerSpan + "-01")
		before := len(col.gatewaySpans("tools/call"))
		whoAmI(traced, nil)
		whoAmI(traced, mcp.Meta{"traceparent": "00-" + metaTrace + "-" + metaSpan + "-01", "tracestate": "congo=t61rcWkgMzE"})
		got := waitFor("tools/call", before+2, 3)[before:]
		byTrace := map[string]span{}
		for _, g := range got {
			byTrace[g.traceID()] = g
		}
		h, ok := byTrace[headerTrace]
		if !ok {
			t.Fatalf("no tools/call span in the header's trace %s: %s", headerTrace, names(got))
		}
		if h.parentID() != headerSpan || len(h.Links) != 0 {
			t.Errorf("header only: parent %s, %d links; want parent %s, no link", h.parentID(), len(h.Links), headerSpan)
		}
		m, ok := byTrace[metaTrace]
		if !ok {
			t.Fatalf("no tools/call span in _meta's trace %s: %s", metaTrace, names(got))
		}
		if m.parentID() != metaSpan {
			t.Errorf("_meta: parent %s, want %s", m.parentID(), metaSpan)
		}
		if len(m.Links) != 1 || hex.EncodeToString(m.Links[0].TraceId) != headerTrace || hex.EncodeToString(m.Links[0].SpanId) != headerSpan {
			t.Errorf("_meta and a header: links %v, want one to the header's %s-%s", m.Links, headerTrace, headerSpan)
		}
		// The trace goes on into authz under the client's trace ID.
		if _, ok := findSpan(col.trace(metaTrace), "authz", "authz.v1.AuthzService/Authorize", ""); !ok {
			t.Errorf("authz's span is not in the client's trace:\n%s", dump(col.trace(metaTrace)))
		}
		// The audit log's trace_id is the span's: the _meta one too, which
		// the audit log cannot read from the headers.
		testenv.Eventually(t, 10*time.Second, "audit events in both client traces", func() bool {
			found := map[string]bool{}
			for _, ev := range auditEvents(t, auditFile) {
				if ev.Method == "tools/call" {
					found[ev.TraceID] = true
				}
			}
			return found[headerTrace] && found[metaTrace]
		})
	})

	t.Run("no token or secret exported", func(t *testing.T) {
		col.checkNoSecrets(t, s, token)
	})
}

// findSpan returns the span of service named name in tr whose parent is
// parentID ("" for any parent).
func findSpan(tr []span, service, name, parentID string) (span, bool) {
	for _, s := range tr {
		if s.service == service && s.Name == name && (parentID == "" || s.parentID() == parentID) {
			return s, true
		}
	}
	return span{}, false
}

func count(tr []span, name string) int {
	n := 0
	for _, s := range tr {
		if s.Name == name {
			n++
		}
	}
	return n
}

func names(spans []span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "%s %q (trace %s); ", s.service, s.Name, s.traceID())
	}
	return b.String()
}

func dump(tr []span) string {
	var b strings.Builder
	for _, s := range tr {
		fmt.Fprintf(&b, "  %s %s %q id=%s parent=%s\n", s.service, s.Kind, s.Name, s.id(), s.parentID())
	}
	return b.String()
}

// mintToken mints alice a read:user_data token for the stack's gateway
// through devauth's test API.
func mintToken(t *testing.T, s *procstack.Stack) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"email": seedusers.AliceEmail, "scopes": []string{"read:user_data"}, "resource": s.Resource})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.Devauth.Addr+"/dev/tokens", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Options.Credentials.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("minting: %s, %v", res.Status, err)
	}
	return tok.AccessToken
}
