package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestTooLarge: an answer beyond MaxResponseBytes is ErrTooLarge, as JSON and
// as an SSE event; one within the bound passes.
func TestTooLarge(t *testing.T) {
	t.Parallel()
	for _, json := range []bool{true, false} {
		t.Run(fmt.Sprint("json=", json), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, true, json)
			c, _ := newTestConn(t, Options{URL: u.URL, MaxResponseBytes: 2000})
			if _, err := callTool(t.Context(), c, Caller{}, "big", `{"n":1000}`, nil); err != nil {
				t.Fatalf("an answer within the bound: %v", err)
			}
			_, err := callTool(t.Context(), c, Caller{}, "big", `{"n":100000}`, nil)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if want := `upstream "test" answered more than the size limit`; !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		})
	}
}

// startMisbehaving serves a 2026-07-28 go-sdk server, except that tools/call
// of the tools named below is answered badly, as a broken upstream or a proxy
// in front of one might.
func startMisbehaving(t *testing.T) string {
	t.Helper()
	real := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newGoServer(nil) },
		&mcp.StreamableHTTPOptions{Stateless: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		name := r.Header.Get("Mcp-Name")
		if r.Header.Get("Mcp-Method") != "tools/call" {
			real.ServeHTTP(w, r)
			return
		}
		switch name {
		case "json-garbage":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "<html>oops</html>")
		case "sse-garbage":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {not json\n\n")
		case "html-502":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>bad gateway</html>")
		case "wrong-id":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":999999,"result":{}}`)
		case "cut-stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n")
		case "text-plain":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
		case "rpc-error-500":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal","data":{"x":1}}}`)
		case "redirect":
			http.Redirect(w, r, "http://example.invalid/mcp", http.StatusTemporaryRedirect)
		default:
			real.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// TestBadAnswers: what a broken upstream answers becomes the error kind the
// gateway reports, with a short client-safe reason.
func TestBadAnswers(t *testing.T) {
	t.Parallel()
	url := startMisbehaving(t)
	m := &metricsRecorder{}
	c, _ := newTestConn(t, Options{URL: url, Metrics: m})
	tests := []struct {
		tool    string
		kind    error
		message string
	}{
		{"json-garbage", ErrProtocol, `upstream "test" answered garbage: the answer is not JSON-RPC`},
		{"sse-garbage", ErrProtocol, `upstream "test" answered garbage: an event is not JSON-RPC`},
		{"wrong-id", ErrProtocol, `upstream "test" answered garbage: an answer to another request`},
		{"text-plain", ErrProtocol, `upstream "test" answered garbage: answer of type "text/plain"`},
		{"html-502", ErrUnavailable, `upstream "test" is unavailable: HTTP 502`},
		{"cut-stream", ErrUnavailable, `upstream "test" is unavailable: the stream ended before the answer`},
		{"redirect", ErrUnavailable, `upstream "test" is unavailable: redirected (HTTP 307); redirects are not followed`},
	}
	for _, tt := range tests {
		_, err := callTool(t.Context(), c, Caller{}, tt.tool, `{}`, nil)
		if !errors.Is(err, tt.kind) || err.Error() != tt.message {
			t.Errorf("%s: err = %v, want %v %q", tt.tool, err, tt.kind, tt.message)
		}
	}
	// A JSON-RPC error, even on an HTTP error status, is the upstream's
	// answer: passed on as it is.
	_, err := callTool(t.Context(), c, Caller{}, "rpc-error-500", `{}`, nil)
	var rpc *RPCError
	if !errors.As(err, &rpc) || rpc.Code != -32603 || string(rpc.Data) != `{"x":1}` {
		t.Errorf("rpc-error-500: err = %v, want the upstream's JSON-RPC error", err)
	}
	// The connection is fine after all that.
	if _, err := callTool(t.Context(), c, Caller{}, "add", `{"a":1,"b":1}`, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"tools/call protocol": 4, "tools/call unavailable": 3, "tools/call rpc_error": 1, "tools/call ok": 1,
	}
	if diff := cmp.Diff(want, m.outcomeCounts()); diff != "" {
		t.Errorf("call outcomes (-want +got):\n%s", diff)
	}
}

// TestUnreachable: nothing listening is ErrUnavailable at once, and the
// reason does not name the address.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	addr := testenv.FreeAddr(t)
	c, _ := newTestConn(t, Options{URL: "http://" + addr + "/mcp"})
	_, err := callTool(t.Context(), c, Caller{}, "add", `{}`, nil)
	if !errors.Is(err, ErrUnavailable) || err.Error() != `upstream "test" is unavailable: connection refused` {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Catalog(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Catalog: err = %v", err)
	}
}

// TestServerRequestsRefused: a request the upstream sends during a call is
// answered: ping with a result, sampling (and anything else) with the
// gateway's refusal, and the call goes on.
func TestServerRequestsRefused(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	c, logs := newTestConn(t, Options{URL: u.URL})
	res, err := callTool(t.Context(), c, Caller{Key: "k"}, "ask-client", `{}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := toolText(t, res)
	if !strings.HasPrefix(got, "ping: <nil>; sampling: ") || !strings.Contains(got, refusedMessage) {
		t.Errorf("the tool saw %q", got)
	}
	if !strings.Contains(logs.String(), "method=sampling/createMessage") {
		t.Errorf("the refusal was not logged:\n%s", logs.String())
	}
}

// TestConcurrencyBound: beyond MaxConcurrent calls in flight and MaxQueued
// waiting, a call fails at once.
func TestConcurrencyBound(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, true, false)
	c, _ := newTestConn(t, Options{URL: u.URL, MaxConcurrent: 1, MaxQueued: 1})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := callTool(t.Context(), c, Caller{}, "sleep", `{"ms":1500}`, nil)
			errs <- err
		}()
	}
	waitFor(t, "one call in flight and one queued", func() bool { return len(c.sem) == 1 && c.queued.Load() == 1 })
	_, err := callTool(t.Context(), c, Caller{}, "add", `{}`, nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "too many calls in flight") {
		t.Fatalf("err = %v", err)
	}
	// Refused without waiting: the other two are still where they were.
	if len(c.sem) != 1 || c.queued.Load() != 1 {
		t.Errorf("the refusal waited for the calls ahead of it")
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
