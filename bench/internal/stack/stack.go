package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Credentials the started devauth and authz share. They are local test
// values, never real secrets.
const (
	APIKey             = "mcpload-api-key"
	ValidationClientID = "mcpload-validation"
	validationSecret   = "mcpload-validation-secret"
)

// Options describes the stack to start.
type Options struct {
	// BinDir holds authz, mcp-gateway and devauth (`make build` writes bin/).
	BinDir string
	// Replicas is the number of authz replicas, 1 or 2. Two replicas share
	// Redis (if any) and the gateway balances over both.
	Replicas int
	// Redis starts a private redis-server and gives its URL to every replica;
	// without it authz uses only its in-process cache.
	Redis bool
	// AuthzEnv and GatewayEnv are extra KEY=VALUE settings (e.g. CACHE_TTL=60s).
	AuthzEnv, GatewayEnv []string
	// Dir receives the processes' logs and Redis's files.
	Dir string
	// ReadyTimeout bounds each process's start; 30s when zero.
	ReadyTimeout time.Duration
	// Pprof gives devauth, authz and the gateway PPROF_LISTEN (a free loopback
	// port), which binaries built by bench/profiling/build.sh serve
	// net/http/pprof on; see [Process.PprofAddr].
	Pprof bool
}

// Stack is a running set of services.
type Stack struct {
	// DevauthURL is devauth's base URL (also PROPELAUTH_AUTH_URL).
	DevauthURL string
	// GatewayURL is the gateway's base URL; the MCP endpoint is GatewayURL+"/mcp".
	GatewayURL string
	// GatewayMetrics is the base URL of the gateway's operational listener
	// (MCP_METRICS_LISTEN): /metrics, /healthz, /readyz.
	GatewayMetrics string
	// Resource is the protected resource tokens are minted for.
	Resource string
	// AuthzTarget is the gRPC target covering every replica (what the gateway
	// uses as AUTHZ_ADDR).
	AuthzTarget string
	// AuthzAddrs are the replicas' own gRPC addresses, in start order.
	AuthzAddrs []string
	// AuthzMetrics are the replicas' metrics base URLs (/metrics, /healthz).
	AuthzMetrics []string
	// RedisAddr is host:port of Redis, or "" without Redis.
	RedisAddr string

	Devauth *Process
	Authz   []*Process
	Gateway *Process
	redis   *Process
	dns     *DNS
}

// Start starts the stack: Redis (if asked), devauth, the authz replicas, the
// gateway, each waited for until ready. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Replicas < 1 || opts.Replicas > 2 {
		return nil, fmt.Errorf("stack: %d authz replicas; 1 or 2 are supported", opts.Replicas)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	bin := func(name string) (string, error) {
		p := filepath.Join(opts.BinDir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s is missing: run `make build` (or pass -bin)", p)
		}
		return p, nil
	}
	devauthBin, err := bin("devauth")
	if err != nil {
		return nil, err
	}
	authzBin, err := bin("authz")
	if err != nil {
		return nil, err
	}
	gatewayBin, err := bin("mcp-gateway")
	if err != nil {
		return nil, err
	}

	// pprofEnv returns the PPROF_LISTEN setting of one process and its address.
	pprofEnv := func() ([]string, string) {
		if !opts.Pprof {
			return nil, ""
		}
		port, perr := freePort("127.0.0.1")
		if perr != nil {
			return nil, ""
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		return []string{"PPROF_LISTEN=" + addr}, addr
	}

	s = &Stack{}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()

	if opts.Redis {
		if err := s.startRedis(opts.Dir); err != nil {
			return s, err
		}
	}

	// devauth
	port, err := freePort("127.0.0.1")
	if err != nil {
		return s, err
	}
	s.DevauthURL = "http://127.0.0.1:" + strconv.Itoa(port)
	penv, paddr := pprofEnv()
	s.Devauth, err = startProcess("devauth", devauthBin, append([]string{
		"DEVAUTH_LISTEN=127.0.0.1:" + strconv.Itoa(port),
		"PROPELAUTH_AUTH_URL=" + s.DevauthURL,
		"REQUEST_VALIDATION_CLIENT_ID=" + ValidationClientID,
		"REQUEST_VALIDATION_CLIENT_SECRET=" + validationSecret,
		"PROPELAUTH_API_KEY=" + APIKey,
		"DEVAUTH_TEST_API=true",
	}, penv...), opts.Dir)
	if err != nil {
		return s, err
	}
	s.Devauth.PprofAddr = paddr
	if err := s.Devauth.waitReady(ctx, s.DevauthURL+"/healthz", opts.ReadyTimeout); err != nil {
		return s, err
	}

	// authz replicas: 127.0.0.1:P, 127.0.0.2:P (same port, see DNS).
	hosts := []string{"127.0.0.1", "127.0.0.2"}[:opts.Replicas]
	grpcPort, err := freePortOn(hosts...)
	if err != nil {
		return s, err
	}
	for i, host := range hosts {
		mport, err := freePort("127.0.0.1")
		if err != nil {
			return s, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(grpcPort))
		env := []string{
			"AUTHZ_LISTEN=" + addr,
			"AUTHZ_METRICS_LISTEN=127.0.0.1:" + strconv.Itoa(mport),
			"PROPELAUTH_AUTH_URL=" + s.DevauthURL,
			"REQUEST_VALIDATION_CLIENT_ID=" + ValidationClientID,
			"REQUEST_VALIDATION_CLIENT_SECRET=" + validationSecret,
			"PROPELAUTH_API_KEY=" + APIKey,
		}
		if s.RedisAddr != "" {
			env = append(env, "REDIS_URL=redis://"+s.RedisAddr+"/0")
		}
		env = append(env, opts.AuthzEnv...)
		penv, paddr := pprofEnv()
		p, err := startProcess("authz-"+strconv.Itoa(i+1), authzBin, append(env, penv...), opts.Dir)
		if err != nil {
			return s, err
		}
		p.PprofAddr = paddr
		s.Authz = append(s.Authz, p)
		s.AuthzAddrs = append(s.AuthzAddrs, addr)
		murl := "http://127.0.0.1:" + strconv.Itoa(mport)
		s.AuthzMetrics = append(s.AuthzMetrics, murl)
		if err := p.waitReady(ctx, murl+"/healthz", opts.ReadyTimeout); err != nil {
			return s, err
		}
	}
	s.AuthzTarget = s.AuthzAddrs[0]
	if opts.Replicas > 1 {
		var ips []netip.Addr
		for _, h := range hosts {
			ips = append(ips, netip.MustParseAddr(h))
		}
		if s.dns, err = StartDNS(ips...); err != nil {
			return s, err
		}
		s.AuthzTarget = s.dns.Target("authz.mcpload.test", grpcPort)
	}

	// gateway
	gport, err := freePort("127.0.0.1")
	if err != nil {
		return s, err
	}
	s.GatewayURL = "http://127.0.0.1:" + strconv.Itoa(gport)
	s.Resource = s.GatewayURL + "/mcp"
	mport, err := freePort("127.0.0.1")
	if err != nil {
		return s, err
	}
	s.GatewayMetrics = "http://127.0.0.1:" + strconv.Itoa(mport)
	env := append([]string{
		"MCP_LISTEN=127.0.0.1:" + strconv.Itoa(gport),
		"MCP_METRICS_LISTEN=127.0.0.1:" + strconv.Itoa(mport),
		"MCP_SERVER_URL=" + s.GatewayURL,
		"AUTHZ_ADDR=" + s.AuthzTarget,
		"PROPELAUTH_AUTH_URL=" + s.DevauthURL,
	}, opts.GatewayEnv...)
	penv, paddr = pprofEnv()
	s.Gateway, err = startProcess("mcp-gateway", gatewayBin, append(env, penv...), opts.Dir)
	if err != nil {
		return s, err
	}
	s.Gateway.PprofAddr = paddr
	if err := s.Gateway.waitReady(ctx, s.GatewayMetrics+"/readyz", opts.ReadyTimeout); err != nil {
		return s, err
	}
	return s, nil
}

// Close stops every process (gateway first, Redis last). It is safe on a
// partly started stack and more than once.
func (s *Stack) Close() {
	if s == nil {
		return
	}
	if s.Gateway != nil {
		s.Gateway.Stop()
	}
	for _, p := range s.Authz {
		p.Stop()
	}
	if s.Devauth != nil {
		s.Devauth.Stop()
	}
	if s.redis != nil {
		s.redis.Stop()
	}
	if s.dns != nil {
		_ = s.dns.Close()
		s.dns = nil
	}
}

// redisServer returns the redis-server to run: $REDIS_SERVER, else PATH's.
func redisServer() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found on PATH: `make test-deps` installs it (Debian package redis-server)")
	}
	return p, nil
}

// startRedis starts a private redis-server, persistence off, as
// internal/testenv does, and waits until it answers PING.
func (s *Stack) startRedis(dir string) error {
	bin, err := redisServer()
	if err != nil {
		return err
	}
	port, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return err
	}
	s.RedisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.redis, err = startProcess("redis", bin, nil, dir,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", rdir)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := testenv.PingRedis(s.RedisAddr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING: %v; log: %s", s.RedisAddr, err, s.redis.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Processes returns every service process of the stack, by name.
func (s *Stack) Processes() []*Process {
	var out []*Process
	if s.Gateway != nil {
		out = append(out, s.Gateway)
	}
	out = append(out, s.Authz...)
	if s.Devauth != nil {
		out = append(out, s.Devauth)
	}
	if s.redis != nil {
		out = append(out, s.redis)
	}
	return out
}
