package server_test

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
)

// serveHTTP serves e's devauth with the http.Server devauth runs in
// production (server.HTTPServer) and returns its address.
func serveHTTP(t *testing.T, e *env) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := e.Srv.HTTPServer(slog.New(slog.DiscardHandler))
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

func TestHTTPServerDefaults(t *testing.T) {
	t.Parallel()
	hs := newEnv(t).Srv.HTTPServer(slog.New(slog.DiscardHandler))
	if hs.ReadHeaderTimeout != server.DefaultReadHeaderTimeout || hs.ReadTimeout != server.DefaultReadTimeout || hs.IdleTimeout != server.DefaultIdleTimeout {
		t.Errorf("timeouts: header %v, read %v, idle %v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.IdleTimeout)
	}
	if hs.ReadTimeout <= 0 || hs.ReadHeaderTimeout <= 0 {
		t.Error("a client could hold a connection open for ever by trickling its request")
	}
}

// TestSlowBodyIsCut: a client that sends its headers and then stalls in the
// body is disconnected once ReadTimeout has passed.
func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *server.Options) { o.ReadTimeout = 300 * time.Millisecond }))
	addr := serveHTTP(t, e)
	for _, path := range []string{"/oauth/2.1/register", "/oauth/2.1/token", "/oauth/2.1/introspect"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken="); err != nil {
			t.Fatal(err)
		}
		// Generous: the server should give up after 300 ms; this only keeps a
		// broken server from hanging the test.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the connection stayed open with a stalled body", path)
		}
	}
}

// TestOversizedBodyRefused: every endpoint refuses a body over
// MaxRequestBody and closes the connection instead of reading on.
func TestOversizedBodyRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr := serveHTTP(t, e)
	big := "token=" + strings.Repeat("x", server.MaxRequestBody)
	for _, path := range []string{"/oauth/2.1/token", "/oauth/2.1/introspect", "/oauth/2.1/revoke", "/oauth/2.1/register", "/dev/tokens"} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+addr+path, strings.NewReader(big))
		req.Header = rvHdr()
		if path == "/dev/tokens" || path == "/oauth/2.1/register" {
			req.Header = apiKeyHdr.Clone()
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: %d for a %d-byte body", path, resp.StatusCode, len(big))
		}
	}
}

// TestFaultLatencyLongerThanReadTimeout: an injected latency longer than the
// read deadline still ends in a proper answer, because the body is read
// before the wait.
func TestFaultLatencyLongerThanReadTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *server.Options) { o.ReadTimeout = 200 * time.Millisecond }))
	addr := serveHTTP(t, e)
	if status, _, b := do(t, "POST", e.URL+"/dev/faults", apiKeyHdr, `{"mode":"ok","latency_ms":600}`); status != http.StatusNoContent {
		t.Fatalf("setting latency: %d %s", status, b)
	}
	tok := e.mint(t, `{"email":"alice@example.com"}`)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	form := url.Values{"token": {tok}}.Encode()
	// The body follows the headers in a second packet, as a larger body
	// would: the server has not buffered it along with the headers.
	head := "POST /oauth/2.1/introspect HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
		"Authorization: Basic " + basic(rvID, rvSecret) + "\r\nContent-Length: " + strconv.Itoa(len(form)) + "\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := io.WriteString(c, form); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"active":true`) {
		t.Errorf("introspection after 600 ms of injected latency: %d %s", resp.StatusCode, b)
	}
}
