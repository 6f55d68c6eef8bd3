package testenv

import (
	"bufio"
	"net"
	"testing"
	"time"
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

func TestRedisPauseResume(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	// A paused server accepts the connection (the kernel does) but never answers.
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatalf("paused server answered %q", line)
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Do(t.Context(), "PING"); err != nil || got != "+PONG" {
		t.Fatalf("PING after Resume = %q, %v; want +PONG", got, err)
	}
	r.Stop()
	if err := r.Pause(); err == nil {
		t.Error("Pause of a stopped server succeeded")
	}
}
