// Package stacktest starts the real stack the gateway's tests run against: a
// private redis-server, the devauth authorization server (test API on,
// auto-approving alice@example.com), the authz binary, and the gateway itself
// in-process on a loopback listener.
//
// A test package starts one shared [Stack] in TestMain with [Main] and its
// tests and benchmarks use it; a test that must break something (stop authz,
// inject faults into devauth) starts its own pieces with [NewDevauth],
// [NewAuthz] and [NewGateway], which clean up after the test.
package stacktest

import (
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/decisioncache"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
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

// Start starts redis, devauth, authz and a gateway with default settings. The
// caller must Close the stack.
func Start() (s *Stack, err error) {
	s = &Stack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "mcp-gateway-stack-")
	if err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { os.RemoveAll(dir) })
	if s.Redis, err = testenv.NewRedis(dir); err != nil {
		return nil, fmt.Errorf("starting redis: %w", err)
	}
	s.stops = append(s.stops, s.Redis.Stop)
	var stop func()
	if s.Devauth, stop, err = startDevauth(); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, stop)
	if s.Authz, stop, err = startAuthz(s.Devauth.URL, s.Redis.URL(), nil); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, stop)
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
	// URL is its base URL (PROPELAUTH_AUTH_URL), e.g. http://127.0.0.1:9000.
	URL string
}

// Issuer is devauth's issuer identifier.
func (d *Devauth) Issuer() string { return d.URL + "/oauth/2.1" }

func startDevauth() (*Devauth, func(), error) {
	bin, err := testenv.BuildBinary("devauth")
	if err != nil {
		return nil, nil, err
	}
	port, err := testenv.FreePort()
	if err != nil {
		return nil, nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	url := "http://" + addr
	p, err := testenv.NewProcess("devauth", bin, testenv.ProcessOptions{
		Env: []string{
			"DEVAUTH_LISTEN=" + addr,
			"PROPELAUTH_AUTH_URL=" + url,
			"REQUEST_VALIDATION_CLIENT_ID=" + ClientID,
			"REQUEST_VALIDATION_CLIENT_SECRET=" + ClientSecret,
			"PROPELAUTH_API_KEY=" + APIKey,
			"DEVAUTH_AUTO_APPROVE=" + AliceEmail,
			"DEVAUTH_TEST_API=true",
			"LOG_LEVEL=info",
		},
		ReadyURL:     url + "/healthz",
		ReadyTimeout: startupWait,
	})
	if err != nil {
		if p != nil {
			p.Stop()
		}
		return nil, nil, err
	}
	return &Devauth{Proc: p, URL: url}, p.Stop, nil
}

// NewDevauth starts a devauth of tb's own (e.g. to inject faults) and stops it
// when tb ends.
func NewDevauth(tb testing.TB) *Devauth {
	tb.Helper()
	d, stop, err := startDevauth()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stop()
		if tb.Failed() {
			tb.Logf("--- devauth output ---\n%s", d.Proc.Output())
		}
	})
	return d
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
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats(tb).Introspections < n {
		if time.Now().After(deadline) {
			tb.Fatalf("devauth saw fewer than %d introspections after 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

func startAuthz(devauthURL, redisURL string, extraEnv []string) (*Authz, func(), error) {
	bin, err := testenv.BuildBinary("authz")
	if err != nil {
		return nil, nil, err
	}
	grpcPort, err := testenv.FreePort()
	if err != nil {
		return nil, nil, err
	}
	metricsPort, err := testenv.FreePort()
	if err != nil {
		return nil, nil, err
	}
	a := &Authz{
		Addr:       fmt.Sprintf("127.0.0.1:%d", grpcPort),
		MetricsURL: fmt.Sprintf("http://127.0.0.1:%d", metricsPort),
	}
	env := []string{
		"AUTHZ_LISTEN=" + a.Addr,
		"AUTHZ_METRICS_LISTEN=" + strings.TrimPrefix(a.MetricsURL, "http://"),
		"PROPELAUTH_AUTH_URL=" + devauthURL,
		"REQUEST_VALIDATION_CLIENT_ID=" + ClientID,
		"REQUEST_VALIDATION_CLIENT_SECRET=" + ClientSecret,
		"PROPELAUTH_API_KEY=" + APIKey,
		"LOG_LEVEL=info",
	}
	if redisURL != "" {
		env = append(env, "REDIS_URL="+redisURL)
	}
	p, err := testenv.NewProcess("authz", bin, testenv.ProcessOptions{
		Env:          append(env, extraEnv...),
		ReadyURL:     a.MetricsURL + "/healthz",
		ReadyTimeout: startupWait,
	})
	if err != nil {
		if p != nil {
			p.Stop()
		}
		return nil, nil, err
	}
	a.Proc = p
	return a, p.Stop, nil
}

// NewAuthz starts an authz of tb's own against devauth (and redisURL, if not
// empty) and stops it when tb ends. extraEnv adds or overrides variables.
func NewAuthz(tb testing.TB, d *Devauth, redisURL string, extraEnv ...string) *Authz {
	tb.Helper()
	a, stop, err := startAuthz(d.URL, redisURL, extraEnv)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stop()
		if tb.Failed() {
			tb.Logf("--- authz output ---\n%s", a.Proc.Output())
		}
	})
	return a
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	az, err := authzclient.New(cfg.AuthzAddr, authzclient.Options{Timeout: cfg.AuthzTimeout, Observe: m.ObserveAuthz, TLS: cfg.AuthzTLS})
	if err != nil {
		closeListeners()
		return nil, nil, err
	}
	var limiter *ratelimit.Limiter
	if cfg.RateLimit.Enabled() {
		if limiter, err = ratelimit.New(ratelimit.Options{Limit: cfg.RateLimit, RedisURL: cfg.RedisURL, Logger: logger, Metrics: m}); err != nil {
			closeListeners()
			az.Close()
			return nil, nil, err
		}
	}
	gw, err := gateway.New(gateway.Options{Config: cfg, Authz: az, Logger: logger, Metrics: m, RateLimiter: limiter, Tools: tools.BuiltIn(),
		Invalidations: func(ctx context.Context) (decisioncache.Stream, error) { return az.WatchInvalidations(ctx) }})
	if err != nil {
		closeListeners()
		az.Close()
		return nil, nil, err
	}
	// As in main: the public listener drains first, the operational one after.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	served := gateway.LimitConnections(ln, cfg.MaxConnections)
	opsCtx, stopOps := context.WithCancel(context.Background())
	opsDone := make(chan error, 1)
	if opsLn == nil {
		go func() { done <- gateway.Serve(ctx, served, gw.OneHandler(), logger, 5*time.Second) }()
		opsDone <- nil
	} else {
		go func() { done <- gateway.Serve(ctx, served, gw, logger, 5*time.Second) }()
		go func() { opsDone <- gateway.Serve(opsCtx, opsLn, gw.OpsHandler(), logger, time.Second) }()
	}
	// As in main: the watcher outlives the drain.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); gw.Watch(watchCtx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "stacktest: gateway:", err)
		}
		stopOps()
		if err := <-opsDone; err != nil {
			fmt.Fprintln(os.Stderr, "stacktest: gateway operational listener:", err)
		}
		stopWatch()
		<-watched
		az.Close()
		if limiter != nil {
			limiter.Close()
		}
	})
	return &Gateway{URL: cfg.ServerURL, Addr: ln.Addr().String(), MetricsURL: metricsURL, Config: cfg, Metrics: m, logs: logs, stop: stop}, stop, nil
}

// NewGateway starts a gateway of tb's own talking to authzAddr, with env
// overriding the defaults (MCP_SERVER_URL is its own loopback URL), and stops
// it when tb ends.
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
