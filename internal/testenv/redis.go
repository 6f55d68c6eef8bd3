// Package testenv starts the real services that tests across this repository need,
// such as a private redis-server on a free loopback port.
//
// Nothing here skips: a missing dependency fails the test with a message saying how
// to install it, because `make test` installs it first.
package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server (or redis-sentinel) process owned by one test (or
// one test package).
type Redis struct {
	// Addr is host:port of the server.
	Addr string

	bin  string
	dir  string
	port int
	opts RedisOptions
	// conf, if set, is a configuration file passed before the other
	// arguments (redis-sentinel needs one it can rewrite).
	conf string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// RedisOptions configure a redis-server started by [StartRedisWith] or
// [NewRedisWith]. The zero value is a plain server: no TLS, no password.
type RedisOptions struct {
	// Args are extra redis-server arguments, such as "--cluster-enabled",
	// "yes". The port, bind address, working directory, log file and
	// persistence (off) are set already.
	Args []string
	// TLS, if set, makes the server speak only TLS on its port (rediss://).
	TLS *RedisTLS
	// User and Password, if set, are an ACL user allowed everything; the
	// default user is then disabled, so every client must authenticate.
	User, Password string
}

// RedisTLS are the PEM files of a TLS server. Clients are not asked for a
// certificate (tls-auth-clients no).
type RedisTLS struct {
	CertFile, KeyFile, CAFile string
}

// URL returns a redis:// URL for database 0 of the server: rediss:// with
// TLS, with the ACL user and password when set.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr, Path: "/0"}
	if r.opts.TLS != nil {
		u.Scheme = "rediss"
	}
	if r.opts.User != "" {
		u.User = url.UserPassword(r.opts.User, r.opts.Password)
	}
	return u.String()
}

// Port returns the server's port.
func (r *Redis) Port() int { return r.port }

// Dir returns the server's working directory, which holds its log
// (redis.log) and any files it writes.
func (r *Redis) Dir() string { return r.dir }

// RedisServerPath returns the redis-server binary to use: $REDIS_SERVER if set, else
// the one on PATH.
func RedisServerPath() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found on PATH: run `make test` (it installs the Debian package redis-server) or `apt-get install -y redis-server`")
	}
	return p, nil
}

// StartRedis starts a private redis-server with persistence off on a free loopback
// port and stops it when tb ends. It fails tb if the server cannot start.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	return StartRedisWith(tb, RedisOptions{})
}

// StartRedisWith is [StartRedis] with options.
func StartRedisWith(tb testing.TB, o RedisOptions) *Redis {
	tb.Helper()
	r, err := NewRedisWith(tb.TempDir(), o)
	if err != nil {
		tb.Fatalf("starting redis-server: %v", err)
	}
	tb.Cleanup(r.Stop)
	return r
}

// NewRedis starts a redis-server whose working files live in dir. The caller must
// call Stop. It is for TestMain, where no testing.TB exists yet.
//
// redis-server cannot listen on port 0 and report the port, so its port is
// picked free with [FreePort]; should another process bind it first, the
// start is retried on another port.
func NewRedis(dir string) (*Redis, error) { return NewRedisWith(dir, RedisOptions{}) }

// NewRedisWith is [NewRedis] with options.
func NewRedisWith(dir string, o RedisOptions) (*Redis, error) {
	bin, err := RedisServerPath()
	if err != nil {
		return nil, err
	}
	return startOnFreePort(func(port int) *Redis {
		return &Redis{bin: bin, dir: dir, port: port, opts: o, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	})
}

// startOnFreePort starts the server newServer describes for a port picked
// free, trying another port when that one was taken meanwhile.
func startOnFreePort(newServer func(port int) *Redis) (*Redis, error) {
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		r := newServer(port)
		err = r.Start()
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == 5 {
			return nil, err
		}
	}
}

// errAddrInUse is returned by [Redis.Start] when the port was taken.
var errAddrInUse = errors.New("address already in use")

// args returns the server's command line after the binary.
func (r *Redis) args(logPath string) []string {
	var a []string
	if r.conf != "" {
		a = append(a, r.conf)
	}
	port := strconv.Itoa(r.port)
	if r.opts.TLS != nil {
		a = append(a, "--port", "0", "--tls-port", port,
			"--tls-cert-file", r.opts.TLS.CertFile,
			"--tls-key-file", r.opts.TLS.KeyFile,
			"--tls-ca-cert-file", r.opts.TLS.CAFile,
			"--tls-auth-clients", "no")
	} else {
		a = append(a, "--port", port)
	}
	a = append(a, "--bind", "127.0.0.1", "--dir", r.dir, "--logfile", logPath)
	if r.conf == "" { // a sentinel keeps nothing on disk but its configuration
		a = append(a, "--save", "", "--appendonly", "no")
	}
	if r.opts.User != "" {
		a = append(a,
			"--user", r.opts.User, "on", ">"+r.opts.Password, "~*", "&*", "+@all",
			"--user", "default", "off")
	}
	return append(a, r.opts.Args...)
}

// Start (re)starts the server on its original port and waits until it answers PING.
// Starting a running server is an error.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("redis-server already running")
	}
	logPath := filepath.Join(r.dir, "redis.log")
	_ = os.Remove(logPath) // so that a failure's log is this start's
	cmd := exec.Command(r.bin, r.args(logPath)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", r.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.ping()
		if err == nil {
			break
		}
		select {
		case <-exited:
		default:
			if time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			_ = cmd.Process.Kill()
			<-exited
		}
		logTail, _ := os.ReadFile(logPath)
		if strings.Contains(string(logTail), "Address already in use") {
			return fmt.Errorf("redis-server on %s: %w", r.Addr, errAddrInUse)
		}
		return fmt.Errorf("%s on %s did not answer PING: %v\n%s", filepath.Base(r.bin), r.Addr, err, logTail)
	}
	r.cmd, r.exited = cmd, exited
	return nil
}

// Stop kills the server (as a crash would) and waits for it to exit. Stopping a
// stopped server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// Pid returns the server's process ID, or 0 when it is not running.
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Pause freezes the server (SIGSTOP), as a host that stops answering would:
// connections are accepted by the kernel and stay open, but nothing is
// answered until Resume. It returns an error if the server is not running.
func (r *Redis) Pause() error { return r.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT). It returns an error if the
// server is not running.
func (r *Redis) Resume() error { return r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig os.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New("redis-server is not running")
	}
	return r.cmd.Process.Signal(sig)
}

// Do sends one command and returns the first reply line, for
// tests that want to look inside Redis without a client library (e.g. "DBSIZE").
// It speaks TLS and authenticates as the server requires.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	c, rd, err := r.dial(ctx, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return command(c, rd, args...)
}

// dial connects to the server, over TLS and authenticated when it needs
// that, with a deadline timeout from now on the connection.
func (r *Redis) dial(ctx context.Context, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: min(timeout, 200*time.Millisecond)}
	c, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if r.opts.TLS != nil {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(r.opts.TLS.CAFile)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		pool.AppendCertsFromPEM(pem)
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, nil, err
		}
		c = tc
	}
	rd := bufio.NewReader(c)
	if r.opts.User != "" {
		line, err := command(c, rd, "AUTH", r.opts.User, r.opts.Password)
		if err == nil && line != "+OK" {
			err = fmt.Errorf("AUTH: %s", line)
		}
		if err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, rd, nil
}

// command sends one command on c, as a RESP array so that any argument
// (a password with spaces) goes through intact, and returns the first line
// of the reply, read from rd.
func command(c net.Conn, rd *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	line, err := rd.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// ping returns nil if the server answers PING within a second.
func (r *Redis) ping() error {
	c, rd, err := r.dial(context.Background(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	line, err := command(c, rd, "PING")
	if err != nil {
		return err
	}
	if line != "+PONG" {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// PingRedis sends PING to the Redis server at addr and returns nil if it answers
// PONG within a second, for code that starts a redis-server without [NewRedis].
func PingRedis(addr string) error {
	return (&Redis{Addr: addr}).ping()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for a
// process the test starts and that must listen on a port known in advance.
//
// The port is drawn at random from 10000 up to the start of the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), not from port 0: a port the kernel hands out
// for a listener on :0 comes from the range it also uses for the local end of
// outgoing connections, so between this function closing it and the child
// binding it, any connection made by any test process on the machine (the CI
// runs every package at once) can take it, and the child fails with "address
// already in use". No outgoing connection is given a port below the range.
func FreePort() (int, error) { return FreePortOn("127.0.0.1") }

// FreePortOn is [FreePort] for a loopback address other than 127.0.0.1.
func FreePortOn(host string) (int, error) {
	lo, hi := 10000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 0, 0 // an unusual range: fall back to the kernel's choice
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
			if handedOut.ports[port] {
				// Handed out before and perhaps not bound yet: a test often
				// picks all its ports before starting the processes.
				continue
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free TCP port on %s after 100 attempts", host)
}

// handedOut is every port FreePortOn has returned in this process, never
// returned again.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// ephemeralLow is the first port of the kernel's ephemeral range, or 32768
// (Linux's default) when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
