package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcpauthz/mcpauthz/bench/internal/devauth"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Local credentials shared by devauth and authz; test values, not secrets.
const (
	apiKey       = "faults-api-key"
	clientID     = "faults-validation"
	clientSecret = "faults-validation-secret"
	aliceEmail   = seedusers.AliceEmail
	scopeUser    = "read:user_data"
)

// options describes the processes a test starts.
type options struct {
	// replicas is the number of authz replicas (0, 1 or more). Several
	// replicas listen on 127.0.0.1:P, 127.0.0.2:P, ... and the gateways reach
	// them all through the stack's DNS shim, as they reach replicas behind one
	// name in production (dns:/// round robin).
	replicas int
	// gateways is the number of gateways; all serve one public resource URL
	// (the first gateway's), as behind one load balancer.
	gateways int
	// redis gives every replica a shared private redis-server.
	redis bool
	// authzEnv and gatewayEnv are extra KEY=VALUE settings.
	authzEnv, gatewayEnv []string
	// decisionCache keeps the gateway's decision cache on, as shipped. Off,
	// the gateway asks authz on every request (DECISION_CACHE_TTL=0): most
	// tests here follow authz's behaviour under the gateway's calls, which a
	// decision answered without authz would hide.
	decisionCache bool
}

// cluster is a running set of processes, stopped when the test ends.
type cluster struct {
	t           *testing.T
	stack       *stack.Stack
	redis       *testenv.Redis
	devauthURL  string
	dev         *devauth.Client
	resource    string
	authzTarget string
	authz       []*replica
	gateways    []*gatewayProc

	mu     sync.Mutex
	minted []string
}

type replica struct {
	name       string
	addr       string
	metricsURL string
	env        []string
	proc       *testenv.Process
	client     authzv1.AuthzServiceClient
}

type gatewayProc struct {
	url        string
	metricsURL string // MCP_METRICS_LISTEN: /metrics, /healthz, /readyz
	proc       *testenv.Process
}

// mcp returns the gateway's MCP endpoint.
func (g *gatewayProc) mcp() string { return g.url + "/mcp" }

// startCluster starts devauth (test API on), the authz replicas and the
// gateways with internal/stack, each waited for until ready.
func startCluster(t *testing.T, o options) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection under load takes about a minute: go test without -short (make test) runs it")
	}
	gatewayEnv := o.gatewayEnv
	if !o.decisionCache {
		gatewayEnv = append([]string{"DECISION_CACHE_TTL=0"}, gatewayEnv...)
	}
	s := stack.New(t, stack.Options{
		Redis: o.redis, Authz: o.replicas, Balance: o.replicas > 1, Gateways: o.gateways,
		AuthzEnv: o.authzEnv, GatewayEnv: gatewayEnv,
		Credentials: stack.Credentials{APIKey: apiKey, ClientID: clientID, ClientSecret: clientSecret},
	})
	c := &cluster{t: t, stack: s, redis: s.Redis, devauthURL: s.Devauth.URL, resource: s.Resource, authzTarget: s.AuthzTarget}
	c.dev = &devauth.Client{BaseURL: c.devauthURL, APIKey: apiKey}
	if c.resource == "" {
		c.resource = "http://127.0.0.1:8000/mcp"
	}
	for _, a := range s.Authz {
		c.authz = append(c.authz, c.replica(a))
	}
	for _, g := range s.Gateways {
		c.gateways = append(c.gateways, &gatewayProc{url: "http://" + g.Addr, metricsURL: g.MetricsURL, proc: g.Proc})
	}
	t.Cleanup(c.checkLogs)
	return c
}

// replica opens a direct connection (not balanced) to a started replica,
// for probes.
func (c *cluster) replica(a *stack.Service) *replica {
	c.t.Helper()
	conn, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return &replica{name: a.Name, addr: a.Addr, metricsURL: a.MetricsURL, env: a.Env, proc: a.Proc, client: authzv1.NewAuthzServiceClient(conn)}
}

// startReplica starts one more authz (not behind the gateways), with extra
// settings.
func (c *cluster) startReplica(name string, extra ...string) *replica {
	c.t.Helper()
	return c.replica(c.stack.AddAuthz(c.t, name, extra...))
}

// checkLogs fails the test if any process logged a token it minted: fault
// paths (errors, retries, timeouts) are where a token most easily slips
// into a log line.
func (c *cluster) checkLogs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.stack.Processes() {
		out := p.Output()
		for _, tok := range c.minted {
			if strings.Contains(out, tok) {
				c.t.Errorf("%s logged a raw access token (%.8s...)", p.Name, tok)
				return
			}
		}
	}
}

// mint mints one token for alice with read:user_data on the cluster's
// resource; expiresIn nil means devauth's default (an hour).
func (c *cluster) mint(t *testing.T, expiresIn *int64) string {
	t.Helper()
	tok, err := c.dev.Mint(t.Context(), devauth.TokenRequest{Email: aliceEmail, Scopes: []string{scopeUser}, Resource: c.resource, ExpiresIn: expiresIn})
	if err != nil {
		t.Fatal(err)
	}
	c.remember(tok)
	return tok
}

// mintN mints n tokens like mint.
func (c *cluster) mintN(t *testing.T, n int) []string {
	t.Helper()
	toks, err := c.dev.MintMany(t.Context(), n, 4, func(int) devauth.TokenRequest {
		return devauth.TokenRequest{Email: aliceEmail, Scopes: []string{scopeUser}, Resource: c.resource}
	})
	if err != nil {
		t.Fatal(err)
	}
	c.remember(toks...)
	return toks
}

func (c *cluster) remember(toks ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.minted = append(c.minted, toks...)
}

// fault sets devauth's fault mode ("ok", "error500", "garbage", "hang",
// "down") and latency for introspection and the user API.
func (c *cluster) fault(t *testing.T, mode string, latency time.Duration) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"mode": mode, "latency_ms": latency.Milliseconds()})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.devauthURL+"/dev/faults", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /dev/faults %s: %s", body, res.Status)
	}
}

// introspections returns devauth's introspection count.
func (c *cluster) introspections(t *testing.T) int64 {
	t.Helper()
	s, err := c.dev.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s.Introspections
}

// revoke revokes tok at devauth (RFC 7009) as the request-validation client.
func (c *cluster) revoke(t *testing.T, tok string) {
	t.Helper()
	if err := c.revokeErr(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
}

// revokeErr is revoke returning its error, for use outside the test's
// goroutine.
func (c *cluster) revokeErr(ctx context.Context, tok string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.devauthURL+"/oauth/2.1/revoke", strings.NewReader("token="+tok))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke: %s", res.Status)
	}
	return nil
}

// authorize asks replica r about tok for the cluster's resource.
func (c *cluster) authorize(ctx context.Context, r *replica, tok string) (*authzv1.AuthorizeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return r.client.Authorize(ctx, &authzv1.AuthorizeRequest{Token: tok, Resource: c.resource, RequiredScopes: []string{scopeUser}})
}

// mustAllow fails t unless r allows tok.
func (c *cluster) mustAllow(t *testing.T, r *replica, tok string) {
	t.Helper()
	res, err := c.authorize(t.Context(), r, tok)
	if err != nil || !res.GetAllowed() {
		t.Fatalf("%s: Authorize = %v, %v; want allowed", r.name, res, err)
	}
}

// reply is a gateway's answer to one who_am_i call.
type reply struct {
	status int
	header http.Header
	// outcome labels the answer as the load tool does ("ok", "http 503", ...).
	outcome string
	elapsed time.Duration
}

// callBody is a who_am_i tools/call as an MCP client of protocol 2026-07-28
// sends it (the load tool's request).
var callBody = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"` + target.ProtocolVersion + `","io.modelcontextprotocol/clientInfo":{"name":"faults","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`

var probeClient = &http.Client{Timeout: 10 * time.Second}

// call sends one who_am_i to a gateway with tok and returns what came back.
func call(ctx context.Context, g *gatewayProc, tok string) reply {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.mcp(), strings.NewReader(callBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", target.ProtocolVersion)
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "who_am_i")
	req.Header.Set("Authorization", "Bearer "+tok)
	start := time.Now()
	res, err := probeClient.Do(req)
	if err != nil {
		return reply{outcome: "transport: " + err.Error(), elapsed: time.Since(start)}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	r := reply{status: res.StatusCode, header: res.Header, elapsed: time.Since(start)}
	switch {
	case res.StatusCode != http.StatusOK:
		r.outcome = "http " + strconv.Itoa(res.StatusCode)
	case bytes.Contains(b, []byte(`"error":{`)) || bytes.Contains(b, []byte(`"isError":true`)):
		r.outcome = "error result"
	case !bytes.Contains(b, []byte(`"user":{`)):
		r.outcome = "no user"
	default:
		r.outcome = load.OK
	}
	return r
}

// mcpOp returns the load tool's who_am_i request against g, with tokens from
// src and a keep-alive connection per worker.
func mcpOp(g *gatewayProc, conc int, src interface{ Next() (string, bool) }) *target.MCPCall {
	return &target.MCPCall{URL: g.mcp(), Client: target.NewHTTPClient(conc), Tokens: src}
}

// event is something a test does at an offset into a load run.
type event struct {
	at time.Duration
	do func()
}

// runLoad runs op with conc workers for d (after a short warm-up) and fires
// events at their offsets from the start of the measured phase. It returns
// when the load and every event are done.
func runLoad(ctx context.Context, conc int, warmup, d time.Duration, op load.Op, events ...event) load.Result {
	var wg sync.WaitGroup
	res := load.Run(ctx, load.Options{
		Concurrency: conc,
		Warmup:      warmup,
		Duration:    d,
		OnMeasure: func() {
			start := time.Now()
			wg.Go(func() {
				for _, e := range events {
					if w := time.Until(start.Add(e.at)); w > 0 {
						select {
						case <-time.After(w):
						case <-ctx.Done():
							return
						}
					}
					e.do()
				}
			})
		},
	}, op)
	wg.Wait()
	return res
}

// summary renders a load result for logs: requests, outcomes, latencies.
func summary(r load.Result) string {
	return fmt.Sprintf("%d requests in %v at %d clients, outcomes %v, p50 %v p99 %v max %v",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.Concurrency, r.Outcomes,
		r.Latency.Quantile(0.5).Round(10*time.Microsecond), r.Latency.Quantile(0.99).Round(10*time.Microsecond), r.Latency.Max().Round(10*time.Microsecond))
}

// metric sums the samples of name whose labels contain every one of parts,
// from a Prometheus text exposition at base+"/metrics". A counter vector
// with no sample yet counts as 0.
func metric(t *testing.T, base, name string, parts ...string) float64 {
	t.Helper()
	sum, err := sumMetric(base, name, parts...)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// authzCalls sums the authz.v1 calls (not health checks) a replica has
// served, from its /metrics; unlike metric, it may run outside the test's
// goroutine.
func authzCalls(metricsURL string) (float64, error) {
	return sumMetric(metricsURL, "authz_grpc_requests_total", `method="/authz.v1.`)
}

func sumMetric(base, name string, parts ...string) (float64, error) {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("reading %s/metrics: %w", base, err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := "", strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "{") {
			var ok bool
			labels, value, ok = strings.Cut(rest[1:], "} ")
			if !ok {
				continue
			}
		}
		match := true
		for _, p := range parts {
			if !strings.Contains(labels, p) {
				match = false
			}
		}
		if !match {
			continue
		}
		value, _, _ = strings.Cut(value, " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s/metrics: %w", base, err)
	}
	return sum, nil
}

// countFDs counts the open file descriptors (sockets included) of process pid.
func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(ents), err
}

// openFDs is countFDs failing t on error.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	n, err := countFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ptr[T any](v T) *T { return &v }
