// Package stack starts the whole system as processes, for tests and for the
// load tool: a private redis-server, devauth (its test API on), authz
// replicas and gateways, each waited for until ready.
//
// No port is guessed. Every binary listens on 127.0.0.1:0 and the launcher
// reads the address it bound from its "listening" log line
// ([testenv.Process.Listening]); only redis-server, which cannot report a
// port it chose, gets one picked free by testenv. devauth and the first
// gateway leave PROPELAUTH_AUTH_URL and MCP_SERVER_URL unset, so their
// public URLs are http://localhost:<port bound>; the other gateways serve
// the first one's URL, as replicas behind one load balancer do.
//
// In a test, [New] starts a stack that stops when the test ends; the load
// tool, which is not a test, uses [Start] and [Stack.Close].
package stack

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Options describes the stack to start. The zero value is devauth alone.
type Options struct {
	// Redis starts a private redis-server and gives its URL to every authz
	// replica.
	Redis bool
	// Authz is the number of authz replicas.
	Authz int
	// Gateways is the number of gateways. Gateway i talks to replica i mod
	// Authz, or with Balance to all of them.
	Gateways int
	// Balance has every gateway reach every replica through one gRPC target,
	// as dns:///authz:50051 does in production: the replicas listen on the
	// same port of 127.0.0.1, 127.0.0.2, ... and a DNS server of the stack
	// names them all. Without it each replica is on a port of its own on
	// 127.0.0.1.
	Balance bool
	// DevauthEnv, AuthzEnv and GatewayEnv are extra KEY=VALUE settings of
	// every process of that kind; they override the stack's own.
	DevauthEnv, AuthzEnv, GatewayEnv []string
	// Credentials devauth and authz share; zero fields get random values.
	Credentials Credentials
	// BinDir holds the binaries; empty, [testenv.BuildBinary] finds or builds
	// them ($MCPAUTHZ_BIN_DIR, or go build).
	BinDir string
	// Dir, when set, receives every process's output as <name>.log and
	// Redis's files; otherwise they live in a temporary directory.
	Dir string
	// ReadyTimeout bounds each process's start; 30s when zero.
	ReadyTimeout time.Duration
	// Pprof sets PPROF_LISTEN=127.0.0.1:0 for devauth, authz and the
	// gateways: binaries built by bench/profiling/build.sh serve
	// net/http/pprof there and log its address ([Service.PprofAddr]).
	Pprof bool
}

// Credentials are the secrets devauth and authz share.
type Credentials struct {
	// APIKey is PROPELAUTH_API_KEY: the user API's key, and the test API's.
	APIKey string
	// ClientID and ClientSecret are the introspection client's
	// (REQUEST_VALIDATION_CLIENT_ID and _SECRET).
	ClientID, ClientSecret string
}

// Env returns the variables that hand the credentials to a binary.
func (c Credentials) Env() []string {
	return []string{
		"REQUEST_VALIDATION_CLIENT_ID=" + c.ClientID,
		"REQUEST_VALIDATION_CLIENT_SECRET=" + c.ClientSecret,
		"PROPELAUTH_API_KEY=" + c.APIKey,
	}
}

// Secrets returns the credentials' secrets, for checking that no log holds one.
func (c Credentials) Secrets() []string { return []string{c.APIKey, c.ClientSecret} }

// Service is a started binary.
type Service struct {
	// Name names the process in logs and errors: devauth, authz-1,
	// mcp-gateway (mcp-gateway-1, ... when there are several).
	Name string
	Proc *testenv.Process
	// Env is the environment it was started with (besides PATH and HOME).
	Env []string
	// Addr is the address its main listener bound (DEVAUTH_LISTEN,
	// AUTHZ_LISTEN, MCP_LISTEN).
	Addr string
	// URL is its public base URL: devauth's PROPELAUTH_AUTH_URL (its issuer
	// is URL + "/oauth/2.1"), a gateway's MCP_SERVER_URL; "" for authz.
	URL string
	// MetricsURL is the base URL of its operational listener
	// (AUTHZ_METRICS_LISTEN, MCP_METRICS_LISTEN; devauth's own): /metrics,
	// /healthz, /readyz.
	MetricsURL string
	// PprofAddr is where it serves net/http/pprof, with [Options.Pprof] and a
	// profiling build; "" otherwise.
	PprofAddr string
}

// Stack is a running set of processes.
type Stack struct {
	// Options are those it was started with, credentials filled in.
	Options Options
	// Redis is the shared redis-server, or nil.
	Redis   *testenv.Redis
	Devauth *Service
	Authz   []*Service
	// AuthzTarget is the gRPC target covering every replica, with Balance;
	// else the first replica's address. "" without authz.
	AuthzTarget string
	Gateways    []*Service
	// Resource is the protected resource every gateway serves (the first
	// gateway's MCP_SERVER_URL + "/mcp"), which tokens are minted for; ""
	// without a gateway.
	Resource string

	dir  string
	bins map[string]string
	dns  *DNS

	mu    sync.Mutex
	logs  map[string]bool // log files in use
	procs []*testenv.Process
	stops []func()
}

// New starts a stack for tb and stops it when tb ends, logging every
// process's output if tb failed. It fails tb if the stack cannot start.
func New(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	s, err := Start(tb.Context(), opts)
	if s != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				s.logOutputs(tb)
			}
			s.Close()
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *Stack) logOutputs(tb testing.TB) {
	for _, p := range s.Processes() {
		tb.Logf("--- output of %s ---\n%s", p.Name, p.Output())
	}
}

// Start starts the stack: Redis, devauth, the authz replicas, the gateways,
// each waited for until ready. The caller must Close it. On error, it
// returns the stack started so far (to Close; Processes shows what ran) with
// the error.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	c := &opts.Credentials
	if c.APIKey == "" {
		c.APIKey = "stack-api-key-" + rand.Text()
	}
	if c.ClientID == "" {
		c.ClientID = "stack-introspection-client"
	}
	if c.ClientSecret == "" {
		c.ClientSecret = "stack-client-secret-" + rand.Text()
	}
	s := &Stack{Options: opts, dir: opts.Dir, bins: map[string]string{}, logs: map[string]bool{}}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "mcpauthz-stack-")
		if err != nil {
			return nil, err
		}
		s.dir = d
		s.stops = append(s.stops, func() { os.RemoveAll(d) })
	}
	if err := s.start(ctx); err != nil {
		return s, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context) error {
	o := s.Options
	if o.Authz < 0 || o.Gateways < 0 || (o.Gateways > 0 && o.Authz == 0) {
		return fmt.Errorf("stack: %d authz replicas for %d gateways", o.Authz, o.Gateways)
	}
	if o.Redis {
		dir := filepath.Join(s.dir, "redis")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		r, err := testenv.NewRedis(dir)
		if err != nil {
			return fmt.Errorf("starting redis-server: %w", err)
		}
		s.Redis = r
		s.stops = append(s.stops, r.Stop)
	}
	d, err := s.startDevauth(ctx)
	if err != nil {
		return err
	}
	s.Devauth = d
	if o.Authz > 0 {
		if o.Balance {
			err = s.startBalanced(ctx, o.Authz)
		} else {
			for i := range o.Authz {
				var a *Service
				if a, err = s.StartAuthz(ctx, fmt.Sprintf("authz-%d", i+1), s.redisEnv()...); err != nil {
					break
				}
				s.Authz = append(s.Authz, a)
			}
			if err == nil {
				s.AuthzTarget = s.Authz[0].Addr
			}
		}
		if err != nil {
			return err
		}
	}
	for i := range o.Gateways {
		name := "mcp-gateway"
		if o.Gateways > 1 {
			name = fmt.Sprintf("mcp-gateway-%d", i+1)
		}
		target := s.AuthzTarget
		if !o.Balance {
			target = s.Authz[i%len(s.Authz)].Addr
		}
		var env []string
		if s.Resource != "" {
			env = append(env, "MCP_SERVER_URL="+strings.TrimSuffix(s.Resource, "/mcp"))
		}
		g, err := s.startGateway(ctx, name, target, env...)
		if err != nil {
			return err
		}
		if s.Resource == "" {
			s.Resource = g.URL + "/mcp"
		}
		s.Gateways = append(s.Gateways, g)
	}
	return nil
}

// bin returns the path of one of the binaries.
func (s *Stack) bin(name string) (string, error) {
	if p, ok := s.bins[name]; ok {
		return p, nil
	}
	p, err := Binary(s.Options.BinDir, name)
	if err != nil {
		return "", err
	}
	s.bins[name] = p
	return p, nil
}

// Binary returns the path of the named binary (one [testenv.BuildBinary]
// knows): in binDir when it is set, which must hold it (`make build`), else
// built from source by [testenv.BuildBinary].
func Binary(binDir, name string) (string, error) {
	if binDir == "" {
		return testenv.BuildBinary(name)
	}
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run `make build`", p)
	}
	return p, nil
}

// run starts binary as process name with env and waits until it listens on
// every variable of listeners, returning the addresses bound in that order.
// The caller stops the process (it is returned, if started, with any error).
func (s *Stack) run(ctx context.Context, name, binary string, env []string, listeners ...string) (*testenv.Process, []string, error) {
	bin, err := s.bin(binary)
	if err != nil {
		return nil, nil, err
	}
	if s.Options.Pprof {
		env = append(env, "PPROF_LISTEN=127.0.0.1:0")
	}
	s.mu.Lock()
	logFile := filepath.Join(s.dir, name+".log")
	for i := 2; s.logs[logFile]; i++ {
		logFile = filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", name, i))
	}
	s.logs[logFile] = true
	s.mu.Unlock()
	p, err := testenv.NewProcess(name, bin, testenv.ProcessOptions{Env: env, LogFile: logFile})
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.Options.ReadyTimeout)
	defer cancel()
	addrs := make([]string, len(listeners))
	for i, l := range listeners {
		if addrs[i], err = p.Listening(ctx, l); err != nil {
			return p, nil, err
		}
	}
	return p, addrs, nil
}

// ready polls url until it answers 200, within the ready timeout left.
func (s *Stack) ready(p *testenv.Process, url string) error {
	if err := p.WaitReady(url, s.Options.ReadyTimeout); err != nil {
		return fmt.Errorf("%s: %w\n%s", p.Name, err, p.Output())
	}
	return nil
}

func (s *Stack) pprof(ctx context.Context, p *testenv.Process) string {
	if !s.Options.Pprof {
		return ""
	}
	// A build without the profiling overlay never logs one: don't wait.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addr, _ := p.Listening(ctx, "PPROF_LISTEN")
	return addr
}

func (s *Stack) startDevauth(ctx context.Context) (*Service, error) {
	env := append([]string{"DEVAUTH_LISTEN=127.0.0.1:0", "DEVAUTH_TEST_API=true"}, s.Options.Credentials.Env()...)
	env = append(env, s.Options.DevauthEnv...)
	p, addrs, err := s.run(ctx, "devauth", "devauth", env, "DEVAUTH_LISTEN")
	s.stopWith(p)
	if err != nil {
		return nil, err
	}
	d := &Service{Name: "devauth", Proc: p, Env: env, Addr: addrs[0], MetricsURL: "http://" + addrs[0]}
	// PROPELAUTH_AUTH_URL's default, unless DevauthEnv set it.
	d.URL = "http://localhost:" + port(d.Addr)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PROPELAUTH_AUTH_URL="); ok {
			d.URL = strings.TrimRight(v, "/")
		}
	}
	if err := s.ready(p, d.MetricsURL+"/healthz"); err != nil {
		return nil, err
	}
	d.PprofAddr = s.pprof(ctx, p)
	return d, nil
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// StartAuthz starts another authz replica named name against the stack's
// devauth, with the stack's AuthzEnv and then env (which may set
// AUTHZ_LISTEN, 127.0.0.1:0 by default, or REDIS_URL: the stack's Redis is
// not given to it unasked). It is not in [Stack.Authz] nor behind
// [Stack.AuthzTarget]; it stops with the stack.
func (s *Stack) StartAuthz(ctx context.Context, name string, env ...string) (*Service, error) {
	a, err := s.startAuthz(ctx, name, env)
	if a != nil {
		s.mu.Lock()
		s.stops = append(s.stops, a.Proc.Stop)
		s.mu.Unlock()
	}
	return a, err
}

// AddAuthz is [Stack.StartAuthz] for a test that adds a replica to a stack
// it shares with others: the replica stops when tb ends, and its output is
// logged if tb failed. It fails tb if the replica cannot start.
func (s *Stack) AddAuthz(tb testing.TB, name string, env ...string) *Service {
	tb.Helper()
	a, err := s.startAuthz(tb.Context(), name, env)
	if a != nil {
		tb.Cleanup(func() {
			a.Proc.Stop()
			if tb.Failed() {
				tb.Logf("--- output of %s ---\n%s", a.Name, a.Proc.Output())
			}
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// startAuthz starts a replica; on error the *Service, if not nil, holds the
// process to stop.
func (s *Stack) startAuthz(ctx context.Context, name string, env []string) (*Service, error) {
	e := append([]string{
		"AUTHZ_LISTEN=127.0.0.1:0",
		"AUTHZ_METRICS_LISTEN=127.0.0.1:0",
		"PROPELAUTH_AUTH_URL=" + s.Devauth.URL,
	}, s.Options.Credentials.Env()...)
	e = append(append(e, s.Options.AuthzEnv...), env...)
	p, addrs, err := s.run(ctx, name, "authz", e, "AUTHZ_LISTEN", "AUTHZ_METRICS_LISTEN")
	if p == nil {
		return nil, err
	}
	a := &Service{Name: name, Proc: p, Env: e}
	if err != nil {
		return a, err
	}
	a.Addr, a.MetricsURL = addrs[0], "http://"+addrs[1]
	if err := s.ready(p, a.MetricsURL+"/healthz"); err != nil {
		return a, err
	}
	a.PprofAddr = s.pprof(ctx, p)
	return a, nil
}

// redisEnv hands the stack's Redis, if any, to a replica of the stack.
func (s *Stack) redisEnv() []string {
	if s.Redis == nil {
		return nil
	}
	return []string{"REDIS_URL=" + s.Redis.URL()}
}

// startBalanced starts n replicas on the same port of 127.0.0.1,
// 127.0.0.2, ...: the first on port 0, the others on the port it bound. That
// port can be taken on another address; then they all start again.
func (s *Stack) startBalanced(ctx context.Context, n int) error {
	for attempt := 1; ; attempt++ {
		var replicas []*Service
		var err error
		var p string
		for i := range n {
			env := s.redisEnv()
			if i > 0 {
				env = append(env, "AUTHZ_LISTEN="+net.JoinHostPort(fmt.Sprintf("127.0.0.%d", i+1), p))
			}
			var a *Service
			if a, err = s.StartAuthz(ctx, fmt.Sprintf("authz-%d", i+1), env...); err != nil {
				break
			}
			p = port(a.Addr)
			replicas = append(replicas, a)
		}
		if err == nil {
			s.Authz = replicas
			break
		}
		for _, a := range replicas {
			a.Proc.Stop()
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
	}
	var ips []netip.Addr
	for _, a := range s.Authz {
		ap, err := netip.ParseAddrPort(a.Addr)
		if err != nil {
			return err
		}
		ips = append(ips, ap.Addr())
	}
	d, err := StartDNS(ips...)
	if err != nil {
		return err
	}
	s.dns = d
	s.stops = append(s.stops, func() { d.Close() })
	n64, _ := strconv.Atoi(port(s.Authz[0].Addr))
	s.AuthzTarget = d.Target("authz.stack.test", n64)
	return nil
}

// startGateway starts a gateway talking to authzTarget.
func (s *Stack) startGateway(ctx context.Context, name, authzTarget string, env ...string) (*Service, error) {
	e := []string{
		"MCP_LISTEN=127.0.0.1:0",
		"MCP_METRICS_LISTEN=127.0.0.1:0",
		"AUTHZ_ADDR=" + authzTarget,
		"PROPELAUTH_AUTH_URL=" + s.Devauth.URL,
	}
	e = append(append(e, env...), s.Options.GatewayEnv...)
	p, addrs, err := s.run(ctx, name, "mcp-gateway", e, "MCP_LISTEN", "MCP_METRICS_LISTEN")
	s.stopWith(p)
	if err != nil {
		return nil, err
	}
	g := &Service{Name: name, Proc: p, Env: e, Addr: addrs[0], MetricsURL: "http://" + addrs[1]}
	// MCP_SERVER_URL's default, unless set.
	g.URL = "http://localhost:" + port(g.Addr)
	for _, kv := range e {
		if v, ok := strings.CutPrefix(kv, "MCP_SERVER_URL="); ok {
			g.URL = strings.TrimRight(v, "/")
		}
	}
	// /readyz answers 200 once the gateway reaches authz.
	if err := s.ready(p, g.MetricsURL+"/readyz"); err != nil {
		return nil, err
	}
	g.PprofAddr = s.pprof(ctx, p)
	return g, nil
}

// stopWith has p, if not nil, stopped when the stack closes.
func (s *Stack) stopWith(p *testenv.Process) {
	if p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops = append(s.stops, p.Stop)
}

// Processes returns every process the stack started, in start order
// (Redis, which testenv runs on its own, is not one).
func (s *Stack) Processes() []*testenv.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*testenv.Process(nil), s.procs...)
}

// Close stops everything, the last started first. It is safe on a partly
// started stack and more than once.
func (s *Stack) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	stops := s.stops
	s.stops = nil
	s.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}
