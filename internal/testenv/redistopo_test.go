package testenv

import (
	"context"
	"testing"
	"time"
)

// TestRedisClusterFailover: the cluster forms, and when the primary serving
// a key dies one of its replicas takes over its slots.
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 6-node Redis Cluster and fails one over (seconds): go test without -short (make test) runs it")
	}
	t.Parallel()
	c := StartRedisCluster(t, 3, 1)
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := c.PrimaryOf(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Do(ctx, "SET", "k", "v"); err != nil || got != "+OK" {
		t.Fatalf("SET on the key's primary = %q, %v", got, err)
	}
	// Replication is asynchronous: wait for the replica to have the write.
	if got, err := p.Do(ctx, "WAIT", "1", "5000"); err != nil || got != ":1" {
		t.Fatalf("WAIT 1 = %q, %v; want one replica to acknowledge", got, err)
	}
	p.Stop()
	start := time.Now()
	np, err := c.WaitPromoted(ctx, "k", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replica %s promoted %v after %s died", np.Addr, time.Since(start).Round(time.Millisecond), p.Addr)
	if got, err := np.Do(ctx, "GET", "k"); err != nil || got != "$1" {
		t.Errorf("GET on the promoted replica = %q, %v; want the replicated value", got, err)
	}
}

// TestRedisSentinelFailover: the Sentinels see the primary, its replica and
// each other, and promote the replica when the primary dies.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a primary, a replica and three Sentinels and fails over (seconds): go test without -short (make test) runs it")
	}
	t.Parallel()
	s := StartRedisSentinel(t, 1, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p != s.Servers[0] {
		t.Fatalf("primary %s, want the first server %s", p.Addr, s.Servers[0].Addr)
	}
	p.Stop()
	start := time.Now()
	np, err := s.WaitPromoted(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replica %s promoted %v after %s died", np.Addr, time.Since(start).Round(time.Millisecond), p.Addr)
}
