package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startBaseline serves the same tools from a plain go-sdk server with the same
// options and no authorization: a fixed caller (alice, with her user, as authz
// returned them once) is put in every request's TokenInfo, so who_am_i does the
// same work as behind the gateway and the difference measured is the gateway's
// own cost (body parsing, the authz round trip, metrics).
func startBaseline(b *testing.B, token string) string {
	b.Helper()
	az, err := authzclient.New(stack.Authz.Addr, authzclient.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer az.Close()
	res, err := az.Authorize(b.Context(), &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP(), RequiredScopes: []string{scopeUser}, IncludeUser: true})
	if err != nil || !res.GetAllowed() {
		b.Fatalf("Authorize: %v %v", res, err)
	}
	c := caller.New(res.GetPrincipal(), []string{scopeUser}, nil)
	c.User, c.UserRequested = res.GetUser(), true

	s := mcp.NewServer(&mcp.Implementation{Name: "baseline", Version: "1.0.0"}, nil)
	tools.BuiltIn().Install(s, &tools.Env{}, tools.InstallOptions{})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	fixed := auth.RequireBearerToken(func(context.Context, string, *http.Request) (*auth.TokenInfo, error) {
		return c.TokenInfo(), nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(h)
	srv := httptest.NewServer(fixed)
	b.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// BenchmarkWhoAmI compares an authenticated tools/call who_am_i through the
// gateway (token cached by authz), and through a gateway with
// DECISION_CACHE_TTL=1s, with the baseline, at 4 and 32 concurrent clients, in
// one run. It reports throughput, p50/p99 latency and, for the gateways, their
// throughput as a fraction of the baseline's (x-baseline).
func BenchmarkWhoAmI(b *testing.B) {
	token := mint(b, []string{scopeUser})
	baseline := startBaseline(b, token)
	cached := stacktest.NewGateway(b, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"DECISION_CACHE_TTL": "1s"})
	cachedToken := stack.Devauth.Mint(b, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: cached.MCP()})
	throughput := map[string]float64{}
	for _, clients := range []int{4, 32} {
		for _, target := range []struct{ name, url, token string }{
			{"baseline", baseline, token},
			{"gateway", stack.Gateway.MCP(), token},
			{"gateway-decision-cache", cached.MCP(), cachedToken},
		} {
			b.Run(fmt.Sprintf("%s/clients=%d", target.name, clients), func(b *testing.B) {
				ops := benchCalls(b, target.url, target.token, clients)
				throughput[fmt.Sprint(target.name, clients)] = ops
				if base := throughput[fmt.Sprint("baseline", clients)]; target.name != "baseline" && base > 0 {
					b.ReportMetric(ops/base, "x-baseline")
				}
			})
		}
	}
}

// cpuTime is the CPU time used so far by this process (load generator,
// baseline server and in-process gateway) plus the authz process: at
// saturation, throughput is inversely proportional to it, and unlike
// throughput it does not depend on what else the machine is running.
func cpuTime(b *testing.B) (self, authz time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", stack.Authz.Proc.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 12th and 13th of those, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return self, time.Duration(utime+stime) * 10 * time.Millisecond
}

// benchCalls runs b.N tools/call who_am_i requests from clients goroutines and
// returns the throughput in requests per second.
func benchCalls(b *testing.B, url, token string, clients int) float64 {
	transport := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`)
	do := func() error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	for range clients { // warm the connection pool and authz's cache
		if err := do(); err != nil {
			b.Fatal(err)
		}
	}
	self0, authz0 := cpuTime(b)
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((clients + procs - 1) / procs)
	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			if err := do(); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	ops := float64(b.N) / b.Elapsed().Seconds()
	self1, authz1 := cpuTime(b)
	b.ReportMetric(float64((self1-self0+authz1-authz0).Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64((authz1-authz0).Microseconds())/float64(b.N), "authz-cpu-µs/op")
	if len(all) > 0 {
		slices.Sort(all)
		pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
		b.ReportMetric(pct(0.50), "p50-µs")
		b.ReportMetric(pct(0.99), "p99-µs")
	}
	b.ReportMetric(ops, "req/s")
	return ops
}
