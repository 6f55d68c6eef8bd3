package rediscache

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

func TestStoreSurvivesRestart(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	m := metrics.New()
	s, err := New(rd.URL(), Options{Metrics: m, Backoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	if _, ok, err := s.Get(ctx, "missing"); err != nil || ok {
		t.Fatalf("Get(missing) = %v, %v", ok, err)
	}

	rd.Stop()
	if _, _, err := s.Get(ctx, "k"); err == nil || errors.Is(err, ErrSkipped) {
		t.Fatalf("Get with Redis down = %v, want a real error first", err)
	}
	if _, _, err := s.Get(ctx, "k"); !errors.Is(err, ErrSkipped) {
		t.Fatalf("Get right after a failure = %v, want ErrSkipped", err)
	}
	if err := s.SetAndPublish(ctx, "k", []byte("0\n"), time.Minute, "c", "m"); err == nil || errors.Is(err, ErrSkipped) {
		t.Fatalf("SetAndPublish with Redis down = %v, want an attempted, failed call", err)
	}
	if n := testutil.ToFloat64(m.RedisErrors.WithLabelValues("get")); n != 1 {
		t.Errorf("get errors = %v, want 1", n)
	}

	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Set(ctx, "k2", []byte("v2"), time.Minute) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, ok, err := s.Get(ctx, "k2"); err != nil || !ok || string(v) != "v2" {
		t.Fatalf("Get after restart = %q, %v, %v", v, ok, err)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	t.Parallel()
	if _, err := New("http://x", Options{}); err == nil {
		t.Fatal("New accepted a non-redis URL")
	}
}

// TestQueueingIsNotAnOutage: more concurrent operations than pooled connections
// (here one) against a healthy Redis wait their turn; those that get none in time
// are misses (ErrBusy) but do not put the store into the backoff meant for a sick
// Redis, so the operations after them still reach Redis. Before, they queued in
// go-redis's pool, timed out there as Redis errors, and the backoff cut every
// request off the shared tier. Redis answers through a proxy that delays each
// reply by 5 ms, so the queue is long without loading the CPU.
func TestQueueingIsNotAnOutage(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	m := metrics.New()
	addr := slowProxy(t, rd.Addr, 5*time.Millisecond)
	s, err := New("redis://"+addr+"/0?pool_size=1", Options{Metrics: m, OpTimeout: 200 * time.Millisecond, Backoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	// The first dial may be slow on a busy machine: connect before counting.
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis not reachable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// 100 × 5 ms of work for one connection, each allowed to wait 100 ms.
	const n = 100
	var wg sync.WaitGroup
	var hits, busy, other atomic.Int64
	for range n {
		wg.Go(func() {
			_, ok, err := s.Get(ctx, "k")
			switch {
			case err == nil && ok:
				hits.Add(1)
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("of %d concurrent Gets on one connection: %d hits, %d busy, %d other", n, hits.Load(), busy.Load(), other.Load())
	if busy.Load() == 0 || hits.Load() == 0 {
		t.Fatal("want some Gets served and some out of turns: the test did not overload the pool, or served nothing")
	}
	if e := testutil.ToFloat64(m.RedisErrors.WithLabelValues("get")); e != 0 || other.Load() != 0 {
		t.Errorf("redis get errors = %v and %d other failures, want none: queueing is not a Redis failure", e, other.Load())
	}
	if v, ok, err := s.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Errorf("Get after the burst = %q, %v, %v; want the value (no backoff)", v, ok, err)
	}
	if b := testutil.ToFloat64(m.RedisBusy.WithLabelValues("get")); b != float64(busy.Load()) {
		t.Errorf("redis busy = %v, want %d", b, busy.Load())
	}
}

// slowProxy forwards connections to addr and delays every chunk coming back by
// delay: a Redis that takes about delay per command, without using any CPU.
func slowProxy(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(r, c); r.Close() }()
				buf := make([]byte, 32<<10)
				for {
					n, err := r.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
