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

	"github.com/google/go-cmp/cmp"
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

func TestParse(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]Topology{
		"redis://localhost:6379/0":                                                        Single,
		"rediss://app:pw@redis.example.com:6380/2":                                        Single,
		"redis://localhost:6379/0?pool_size=3":                                            Single,
		"unix:///run/redis.sock":                                                          Single,
		"redis://h1:7000?addr=h2:7001&addr=h3:7002":                                       Cluster,
		"rediss://app:pw@h1:7000/0?addr=h2:7001":                                          Cluster,
		"redis://h1:7000?addr=h1:7000":                                                    Cluster, // one seed node, named twice
		"redis://s1:26379?master_name=mymaster":                                           Sentinel,
		"redis://s1:26379?master_name=m&addr=s2:26379":                                    Sentinel,
		"rediss://su:spw@s1:26379/3?master_name=m&username=app&password=pw&addr=s2:26379": Sentinel,
	} {
		got, err := Parse(url)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", url, got, err, want)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		url     string
		timeout time.Duration
	}{
		"not a Redis URL":            {"http://localhost:6379", time.Second},
		"bad port":                   {"redis://user:s3cret-password@localhost:port/0", time.Second},
		"unknown parameter":          {"redis://localhost:6379?bogus=1", time.Second},
		"no timeout":                 {"redis://localhost:6379", 0},
		"cluster: database 3":        {"redis://:s3cret-password@h1:7000/3?addr=h2:7001", time.Second},
		"cluster: addr without port": {"redis://:s3cret-password@h1:7000?addr=h2", time.Second},
		"cluster: unknown parameter": {"redis://:s3cret-password@h1:7000?addr=h2:7001&bogus=1", time.Second},
		"sentinel: empty name":       {"redis://s1:26379?master_name=&password=s3cret-password", time.Second},
		"sentinel: bad database":     {"redis://s1:26379/x?master_name=m&password=s3cret-password", time.Second},
		"sentinel: unknown param":    {"redis://s1:26379?master_name=m&password=s3cret-password&bogus=1", time.Second},
		"sentinel: bad scheme":       {"http://s1:26379?master_name=m&password=s3cret-password", time.Second},
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

// TestOpenSettings: whatever the topology, commands are bounded by
// Options.Timeout, a server that refuses a connection is dialled once, and
// no command is retried on a single node or a Sentinel-managed primary.
func TestOpenSettings(t *testing.T) {
	t.Parallel()
	const timeout = 150 * time.Millisecond
	type settings struct {
		ContextTimeout          bool
		Dial, Read, Write, Pool time.Duration
		DialerRetries           int
		NoRetry, NoIdentity     bool
	}
	want := settings{true, minDialTimeout, timeout, timeout, timeout, 1, true, true}
	for url, topology := range map[string]Topology{
		"redis://localhost:6379/0?dial_timeout=10s&max_retries=5": Single,
		"redis://h1:7000?addr=h2:7001&read_timeout=10s":           Cluster,
		"redis://s1:26379?master_name=m&max_retries=5":            Sentinel,
	} {
		c, err := Open(url, Options{Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		var got settings
		switch c := c.(type) {
		case *redis.ClusterClient:
			if topology != Cluster {
				t.Errorf("%s: a Cluster client", url)
			}
			o := c.Options()
			// go-redis spells "no retry" -1 before it normalises the
			// options, 0 after.
			got = settings{o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.DialerRetries, o.MaxRetries <= 0, o.DisableIdentity}
		case *redis.Client:
			if topology == Cluster {
				t.Errorf("%s: not a Cluster client", url)
			}
			o := c.Options()
			// go-redis spells "no retry" -1 before it normalises the
			// options, 0 after.
			got = settings{o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.DialerRetries, o.MaxRetries <= 0, o.DisableIdentity}
		default:
			t.Fatalf("%s: client of type %T", url, c)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: settings (-want +got):\n%s", url, diff)
		}
		c.Close()
	}
}

func TestPoolSize(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]int{
		"redis://localhost:6379/0":                                 defaultPoolSize(),
		"redis://localhost:6379/0?pool_size=3":                     3,
		"rediss://localhost:6379/0?pool_size=7":                    7,
		"redis://h1:7000?addr=h2:7001":                             defaultPoolSize(),
		"redis://h1:7000?addr=h2:7001&pool_size=4":                 4,
		"redis://s1:26379?master_name=m&addr=s2:26379&pool_size=6": 6,
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
