package scenario

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

// The federated scenarios' targets. "none" and "jwt" are the upstream's
// identity setting in the gateway's UPSTREAMS_FILE.
const (
	KindDirectNone  = "upstream direct: floor who_am_i, no authentication"
	KindGatewayNone = "gateway -> floor who_am_i (identity: none)"
	KindDirectJWT   = "upstream direct: identity-upstream whoami, assertion verified"
	KindGatewayJWT  = "gateway -> identity-upstream whoami (identity: jwt)"
)

// Tool names through the gateway: the upstreams' prefixes in the file
// [prepareFederation] writes.
const (
	toolNone = "none_who_am_i"
	toolJWT  = "jwt_whoami"
)

// identityUpstream is the Go upstream that checks the gateway's assertion
// (examples/identity-upstream, built by make build).
const identityUpstream = "identity-upstream"

// federation is the upstream side of a federated scenario: the gateway's
// UPSTREAMS_FILE naming two Go upstreams over streamable HTTP (the MCP floor
// with identity: none, identity-upstream with identity: jwt), the signing
// key, and the identity-upstream process, which the soak restarts.
type federation struct {
	key    *assertionKey
	dir    string
	bin    string
	upAddr string // identity-upstream's listener
	upURL  string // its MCP endpoint, the assertions' audience
	gwURL  string // the gateway's MCP_SERVER_URL, the assertions' issuer

	mu   sync.Mutex
	proc *testenv.Process
	runs int
}

// prepareFederation writes the key and the upstreams file into dir and
// returns the gateway's extra environment.
func prepareFederation(cfg *Config, dir string) (*federation, []string, error) {
	bin, err := stack.Binary(cfg.BinDir, identityUpstream)
	if err != nil {
		return nil, nil, err
	}
	key, err := newAssertionKey()
	if err != nil {
		return nil, nil, err
	}
	keyFile := filepath.Join(dir, "identity-key.pem")
	if err := key.writePEM(keyFile); err != nil {
		return nil, nil, err
	}
	port, err := testenv.FreePort()
	if err != nil {
		return nil, nil, err
	}
	f := &federation{key: key, dir: dir, bin: bin, upAddr: fmt.Sprintf("127.0.0.1:%d", port)}
	f.upURL = "http://" + f.upAddr + "/mcp"
	// start_timeout is short: identity-upstream can only start once the
	// gateway serves its JWKS, and the gateway fetches its catalog again
	// (1 s, 2 s, ... apart) until it answers.
	file := filepath.Join(dir, "upstreams.yaml")
	yaml := fmt.Sprintf(`start_timeout: 1s
identity:
  signing_key_file: %s
upstreams:
  - name: floor
    url: %s
    prefix: none_
    identity: none
  - name: identity
    url: %s
    prefix: jwt_
`, keyFile, cfg.FloorMCPURL, f.upURL)
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		return nil, nil, err
	}
	return f, []string{"UPSTREAMS_FILE=" + file}, nil
}

// start starts identity-upstream for the gateway at gwURL (its
// MCP_SERVER_URL) and waits until it answers /healthz.
func (f *federation) start(gwURL string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gwURL = gwURL
	f.runs++
	log := filepath.Join(f.dir, identityUpstream+".log")
	if f.runs > 1 {
		log = filepath.Join(f.dir, fmt.Sprintf("%s-%d.log", identityUpstream, f.runs))
	}
	p, err := testenv.NewProcess(identityUpstream, f.bin, testenv.ProcessOptions{
		Args:     []string{"-listen", f.upAddr, "-jwks", gwURL + "/.well-known/jwks.json", "-issuer", gwURL, "-audience", f.upURL},
		ReadyURL: "http://" + f.upAddr + "/healthz",
		LogFile:  log,
	})
	if p != nil {
		f.proc = p
	}
	if err != nil {
		return fmt.Errorf("starting %s: %w", identityUpstream, err)
	}
	return nil
}

// restart stops identity-upstream, by SIGKILL (a crash) or SIGTERM (a
// graceful stop, which lets calls in flight finish), and starts it again on
// the same address.
func (f *federation) restart(kill bool) error {
	f.mu.Lock()
	p := f.proc
	f.mu.Unlock()
	if kill {
		p.Kill()
	} else {
		p.Stop()
	}
	return f.start(f.gwURL)
}

func (f *federation) pid() int {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc == nil || f.proc.Exited() {
		return 0
	}
	return f.proc.Pid()
}

func (f *federation) stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc != nil {
		f.proc.Stop()
	}
}

// directAssertion signs the assertion the direct calls to identity-upstream
// carry, as the gateway would for one caller.
func (f *federation) directAssertion(ttl time.Duration) (http.Header, error) {
	a, err := f.key.sign(f.gwURL, f.upURL, "mcpload-direct-user", ttl)
	if err != nil {
		return nil, err
	}
	return http.Header{"X-Mcpauthz-Identity": {a}}, nil
}

// waitRouted waits until the gateway routes both upstream tools: it has
// fetched both catalogs (identity-upstream's once it could check the
// gateway's assertion).
func (e *env) waitRouted(ctx context.Context, tok string) error {
	hc := target.NewHTTPClient(1)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, c := range []*target.ToolCall{
		{URL: e.mcpURL, Client: hc, Tool: toolNone, Tokens: tokens.NewCycle([]string{tok}), Expect: []byte(`"user":{`), Protocol: e.cfg.Protocol},
		{URL: e.mcpURL, Client: hc, Tool: toolJWT, Tokens: tokens.NewCycle([]string{tok}), Expect: []byte(`"client_id":`), Protocol: e.cfg.Protocol},
	} {
		var last string
		for last = c.Do(ctx, 0); last != load.OK; last = c.Do(ctx, 0) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("the gateway does not route %s: last answer %q", c.Tool, last)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

// DirectAssertionTTL is the lifetime of the assertion the federated
// scenario's direct calls to identity-upstream carry, signed afresh for each
// concurrency: identity-upstream refuses one that lives longer.
const DirectAssertionTTL = 10 * time.Minute

// federatedTargets is how many targets the federated scenario interleaves.
const federatedTargets = 5

// FederatedPhase is the longest the federated scenario measures at one
// concurrency with these rounds, warm-up and measured time: each target in
// every round, with the grace of the calls in flight at each end. It must not
// exceed [DirectAssertionTTL].
func FederatedPhase(rounds int, warmup, d time.Duration) time.Duration {
	return time.Duration(rounds*federatedTargets) * (warmup + d + load.DefaultGrace)
}

// routedTokens mints the run's tokens, waits until the gateway routes a call
// made with the first, then has authz introspect them all. Priming comes last
// because it starts each token's CACHE_TTL (60 s) and waitRouted may take up
// to 90 s: primed first, the tokens could expire from authz's cache before
// the measurement.
func (e *env) routedTokens(ctx context.Context) ([]string, error) {
	toks, err := e.mint(ctx, e.cfg.Tokens)
	if err != nil {
		return nil, err
	}
	if err := e.waitRouted(ctx, toks[0]); err != nil {
		return nil, err
	}
	if err := e.prime(ctx, e.authz, toks); err != nil {
		return nil, err
	}
	return toks, nil
}

// federated measures tools/call of a trivial upstream tool through the
// gateway against the same call made directly to the upstream, interleaved,
// at every concurrency, for both identity settings, and the gateway's own
// who_am_i beside them.
func (e *env) federated(ctx context.Context, sc *report.Scenario) error {
	toks, err := e.routedTokens(ctx)
	if err != nil {
		return err
	}
	src := tokens.NewCycle(toks)
	for i, c := range e.cfg.Clients {
		if i > 0 {
			// authz keeps a token's introspection for CACHE_TTL (60 s)
			// from its first use: the next concurrency's rounds would
			// find all M tokens expiring at once, and whichever target ran
			// then would pay for M introspections (the gateway's jwt row
			// at 32 clients did, 130-220 per 1,000 requests). Fresh tokens
			// for each concurrency keep every measured phase warm, as long
			// as one concurrency's rounds last less than CACHE_TTL.
			if toks, err = e.mint(ctx, e.cfg.Tokens); err != nil {
				return err
			}
			if err := e.prime(ctx, e.authz, toks); err != nil {
				return err
			}
			src = tokens.NewCycle(toks)
		}
		// The direct assertion must outlive this concurrency's rounds
		// (mcpload's flags keep [FederatedPhase] within its lifetime).
		hdr, err := e.fed.directAssertion(DirectAssertionTTL)
		if err != nil {
			return err
		}
		clients := make([]*http.Client, 5)
		for i := range clients {
			clients[i] = target.NewHTTPClient(c)
		}
		targets := []measured{ // federatedTargets of them
			{KindDirectNone, false, (&target.ToolCall{URL: e.cfg.FloorMCPURL, Client: clients[0], Tool: "who_am_i", Expect: []byte(`"user":{`), Protocol: e.cfg.Protocol}).Do},
			{KindGatewayNone, true, (&target.ToolCall{URL: e.mcpURL, Client: clients[1], Tool: toolNone, Tokens: src, Expect: []byte(`"user":{`), Protocol: e.cfg.Protocol}).Do},
			{KindDirectJWT, false, (&target.ToolCall{URL: e.fed.upURL, Client: clients[2], Tool: "whoami", Header: hdr, Expect: []byte(`"client_id":`), Protocol: e.cfg.Protocol}).Do},
			{KindGatewayJWT, true, (&target.ToolCall{URL: e.mcpURL, Client: clients[3], Tool: toolJWT, Tokens: src, Expect: []byte(`"client_id":`), Protocol: e.cfg.Protocol}).Do},
			// The gateway's own who_am_i: authz is asked as for the routed
			// calls, but nothing is forwarded; it splits the gateway's
			// price into the crossing to authz and the upstream hop.
			{report.KindGateway, true, (&target.MCPCall{URL: e.mcpURL, Client: clients[4], Tokens: src, Protocol: e.cfg.Protocol}).Do},
		}
		sc.Runs = append(sc.Runs, e.interleave(ctx, c, e.cfg.Duration, targets)...)
		for _, hc := range clients {
			hc.CloseIdleConnections()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	checkFederated(sc)
	return nil
}

// checkFederated evaluates the federation targets for each identity setting:
// gateway throughput at least 0.7x the direct call's at 32 clients, p50 at
// most 0.5 ms above it at 4 clients; and notes the CPU-cost ratio.
func checkFederated(sc *report.Scenario) {
	for _, pair := range []struct{ gw, direct, what string }{
		{KindGatewayNone, KindDirectNone, "identity: none"},
		{KindGatewayJWT, KindDirectJWT, "identity: jwt"},
	} {
		if g, ok := sc.Find(pair.gw, 32); ok {
			if d, ok := sc.Find(pair.direct, 32); ok && d.RPS > 0 {
				v := g.RPS / d.RPS
				sc.Checks = append(sc.Checks, report.Check{Name: pair.what + ": gateway / direct throughput at 32 clients", Value: v, Unit: "x", Target: ">= 0.7x", Met: v >= 0.7})
			}
		}
		if g, ok := sc.Find(pair.gw, 4); ok {
			if d, ok := sc.Find(pair.direct, 4); ok {
				v := g.P50MS - d.P50MS
				sc.Checks = append(sc.Checks, report.Check{Name: pair.what + ": gateway p50 minus direct p50 at 4 clients", Value: v, Unit: " ms", Target: "<= +0.5 ms", Met: v <= 0.5})
			}
		}
		for _, c := range []int{32, 4} {
			g, ok1 := sc.Find(pair.gw, c)
			d, ok2 := sc.Find(pair.direct, c)
			gc, dc := cpuTotal(g), cpuTotal(d)
			if ok1 && ok2 && gc > 0 && dc > 0 {
				sc.Notes = append(sc.Notes, fmt.Sprintf("%s: CPU-cost ratio at %d clients, direct / through the gateway: %.2fx (%.0f vs %.0f µs of CPU per request, all processes including the load generator).", pair.what, c, dc/gc, dc, gc))
			}
		}
	}
}

// restartEvent is one restart of the upstream during the federated soak.
type restartEvent struct {
	at, took time.Duration
	kill     bool
	err      error
}

// failure is one request of the federated soak that did not succeed.
type failure struct {
	at, took time.Duration
	label    string
}

// maxFailures bounds the failures the federated soak keeps for its report.
const maxFailures = 100_000

// federatedSoak sends load through the gateway to identity-upstream for
// SoakDuration while restarting the upstream every RestartEvery, samples
// the gateway's RSS as the soak does, and reports what the clients saw
// around each restart.
func (e *env) federatedSoak(ctx context.Context, sc *report.Scenario) error {
	if e.stack == nil {
		return fmt.Errorf("the federated soak restarts the upstream and samples the gateway: run it on a stack the tool starts")
	}
	toks, err := e.routedTokens(ctx)
	if err != nil {
		return err
	}
	procs := e.soakProcs()
	start := time.Now()

	var (
		mu       sync.Mutex
		fails    []failure
		restarts []restartEvent
	)
	bgCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopSampling := sampleRSS(ctx, sc, procs)
	wg.Go(func() {
		t := time.NewTicker(e.cfg.restartEvery())
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-bgCtx.Done():
				return
			case <-t.C:
			}
			ev := restartEvent{at: time.Since(start), kill: n%2 == 0}
			ev.err = e.fed.restart(ev.kill)
			ev.took = time.Since(start) - ev.at
			mu.Lock()
			restarts = append(restarts, ev)
			mu.Unlock()
			e.log.Info("upstream restarted", "n", n+1, "kill", ev.kill, "took", ev.took, "error", ev.err)
		}
	})
	errs := &target.ErrorLog{}
	hc := target.NewHTTPClient(e.cfg.SoakClients)
	call := &target.ToolCall{URL: e.mcpURL, Client: hc, Tool: toolJWT, Tokens: tokens.NewCycle(toks), Expect: []byte(`"client_id":`), Protocol: e.cfg.Protocol, Errors: errs}
	op := func(ctx context.Context, w int) string {
		t0 := time.Now()
		label := call.Do(ctx, w)
		if label != load.OK && label != load.Stop {
			f := failure{at: t0.Sub(start), took: time.Since(t0), label: label}
			mu.Lock()
			if len(fails) < maxFailures {
				fails = append(fails, f)
			}
			mu.Unlock()
		}
		return label
	}
	pr := e.probe(ctx, KindGatewayJWT, e.cfg.SoakClients, e.cfg.SoakDuration, true)
	res := load.Run(ctx, load.Options{Concurrency: e.cfg.SoakClients, Duration: e.cfg.SoakDuration, OnMeasure: pr.start}, op)
	run := report.Run{Target: KindGatewayJWT}
	pr.finish(&run, res)
	stop()
	wg.Wait()
	stopSampling()
	hc.CloseIdleConnections()

	mu.Lock()
	defer mu.Unlock()
	if len(restarts) > 0 {
		// The probe reads the CPU time of the processes it found at the
		// start: the first identity-upstream's ends with its process, and
		// its successors' would be missed, so leave it out altogether.
		delete(run.CPUUsPerReq, identityUpstream)
		sc.Notes = append(sc.Notes, fmt.Sprintf("%s's CPU time is not accounted for in the soak row: it was restarted %d times and each run's CPU time ends with its process.", identityUpstream, len(restarts)))
	}
	sc.Runs = append(sc.Runs, run)
	sc.Notes = append(sc.Notes, summarizeRestarts(restarts, fails)...)
	msgs := errs.Counts()
	keys := make([]string, 0, len(msgs))
	for k := range msgs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return msgs[keys[i]] > msgs[keys[j]] })
	for _, k := range keys {
		sc.Notes = append(sc.Notes, fmt.Sprintf("error answered %d times: %s", msgs[k], k))
	}
	// Around a restart the clients must get errors, fast, not hangs: every
	// failure a JSON-RPC error naming the upstream, none a timeout or a
	// dropped connection.
	var other uint64
	for label, n := range run.Outcomes {
		if label != load.OK && !strings.HasPrefix(label, "jsonrpc error") {
			other += n
		}
	}
	sc.Checks = append(sc.Checks, report.Check{Name: "failed requests that were not a JSON-RPC error (timeouts, transport errors, HTTP errors)", Value: float64(other), Target: "0", Met: other == 0})
	named := namedShare(msgs)
	sc.Checks = append(sc.Checks, report.Check{Name: "JSON-RPC errors that name the upstream (share)", Value: named, Target: "1", Met: named == 1})
	for _, ev := range restarts {
		if ev.err != nil {
			sc.Checks = append(sc.Checks, report.Check{Name: "upstream restarts that failed", Value: 1, Target: "0", Met: false})
			break
		}
	}
	warm := min(soakWarmup, e.cfg.SoakDuration/3)
	sc.Checks = append(sc.Checks, trendChecks(sc, procs, warm)...)
	return nil
}

// namedShare is the share of the JSON-RPC errors in msgs (an [target.ErrorLog]'s
// counts) whose message names the upstream as the gateway does
// (`upstream "identity" is unavailable: ...`); 1 when there were none. Tool
// errors and messages past the log's bound ("(other)") are not JSON-RPC errors
// it can read, and count for neither side.
func namedShare(msgs map[string]uint64) float64 {
	var all, named uint64
	for k, n := range msgs {
		if !strings.HasPrefix(k, "jsonrpc error") {
			continue
		}
		all += n
		if strings.Contains(k, `upstream "identity"`) {
			named += n
		}
	}
	if all == 0 {
		return 1
	}
	return float64(named) / float64(all)
}

// summarizeRestarts says, for each restart, which failures followed it (those
// answered after it and before the next restart) and how long they lasted. A
// failure counts where it was answered, not where it was sent: a call sent
// just before a restart that fails because of it belongs to that restart.
func summarizeRestarts(restarts []restartEvent, fails []failure) []string {
	var notes []string
	done := func(f failure) time.Duration { return f.at + f.took }
	slices.SortFunc(fails, func(a, b failure) int { return cmp.Compare(done(a), done(b)) })
	before := 0
	for _, f := range fails {
		if len(restarts) == 0 || done(f) < restarts[0].at {
			before++
		}
	}
	if before > 0 {
		notes = append(notes, fmt.Sprintf("%d failed requests before the first restart.", before))
	}
	for i, ev := range restarts {
		end := time.Duration(1<<63 - 1)
		if i+1 < len(restarts) {
			end = restarts[i+1].at
		}
		labels := map[string]int{}
		var n int
		var first, last, slowest time.Duration
		for _, f := range fails {
			if done(f) < ev.at || done(f) >= end {
				continue
			}
			if n == 0 {
				first = done(f) - ev.at
			}
			n++
			last = done(f) - ev.at
			slowest = max(slowest, f.took)
			labels[f.label]++
		}
		how := "SIGTERM"
		if ev.kill {
			how = "SIGKILL"
		}
		line := fmt.Sprintf("restart %d at %.1f s (%s, back up after %d ms): %d failed requests", i+1, ev.at.Seconds(), how, ev.took.Milliseconds(), n)
		if n > 0 {
			var ls []string
			for l, c := range labels {
				ls = append(ls, fmt.Sprintf("%s x%d", l, c))
			}
			slices.Sort(ls)
			line += fmt.Sprintf(" (%s), answered from +%d ms to +%d ms after it, the slowest answered in %.1f ms", strings.Join(ls, ", "), first.Milliseconds(), last.Milliseconds(), float64(slowest)/1e6)
		}
		if ev.err != nil {
			line += "; the restart failed: " + ev.err.Error()
		}
		notes = append(notes, line+".")
	}
	return notes
}
