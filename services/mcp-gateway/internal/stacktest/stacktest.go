// Package stacktest starts the real stack the gateway's tests run against: a
// private redis-server, the devauth authorization server (test API on,
// auto-approving alice@example.com) and the authz binary, started as
// processes by internal/stack, and the gateway itself in-process on a
// loopback listener, so that its tests see its metrics and count in its
// coverage. The gateway is assembled and started by package startup, as
// cmd/mcp-gateway does it.
//
// A test package starts one shared [Stack] in TestMain with [Main] and its
// tests and benchmarks use it; a test that must break something (stop authz,
// inject faults into devauth) starts its own pieces with [NewDevauth],
// [NewAuthz] and [NewGateway], which clean up after the test.
package stacktest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/startup"
)

// Seeded devauth users (package seedusers).
const (
	AliceEmail  = seedusers.AliceEmail
	AliceID     = seedusers.AliceID
	AcmeOrgID   = seedusers.AcmeOrgID
	BobEmail    = seedusers.BobEmail
	BobID       = seedusers.BobID
	ClientID    = "introspection-client"
	startupWait = 30 * time.Second
)

// Secrets are random per run so that a leak check can look for them in logs.
var (
	APIKey       = "test-api-key-" + rand.Text()
	ClientSecret = "test-client-secret-" + rand.Text()
)

// Stack is a running set of services.
type Stack struct {
	Redis   *testenv.Redis
	Devauth *Devauth
	Authz   *Authz
	Gateway *Gateway

	procs *stack.Stack
	stops []func()
}

// Main starts the shared stack for a test package, points *s at it, runs the
// tests and benchmarks, and stops the stack. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(stacktest.Main(m, &stack)) }
//
// It returns 1 without running anything when the stack cannot start.
func Main(m *testing.M, s **Stack) int {
	st, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stacktest:", err)
		return 1
	}
	*s = st
	code := m.Run()
	st.Close()
	return code
}

// options are the processes' settings: the shared credentials, and devauth
// approving alice without pages.
func options() stack.Options {
	return stack.Options{
		Credentials:  stack.Credentials{APIKey: APIKey, ClientID: ClientID, ClientSecret: ClientSecret},
		DevauthEnv:   []string{"DEVAUTH_AUTO_APPROVE=" + AliceEmail},
		ReadyTimeout: startupWait,
	}
}

// Start starts redis, devauth, authz and a gateway with default settings. The
// caller must Close the stack.
func Start() (_ *Stack, err error) {
	// s is not the named result: "return nil, err" must not nil it before
	// the deferred Close runs.
	s := &Stack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	o := options()
	o.Redis, o.Authz = true, 1
	// On error stack.Start returns what it started so far, to Close.
	s.procs, err = stack.Start(context.Background(), o)
	if s.procs != nil {
		s.stops = append(s.stops, s.procs.Close)
	}
	if err != nil {
		return nil, err
	}
	s.Redis = s.procs.Redis
	s.Devauth = &Devauth{Proc: s.procs.Devauth.Proc, URL: s.procs.Devauth.URL, procs: s.procs}
	s.Authz = newAuthz(s.procs.Authz[0])
	var stop func()
	if s.Gateway, stop, err = startGateway(s.Authz.Addr, s.Devauth.URL, nil); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, stop)
	return s, nil
}

// Close stops everything Start started, in reverse order.
func (s *Stack) Close() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

// Devauth is a running devauth.
type Devauth struct {
	Proc *testenv.Process
	// URL is its base URL (PROPELAUTH_AUTH_URL), e.g. http://localhost:9000.
	URL string

	procs *stack.Stack // the stack it is part of, to add authz replicas to
}

// Issuer is devauth's issuer identifier.
func (d *Devauth) Issuer() string { return d.URL + "/oauth/2.1" }

// NewDevauth starts a devauth of tb's own (e.g. to inject faults) and stops it
// when tb ends.
func NewDevauth(tb testing.TB) *Devauth {
	tb.Helper()
	s := stack.New(tb, options())
	return &Devauth{Proc: s.Devauth.Proc, URL: s.Devauth.URL, procs: s}
}

// MintRequest is the body of devauth's POST /dev/tokens.
type MintRequest struct {
	UserID    string   `json:"user_id,omitempty"`
	Email     string   `json:"email,omitempty"`
	Scopes    []string `json:"scopes"`
	Resource  string   `json:"resource"`
	ClientID  string   `json:"client_id,omitempty"`
	ExpiresIn *int64   `json:"expires_in,omitempty"`
}

// Mint returns a fresh access token from devauth's test API.
func (d *Devauth) Mint(tb testing.TB, req MintRequest) string {
	tb.Helper()
	var res struct {
		AccessToken string `json:"access_token"`
	}
	if err := d.call(http.MethodPost, "/dev/tokens", req, &res); err != nil {
		tb.Fatalf("minting a token: %v", err)
	}
	if res.AccessToken == "" {
		tb.Fatal("devauth minted an empty token")
	}
	return res.AccessToken
}

// Fault sets devauth's fault mode ("ok", "error500", "garbage", "hang", "down").
func (d *Devauth) Fault(tb testing.TB, mode string, latencyMS int) {
	tb.Helper()
	if err := d.call(http.MethodPost, "/dev/faults", map[string]any{"mode": mode, "latency_ms": latencyMS}, nil); err != nil {
		tb.Fatalf("setting devauth fault %q: %v", mode, err)
	}
}

// Stats are devauth's request counters.
type Stats struct {
	Introspections int64 `json:"introspections"`
	UserFetches    int64 `json:"user_fetches"`
	TokensIssued   int64 `json:"tokens_issued"`
}

// Stats returns devauth's counters since start or the last reset.
func (d *Devauth) Stats(tb testing.TB) Stats {
	tb.Helper()
	var s Stats
	if err := d.call(http.MethodGet, "/dev/stats", nil, &s); err != nil {
		tb.Fatalf("reading devauth stats: %v", err)
	}
	return s
}

// WaitIntrospections waits up to 10s until devauth has received at least n
// introspection requests (counted on arrival, before any injected latency), so
// a test knows a request is in flight.
func (d *Devauth) WaitIntrospections(tb testing.TB, n int64) {
	tb.Helper()
	testenv.Eventually(tb, 10*time.Second, fmt.Sprintf("devauth to see %d introspections", n), func() bool { return d.Stats(tb).Introspections >= n })
}

func (d *Devauth) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+APIKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Authz is a running authz.
type Authz struct {
	Proc *testenv.Process
	// Addr is its gRPC address; MetricsURL the base URL of its metrics port.
	Addr       string
	MetricsURL string
}

func newAuthz(a *stack.Service) *Authz {
	return &Authz{Proc: a.Proc, Addr: a.Addr, MetricsURL: a.MetricsURL}
}

// NewAuthz starts an authz of tb's own against devauth (and redisURL, if not
// empty) and stops it when tb ends. extraEnv adds or overrides variables
// (AUTHZ_LISTEN=<an address> starts it where another one was).
func NewAuthz(tb testing.TB, d *Devauth, redisURL string, extraEnv ...string) *Authz {
	tb.Helper()
	var env []string
	if redisURL != "" {
		env = append(env, "REDIS_URL="+redisURL)
	}
	return newAuthz(d.procs.AddAuthz(tb, "authz", append(env, extraEnv...)...))
}

// Gateway is an in-process gateway serving on a loopback listener.
type Gateway struct {
	// URL is its base URL (MCP_SERVER_URL); the MCP endpoint is URL + "/mcp".
	URL string
	// Addr is the loopback address it listens on; URL points there unless
	// MCP_SERVER_URL was overridden (as behind a reverse proxy).
	Addr string
	// MetricsURL is the base URL of its operational listener
	// (MCP_METRICS_LISTEN, a loopback port of its own): /metrics, /healthz,
	// /readyz.
	MetricsURL string
	Config     config.Config
	Metrics    *metrics.Metrics

	logs *testenv.LogBuffer
	stop func()
}

// Stop shuts the gateway down, draining in-flight requests. Stopping twice is
// harmless.
func (g *Gateway) Stop() { g.stop() }

// MCP is the MCP endpoint.
func (g *Gateway) MCP() string { return g.URL + "/mcp" }

// Logs returns everything the gateway logged so far (JSON lines).
func (g *Gateway) Logs() string { return g.logs.String() }

func startGateway(authzAddr, devauthURL string, env map[string]string) (*Gateway, func(), error) {
	// MCP_LISTEN in env: where a test needs to know the gateway's URL
	// before it starts (an upstream verifying its assertions).
	ln, err := net.Listen("tcp", cmp.Or(env["MCP_LISTEN"], "127.0.0.1:0"))
	if err != nil {
		return nil, nil, err
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	url := "http://" + ln.Addr().String()
	vars := map[string]string{
		"MCP_LISTEN":          ln.Addr().String(),
		"MCP_METRICS_LISTEN":  opsLn.Addr().String(),
		"MCP_SERVER_URL":      url,
		"AUTHZ_ADDR":          authzAddr,
		"PROPELAUTH_AUTH_URL": devauthURL,
		"LOG_LEVEL":           "info",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		ln.Close()
		opsLn.Close()
		return nil, nil, err
	}
	metricsURL := "http://" + opsLn.Addr().String()
	if cfg.OneListener() {
		opsLn.Close()
		opsLn, metricsURL = nil, "http://"+ln.Addr().String()
	}
	closeListeners := func() {
		ln.Close()
		if opsLn != nil {
			opsLn.Close()
		}
	}
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	m := metrics.New()
	// As in main, AUDIT_LOG (a file path here: stdout is the test binary's)
	// is opened before anything else and closed after everything else.
	var auditLog *audit.Logger
	if cfg.AuditLog != "" {
		if auditLog, err = audit.Open(cfg.AuditLog, audit.Options{Logger: logger, Dropped: m.AuditDropped}); err != nil {
			closeListeners()
			return nil, nil, err
		}
	}
	az, err := authzclient.New(cfg.AuthzAddr, authzclient.Options{Timeout: cfg.AuthzTimeout, Observe: m.ObserveAuthz, TLS: cfg.AuthzTLS})
	if err != nil {
		closeListeners()
		auditLog.Close()
		return nil, nil, err
	}
	var limiter *ratelimit.Limiter
	if cfg.RateLimit.Enabled() {
		if limiter, err = ratelimit.New(ratelimit.Options{Limit: cfg.RateLimit, RedisURL: cfg.RedisURL, Logger: logger, Metrics: m}); err != nil {
			closeListeners()
			az.Close()
			auditLog.Close()
			return nil, nil, err
		}
	}
	// What main runs: the upstreams, the gateway and its listeners, in
	// package startup's order.
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := startup.Start(ctx, startup.Options{Config: cfg, Logger: logger, Metrics: m, Authz: az, RateLimiter: limiter, Audit: auditLog,
		Listener: gateway.LimitConnections(ln, cfg.MaxConnections), OpsListener: opsLn, Drain: 5 * time.Second, OpsDrain: time.Second})
	if err != nil {
		cancel()
		az.Close()
		auditLog.Close()
		if limiter != nil {
			limiter.Close()
		}
		return nil, nil, err
	}
	stop := sync.OnceFunc(func() {
		cancel()
		if err := srv.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "stacktest: gateway:", err)
		}
		az.Close()
		if limiter != nil {
			limiter.Close()
		}
		if err := auditLog.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stacktest: gateway audit log:", err)
		}
	})
	return &Gateway{URL: cfg.ServerURL, Addr: ln.Addr().String(), MetricsURL: metricsURL, Config: cfg, Metrics: m, logs: logs, stop: stop}, stop, nil
}

// NewGateway starts a gateway of tb's own talking to authzAddr, with env
// overriding the defaults (MCP_SERVER_URL is its own loopback URL), and stops
// it when tb ends. With AUDIT_LOG (a file path) in env, the file is complete
// once [Gateway.Stop] returns.
func NewGateway(tb testing.TB, authzAddr, devauthURL string, env map[string]string) *Gateway {
	tb.Helper()
	g, stop, err := startGateway(authzAddr, devauthURL, env)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stop()
		if tb.Failed() {
			tb.Logf("--- gateway logs ---\n%s", g.Logs())
		}
	})
	return g
}

// ErrNoCode is returned by [AutoApprove] when devauth does not redirect back
// with a code.
var ErrNoCode = errors.New("authorization did not redirect back with a code")

// TryGateway starts a gateway as [NewGateway] does and returns the error
// that kept it from starting (such as a bad UPSTREAMS_FILE), or nil after
// stopping it again.
func TryGateway(authzAddr, devauthURL string, env map[string]string) error {
	_, stop, err := startGateway(authzAddr, devauthURL, env)
	if err != nil {
		return err
	}
	stop()
	return nil
}
