package gateway_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// The tests in this file hold many connections to a gateway of their own and
// answer for what an attacker without a token can make it spend. The memory
// tests are not parallel: they read the process's heap, which the gateway
// under test shares with them.

// fakeToken looks like a token (an RFC 6750 b64token) but was never issued.
var fakeToken = strings.Repeat("f", 40)

// partialRequest opens a connection to g and sends the headers of a POST /mcp
// that declares a body of declared bytes, with the header lines in auth
// (each ending in CRLF), then the first bytes of the body, sent.
func partialRequest(t *testing.T, g *stacktest.Gateway, auth string, declared int, sent string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "POST /mcp HTTP/1.1\r\nHost: " + g.Addr + "\r\nContent-Type: application/json\r\n" +
		"Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\n" +
		auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", declared) + sent
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads the response on conn, waiting until deadline at most.
func readAnswer(conn net.Conn, deadline time.Time) (*http.Response, string, error) {
	_ = conn.SetReadDeadline(deadline)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, "", err
	}
	// After an answer that closes the connection, the server hangs up: EOF,
	// or a reset when the client went on sending (the server closed with
	// unread bytes).
	if res.Close {
		if _, err := br.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			return res, string(b), fmt.Errorf("connection still open after %q: read %v", res.Header.Get("Connection"), err)
		}
	}
	return res, string(b), nil
}

// liveHeap returns the bytes of live heap objects, after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settledHeap waits until the live heap no longer grows (three readings
// 100 ms apart within 1 MiB) and returns it.
func settledHeap(t *testing.T) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	prev, stable := liveHeap(), 0
	for stable < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the heap did not settle within 20s")
		}
		time.Sleep(100 * time.Millisecond)
		cur := liveHeap()
		if max(cur, prev)-min(cur, prev) < 1<<20 {
			stable++
		} else {
			stable = 0
		}
		prev = cur
	}
	return prev
}

// TestBodyMemoryFollowsBytesReceived: connections that declare a 1 MiB body
// and send one byte, with a token that looks valid, must cost the gateway
// about what they sent, not what they declared (the gateway once grew its
// buffer to Content-Length before any check: 300 such connections took 300
// MiB).
func TestBodyMemoryFollowsBytesReceived(t *testing.T) {
	const n = 300
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{
		"MCP_MAX_IN_FLIGHT": "1000", // above n: this test is about each request's memory
		"MCP_BODY_TIMEOUT":  "1m",   // so that every request is still waiting for its body when measured
	})
	before := liveHeap()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = partialRequest(t, g, "Authorization: Bearer "+fakeToken+"\r\n", 1<<20, "{")
	}
	// Every request is past the token check and waiting for its body. (The
	// process's goroutine count would say so only approximately: other
	// goroutines come and go.)
	waitGauge(t, g, "mcp_gateway_in_flight_requests", n)
	after := settledHeap(t)
	growth := int64(after) - int64(before)
	t.Logf("%d connections declaring 1 MiB and sending 1 byte: live heap %+d KiB (%.1f KiB each)", n, growth>>10, float64(growth)/1024/n)
	// Measured about 10 KiB each (the 4 KiB initial buffer, the request and
	// the connection's buffers); the old buffer alone was 1 MiB.
	if limit := int64(n * 64 << 10); growth > limit {
		t.Errorf("live heap grew by %d KiB for %d connections that sent 1 byte each, want under %d KiB", growth>>10, n, limit>>10)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestNoTokenNoBody: a request without a usable token is refused before its
// body is read: 401 (400 for a token in the URL or two Authorization
// headers) at once, although the body has not arrived, with the usual
// challenge, and the connection closed so the unread body cannot hold it.
func TestNoTokenNoBody(t *testing.T) {
	const n = 300
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_BODY_TIMEOUT": "1m"})
	prm := g.URL + "/.well-known/oauth-protected-resource/mcp"
	all := scopeUser + " " + scopeOrg
	tests := []struct {
		name   string
		auth   string
		status int
		params map[string]string
	}{
		{"no Authorization", "", 401, map[string]string{"resource_metadata": prm, "scope": all}},
		{"Basic scheme", "Authorization: Basic YWxpY2U6cHc=\r\n", 401, map[string]string{"resource_metadata": prm, "scope": all}},
		{"malformed token", "Authorization: Bearer a\"b\r\n", 401, map[string]string{"resource_metadata": prm, "scope": all, "error": "invalid_token"}},
		{"two Authorization headers", "Authorization: Bearer " + fakeToken + "\r\nAuthorization: Bearer " + fakeToken + "\r\n", 400, map[string]string{"resource_metadata": prm, "scope": all, "error": "invalid_request"}},
	}
	before := liveHeap()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = partialRequest(t, g, tests[i%len(tests)].auth, 1<<20, "{")
	}
	deadline := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range conns {
		wg.Go(func() {
			tt := tests[i%len(tests)]
			res, body, err := readAnswer(c, deadline)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("%s: no answer without the body: %v", tt.name, err)
			case res.StatusCode != tt.status || !res.Close:
				errs[i] = fmt.Errorf("%s: status %d, Connection %q; want %d and close: %s", tt.name, res.StatusCode, res.Header.Get("Connection"), tt.status, body)
			default:
				cs, perr := oauthex.ParseWWWAuthenticate(res.Header.Values("WWW-Authenticate"))
				if perr != nil || len(cs) != 1 {
					errs[i] = fmt.Errorf("%s: challenges %q: %v", tt.name, res.Header.Values("WWW-Authenticate"), perr)
					return
				}
				delete(cs[0].Params, "error_description")
				if diff := cmp.Diff(tt.params, cs[0].Params); diff != "" {
					errs[i] = fmt.Errorf("%s: challenge (-want +got):\n%s", tt.name, diff)
				}
			}
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil && failed < 5 {
			t.Error(err)
		}
		if err != nil {
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests without a usable token were not refused at once", failed, n)
	}
	after := settledHeap(t)
	t.Logf("%d refused requests: live heap %+d KiB", n, (int64(after)-int64(before))>>10)
}

// TestBodyTimeout: a client that sends its body slowly gets 408 once
// MCP_BODY_TIMEOUT has passed since its headers, however steadily it
// trickles, and its connection is closed.
func TestBodyTimeout(t *testing.T) {
	t.Parallel()
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_BODY_TIMEOUT": "300ms"})
	conn := partialRequest(t, g, "Authorization: Bearer "+fakeToken+"\r\n", 1000, "{")
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	res, body, err := readAnswer(conn, start.Add(10*time.Second))
	if err != nil {
		t.Fatalf("no answer to a trickled body within 10s (MCP_BODY_TIMEOUT=300ms): %v", err)
	}
	if res.StatusCode != http.StatusRequestTimeout || !res.Close || !strings.Contains(body, `"error":"request_timeout"`) {
		t.Errorf("status %d, Connection %q, body %s; want 408, close and a request_timeout error", res.StatusCode, res.Header.Get("Connection"), body)
	}
	t.Logf("answered %d after %v", res.StatusCode, time.Since(start).Round(time.Millisecond))

	// A body that arrives at once is served as usual.
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	if r := readRPC(t, post(t, g.MCP(), token, listBody())); r.Error != nil {
		t.Errorf("tools/list: %+v", r.Error)
	}
}

// TestInFlightBound: beyond MCP_MAX_IN_FLIGHT requests past the token check,
// the next gets 503 with Retry-After at once, before its body is read, and
// is counted; once the requests holding the slots end, requests are served
// again.
func TestInFlightBound(t *testing.T) {
	t.Parallel()
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_MAX_IN_FLIGHT": "2", "MCP_BODY_TIMEOUT": "1m"})
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	holders := []net.Conn{
		partialRequest(t, g, "Authorization: Bearer "+fakeToken+"\r\n", 1000, "{"),
		partialRequest(t, g, "Authorization: Bearer "+fakeToken+"\r\n", 1000, "{"),
	}
	waitGauge(t, g, "mcp_gateway_in_flight_requests", 2)

	conn := partialRequest(t, g, "Authorization: Bearer "+token+"\r\n", 1<<20, "{")
	res, body, err := readAnswer(conn, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatalf("no answer beyond the bound: %v", err)
	}
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || !res.Close ||
		!strings.Contains(body, `"error":"temporarily_unavailable"`) {
		t.Errorf("status %d, Retry-After %q, Connection %q, body %s; want 503 with Retry-After, close, temporarily_unavailable",
			res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("Connection"), body)
	}
	// Requests without a token are still answered 401: they hold nothing.
	if res := post(t, g.MCP(), "", listBody()); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token while at the bound: status %d, want 401", res.StatusCode)
	} else {
		res.Body.Close()
	}
	if got := metricValue(t, g, "mcp_gateway_in_flight_rejected_total"); got != 1 {
		t.Errorf("mcp_gateway_in_flight_rejected_total = %v, want 1", got)
	}

	for _, c := range holders {
		c.Close()
	}
	waitGauge(t, g, "mcp_gateway_in_flight_requests", 0)
	if r := readRPC(t, post(t, g.MCP(), token, listBody())); r.Error != nil {
		t.Errorf("tools/list once the slots are free: %+v", r.Error)
	}
}

// metricValue returns the value of the gateway's counter or gauge name
// (without labels), or -1 when it has none.
func metricValue(t *testing.T, g *stacktest.Gateway, name string) float64 {
	t.Helper()
	mfs, err := g.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

// waitGauge waits up to 10s for the gateway's gauge name to read want.
func waitGauge(t *testing.T, g *stacktest.Gateway, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := metricValue(t, g, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 30s, want %v", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectionBound: with MCP_MAX_CONNECTIONS open, a further connection
// is not served (it waits in the accept queue, costing the gateway nothing)
// until one of them closes; then it is.
func TestConnectionBound(t *testing.T) {
	t.Parallel()
	g := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"MCP_MAX_CONNECTIONS": "2"})
	var holders []net.Conn
	for range 2 {
		c := partialRequest(t, g, "", 0, "")
		// Each holder is served (401) and kept alive, idle.
		if res, body, err := readAnswer(c, time.Now().Add(10*time.Second)); err != nil || res.StatusCode != http.StatusUnauthorized || res.Close {
			t.Fatalf("holder: %v %v %s", res, err, body)
		}
		holders = append(holders, c)
	}
	waiting := partialRequest(t, g, "", 0, "")
	if res, _, err := readAnswer(waiting, time.Now().Add(300*time.Millisecond)); err == nil {
		t.Fatalf("a third connection was served (%d) with MCP_MAX_CONNECTIONS=2 open", res.StatusCode)
	}
	holders[0].Close()
	res, body, err := readAnswer(waiting, time.Now().Add(10*time.Second))
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("once a connection closed, the waiting one got %v, %v: %s", res, err, body)
	}
}
