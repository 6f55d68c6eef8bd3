package rediscache

import (
	"errors"
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
	if err := s.DelAndPublish(ctx, "k", "c", "m"); err == nil || errors.Is(err, ErrSkipped) {
		t.Fatalf("DelAndPublish with Redis down = %v, want an attempted, failed call", err)
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
