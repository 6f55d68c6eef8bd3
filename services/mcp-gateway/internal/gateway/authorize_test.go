package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// fakeAuthz answers Authorize with answer and counts the calls.
type fakeAuthz struct {
	answer func(ctx context.Context) (*authzv1.AuthorizeResponse, error)

	mu    sync.Mutex
	calls int
}

func (f *fakeAuthz) Authorize(ctx context.Context, _ *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return f.answer(ctx)
}

func (f *fakeAuthz) asked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (*fakeAuthz) GetUser(context.Context, string, bool) (*authzv1.User, error) {
	return nil, status.Error(codes.NotFound, "no users here")
}

func (*fakeAuthz) Ready(context.Context) error { return nil }

// upStream is an invalidation stream that resets once, then stays up without
// invalidating anything until its context ends.
type upStream struct {
	ctx  context.Context
	sent bool
}

func (s *upStream) Recv() (*authzv1.WatchInvalidationsResponse, error) {
	if !s.sent {
		s.sent = true
		return &authzv1.WatchInvalidationsResponse{Reset_: true}, nil
	}
	<-s.ctx.Done()
	return nil, status.FromContextError(s.ctx.Err()).Err()
}

// newTestGateway returns a gateway for https://mcp.example.com in front of
// az, its decision cache on (and its invalidation stream up) when cached,
// logging at debug level to logs.
func newTestGateway(t *testing.T, az Authz, cached bool, logs *testenv.LogBuffer) *Gateway {
	t.Helper()
	vars := map[string]string{"MCP_SERVER_URL": "https://mcp.example.com", "AUTHORIZATION_SERVER": "https://auth.example.com/oauth/2.1"}
	vars["DECISION_CACHE_TTL"] = "0s"
	if cached {
		vars["DECISION_CACHE_TTL"] = "1m"
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{
		Config: cfg, Authz: az, Tools: tools.BuiltIn(),
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Invalidations: func(ctx context.Context) (decisioncache.Stream, error) {
			return &upStream{ctx: ctx}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cached {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Watch(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		for !g.decisions.Up() {
			select {
			case <-done:
				t.Fatal("Watch returned")
			case <-time.After(time.Millisecond):
			}
		}
	}
	return g
}

// counter is the value of the metric name with labels, 0 if absent.
func counter(t *testing.T, g *Gateway, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestAuthorize runs requests through the gateway's request path with the
// decision cache off and on, against a fake authz without the network: what
// the client gets, how often authz is asked, the decision and request
// metrics and the log lines, for each kind of answer. Two identical requests
// each: the cache answers the second only when authz allowed the first.
func TestAuthorize(t *testing.T) {
	t.Parallel()
	ref := strings.Repeat("ab", 32)
	principal := &authzv1.Principal{Subject: "alice", Scopes: []string{"read:user_data"}}
	tests := []struct {
		name       string
		answer     func(ctx context.Context) (*authzv1.AuthorizeResponse, error)
		clientGone bool
		status     int    // recorded in metrics
		written    bool   // an answer reaches the client
		decision   string // mcp_gateway_authz_decisions_total
		cacheable  bool
		logs       []string // messages at INFO and above, in order
	}{
		{
			name: "allowed",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, TokenRef: ref, ReusableUntil: timestamppb.New(time.Now().Add(time.Hour))}, nil
			},
			status: 200, written: true, decision: "allowed", cacheable: true,
		},
		{
			name: "allowed without reusable_until (not cached by authz, or an older authz)",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return &authzv1.AuthorizeResponse{Allowed: true, Principal: principal, TokenRef: ref}, nil
			},
			status: 200, written: true, decision: "allowed",
		},
		{
			name: "allowed without a token_ref",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return &authzv1.AuthorizeResponse{Allowed: true, Principal: principal}, nil
			},
			status: 200, written: true, decision: "allowed",
		},
		{
			name: "allowed without a principal",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return &authzv1.AuthorizeResponse{Allowed: true, TokenRef: ref}, nil
			},
			status: 503, written: true, decision: "malformed",
			logs: []string{"denied", "authz returned an incomplete decision", "denied", "authz returned an incomplete decision"},
		},
		{
			name: "expired",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return &authzv1.AuthorizeResponse{TokenRef: ref, Denial: &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED}}, nil
			},
			status: 401, written: true, decision: "token_expired",
			logs: []string{"denied", "denied"},
		},
		{
			name: "unavailable",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return nil, status.Error(codes.Unavailable, "down")
			},
			status: 503, written: true, decision: "error",
			logs: []string{"authz unavailable", "authz unavailable"},
		},
		{
			name: "the gateway's question refused",
			answer: func(context.Context) (*authzv1.AuthorizeResponse, error) {
				return nil, status.Error(codes.InvalidArgument, "bad scopes")
			},
			status: 500, written: true, decision: "error",
			// One ERROR line per badArgLogEvery, however many requests.
			logs: []string{"authz refused the gateway's question as malformed; check SCOPES and MCP_SERVER_URL"},
		},
		{
			name: "the client gone",
			answer: func(ctx context.Context) (*authzv1.AuthorizeResponse, error) {
				return nil, status.FromContextError(ctx.Err()).Err()
			},
			clientGone: true,
			status:     clientClosedRequest, decision: "error",
		},
	}
	for _, tt := range tests {
		for _, cached := range []bool{false, true} {
			name := tt.name + "/cache off"
			if cached {
				name = tt.name + "/cache on"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				az := &fakeAuthz{answer: tt.answer}
				logs := &testenv.LogBuffer{}
				g := newTestGateway(t, az, cached, logs)
				for range 2 {
					ctx := t.Context()
					if tt.clientGone {
						var cancel context.CancelFunc
						ctx, cancel = context.WithCancel(ctx)
						cancel()
					}
					rec := httptest.NewRecorder()
					g.ServeHTTP(rec, mcpRequest(ctx, "tok"))
					if got := rec.Body.Len() > 0; got != tt.written {
						t.Errorf("answer written: %v, want %v (status %d: %s)", got, tt.written, rec.Code, rec.Body)
					}
					if tt.written && rec.Code != tt.status {
						t.Errorf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
					}
				}
				wantCalls := 2
				if cached && tt.cacheable {
					wantCalls = 1
				}
				if got := az.asked(); got != wantCalls {
					t.Errorf("authz asked %d times for 2 requests, want %d", got, wantCalls)
				}
				if got := counter(t, g, "mcp_gateway_authz_decisions_total", map[string]string{"decision": tt.decision}); got != 2 {
					t.Errorf("decisions{decision=%q} = %v, want 2", tt.decision, got)
				}
				if got := counter(t, g, "mcp_gateway_requests_total", map[string]string{"method": "ping", "status": statusText(tt.status)}); got != 2 {
					t.Errorf("requests{method=ping,status=%d} = %v, want 2", tt.status, got)
				}
				var msgs []string
				for _, l := range testLogLines(t, logs) {
					// The decision cache's own lines are its package's.
					if l.level != "DEBUG" && !strings.HasPrefix(l.msg, "decision cache") {
						msgs = append(msgs, l.msg)
					}
					if strings.Contains(l.raw, ref) || strings.Contains(l.raw, `"tok"`) {
						t.Errorf("log line names the token or its whole token_ref: %s", l.raw)
					}
					if l.msg == "denied" && !strings.Contains(l.raw, `"token_ref":"abababababab"`) {
						t.Errorf("denial without the token_ref: %s", l.raw)
					}
				}
				if strings.Join(msgs, "|") != strings.Join(tt.logs, "|") {
					t.Errorf("log lines %q, want %q\n%s", msgs, tt.logs, logs)
				}
			})
		}
	}
}

func statusText(code int) string { return strconv.Itoa(code) }

// mcpRequest is a ping to the gateway with token, under ctx.
func mcpRequest(ctx context.Context, token string) *http.Request {
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "https://mcp.example.com/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// testLogLine is one decoded JSON log line.
type testLogLine struct {
	level, msg, raw string
}

func testLogLines(t *testing.T, logs *testenv.LogBuffer) []testLogLine {
	t.Helper()
	var out []testLogLine
	for line := range strings.Lines(logs.String()) {
		var m struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, testLogLine{level: m.Level, msg: m.Msg, raw: line})
	}
	return out
}

// flushRecorder is a ResponseWriter that counts flushes and read deadlines,
// as net/http's does them.
type flushRecorder struct {
	*httptest.ResponseRecorder
	flushes   int
	deadlines []time.Time
}

func (f *flushRecorder) Flush() { f.flushes++ }

func (f *flushRecorder) SetReadDeadline(d time.Time) error {
	f.deadlines = append(f.deadlines, d)
	return nil
}

// noFlusher is a ResponseWriter that cannot flush.
type noFlusher struct{ http.ResponseWriter }

// TestStatusWriter: statusWriter records the first status written, 200 for
// a body without one, passes Flush on (the go-sdk's SSE streams need it) or
// ignores it, and exposes the writer beneath for http.ResponseController.
func TestStatusWriter(t *testing.T) {
	t.Parallel()
	t.Run("WriteHeader", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		sw := &statusWriter{ResponseWriter: rec}
		sw.WriteHeader(http.StatusForbidden)
		sw.WriteHeader(http.StatusTeapot) // superfluous: net/http logs it, the first one stands
		_, _ = sw.Write([]byte("no"))
		if sw.status != http.StatusForbidden || rec.Code != http.StatusForbidden {
			t.Errorf("status %d (written %d), want 403", sw.status, rec.Code)
		}
	})
	t.Run("Write", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		sw := &statusWriter{ResponseWriter: rec}
		if _, err := sw.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		sw.WriteHeader(http.StatusInternalServerError) // too late
		if sw.status != http.StatusOK || rec.Code != http.StatusOK || rec.Body.String() != "ok" {
			t.Errorf("status %d (written %d, %q), want 200", sw.status, rec.Code, rec.Body)
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		t.Parallel()
		if sw := (&statusWriter{ResponseWriter: httptest.NewRecorder()}); sw.status != 0 {
			t.Errorf("status %d before anything was written", sw.status)
		}
	})
	t.Run("Flush", func(t *testing.T) {
		t.Parallel()
		fr := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
		sw := &statusWriter{ResponseWriter: fr}
		var f http.Flusher = sw
		f.Flush()
		if err := http.NewResponseController(sw).Flush(); err != nil {
			t.Fatal(err)
		}
		if fr.flushes != 2 {
			t.Errorf("%d flushes reached the writer, want 2", fr.flushes)
		}
		// A writer that cannot flush: nothing happens.
		(&statusWriter{ResponseWriter: noFlusher{httptest.NewRecorder()}}).Flush()
	})
	t.Run("Unwrap", func(t *testing.T) {
		t.Parallel()
		fr := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
		sw := &statusWriter{ResponseWriter: fr}
		if sw.Unwrap() != http.ResponseWriter(fr) {
			t.Error("Unwrap does not return the writer beneath")
		}
		d := time.Unix(1e9, 0)
		if err := http.NewResponseController(sw).SetReadDeadline(d); err != nil {
			t.Fatalf("SetReadDeadline through statusWriter: %v", err)
		}
		if len(fr.deadlines) != 1 || !fr.deadlines[0].Equal(d) {
			t.Errorf("deadlines %v, want [%v]", fr.deadlines, d)
		}
		err := http.NewResponseController(&statusWriter{ResponseWriter: noFlusher{httptest.NewRecorder()}}).SetReadDeadline(d)
		if !errors.Is(err, http.ErrNotSupported) {
			t.Errorf("SetReadDeadline on a writer without it: %v, want ErrNotSupported", err)
		}
	})
	t.Run("Hijack", func(t *testing.T) {
		t.Parallel()
		// Through Unwrap, as the ResponseController finds it on net/http's
		// writer.
		hj := &hijacker{ResponseRecorder: httptest.NewRecorder()}
		if _, _, err := http.NewResponseController(&statusWriter{ResponseWriter: hj}).Hijack(); err != nil || !hj.hijacked {
			t.Errorf("Hijack: %v (hijacked %v)", err, hj.hijacked)
		}
	})
}

type hijacker struct {
	*httptest.ResponseRecorder
	hijacked bool
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.hijacked = true
	return nil, nil, nil
}
