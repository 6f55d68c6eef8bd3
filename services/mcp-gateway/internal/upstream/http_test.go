package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

// TestNegotiation: a server answering server/discover is spoken to in
// 2026-07-28 without sessions; one that does not gets initialize and a
// session; either way calls work, with the JSON and the SSE answer.
func TestNegotiation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		stateless, json   bool
		wantVersion       string
		wantInitializes   int
		wantSessionHeader bool
	}{
		{"2026-07-28 SSE", true, false, "2026-07-28", 0, false},
		{"2026-07-28 JSON", true, true, "2026-07-28", 0, false},
		{"2025-11-25 SSE", false, false, "2025-11-25", 1, true},
		{"2025-11-25 JSON", false, true, "2025-11-25", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, tt.stateless, tt.json)
			c, _ := newTestConn(t, Options{URL: u.URL})
			cat, err := c.Catalog(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if cat.ProtocolVersion != tt.wantVersion {
				t.Errorf("protocol version %q, want %q", cat.ProtocolVersion, tt.wantVersion)
			}
			for _, caller := range []Caller{{}, {Key: "alice"}, {Key: "alice"}} {
				res, err := callTool(t.Context(), c, caller, "add", `{"a":2,"b":3}`, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := toolText(t, res); got != "5" {
					t.Errorf("add = %q", got)
				}
			}
			if got := u.count("server/discover"); got != 1 {
				t.Errorf("%d server/discover requests, want 1 (the era is found once)", got)
			}
			// A later catalog asks a 2026-07-28 server again (it may have
			// changed); a session server is asked through its session.
			if _, err := c.Catalog(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got, want := u.count("server/discover"), 1+btoi(tt.stateless); got != want {
				t.Errorf("%d server/discover requests after a second catalog, want %d", got, want)
			}
			// The gateway's own session, and alice's.
			if got, want := u.count("initialize"), 2*tt.wantInitializes; got != want {
				t.Errorf("%d initialize requests, want %d", got, want)
			}
			h := u.lastHeader("tools/call")
			if got := h.Get("Mcp-Session-Id") != ""; got != tt.wantSessionHeader {
				t.Errorf("Mcp-Session-Id sent: %v, want %v", got, tt.wantSessionHeader)
			}
			if got := h.Get("Mcp-Protocol-Version"); got != tt.wantVersion {
				t.Errorf("Mcp-Protocol-Version %q, want %q", got, tt.wantVersion)
			}
			if tt.stateless && (h.Get("Mcp-Method") != "tools/call" || h.Get("Mcp-Name") != "add") {
				t.Errorf("Mcp-Method %q, Mcp-Name %q", h.Get("Mcp-Method"), h.Get("Mcp-Name"))
			}
		})
	}
}

// TestGoUpstreamMethods: tools, resources, templates, prompts and completions
// through both eras.
func TestGoUpstreamMethods(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, stateless, false)
			c, _ := newTestConn(t, Options{URL: u.URL})
			caller := Caller{Key: "k"}
			tests := []struct {
				method, params, want string
			}{
				{"resources/read", `{"uri":"test://static/a"}`, `content a`},
				{"resources/read", `{"uri":"test://dyn/42"}`, `dynamic`},
				{"prompts/get", `{"name":"greet","arguments":{"name":"bob"}}`, `hello bob`},
				{"completion/complete", `{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"name","value":"bo"}}`, `bo-done`},
			}
			for _, tt := range tests {
				res, err := c.Call(t.Context(), caller, tt.method, jsontext.Value(tt.params), nil)
				if err != nil {
					t.Fatalf("%s: %v", tt.method, err)
				}
				if !strings.Contains(string(res), tt.want) {
					t.Errorf("%s %s = %s, want it to hold %q", tt.method, tt.params, res, tt.want)
				}
			}
			_, err := c.Call(t.Context(), caller, "prompts/get", jsontext.Value(`{"name":"nope"}`), nil)
			var rpc *RPCError
			if !errors.As(err, &rpc) {
				t.Fatalf("unknown prompt: err %v, want *RPCError", err)
			}
		})
	}
}

// TestCatalog: every page of every list, entries kept raw.
func TestCatalog(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, stateless, false)
			c, _ := newTestConn(t, Options{URL: u.URL})
			cat, err := c.Catalog(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			keys := func(es []Entry) []string {
				var out []string
				for _, e := range es {
					out = append(out, e.Key)
				}
				return out
			}
			// The server pages by 3.
			want := []string{"add", "add-tool", "ask-client", "big", "poll", "progress", "region", "sleep", "whoami"}
			if diff := cmp.Diff(want, keys(cat.Tools)); diff != "" {
				t.Errorf("tools (-want +got):\n%s", diff)
			}
			if got := u.count("tools/list"); got != 3 {
				t.Errorf("%d tools/list pages, want 3", got)
			}
			if diff := cmp.Diff([]string{"test://static/a"}, keys(cat.Resources)); diff != "" {
				t.Errorf("resources (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"test://dyn/{id}"}, keys(cat.ResourceTemplates)); diff != "" {
				t.Errorf("templates (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"greet"}, keys(cat.Prompts)); diff != "" {
				t.Errorf("prompts (-want +got):\n%s", diff)
			}
			var region struct {
				InputSchema map[string]any `json:"inputSchema"`
			}
			for _, e := range cat.Tools {
				if e.Key == "region" {
					if err := json.Unmarshal(e.Raw, &region, json.RejectUnknownMembers(false)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !strings.Contains(fmt.Sprint(region.InputSchema), "x-mcp-header") {
				t.Errorf("raw entry lost its schema: %v", region.InputSchema)
			}
			if v, _ := member(cat.Capabilities, "tools"); v == nil {
				t.Errorf("capabilities %s lack tools", cat.Capabilities)
			}
		})
	}
}

// TestParamHeaders: toward a 2026-07-28 server, a tool parameter annotated
// with x-mcp-header is repeated in its Mcp-Param header (the go-sdk server
// refuses the call otherwise), before and without a catalog (the mismatch
// error makes the Conn read the annotations and retry).
func TestParamHeaders(t *testing.T) {
	t.Parallel()
	for _, catalogFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("catalogFirst=", catalogFirst), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, true, false)
			c, _ := newTestConn(t, Options{URL: u.URL})
			if catalogFirst {
				if _, err := c.Catalog(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			for _, region := range []string{"us-west1", "Zürich "} {
				res, err := callTool(t.Context(), c, Caller{}, "region", fmt.Sprintf(`{"region":%q}`, region), nil)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := toolText(t, res), "header "+encodeHeaderValue(region); got != want {
					t.Errorf("tool saw %q, want %q", got, want)
				}
			}
			if !catalogFirst && u.count("tools/list") == 0 {
				t.Error("the annotations were not read after the server's HeaderMismatch")
			}
		})
	}
}

// TestIdentityAndHeaders: the identity goes in X-Mcpauthz-Identity (never in
// _meta, whatever the caller put there), static headers are sent, and no
// Authorization header ever is.
func TestIdentityAndHeaders(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, stateless, false)
			c, _ := newTestConn(t, Options{URL: u.URL, Headers: http.Header{"X-Api-Key": {"k1"}}})
			params := `{"name":"whoami","arguments":{},"_meta":{"io.mcpauthz/identity":"forged"}}`
			res, err := c.Call(t.Context(), Caller{Key: "a", Identity: "jws.of.alice"}, "tools/call", jsontext.Value(params), nil)
			if err != nil {
				t.Fatal(err)
			}
			var who struct {
				Header        string `json:"header"`
				Static        string `json:"static"`
				Authorization string `json:"authorization"`
				Meta          any    `json:"meta"`
			}
			if err := json.Unmarshal([]byte(toolText(t, res)), &who, json.RejectUnknownMembers(false)); err != nil {
				t.Fatal(err)
			}
			if who.Header != "jws.of.alice" || who.Static != "k1" || who.Authorization != "" || who.Meta != nil {
				t.Errorf("upstream saw %+v", who)
			}
		})
	}
}

func TestOptionsRefused(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{Name: "Bad Name", URL: "http://x"},
		{Name: "a"},
		{Name: "a", URL: "http://x", Command: []string{"x"}},
		{Name: "a", URL: "ftp://x"},
		{Name: "a", URL: "http://x", Headers: http.Header{"Mcp-Session-Id": {"x"}}},
		{Name: "a", URL: "http://x", Headers: http.Header{"x-mcpauthz-identity": {"x"}}},
		{Name: "a", URL: "http://x", Headers: http.Header{"Connection": {"x"}}},
		{Name: "a", URL: "http://x", Headers: http.Header{"X-Key": {"a\r\nInjected: 1"}}},
		{Name: "a", URL: "http://x", Headers: http.Header{"Bad Name": {"x"}}},
		{Name: "a", URL: "http://x", Timeout: -time.Second},
		{Name: "a", Command: []string{"/nonexistent/command"}},
	} {
		if c, err := New(o); err == nil {
			c.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// TestNotifications: progress and log notifications sent while a call runs
// reach notify in order, before Call returns (2026-07-28 carries the log
// level in _meta; the session era needs logging/setLevel, which the gateway
// never forwards, so only progress arrives there).
func TestNotifications(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, stateless, false)
			c, _ := newTestConn(t, Options{URL: u.URL})
			var got collect
			params := `{"name":"progress","arguments":{"n":3},"_meta":{"progressToken":"tok-1","io.modelcontextprotocol/logLevel":"debug"}}`
			if _, err := c.Call(t.Context(), Caller{Key: "k"}, "tools/call", jsontext.Value(params), got.notify); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := 1; i <= 3; i++ {
				want = append(want, fmt.Sprintf(`progress tok-1 %d`, i))
				if stateless {
					want = append(want, fmt.Sprintf(`log step %d`, i))
				}
			}
			if diff := cmp.Diff(want, summarize(t, got.all())); diff != "" {
				t.Errorf("notifications (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResumedStream: a 2025-11-25 server that ends the answer stream early
// (SEP-1699 polling) is followed: the stream is resumed with Last-Event-ID
// until the answer comes, and no notification is lost or repeated.
func TestResumedStream(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, false, false)
	c, _ := newTestConn(t, Options{URL: u.URL})
	var got collect
	params := `{"name":"poll","arguments":{"n":3},"_meta":{"progressToken":"r"}}`
	res, err := c.Call(t.Context(), Caller{Key: "k"}, "tools/call", jsontext.Value(params), got.notify)
	if err != nil {
		t.Fatal(err)
	}
	if toolText(t, res) != "polled" {
		t.Errorf("result %s", res)
	}
	if diff := cmp.Diff([]string{"progress r 1", "progress r 2", "progress r 3"}, summarize(t, got.all())); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// summarize turns notifications into short lines.
func summarize(t *testing.T, msgs []string) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		var n struct {
			Method string `json:"method"`
			Params struct {
				Token    any     `json:"progressToken"`
				Progress float64 `json:"progress"`
				Data     any     `json:"data"`
			} `json:"params"`
		}
		if err := json.Unmarshal([]byte(m), &n, json.RejectUnknownMembers(false)); err != nil {
			t.Fatalf("notification %s: %v", m, err)
		}
		switch n.Method {
		case "notifications/progress":
			out = append(out, fmt.Sprintf("progress %v %v", n.Params.Token, n.Params.Progress))
		case "notifications/message":
			out = append(out, fmt.Sprintf("log %v", n.Params.Data))
		default:
			out = append(out, n.Method)
		}
	}
	return out
}

// TestListChanged: a tool added upstream after the catalog signals Changed:
// through subscriptions/listen (2026-07-28) or the session's GET stream.
func TestListChanged(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, stateless, false)
			c, _ := newTestConn(t, Options{URL: u.URL})
			if _, err := c.Catalog(t.Context()); err != nil {
				t.Fatal(err)
			}
			// Let the watch stream open; nothing has changed yet.
			waitFor(t, "the watch stream", func() bool { return u.count("subscriptions/listen") > 0 || !stateless })
			time.Sleep(100 * time.Millisecond)
			select {
			case <-c.Changed():
				t.Fatal("Changed signalled before any change")
			default:
			}
			if _, err := callTool(t.Context(), c, Caller{Key: "k"}, "add-tool", `{"n":1}`, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Changed():
			case <-time.After(10 * time.Second):
				t.Fatal("Changed not signalled after a tool was added")
			}
			cat, err := c.Catalog(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !containsKey(cat.Tools, "added-1") {
				t.Errorf("catalog lacks the added tool")
			}
		})
	}
}

func containsKey(es []Entry, key string) bool {
	for _, e := range es {
		if e.Key == key {
			return true
		}
	}
	return false
}

// TestCancellation: cancelling a call's context ends the tool upstream
// (closing the stream is the signal in 2026-07-28; notifications/cancelled
// before), and so does the call timeout, which Call reports as ErrTimeout.
func TestCancellation(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{true, false} {
		for _, timeout := range []bool{true, false} {
			t.Run(fmt.Sprintf("stateless=%v,timeout=%v", stateless, timeout), func(t *testing.T) {
				t.Parallel()
				u := startGoUpstream(t, stateless, false)
				opts := Options{URL: u.URL}
				if timeout {
					opts.Timeout = 300 * time.Millisecond
				}
				c, _ := newTestConn(t, opts)
				// A name of this subtest's own, so the record is its own.
				name := fmt.Sprintf("sleep-%v-%v", stateless, timeout)
				mcpAddSleep(u, name)
				ctx, cancel := context.WithCancel(t.Context())
				if !timeout {
					time.AfterFunc(300*time.Millisecond, cancel)
				}
				defer cancel()
				start := time.Now()
				_, err := callTool(ctx, c, Caller{Key: "k"}, name, `{"ms":20000}`, nil)
				if timeout {
					var e *Error
					if !errors.Is(err, ErrTimeout) || !errors.As(err, &e) || !strings.Contains(e.Error(), "did not answer within 300ms") {
						t.Fatalf("err = %v, want ErrTimeout", err)
					}
				} else if !errors.Is(err, context.Canceled) {
					t.Fatalf("err = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("Call returned after %v", d)
				}
				waitFor(t, "the tool to see the cancellation", func() bool { return sawCancelled(name) })
			})
		}
	}
}
