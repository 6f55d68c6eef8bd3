package app_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/app"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/config"
)

// Every instance in this package logs (at debug level) into one buffer, which
// TestMain searches for every token and secret the fake authorization servers
// handed out once all tests have run.
var (
	logs     testenv.LogBuffer
	fakesMu  sync.Mutex
	allFakes []*propelauthfake.Server
)

func TestMain(m *testing.M) {
	redis.SetLogger(redisconn.DriverLogger(testLogger("go-redis")))
	code := m.Run()
	if code == 0 {
		code = checkLogsForSecrets()
	}
	os.Exit(code)
}

func checkLogsForSecrets() int {
	fakesMu.Lock()
	ran := len(allFakes) > 0
	fakesMu.Unlock()
	if !ran {
		return 0 // only benchmarks ran (-run with no match)
	}
	captured := logs.String()
	if !strings.Contains(captured, `"msg":"authz serving"`) || !strings.Contains(captured, `"msg":"authorize"`) {
		fmt.Fprintln(os.Stderr, "log capture check: the captured log lacks the expected lines; is logging wired?")
		return 1
	}
	fakesMu.Lock()
	defer fakesMu.Unlock()
	n := 0
	for _, as := range allFakes {
		for _, s := range as.Secrets() {
			n++
			if strings.Contains(captured, s) {
				fmt.Fprintf(os.Stderr, "log capture check: a token or secret (%.8s...) appears in the logs\n", s)
				return 1
			}
		}
	}
	if n < 20 {
		fmt.Fprintf(os.Stderr, "log capture check: only %d secrets were checked; the tests should mint more\n", n)
		return 1
	}
	return 0
}

func testLogger(name string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", name)
}

// newAS starts a fake PropelAuth whose secrets the log check will look for.
func newAS(t testing.TB) *propelauthfake.Server {
	t.Helper()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	fakesMu.Lock()
	allFakes = append(allFakes, as)
	fakesMu.Unlock()
	return as
}

// resourceURL is the protected resource the tests' tokens are issued for.
const resourceURL = "http://127.0.0.1:8000/mcp"

type instance struct {
	*app.App
	// addr is the gRPC listen address; client is a plaintext client of it.
	addr     string
	client   authzv1.AuthzServiceClient
	health   healthpb.HealthClient
	httpBase string
	stop     func()
}

// env returns a configuration environment for an instance talking to as and, if
// redisURL is not empty, to Redis. Entries of extra override it.
func env(as *propelauthfake.Server, redisURL string, extra map[string]string) func(string) string {
	e := map[string]string{
		"PROPELAUTH_AUTH_URL":              as.AuthURL(),
		"REQUEST_VALIDATION_CLIENT_ID":     as.ClientID,
		"REQUEST_VALIDATION_CLIENT_SECRET": as.ClientSecret,
		"PROPELAUTH_API_KEY":               as.APIKey,
		"REDIS_URL":                        redisURL,
		"AUTHZ_LISTEN":                     "127.0.0.1:0",
		"AUTHZ_METRICS_LISTEN":             "127.0.0.1:0",
		"SCOPE_HIERARCHY":                  "admin=read:user_data,read:org_data;read:user_data=read:profile",
		"INTROSPECTION_TIMEOUT":            "500ms",
		// Generous: tests here count introspections and L2 hits exactly, and CI runs
		// every package at once on two cores, where a first Redis dial has taken
		// over the 100ms default. Outage tests stop Redis, which fails fast.
		"REDIS_TIMEOUT": "2s",
	}
	for k, v := range extra {
		e[k] = v
	}
	return func(k string) string { return e[k] }
}

// start runs an authz instance on loopback ports with the given environment and
// a real gRPC client connected to it; both stop when the test ends.
func start(t testing.TB, name string, getenv func(string) string) *instance {
	t.Helper()
	return startWithLogger(t, name, getenv, testLogger(name))
}

func startWithLogger(t testing.TB, name string, getenv func(string) string, logger *slog.Logger) *instance {
	t.Helper()
	return startWithOptions(t, name, getenv, logger, nil)
}

// startWithOptions is start with a logger and, if mod is not nil, app options
// changed by mod.
func startWithOptions(t testing.TB, name string, getenv func(string) string, logger *slog.Logger, mod func(*app.Options)) *instance {
	t.Helper()
	cfg, err := config.Load(getenv)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	o := app.Options{
		Logger:           logger,
		UserRetryBackoff: 5 * time.Millisecond,
		UserMaxRetryWait: 20 * time.Millisecond,
		RedisBackoff:     100 * time.Millisecond,
		ShutdownTimeout:  time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	a, err := app.New(cfg, o)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, gl, hl) }()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			defer conn.Close()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("instance %s did not stop", name)
			}
		})
	}
	t.Cleanup(stop)
	inst := &instance{
		App:      a,
		addr:     gl.Addr().String(),
		client:   authzv1.NewAuthzServiceClient(conn),
		health:   healthpb.NewHealthClient(conn),
		httpBase: "http://" + hl.Addr().String(),
		stop:     stop,
	}
	waitHTTP(t, inst.httpBase+"/readyz")
	return inst
}

// waitSubscribed waits until every instance has subscribed to the Redis
// invalidation channel. The subscription comes up after start returns and, on
// coming up, drops L1 (messages before it may have been missed): a test that
// counts cache hits or introspections, or publishes invalidations, must not race it.
func waitSubscribed(t testing.TB, insts ...*instance) {
	t.Helper()
	waitSubscriptions(t, 1, insts...)
}

// waitSubscriptions waits until every instance has (re)subscribed n times in
// all, as counted by its L1 flushes.
func waitSubscriptions(t testing.TB, n float64, insts ...*instance) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("every replica to subscribe to invalidations %v time(s)", n), func() bool {
		for _, inst := range insts {
			if testutil.ToFloat64(inst.Metrics.L1Flushes) < n {
				return false
			}
		}
		return true
	})
}

func waitHTTP(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}

func authorizeReq(token string, scopes ...string) *authzv1.AuthorizeRequest {
	return &authzv1.AuthorizeRequest{Token: token, Resource: resourceURL, RequiredScopes: scopes}
}

func hexKey(inst *instance, tok string) string {
	k := inst.Tokens().Key(tok)
	return hex.EncodeToString(k[:])
}
