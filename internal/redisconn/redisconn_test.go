package redisconn

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

func TestOpenTalksToRedis(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	c, err := Open(rd.URL(), Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Set(t.Context(), "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(t.Context(), "k").Result(); err != nil || v != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		url     string
		timeout time.Duration
	}{
		"not a Redis URL":   {"http://localhost:6379", time.Second},
		"bad port":          {"redis://user:s3cret-password@localhost:port/0", time.Second},
		"unknown parameter": {"redis://localhost:6379?bogus=1", time.Second},
		"no timeout":        {"redis://localhost:6379", 0},
	} {
		_, err := Open(tc.url, Options{Timeout: tc.timeout})
		if err == nil {
			t.Errorf("%s: Open(%q) succeeded", name, tc.url)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error repeats the password: %v", name, err)
		}
	}
}

// TestOpenBoundsEveryCommand: a Redis that accepts connections but never
// answers costs one command about Options.Timeout, whatever the caller's
// context allows, and the command is sent once, not retried.
func TestOpenBoundsEveryCommand(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var (
		mu    sync.Mutex
		conns []net.Conn // held open, never answered
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	c, err := Open("redis://"+ln.Addr().String()+"/0", Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start := time.Now()
	err = c.Get(context.Background(), "k").Err()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Get from a silent server = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Get gave up after %v; want about the 200ms timeout (go-redis's own default is 3s)", d)
	}
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n > 1 {
		t.Errorf("%d connections for one command; want 1 (no retry)", n)
	}
}

func TestPoolSize(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]int{
		"redis://localhost:6379/0":              defaultPoolSize(),
		"redis://localhost:6379/0?pool_size=3":  3,
		"rediss://localhost:6379/0?pool_size=7": 7,
	} {
		c, err := Open(url, Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if got := PoolSize(c); got != want {
			t.Errorf("PoolSize(%s) = %d, want %d", url, got, want)
		}
		c.Close()
	}
	if got, want := PoolSize(redis.NewClusterClient(&redis.ClusterOptions{PoolSize: 5})), 5; got != want {
		t.Errorf("PoolSize(cluster) = %d, want %d", got, want)
	}
}

func TestDriverLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := DriverLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf(t.Context(), "redis: dial %s: %v", "127.0.0.1:1", "refused")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, `detail="redis: dial 127.0.0.1:1: refused"`) {
		t.Errorf("logged %q", got)
	}
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	b := NewBreaker(time.Second)
	b.now = func() time.Time { return now }
	if b.Skip() {
		t.Fatal("a new breaker skips Redis")
	}
	if log, n := b.Fail(); !log || n != 0 {
		t.Fatalf("first failure: log %v, suppressed %d; want true, 0", log, n)
	}
	now = now.Add(999 * time.Millisecond)
	if !b.Skip() {
		t.Fatal("Redis not skipped within the backoff")
	}
	now = now.Add(time.Millisecond)
	if b.Skip() {
		t.Fatal("Redis still skipped once the backoff passed")
	}
	for range 3 {
		if log, _ := b.Fail(); log {
			t.Fatal("a failure within LogEvery of the logged one is to be logged too")
		}
	}
	now = now.Add(LogEvery)
	if log, n := b.Fail(); !log || n != 3 {
		t.Fatalf("failure one LogEvery later: log %v, suppressed %d; want true, 3", log, n)
	}
}
