package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Tests against @modelcontextprotocol/server-everything (the TypeScript SDK's
// reference server, pinned in e2e/ts/package.json), over streamable HTTP with
// sessions and over stdio.

// gzipAsResource makes server-everything keep a resource in the caller's
// session, and returns its URI.
func gzipAsResource(t *testing.T, c Conn, caller Caller, name string) string {
	t.Helper()
	args := fmt.Sprintf(`{"name":%q,"data":"data:text/plain;base64,aGVsbG8=","outputType":"resourceLink"}`, name)
	if _, err := callTool(t.Context(), c, caller, "gzip-file-as-resource", args, nil); err != nil {
		t.Fatal(err)
	}
	return "demo://resource/session/" + name
}

func readResource(ctx context.Context, c Conn, caller Caller, uri string) (jsontext.Value, error) {
	return c.Call(ctx, caller, "resources/read", jsontext.Value(fmt.Sprintf(`{"uri":%q}`, uri)), nil)
}

// TestEverythingSessionsPerCaller: what server-everything keeps in a session
// (a resource made by gzip-file-as-resource) is visible to the caller that
// made it, on later calls, and not to another caller; with sessions: shared,
// it is.
func TestEverythingSessionsPerCaller(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	alice, bob := Caller{Key: "alice"}, Caller{Key: "bob"}
	t.Run("per caller", func(t *testing.T) {
		c, _ := newTestConn(t, Options{URL: ev.URL})
		uri := gzipAsResource(t, c, alice, "alice-per-caller.gz")
		if _, err := readResource(t.Context(), c, alice, uri); err != nil {
			t.Fatalf("alice reading her resource: %v", err)
		}
		_, err := readResource(t.Context(), c, bob, uri)
		var rpc *RPCError
		if !errors.As(err, &rpc) {
			t.Fatalf("bob reading alice's resource: err = %v, want the upstream's JSON-RPC error", err)
		}
	})
	t.Run("shared", func(t *testing.T) {
		c, _ := newTestConn(t, Options{URL: ev.URL, Sessions: SessionsShared})
		uri := gzipAsResource(t, c, alice, "alice-shared.gz")
		if _, err := readResource(t.Context(), c, bob, uri); err != nil {
			t.Fatalf("bob reading a shared session's resource: %v", err)
		}
	})
}

// TestEverythingMethods: the everyday methods against server-everything's
// session era, with its SSE answers.
func TestEverythingMethods(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	c, _ := newTestConn(t, Options{URL: ev.URL})
	caller := Caller{Key: "k"}
	cat, err := c.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cat.ProtocolVersion != "2025-11-25" {
		t.Errorf("protocol version %q", cat.ProtocolVersion)
	}
	for _, name := range []string{"echo", "get-sum", "trigger-long-running-operation", "gzip-file-as-resource"} {
		if !containsKey(cat.Tools, name) {
			t.Errorf("catalog lacks tool %s", name)
		}
	}
	if len(cat.Resources) == 0 || len(cat.ResourceTemplates) == 0 || !containsKey(cat.Prompts, "completable-prompt") {
		t.Errorf("catalog: %d resources, %d templates, prompts %v", len(cat.Resources), len(cat.ResourceTemplates), cat.Prompts)
	}
	tests := []struct {
		method, params, want string
	}{
		{"tools/call", `{"name":"get-sum","arguments":{"a":2,"b":40}}`, `42`},
		{"tools/call", `{"name":"echo","arguments":{"message":"hé \"quoted\"\n"}}`, `hé \"quoted\"\n`},
		{"resources/read", fmt.Sprintf(`{"uri":%q}`, cat.Resources[0].Key), `"contents"`},
		{"prompts/get", `{"name":"simple-prompt"}`, `"messages"`},
		{"completion/complete", `{"ref":{"type":"ref/prompt","name":"completable-prompt"},"argument":{"name":"department","value":"En"}}`, `Engineering`},
	}
	for _, tt := range tests {
		res, err := c.Call(t.Context(), caller, tt.method, jsontext.Value(tt.params), nil)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.params, err)
		}
		if !strings.Contains(string(res), tt.want) {
			t.Errorf("%s %s = %.300s, want it to hold %s", tt.method, tt.params, res, tt.want)
		}
	}
}

// TestEverythingProgress: trigger-long-running-operation's progress
// notifications reach notify in order, with the caller's token, before the
// result.
func TestEverythingProgress(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	c, _ := newTestConn(t, Options{URL: ev.URL})
	var got collect
	params := `{"name":"trigger-long-running-operation","arguments":{"duration":0.5,"steps":5},"_meta":{"progressToken":"p-7"}}`
	res, err := c.Call(t.Context(), Caller{Key: "k"}, "tools/call", jsontext.Value(params), got.notify)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(toolText(t, res), "Long running operation completed") {
		t.Errorf("result %s", res)
	}
	want := []string{"progress p-7 1", "progress p-7 2", "progress p-7 3", "progress p-7 4", "progress p-7 5"}
	if diff := cmp.Diff(want, summarize(t, got.all())); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// TestEverythingSessionExpiry: a session the server forgot (ended behind the
// gateway's back, or lost in a restart) is replaced at the next call, which
// succeeds.
func TestEverythingSessionExpiry(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	c, logs := newTestConn(t, Options{URL: ev.URL})
	pool := c.t.(*httpTransport).pool
	alice := Caller{Key: "alice"}
	sessionID := func() string {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		return pool.byKey["alice"].id
	}
	call := func() {
		t.Helper()
		res, err := callTool(t.Context(), c, alice, "get-sum", `{"a":1,"b":2}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(toolText(t, res), "3") {
			t.Fatalf("get-sum = %s", res)
		}
	}
	call()
	first := sessionID()

	// Ended behind the gateway's back.
	req, _ := http.NewRequest(http.MethodDelete, ev.URL, nil)
	req.Header.Set("Mcp-Session-Id", first)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	call()
	second := sessionID()
	if second == first {
		t.Fatal("the session was not replaced")
	}

	// Lost in a restart.
	ev.Kill()
	ev.Start(t)
	call()
	if third := sessionID(); third == second {
		t.Fatal("the session was not replaced after the restart")
	}
	if n := strings.Count(logs.String(), "upstream session expired"); n != 2 {
		t.Errorf("%d expiries logged, want 2", n)
	}
}

// TestEverythingKilledMidCall: the upstream dying during a call fails it at
// once; after it is back, calls work.
func TestEverythingKilledMidCall(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	c, _ := newTestConn(t, Options{URL: ev.URL})
	caller := Caller{Key: "k"}
	started := make(chan struct{}, 10)
	errc := make(chan error, 1)
	go func() {
		params := `{"name":"trigger-long-running-operation","arguments":{"duration":30,"steps":60},"_meta":{"progressToken":1}}`
		_, err := c.Call(t.Context(), caller, "tools/call", jsontext.Value(params), func(Message) { started <- struct{}{} })
		errc <- err
	}()
	<-started
	ev.Kill()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not fail when the upstream died")
	}
	ev.Start(t)
	if _, err := callTool(t.Context(), c, caller, "get-sum", `{"a":1,"b":2}`, nil); err != nil {
		t.Fatal(err)
	}
}

// TestEverythingListChanged: server-everything announces a new session
// resource on the session's GET stream: with a shared session, that is the
// gateway's own, and Changed is signalled.
func TestEverythingListChanged(t *testing.T) {
	t.Parallel()
	ev := testenv.StartEverything(t)
	c, _ := newTestConn(t, Options{URL: ev.URL, Sessions: SessionsShared})
	if _, err := c.Catalog(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The GET stream opens in the background; a change sent before it is up
	// would be lost, so make changes until one is seen.
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		gzipAsResource(t, c, Caller{}, fmt.Sprintf("changed-%d.gz", i))
		select {
		case <-c.Changed():
			cat, err := c.Catalog(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(cat.Resources, func(e Entry) bool { return strings.HasPrefix(e.Key, "demo://resource/session/changed-") }) {
				t.Error("the new resource is not in the catalog")
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Changed not signalled")
		}
	}
}
