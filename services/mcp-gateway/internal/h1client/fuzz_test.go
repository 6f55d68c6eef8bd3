package h1client

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzAnswer gives RoundTrip any bytes as the server's answer: it returns an
// error or an answer whose body reads to an end, within the header limit and
// without hanging, and never keeps a connection it did not read to the end.
func FuzzAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nrest",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"garbage",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, answer string) {
		tr := New(Options{MaxHeaderBytes: 4 << 10, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			client, server := net.Pipe()
			go func() {
				go io.Copy(io.Discard, server)
				io.WriteString(server, answer)
				server.Close()
			}()
			return client, nil
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://upstream/mcp", strings.NewReader(`{}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("RoundTrip hung: %v", err)
			}
			return
		}
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if ctx.Err() != nil {
			t.Fatalf("reading the body hung (%d bytes, %v)", n, err)
		}
		if n > int64(len(answer)) {
			t.Fatalf("read %d body bytes from a %d-byte answer", n, len(answer))
		}
		tr.mu.Lock()
		kept := len(tr.idle)
		tr.mu.Unlock()
		if kept > 0 && err != nil {
			t.Fatalf("connection kept after a failed body read: %v", err)
		}
	})
}
