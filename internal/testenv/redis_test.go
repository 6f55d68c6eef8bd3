package testenv

import (
	"testing"
)

func TestRedisStopStart(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	if got, err := r.Do(t.Context(), "SET", "k", "v"); err != nil || got != "+OK" {
		t.Fatalf("SET = %q, %v; want +OK", got, err)
	}
	r.Stop()
	if _, err := r.Do(t.Context(), "PING"); err == nil {
		t.Fatal("PING after Stop succeeded; want a connection error")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	// Persistence is off, so a restart is a crash that loses everything.
	if got, err := r.Do(t.Context(), "DBSIZE"); err != nil || got != ":0" {
		t.Fatalf("DBSIZE after restart = %q, %v; want :0", got, err)
	}
}
