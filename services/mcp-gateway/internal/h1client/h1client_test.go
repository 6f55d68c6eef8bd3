package h1client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is an httptest server that counts the connections it accepted.
type server struct {
	*httptest.Server
	conns atomic.Int32
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func post(t *testing.T, tr *Transport, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return tr.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	resp.Body.Close()
	return string(b)
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"method":%q,"ct":%q,"body":%s}`, r.Method, r.Header.Get("Content-Type"), b)
}

func TestRoundTripReusesConnection(t *testing.T) {
	s := newServer(t, echo)
	tr := New(Options{})
	defer tr.CloseIdleConnections()
	for i := range 5 {
		resp, err := post(t, tr, context.Background(), s.URL+"/mcp", fmt.Sprintf(`{"n":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := readAll(t, resp), fmt.Sprintf(`{"method":"POST","ct":"application/json","body":{"n":%d}}`, i); got != want {
			t.Fatalf("answer %d = %s, want %s", i, got, want)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests, want 1", n)
	}
}

// A body closed once its known length is read keeps its connection, as
// readers that stop at Content-Length do.
func TestKnownLengthReadWithoutEOF(t *testing.T) {
	s := newServer(t, echo)
	tr := New(Options{})
	for range 3 {
		resp, err := post(t, tr, context.Background(), s.URL, `1`)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestStreamedAnswer(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: two\n\n")
	})
	tr := New(Options{})
	resp, err := post(t, tr, context.Background(), s.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != -1 {
		t.Fatalf("ContentLength = %d, want -1 (chunked)", resp.ContentLength)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event line %q, %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	resp.Body.Close()
	resp, err = post(t, tr, context.Background(), s.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: a chunked answer read to its end keeps the connection", n)
	}
}

// A body closed before its end is discarded when its connection is next
// needed: the next request reads its own answer, on the same connection when
// the rest had arrived and was at most restMax, on a new one otherwise.
func TestEarlyClose(t *testing.T) {
	for _, c := range []struct {
		name  string
		size  int
		conns int32
	}{
		{"small rest", 4 << 10, 1},
		{"rest past restMax", restMax + 8<<10, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
				w.Write(bytes.Repeat([]byte("x"), c.size))
			})
			tr := New(Options{})
			for i := range 2 {
				resp, err := post(t, tr, context.Background(), s.URL, fmt.Sprintf("%d", i))
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 1)
				if _, err := io.ReadFull(resp.Body, buf); err != nil {
					t.Fatal(err)
				}
				if got := string(buf); got != fmt.Sprint(i) {
					t.Fatalf("answer %d starts %q: another answer's rest", i, got)
				}
				resp.Body.Close()
				time.Sleep(20 * time.Millisecond) // let the rest arrive
			}
			if n := s.conns.Load(); n != c.conns {
				t.Fatalf("%d connections, want %d", n, c.conns)
			}
		})
	}
}

func TestConnectionClose(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		echo(w, r)
	})
	tr := New(Options{})
	for range 3 {
		resp, err := post(t, tr, context.Background(), s.URL, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	if n := s.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: the server asked to close each", n)
	}
	if n := len(tr.idle); n != 0 {
		t.Fatalf("%d idle connections kept, want 0", n)
	}
}

// rawServer answers every request on a connection with answer and then does
// what after says ("close": closes the connection; "": keeps it).
func rawServer(t *testing.T, answer, after string) (addr string, conns *atomic.Int32) {
	return rawServerFunc(t, func(w io.Writer, _ []byte) bool {
		_, err := io.WriteString(w, answer)
		return err == nil && after != "close"
	})
}

// rawServerFunc answers every request on a connection with answer, given
// the request's body, and closes the connection when answer returns false.
func rawServerFunc(t *testing.T, answer func(w io.Writer, body []byte) bool) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					if !answer(c, body) {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/", conns
}

// A server that closes a keep-alive connection right after answering (as
// servers do at their idle timeout) does not fail the next request: the
// closed connection is found before it is used.
func TestServerClosedIdleConnection(t *testing.T) {
	url, conns := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "close")
	tr := New(Options{})
	for i := range 4 {
		resp, err := post(t, tr, context.Background(), url, `{}`)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("answer %q", got)
		}
		// Let the server's close arrive.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			tr.mu.Lock()
			dead := len(tr.idle) == 1 && peek(tr.idle[0]) != nothing
			tr.mu.Unlock()
			if dead {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4", n)
	}
}

func TestSweepClosesIdleConnections(t *testing.T) {
	s := newServer(t, echo)
	tr := New(Options{IdleTimeout: time.Millisecond})
	resp, err := post(t, tr, context.Background(), s.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	tr.mu.Lock()
	sw := tr.sweep != nil
	tr.mu.Unlock()
	if !sw {
		t.Fatal("no sweep scheduled with a connection idle")
	}
	time.Sleep(5 * time.Millisecond)
	tr.sweepIdle()
	tr.mu.Lock()
	n, sw := len(tr.idle), tr.sweep != nil
	tr.mu.Unlock()
	if n != 0 || sw {
		t.Fatalf("after the sweep: %d idle, sweep scheduled %v; want 0, false", n, sw)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	gone := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		// net/http notices a closed connection once the body is read.
		io.ReadAll(r.Body)
		<-r.Context().Done()
		close(gone)
	})
	tr := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := post(t, tr, ctx, s.URL, `{}`)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the connection close")
	}
}

func TestCancelWhileReadingBody(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := post(t, tr, ctx, s.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	if n := len(tr.idle); n != 0 {
		t.Fatalf("%d idle connections after a cancelled exchange, want 0", n)
	}
}

func TestHeaderLimit(t *testing.T) {
	big := strings.Repeat("a", 100<<10)
	url, _ := rawServer(t, "HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nContent-Length: 0\r\n\r\n", "")
	tr := New(Options{MaxHeaderBytes: 16 << 10})
	_, err := post(t, tr, context.Background(), url, `{}`)
	if !errors.Is(err, errHeaderBig) {
		t.Fatalf("err = %v, want %v", err, errHeaderBig)
	}
	// A body larger than the header limit is fine.
	body := strings.Repeat("b", 100<<10)
	url, _ = rawServer(t, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), "")
	resp, err := post(t, tr, context.Background(), url, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != body {
		t.Fatalf("body of %d bytes, want %d", len(got), len(body))
	}
}

func TestInformationalAnswersSkipped(t *testing.T) {
	url, _ := rawServer(t, "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "")
	resp, err := post(t, New(Options{}), context.Background(), url, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || readAll(t, resp) != "ok" {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestNoAnswer(t *testing.T) {
	url, _ := rawServer(t, "", "close")
	_, err := post(t, New(Options{}), context.Background(), url, `{}`)
	if !errors.Is(err, errNoAnswer) {
		t.Fatalf("err = %v, want %v", err, errNoAnswer)
	}
}

func TestOnlyPlainHTTP(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "https://example.com/", nil)
	if _, err := New(Options{}).RoundTrip(req); !errors.Is(err, errNotHTTP) {
		t.Fatalf("https: err = %v", err)
	}
	for _, c := range []struct {
		url   string
		proxy string
		want  bool
	}{
		{"http://up:8080/mcp", "", true},
		{"https://up/mcp", "", false},
		{"http://up/mcp", "http://proxy:3128", false},
	} {
		u, _ := req.URL.Parse(c.url)
		proxy := func(*http.Request) (*url.URL, error) { return nil, nil }
		if c.proxy != "" {
			p, _ := req.URL.Parse(c.proxy)
			proxy = func(*http.Request) (*url.URL, error) { return p, nil }
		}
		if got := Applies(u, proxy); got != c.want {
			t.Errorf("Applies(%s, proxy %q) = %v, want %v", c.url, c.proxy, got, c.want)
		}
	}
}

// Many callers at once: every answer is its own request's.
func TestConcurrent(t *testing.T) {
	s := newServer(t, echo)
	tr := New(Options{MaxIdle: 16})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				body := fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)
				resp, err := post(t, tr, context.Background(), s.URL, body)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !strings.Contains(string(b), body) {
					errs <- fmt.Errorf("answer %q to %s (%v)", b, body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.conns.Load(); n > 16 {
		t.Fatalf("%d connections for 16 callers", n)
	}
}

func TestMaxIdle(t *testing.T) {
	s := newServer(t, echo)
	tr := New(Options{MaxIdle: 2})
	var open []*http.Response
	for range 4 {
		resp, err := post(t, tr, context.Background(), s.URL, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, resp)
	}
	for _, resp := range open {
		readAll(t, resp)
	}
	if n := len(tr.idle); n != 2 {
		t.Fatalf("%d idle connections, want MaxIdle 2", n)
	}
	tr.CloseIdleConnections()
	if n := len(tr.idle); n != 0 {
		t.Fatalf("%d idle connections after CloseIdleConnections", n)
	}
}

// An event stream whose closing chunk comes late: the connection waits in
// the pool while another carries the next request, and is used again once
// the chunk has arrived.
func TestLateClosingChunk(t *testing.T) {
	url, conns := rawServerFunc(t, func(w io.Writer, body []byte) bool {
		event := fmt.Sprintf("data: %s\n\n", body)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(event), event)
		time.Sleep(300 * time.Millisecond)
		_, err := io.WriteString(w, "0\r\n\r\n")
		return err == nil
	})
	tr := New(Options{})
	call := func(n int) {
		t.Helper()
		resp, err := post(t, tr, context.Background(), url, fmt.Sprint(n))
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if want := fmt.Sprintf("data: %d\n", n); err != nil || line != want {
			t.Fatalf("event %q (%v), want %q", line, err, want)
		}
		resp.Body.Close()
	}
	call(1)
	call(2) // the first connection's closing chunk is 300 ms away
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after two calls, want 2", n)
	}
	tr.mu.Lock()
	idle := len(tr.idle)
	tr.mu.Unlock()
	if idle != 2 {
		t.Fatalf("%d idle connections, want 2: one waiting for its closing chunk is kept", idle)
	}
	time.Sleep(700 * time.Millisecond)
	call(3)
	call(4)
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after four calls, want 2: both were used again", n)
	}
}

// flakyConn fails its writes as mode says once it is set: "none" writes
// nothing, "half" writes half of what it is given. It hides the socket, so
// the idle peek finds nothing wrong with it.
type flakyConn struct {
	net.Conn
	mode atomic.Value // string
}

var errFlaky = errors.New("write failed")

func (c *flakyConn) Write(p []byte) (int, error) {
	switch c.mode.Load() {
	case "none":
		return 0, errFlaky
	case "half":
		n, _ := c.Conn.Write(p[:len(p)/2])
		return n, errFlaky
	}
	return c.Conn.Write(p)
}

// A request is sent again on a new connection only when none of it went out
// on the reused one: a server may have acted on part of a request.
func TestRetryOnlyWhenNothingWritten(t *testing.T) {
	for _, c := range []struct {
		mode    string
		retried bool
	}{
		{"none", true},
		{"half", false},
	} {
		t.Run(c.mode, func(t *testing.T) {
			s := newServer(t, echo)
			var (
				mu     sync.Mutex
				dialed []*flakyConn
			)
			tr := New(Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				fc := &flakyConn{Conn: nc}
				mu.Lock()
				dialed = append(dialed, fc)
				mu.Unlock()
				return fc, nil
			}})
			resp, err := post(t, tr, context.Background(), s.URL, `{"n":1}`)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			dialed[0].mode.Store(c.mode)
			resp, err = post(t, tr, context.Background(), s.URL, `{"n":2}`)
			if !c.retried {
				if !errors.Is(err, errFlaky) {
					t.Fatalf("err = %v, want the write's error and no second attempt", err)
				}
				if len(dialed) != 1 {
					t.Fatalf("%d connections dialed, want 1", len(dialed))
				}
				return
			}
			if err != nil {
				t.Fatalf("not sent again: %v", err)
			}
			if got := readAll(t, resp); !strings.Contains(got, `{"n":2}`) {
				t.Fatalf("answer %s", got)
			}
			if len(dialed) != 2 {
				t.Fatalf("%d connections dialed, want 2", len(dialed))
			}
		})
	}
}
