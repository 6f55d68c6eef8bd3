package testenv

import (
	"bufio"
	"errors"
	"net"
	"strconv"
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

// TestFreePortBelowEphemeralRange: FreePort's ports can be bound, and none comes
// from the range outgoing connections draw from (where another process could
// take it before the child binds it).
func TestFreePortBelowEphemeralRange(t *testing.T) {
	t.Parallel()
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if port >= low || port < 1024 {
			t.Fatalf("FreePort = %d, want in [1024, %d)", port, low)
		}
		seen[port] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d from FreePort cannot be bound: %v", port, err)
		}
		l.Close()
	}
	if len(seen) != 20 {
		t.Errorf("20 calls returned %d distinct ports; want no port twice (a test picks all its ports before binding them)", len(seen))
	}
}

// TestRedisBusyPort: a port taken before redis-server binds it is reported
// as such, which NewRedis retries on another port.
func TestRedisBusyPort(t *testing.T) {
	t.Parallel()
	bin, err := RedisServerPath()
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	port := busy.Addr().(*net.TCPAddr).Port
	r := &Redis{bin: bin, dir: t.TempDir(), port: port, Addr: busy.Addr().String()}
	if err := r.Start(); !errors.Is(err, errAddrInUse) {
		r.Stop()
		t.Fatalf("Start on a busy port: %v, want errAddrInUse", err)
	}
	if pid := r.Pid(); pid != 0 {
		t.Errorf("Pid of a server that did not start = %d", pid)
	}
	ok := StartRedis(t)
	if ok.Pid() == 0 {
		t.Error("Pid of a running server = 0")
	}
}
