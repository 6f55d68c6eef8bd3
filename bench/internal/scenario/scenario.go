// Package scenario runs the load tool's scenarios against the stack (started
// per scenario from bin/, or already running) and the floors, and evaluates
// the targets on the figures of the same run.
//
// # Scenarios
//
//   - warm: M tokens used once before the measurement, so every request is an
//     L1 hit in authz (one replica, Redis).
//   - cold: every request carries a token never seen before.
//   - stampede: 500 concurrent first uses of one new token, a few rounds, on
//     two replicas sharing Redis: at most one introspection per replica.
//   - churn: warm, but a share of the tokens is replaced by new ones each
//     second, as clients refresh tokens and new users arrive.
//   - two-replicas: two authz replicas sharing Redis; the tokens are warmed
//     through replica 1 only, then the load is balanced over both.
//   - no-redis: warm, one replica without Redis (in-process cache only).
//   - sweep: warm, at 1 to 128 clients, for the chart.
//   - soak (only when asked for): gateway load with churning tokens for
//     minutes while the gateway's and authz's RSS is sampled, to show there
//     is no growth trend.
//   - federated: tools/call of a trivial tool of a Go upstream (streamable
//     HTTP) through the gateway against the same call made directly to the
//     upstream, with the upstream's identity setting none (the MCP floor as
//     the upstream) and jwt (examples/identity-upstream, which verifies the
//     gateway's assertion on every request).
//   - federated-soak (only when asked for): load through the gateway to
//     identity-upstream for minutes while the upstream is restarted every
//     RestartEvery and the gateway's RSS is sampled.
//
// Every throughput scenario also measures the two floors at the same
// concurrency, right before the target it is compared with.
package scenario

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/bench/internal/devauth"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
)

// Names of the scenarios, in the order [All] runs them.
const (
	Warm        = "warm"
	Cold        = "cold"
	Stampede    = "stampede"
	Churn       = "churn"
	TwoReplicas = "two-replicas"
	NoRedis     = "no-redis"
	Sweep       = "sweep"
	Soak        = "soak"
	// Federated and FederatedSoak measure routed calls to upstreams: see federated.go.
	Federated     = "federated"
	FederatedSoak = "federated-soak"
)

// All lists every scenario in run order. [Soak] and [FederatedSoak] are not
// in it: they run for minutes, and only when asked for.
var All = []string{Warm, Cold, Stampede, Churn, TwoReplicas, NoRedis, Sweep, Federated}

// Known lists every scenario name.
var Known = append(slices.Clone(All), Soak, FederatedSoak)

// External describes an already running stack to drive instead of starting
// one per scenario.
type External struct {
	GatewayURL  string // base URL; the MCP endpoint is GatewayURL+"/mcp"
	AuthzTarget string // gRPC target of authz (any replica, or dns:///...)
	DevauthURL  string // devauth base URL; "" leaves the counters unknown
	APIKey      string // devauth's PROPELAUTH_API_KEY
	Resource    string // resource to mint tokens for; default GatewayURL+"/mcp"
}

// Config is what every scenario runs with.
type Config struct {
	// BinDir holds the service binaries (started per scenario).
	BinDir string
	// Dir receives the services' logs.
	Dir string
	// External, if set, is driven instead of starting stacks.
	External *External

	// Clients are the concurrencies of the throughput scenarios.
	Clients []int
	// Warmup and Duration bound each measurement.
	Warmup, Duration time.Duration
	// Rounds is how many times the warm scenarios measure each target, in
	// turn with the others, for Duration each; the rounds are merged.
	Rounds int
	// Tokens is M, the distinct tokens of the warm scenarios.
	Tokens int
	// ColdTokens bounds the single-use tokens minted per target in cold.
	ColdTokens int
	// StampedeSize and StampedeRounds shape the stampede.
	StampedeSize, StampedeRounds int
	// ChurnShare is the share of the M tokens replaced each second in churn.
	ChurnShare float64
	// SweepClients and SweepDuration shape the sweep.
	SweepClients  []int
	SweepDuration time.Duration
	// SoakDuration, SoakClients and SoakNewPerSec shape the soak: its length,
	// its concurrency and the new tokens brought in each second.
	SoakDuration  time.Duration
	SoakClients   int
	SoakNewPerSec int
	// RestartEvery is how often the federated soak restarts the upstream;
	// a minute when zero.
	RestartEvery time.Duration
	// CacheTTL is the CACHE_TTL the started authz replicas get; 60s (authz's
	// default) when zero.
	CacheTTL time.Duration
	// Protocol is the MCP protocol version the load speaks ("" for the
	// latest, target.ProtocolVersion).
	Protocol string
	// ASLatency is added by devauth before every introspection and user fetch.
	ASLatency time.Duration
	// GatewayEnv and AuthzEnv are extra KEY=VALUE settings of the started
	// gateway and authz replicas (after the tool's own, so they win).
	GatewayEnv, AuthzEnv []string

	// FloorMCPURL is the unauthenticated MCP floor's endpoint; FloorGRPCAddr
	// the no-op gRPC floor's address.
	FloorMCPURL, FloorGRPCAddr string
	// FloorPID is the floors' process (package floor), for CPU accounting; 0
	// leaves it out.
	FloorPID int

	// ProfileDir, if set, receives a CPU profile of every process serving
	// each measurement (the services must be built by
	// bench/profiling/build.sh; FloorPprof is the floors' pprof address).
	ProfileDir string
	FloorPprof string

	// Logger receives progress lines.
	Logger *slog.Logger
}

// APIKey is the PROPELAUTH_API_KEY of the stacks the tool starts, a local
// test value like their other credentials, never a real secret.
const APIKey = "mcpload-api-key"

// env is the system under test of one scenario.
type env struct {
	cfg        *Config
	name       string
	log        *slog.Logger
	stack      *stack.Stack // nil when external
	mcpURL     string
	resource   string
	authz      *grpc.ClientConn   // covers every replica
	replicas   []*grpc.ClientConn // one per replica (started stacks only)
	floorGRPC  *grpc.ClientConn
	dev        *devauth.Client // nil when counters are unknown
	stackDesc  string
	numReplica int
	fed        *federation // the federated scenarios' upstreams, or nil
}

func (c *Config) restartEvery() time.Duration {
	return cmp.Or(c.RestartEvery, time.Minute)
}

func (c *Config) cacheTTL() time.Duration {
	if c.CacheTTL > 0 {
		return c.CacheTTL
	}
	return 60 * time.Second
}

func (e *env) close() {
	if e.stack == nil && e.dev != nil && e.cfg.ASLatency > 0 {
		// An external devauth outlives the run: leave it as it was found.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.dev.SetLatency(ctx, 0)
		cancel()
	}
	for _, c := range append([]*grpc.ClientConn{e.authz, e.floorGRPC}, e.replicas...) {
		if c != nil {
			c.Close()
		}
	}
	e.fed.stop()
	e.stack.Close()
}

// topology is the stack a scenario needs.
type topology struct {
	replicas int
	redis    bool
}

var topologies = map[string]topology{
	Warm:        {1, true},
	Cold:        {1, true},
	Stampede:    {2, true},
	Churn:       {1, true},
	TwoReplicas: {2, true},
	NoRedis:     {1, false},
	Sweep:       {1, true},
	Soak:        {1, true},

	Federated:     {1, true},
	FederatedSoak: {1, true},
}

func (t topology) String() string {
	r := "Redis L2 shared by the replicas"
	if !t.redis {
		r = "no Redis (in-process L1 only)"
	}
	if t.replicas == 1 {
		r = strings.Replace(r, " shared by the replicas", "", 1)
	}
	return fmt.Sprintf("devauth, %d authz replica(s), %s, 1 gateway; all on 127.0.0.1 (replica 2 on 127.0.0.2)", t.replicas, r)
}

// setup starts (or attaches to) the stack for scenario name.
func setup(ctx context.Context, cfg *Config, name string) (*env, error) {
	top := topologies[name]
	e := &env{cfg: cfg, name: name, log: cfg.Logger.With("scenario", name), numReplica: top.replicas}
	var err error
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if ext := cfg.External; ext != nil {
		e.mcpURL = strings.TrimRight(ext.GatewayURL, "/") + "/mcp"
		e.resource = ext.Resource
		if e.resource == "" {
			e.resource = e.mcpURL
		}
		if ext.DevauthURL != "" {
			e.dev = &devauth.Client{BaseURL: ext.DevauthURL, APIKey: ext.APIKey}
		}
		e.stackDesc = "an already running stack: gateway " + ext.GatewayURL + ", authz " + ext.AuthzTarget
		if e.authz, err = target.DialGRPC(ext.AuthzTarget); err != nil {
			return nil, err
		}
	} else {
		dir := filepath.Join(cfg.Dir, name)
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		gatewayEnv := cfg.GatewayEnv
		federated := name == Federated || name == FederatedSoak
		if federated {
			var fedEnv []string
			if e.fed, fedEnv, err = prepareFederation(cfg, dir); err != nil {
				return nil, err
			}
			gatewayEnv = append(fedEnv, gatewayEnv...)
		}
		e.stack, err = stack.Start(ctx, stack.Options{BinDir: cfg.BinDir, Authz: top.replicas, Balance: top.replicas > 1, Gateways: 1, Redis: top.redis, Dir: dir, Pprof: cfg.ProfileDir != "",
			Credentials: stack.Credentials{APIKey: APIKey, ClientID: "mcpload-validation", ClientSecret: "mcpload-validation-secret"},
			AuthzEnv:    append([]string{"CACHE_TTL=" + cfg.cacheTTL().String()}, cfg.AuthzEnv...), GatewayEnv: gatewayEnv})
		if err != nil {
			return nil, fmt.Errorf("starting the stack: %w", err)
		}
		if federated {
			if err = e.fed.start(e.stack.Gateways[0].URL); err != nil {
				return nil, err
			}
		}
		// Load goes to the address bound (127.0.0.1), tokens are for the
		// resource (http://localhost:<port>/mcp): every new connection to
		// localhost would first try ::1, where nothing listens.
		e.mcpURL = "http://" + e.stack.Gateways[0].Addr + "/mcp"
		e.resource = e.stack.Resource
		e.dev = &devauth.Client{BaseURL: "http://" + e.stack.Devauth.Addr, APIKey: APIKey}
		e.stackDesc = top.String()
		if federated {
			e.stackDesc += "; the gateway's UPSTREAMS_FILE names the MCP floor (identity: none) and examples/identity-upstream (identity: jwt, ES256), both over streamable HTTP on 127.0.0.1"
		}
		if len(cfg.GatewayEnv) > 0 {
			e.stackDesc += "; gateway with " + strings.Join(cfg.GatewayEnv, " ")
		}
		if len(cfg.AuthzEnv) > 0 {
			e.stackDesc += "; authz with " + strings.Join(cfg.AuthzEnv, " ")
		}
		if e.authz, err = target.DialGRPC(e.stack.AuthzTarget); err != nil {
			return nil, err
		}
		for _, a := range e.stack.Authz {
			c, derr := target.DialGRPC(a.Addr)
			if derr != nil {
				err = derr
				return nil, err
			}
			e.replicas = append(e.replicas, c)
		}
	}
	if e.floorGRPC, err = target.DialGRPC(cfg.FloorGRPCAddr); err != nil {
		return nil, err
	}
	if e.dev != nil && cfg.ASLatency > 0 {
		if err = e.dev.SetLatency(ctx, cfg.ASLatency); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Run runs scenario name and returns its section of the report. A scenario
// that cannot run returns a section with Error set.
func Run(ctx context.Context, cfg *Config, name string) *report.Scenario {
	sc := &report.Scenario{Name: name, ASLatencyMS: cfg.ASLatency.Milliseconds(), Protocol: cfg.Protocol}
	if sc.Protocol == "" {
		sc.Protocol = target.ProtocolVersion
	}
	if cfg.External != nil && (name == TwoReplicas || name == NoRedis || name == Federated || name == FederatedSoak) {
		sc.Description = describe(name, cfg)
		sc.Stack = "an already running stack"
		sc.Error = "skipped: this scenario needs its own topology; run without -gateway/-authz so the tool starts it"
		return sc
	}
	e, err := setup(ctx, cfg, name)
	if err != nil {
		sc.Description = describe(name, cfg)
		sc.Error = err.Error()
		return sc
	}
	defer e.close()
	sc.Description = describe(name, cfg)
	sc.Stack = e.stackDesc
	switch name {
	case Warm, NoRedis:
		err = e.warm(ctx, sc, cfg.Clients, cfg.Duration, e.authz, false)
	case TwoReplicas:
		err = e.warm(ctx, sc, cfg.Clients, cfg.Duration, e.firstReplica(), false)
	case Sweep:
		err = e.warm(ctx, sc, cfg.SweepClients, cfg.SweepDuration, e.authz, true)
	case Cold:
		err = e.cold(ctx, sc)
	case Stampede:
		err = e.stampede(ctx, sc)
	case Churn:
		err = e.churn(ctx, sc)
	case Soak:
		err = e.soak(ctx, sc)
	case Federated:
		err = e.federated(ctx, sc)
	case FederatedSoak:
		err = e.federatedSoak(ctx, sc)
	default:
		err = fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(Known, ", "))
	}
	if err != nil {
		sc.Error = err.Error()
	}
	if e.stack != nil {
		sc.RSSBytes = map[string]int64{}
		for _, p := range e.stack.Processes() {
			if p.Name == "devauth" {
				continue
			}
			if n, err := p.RSS(); err == nil {
				sc.RSSBytes[p.Name] = n
			}
		}
	}
	return sc
}

func describe(name string, cfg *Config) string {
	switch name {
	case Warm:
		return fmt.Sprintf("Warm cache: %d distinct tokens, each used once before the measurement, then cycled; every Authorize is an L1 hit.", cfg.Tokens)
	case Cold:
		return fmt.Sprintf("Cold: every request carries a token never seen before (up to %d per target), so each costs an introspection.", cfg.ColdTokens)
	case Stampede:
		return fmt.Sprintf("Stampede: %d concurrent first uses of one new token, %d rounds per target, each client on its own open connection.", cfg.StampedeSize, cfg.StampedeRounds)
	case Churn:
		return fmt.Sprintf("Churn: %d warm tokens cycled; each second %.0f%% of them are replaced by new tokens.", cfg.Tokens, cfg.ChurnShare*100)
	case TwoReplicas:
		return fmt.Sprintf("Two authz replicas sharing Redis: %d tokens warmed through replica 1 only, then the load is balanced round-robin over both (gateway AUTHZ_ADDR is a dns:// target resolving to both).", cfg.Tokens)
	case NoRedis:
		return fmt.Sprintf("No Redis: one replica with only its in-process cache; %d warm tokens.", cfg.Tokens)
	case Sweep:
		return fmt.Sprintf("Concurrency sweep, warm cache (%d tokens), %v per point.", cfg.Tokens, cfg.SweepDuration)
	case Soak:
		return fmt.Sprintf("Soak: %v of gateway who_am_i at %d clients over %d tokens, %d new tokens each second (cached entries expire and are evicted), RSS of the gateway and authz sampled every %v.", cfg.SoakDuration, cfg.SoakClients, cfg.Tokens, cfg.SoakNewPerSec, soakSample)
	case Federated:
		return fmt.Sprintf("Federated: tools/call of a trivial tool of a Go upstream over streamable HTTP, through the gateway (%d warm tokens; its decision cache as configured, on by default: the authz calls /req column says how often it asked authz) and directly to the upstream, interleaved. identity: none fronts the unauthenticated MCP floor (who_am_i; direct: no authentication); identity: jwt fronts examples/identity-upstream (whoami), which verifies an ES256 assertion on every request (direct: with an assertion the tool signs with the gateway's key).", cfg.Tokens)
	case FederatedSoak:
		return fmt.Sprintf("Federated soak: %v of gateway -> identity-upstream whoami at %d clients over %d tokens while identity-upstream is restarted every %v (alternately SIGKILL and SIGTERM, then started again on the same address); RSS of the gateway and authz sampled every %v.", cfg.SoakDuration, cfg.SoakClients, cfg.Tokens, cfg.restartEvery(), soakSample)
	}
	return name
}

func (e *env) firstReplica() *grpc.ClientConn {
	if len(e.replicas) > 0 {
		return e.replicas[0]
	}
	return e.authz
}

// mint mints n tokens for alice for the stack's resource. All tokens are
// alice's so the gateway's answers match the floor's payload.
func (e *env) mint(ctx context.Context, n int) ([]string, error) {
	if e.dev == nil {
		return nil, fmt.Errorf("minting tokens needs devauth's test API: pass -devauth and -api-key")
	}
	return e.dev.MintMany(ctx, n, 8, func(int) devauth.TokenRequest {
		return devauth.TokenRequest{Email: seedusers.AliceEmail, Scopes: []string{"read:user_data"}, Resource: e.resource}
	})
}

// prime sends one Authorize (with the user) per token through conn, 32 at a
// time, so the tokens and the user are cached. It returns an error if any is
// not allowed.
func (e *env) prime(ctx context.Context, conn *grpc.ClientConn, toks []string) error {
	a := &target.Authorize{Client: authzv1.NewAuthzServiceClient(conn), Resource: e.resource, Tokens: tokens.NewOnce(toks), WithUser: true}
	res := load.Run(ctx, load.Options{Concurrency: 32, Duration: 5 * time.Minute}, a.Do)
	if res.Errors() > 0 {
		return fmt.Errorf("priming %d tokens: outcomes %v", len(toks), res.Outcomes)
	}
	return nil
}

func (e *env) stats(ctx context.Context) (devauth.Stats, bool) {
	if e.dev == nil {
		return devauth.Stats{}, false
	}
	s, err := e.dev.Stats(ctx)
	if err != nil {
		e.log.Warn("reading devauth stats", "error", err)
		return devauth.Stats{}, false
	}
	return s, true
}

// pids returns every process whose CPU time a measurement accounts for.
func (e *env) pids() map[string]int {
	m := map[string]int{"mcpload": os.Getpid()}
	if e.cfg.FloorPID > 0 {
		m["floors"] = e.cfg.FloorPID
	}
	if e.stack != nil {
		for _, p := range e.stack.Processes() {
			m[p.Name] = p.Pid()
		}
		if e.stack.Redis != nil {
			m["redis"] = e.stack.Redis.Pid()
		}
	}
	if pid := e.fed.pid(); pid > 0 {
		m[identityUpstream] = pid
	}
	return m
}

// probe snapshots devauth's counters and the processes' CPU time at the start
// of a measured phase and puts the deltas into the run at its end.
type probe struct {
	e        *env
	ctx      context.Context
	target   string
	clients  int
	seconds  int
	counted  bool
	profiles sync.WaitGroup
	pids     map[string]int
	stats    devauth.Stats
	statsOK  bool
	cpu      map[string]time.Duration
	calls    float64
	callsOK  bool
}

func (e *env) probe(ctx context.Context, target string, clients int, d time.Duration, counted bool) *probe {
	return &probe{e: e, ctx: ctx, target: target, clients: clients, seconds: max(int(d/time.Second), 1), counted: counted, pids: e.pids()}
}

// profiled returns the pprof addresses of the processes serving target, by
// process name.
func (e *env) profiled(target string) map[string]string {
	m := map[string]string{}
	switch target {
	case report.KindMCPFloor, report.KindGRPCFloor, KindDirectNone:
		if e.cfg.FloorPprof != "" {
			m["floors"] = e.cfg.FloorPprof
		}
		return m
	case KindDirectJWT:
		return m // identity-upstream alone, which has no pprof endpoint
	}
	if e.stack == nil {
		return m
	}
	for _, p := range append(slices.Clone(e.stack.Authz), e.stack.Gateways...) {
		if p.PprofAddr == "" || (!throughGateway(target) && p.Name == "mcp-gateway") {
			continue
		}
		m[p.Name] = p.PprofAddr
	}
	return m
}

// throughGateway says whether target's requests go through the gateway.
func throughGateway(target string) bool {
	return target == report.KindGateway || target == KindGatewayNone || target == KindGatewayJWT
}

// profiles are the pprof profiles probe takes of each process over a measured
// phase: the CPU profile, and the allocations made in the same window (a delta
// profile: `go tool pprof -sample_index=alloc_space` shows bytes,
// alloc_objects counts).
var profiles = []struct{ endpoint, suffix, what string }{
	{"profile", ".pprof", "CPU"},
	{"allocs", ".allocs.pprof", "allocation"},
}

// profile saves a profile of the process at addr over the next p.seconds into
// ProfileDir.
func (p *probe) profile(proc, addr, endpoint, suffix, what string) {
	slug := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		case r == ' ' || r == '-':
			return '-'
		}
		return -1
	}, p.target)
	name := fmt.Sprintf("%s-as%dms-%s-c%d-%s%s", p.e.name, p.e.cfg.ASLatency.Milliseconds(), slug, p.clients, proc, suffix)
	url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, endpoint, p.seconds)
	ctx, cancel := context.WithTimeout(p.ctx, time.Duration(p.seconds)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.e.log.Warn("taking a "+what+" profile", "process", proc, "error", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		p.e.log.Warn("taking a "+what+" profile", "process", proc, "status", resp.StatusCode, "error", err)
		return
	}
	if err := os.WriteFile(filepath.Join(p.e.cfg.ProfileDir, name), b, 0o644); err != nil {
		p.e.log.Warn("saving a "+what+" profile", "error", err)
	}
}

func cpuTimes(pids map[string]int) map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, pid := range pids {
		if d, err := testenv.CPUTime(pid); err == nil {
			m[name] = d
		}
	}
	return m
}

// start is called as the measured phase starts.
func (p *probe) start() {
	if p.e.cfg.ProfileDir != "" {
		for proc, addr := range p.e.profiled(p.target) {
			for _, k := range profiles {
				p.profiles.Go(func() { p.profile(proc, addr, k.endpoint, k.suffix, k.what) })
			}
		}
	}
	p.cpu = cpuTimes(p.pids)
	if p.counted {
		p.stats, p.statsOK = p.e.stats(p.ctx)
		p.calls, p.callsOK = p.e.authzCalls(p.ctx)
	}
}

// authzCalls sums the authz.v1 calls every replica has served, or reports
// false when they cannot be read (an external stack).
func (e *env) authzCalls(ctx context.Context) (float64, bool) {
	if e.stack == nil {
		return 0, false
	}
	var sum float64
	for _, a := range e.stack.Authz {
		n, err := AuthzCalls(ctx, a.MetricsURL)
		if err != nil {
			e.log.Warn("reading authz metrics", "error", err)
			return 0, false
		}
		sum += n
	}
	return sum, true
}

// tally accumulates what one target's measured phases cost.
type tally struct {
	res     load.Result
	cpu     map[string]time.Duration
	stats   devauth.Stats
	counted bool // every phase's counters were read
	calls   float64
	callsOK bool // every phase's authz calls were read
	phases  int
}

// end adds the deltas since start to t, waiting for the profiles.
func (p *probe) end(t *tally, res load.Result) {
	after := cpuTimes(p.pids)
	p.profiles.Wait()
	if t.cpu == nil {
		t.cpu = map[string]time.Duration{}
		t.counted, t.callsOK = true, true
	}
	for name, d := range after {
		if b, ok := p.cpu[name]; ok {
			t.cpu[name] += d - b
		}
	}
	ok := false
	if p.counted && p.statsOK {
		var s devauth.Stats
		if s, ok = p.e.stats(p.ctx); ok {
			d := s.Sub(p.stats)
			t.stats.Introspections += d.Introspections
			t.stats.UserFetches += d.UserFetches
		}
	}
	t.counted = t.counted && ok
	callsOK := false
	if p.counted && p.callsOK {
		var n float64
		if n, callsOK = p.e.authzCalls(p.ctx); callsOK {
			t.calls += n - p.calls
		}
	}
	t.callsOK = t.callsOK && callsOK
	t.res.Merge(res)
	t.phases++
}

// run turns the tally into a report row.
func (t *tally) run(name string) report.Run {
	run := report.FromResult(name, t.res)
	if run.Requests > 0 {
		run.CPUUsPerReq = map[string]float64{}
		for k, d := range t.cpu {
			run.CPUUsPerReq[k] = float64(d.Microseconds()) / float64(run.Requests)
		}
	}
	if t.counted {
		st := t.stats
		run.Introspections, run.UserFetches = &st.Introspections, &st.UserFetches
	}
	if t.callsOK && run.Requests > 0 {
		per := t.calls / float64(run.Requests)
		run.AuthzCallsPerReq = &per
	}
	return run
}

// finish records the deltas since start in run.
func (p *probe) finish(run *report.Run, res load.Result) {
	var t tally
	p.end(&t, res)
	*run = t.run(run.Target)
}

// measured is one target of an interleaved measurement.
type measured struct {
	kind    string
	counted bool
	op      load.Op
}

// interleave measures every target at clients, Rounds times in turn for d
// each, and merges each target's rounds: alternating targets spreads the
// drift of a shared machine's background load over all of them, which makes
// their ratios fairer than one long run each.
func (e *env) interleave(ctx context.Context, clients int, d time.Duration, targets []measured) []report.Run {
	tallies := make([]tally, len(targets))
	for range max(e.cfg.Rounds, 1) {
		for i, t := range targets {
			pr := e.probe(ctx, t.kind, clients, d, t.counted)
			res := load.Run(ctx, load.Options{Concurrency: clients, Warmup: e.cfg.Warmup, Duration: d, OnMeasure: pr.start}, t.op)
			pr.end(&tallies[i], res)
		}
	}
	runs := make([]report.Run, len(targets))
	for i, t := range targets {
		runs[i] = tallies[i].run(t.kind)
		e.log.Info("measured", "target", t.kind, "clients", clients, "rounds", tallies[i].phases, "rps", int(runs[i].RPS), "p50_ms", runs[i].P50MS, "p99_ms", runs[i].P99MS, "errors", runs[i].Errors)
	}
	return runs
}

// measure runs op at clients for d and records the CPU time each process
// spent and, when counted is set, devauth's counter deltas of the measured
// phase.
func (e *env) measure(ctx context.Context, name string, clients int, warmup, d time.Duration, counted bool, op load.Op) report.Run {
	pr := e.probe(ctx, name, clients, d, counted)
	res := load.Run(ctx, load.Options{Concurrency: clients, Warmup: warmup, Duration: d, OnMeasure: pr.start}, op)
	run := report.Run{Target: name}
	pr.finish(&run, res)
	e.log.Info("measured", "target", name, "clients", clients, "rps", int(run.RPS), "p50_ms", run.P50MS, "p99_ms", run.P99MS, "errors", run.Errors)
	return run
}

// ops are the request kinds of one measurement.
type ops struct {
	gateway, mcpFloor, authz, authzUser, grpcFloor load.Op
	// done closes the HTTP targets' idle connections.
	done func()
}

// ops builds the request kinds for one measurement. Each HTTP target gets a
// fresh client sized for clients.
func (e *env) ops(clients int, toks tokens.Source) ops {
	gwc, flc := target.NewHTTPClient(clients), target.NewHTTPClient(clients)
	az := authzv1.NewAuthzServiceClient(e.authz)
	return ops{
		gateway:   (&target.MCPCall{URL: e.mcpURL, Client: gwc, Tokens: toks, Protocol: e.cfg.Protocol}).Do,
		mcpFloor:  (&target.MCPCall{URL: e.cfg.FloorMCPURL, Client: flc, Protocol: e.cfg.Protocol}).Do,
		authz:     (&target.Authorize{Client: az, Resource: e.resource, Tokens: toks}).Do,
		authzUser: (&target.Authorize{Client: az, Resource: e.resource, Tokens: toks, WithUser: true}).Do,
		grpcFloor: (&target.HealthCheck{Client: healthpb.NewHealthClient(e.floorGRPC)}).Do,
		done: func() {
			gwc.CloseIdleConnections()
			flc.CloseIdleConnections()
		},
	}
}

// warm primes M tokens through primeConn, then measures the floors and the
// targets at every concurrency (Authorize with the user too, unless
// plainAuthz), and checks the warm targets.
func (e *env) warm(ctx context.Context, sc *report.Scenario, clients []int, d time.Duration, primeConn *grpc.ClientConn, plainAuthz bool) error {
	toks, err := e.mint(ctx, e.cfg.Tokens)
	if err != nil {
		return err
	}
	if e.dev != nil {
		if err := e.dev.ResetStats(ctx); err != nil {
			return err
		}
	}
	primeStart := time.Now()
	if err := e.prime(ctx, primeConn, toks); err != nil {
		return err
	}
	primed, _ := e.stats(ctx)
	src := tokens.NewCycle(toks)
	var total devauth.Stats
	for _, c := range clients {
		o := e.ops(c, src)
		targets := []measured{
			{report.KindMCPFloor, false, o.mcpFloor},
			{report.KindGateway, true, o.gateway},
			{report.KindGRPCFloor, false, o.grpcFloor},
			{report.KindAuthz, true, o.authz},
		}
		if !plainAuthz {
			targets = append(targets, measured{report.KindAuthzUser, true, o.authzUser})
		}
		sc.Runs = append(sc.Runs, e.interleave(ctx, c, d, targets)...)
		o.done()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if after, ok := e.stats(ctx); ok {
		total = after
		// A cached introspection lives CACHE_TTL, then the next use of the
		// token introspects again: the bound is one per token per window.
		windows := int64(math.Ceil(time.Since(primeStart).Seconds() / e.cfg.cacheTTL().Seconds()))
		per := float64(total.Introspections) / float64(len(toks)) / float64(windows)
		sc.Notes = append(sc.Notes, fmt.Sprintf("devauth counters over the whole scenario (%.0f s, %d CACHE_TTL window(s) of %v): %d introspections (%d while priming) and %d user fetches for %d distinct tokens.",
			time.Since(primeStart).Seconds(), windows, e.cfg.cacheTTL(), total.Introspections, primed.Introspections, total.UserFetches, len(toks)))
		sc.Checks = append(sc.Checks, report.Check{
			Name: "introspections per distinct token per CACHE_TTL (whole scenario, all replicas)", Value: per,
			Target: "<= 1", Met: total.Introspections <= int64(len(toks))*windows,
		})
	}
	e.checkRatios(sc)
	return nil
}

// checkRatios evaluates the gateway's ratio targets on whatever concurrencies the
// scenario measured.
func (e *env) checkRatios(sc *report.Scenario) {
	if g, ok := sc.Find(report.KindGateway, 32); ok {
		if f, ok := sc.Find(report.KindMCPFloor, 32); ok && f.RPS > 0 {
			v := g.RPS / f.RPS
			sc.Checks = append(sc.Checks, report.Check{Name: "gateway / unauthenticated floor throughput at 32 clients", Value: v, Unit: "x", Target: ">= 0.8x", Met: v >= 0.8})
		}
	}
	if g, ok := sc.Find(report.KindGateway, 4); ok {
		if f, ok := sc.Find(report.KindMCPFloor, 4); ok {
			dp50, dp99 := g.P50MS-f.P50MS, g.P99MS-f.P99MS
			sc.Checks = append(sc.Checks,
				report.Check{Name: "gateway p50 minus floor p50 at 4 clients", Value: dp50, Unit: " ms", Target: "<= +0.3 ms", Met: dp50 <= 0.3},
				report.Check{Name: "gateway p99 minus floor p99 at 4 clients", Value: dp99, Unit: " ms", Target: "<= +1 ms", Met: dp99 <= 1},
			)
		}
	}
	// Throughput on a shared machine depends on what else runs; CPU time per
	// request does not. At saturation throughput is inversely proportional to
	// it, so its ratio estimates the throughput ratio on a quiet machine.
	for _, pair := range [][2]string{{report.KindGateway, report.KindMCPFloor}, {report.KindAuthz, report.KindGRPCFloor}, {report.KindAuthzUser, report.KindGRPCFloor}} {
		for _, c := range []int{32, 4} {
			t, ok1 := sc.Find(pair[0], c)
			f, ok2 := sc.Find(pair[1], c)
			tc, fc := cpuTotal(t), cpuTotal(f)
			if ok1 && ok2 && tc > 0 && fc > 0 {
				sc.Notes = append(sc.Notes, fmt.Sprintf("CPU-cost ratio at %d clients, %s vs %s: %.2fx (%.0f vs %.0f µs of CPU per request, all processes including the load generator).", c, pair[0], pair[1], fc/tc, tc, fc))
				break
			}
		}
	}
	for _, c := range []int{32, 4} {
		a, ok1 := sc.Find(report.KindAuthz, c)
		f, ok2 := sc.Find(report.KindGRPCFloor, c)
		if ok1 && ok2 && f.RPS > 0 {
			v := a.RPS / f.RPS
			sc.Checks = append(sc.Checks, report.Check{Name: fmt.Sprintf("authz Authorize (L1 hit) / no-op gRPC throughput at %d clients", c), Value: v, Unit: "x", Target: ">= 0.7x", Met: v >= 0.7})
			break
		}
	}
}

// cold measures both targets with single-use tokens at the largest
// concurrency, plus the floors for scale.
func (e *env) cold(ctx context.Context, sc *report.Scenario) error {
	c := slices.Max(e.cfg.Clients)
	for _, kind := range []string{report.KindGateway, report.KindAuthz} {
		toks, err := e.mint(ctx, e.cfg.ColdTokens)
		if err != nil {
			return err
		}
		src := tokens.NewOnce(toks)
		o := e.ops(c, src)
		var run report.Run
		if kind == report.KindGateway {
			sc.Runs = append(sc.Runs, e.measure(ctx, report.KindMCPFloor, c, e.cfg.Warmup, e.cfg.Duration, false, o.mcpFloor))
			run = e.measure(ctx, kind, c, 0, e.cfg.Duration, true, o.gateway)
		} else {
			sc.Runs = append(sc.Runs, e.measure(ctx, report.KindGRPCFloor, c, e.cfg.Warmup, e.cfg.Duration, false, o.grpcFloor))
			run = e.measure(ctx, kind, c, 0, e.cfg.Duration, true, o.authz)
		}
		o.done()
		sc.Runs = append(sc.Runs, run)
		if run.Introspections != nil {
			used := src.Used()
			sc.Checks = append(sc.Checks, report.Check{
				Name:  kind + ": introspections per new token",
				Value: float64(*run.Introspections) / float64(max(used, 1)), Target: "<= 1",
				Met: *run.Introspections <= int64(used),
			})
		}
	}
	return nil
}

// stampede sends bursts of first uses of one new token to each target.
func (e *env) stampede(ctx context.Context, sc *report.Scenario) error {
	n := e.cfg.StampedeSize
	warmTok, err := e.mint(ctx, 1)
	if err != nil {
		return err
	}
	if err := e.prime(ctx, e.authz, warmTok); err != nil {
		return err
	}
	for _, kind := range []string{report.KindGateway, report.KindAuthz} {
		agg := load.Result{Concurrency: n, Outcomes: map[string]uint64{}}
		var intro, fetch int64
		var perRound []string
		worst := int64(0)
		for round := range e.cfg.StampedeRounds {
			fresh, err := e.mint(ctx, 1)
			if err != nil {
				return err
			}
			// Each burst client first sends one request with a warm token,
			// which opens its own connection, so the burst measures the
			// stampede and not 500 TCP handshakes.
			var prepOp, op load.Op
			var hc *http.Client
			if kind == report.KindGateway {
				hc = target.NewHTTPClient(n)
				prepOp = (&target.MCPCall{URL: e.mcpURL, Client: hc, Tokens: tokens.NewCycle(warmTok), Protocol: e.cfg.Protocol}).Do
				op = (&target.MCPCall{URL: e.mcpURL, Client: hc, Tokens: tokens.NewCycle(fresh), Protocol: e.cfg.Protocol}).Do
			} else {
				client := authzv1.NewAuthzServiceClient(e.authz)
				prepOp = (&target.Authorize{Client: client, Resource: e.resource, Tokens: tokens.NewCycle(warmTok)}).Do
				op = (&target.Authorize{Client: client, Resource: e.resource, Tokens: tokens.NewCycle(fresh)}).Do
			}
			before, ok := e.stats(ctx)
			res := load.Burst(ctx, n, time.Minute, prepOp, op)
			if hc != nil {
				hc.CloseIdleConnections()
			}
			if after, ok2 := e.stats(ctx); ok && ok2 {
				d := after.Sub(before)
				intro += d.Introspections
				fetch += d.UserFetches
				worst = max(worst, d.Introspections)
				perRound = append(perRound, fmt.Sprintf("%d", d.Introspections))
			}
			agg.Requests += res.Requests
			agg.Elapsed += res.Elapsed
			for k, v := range res.Outcomes {
				agg.Outcomes[k] += v
			}
			if agg.Latency == nil {
				agg.Latency = res.Latency
			} else {
				agg.Latency.Merge(res.Latency)
			}
			e.log.Info("stampede round", "target", kind, "round", round+1, "p99_ms", float64(res.Latency.Quantile(0.99))/1e6, "outcomes", res.Outcomes)
		}
		run := report.FromResult(kind, agg)
		if e.dev != nil {
			run.Introspections, run.UserFetches = &intro, &fetch
			sc.Notes = append(sc.Notes, fmt.Sprintf("%s: introspections per round: %s (%d replicas).", kind, strings.Join(perRound, ", "), e.numReplica))
			sc.Checks = append(sc.Checks, report.Check{
				Name: kind + ": most introspections caused by one stampede", Value: float64(worst),
				Target: fmt.Sprintf("<= %d (one per replica)", e.numReplica), Met: worst <= int64(e.numReplica),
			})
		}
		sc.Runs = append(sc.Runs, run)
	}
	sc.Notes = append(sc.Notes, "req/s of a stampede is requests divided by the time the bursts took to drain.")
	return nil
}

// churn measures warm load while a share of the tokens is replaced each
// second.
func (e *env) churn(ctx context.Context, sc *report.Scenario) error {
	c := slices.Max(e.cfg.Clients)
	perSec := max(int(e.cfg.ChurnShare*float64(e.cfg.Tokens)), 1)
	secs := int((e.cfg.Warmup+e.cfg.Duration)/time.Second) + 2
	for _, kind := range []string{report.KindGateway, report.KindAuthz} {
		toks, err := e.mint(ctx, e.cfg.Tokens+perSec*secs)
		if err != nil {
			return err
		}
		active, reserve := toks[:e.cfg.Tokens], toks[e.cfg.Tokens:]
		if err := e.prime(ctx, e.authz, active); err != nil {
			return err
		}
		src := tokens.NewChurn(active, reserve)
		o := e.ops(c, src)
		floorOp, op, floorKind := o.mcpFloor, o.gateway, report.KindMCPFloor
		if kind == report.KindAuthz {
			floorOp, op, floorKind = o.grpcFloor, o.authz, report.KindGRPCFloor
		}
		sc.Runs = append(sc.Runs, e.measure(ctx, floorKind, c, e.cfg.Warmup, e.cfg.Duration, false, floorOp))

		rotCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var addedInMeasure int
		measuring := make(chan struct{})
		wg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			inMeasure := false
			started := measuring
			for {
				select {
				case <-rotCtx.Done():
					return
				case <-started:
					inMeasure = true
					started = nil
				case <-t.C:
					n := src.Rotate(perSec)
					if inMeasure {
						addedInMeasure += n
					}
				}
			}
		})
		pr := e.probe(ctx, kind, c, e.cfg.Duration, true)
		res := load.Run(ctx, load.Options{Concurrency: c, Warmup: e.cfg.Warmup, Duration: e.cfg.Duration, OnMeasure: func() {
			pr.start()
			close(measuring)
		}}, op)
		run := report.Run{Target: kind}
		pr.finish(&run, res)
		stop()
		wg.Wait()
		o.done()
		if run.Introspections != nil {
			n := *run.Introspections
			sc.Checks = append(sc.Checks, report.Check{
				Name:  kind + ": introspections per token brought in while measuring",
				Value: float64(n) / float64(max(addedInMeasure, 1)), Target: "<= 1 (about 1)",
				Met: n <= int64(addedInMeasure)+int64(perSec),
			})
		}
		e.log.Info("measured", "target", kind, "clients", c, "rps", int(run.RPS), "p99_ms", run.P99MS, "new_tokens", addedInMeasure)
		sc.Runs = append(sc.Runs, run)
	}
	sc.Notes = append(sc.Notes, fmt.Sprintf("%d new tokens per second enter the active set; a new token costs one introspection at its first use.", perSec))
	return nil
}

// soakSample is how often the soak samples RSS: often, because RSS moves by
// several MiB between garbage collections (more so at the gateway's GOGC=400),
// and the trend is fitted through that noise.
const soakSample = 2 * time.Second

// soakWarmup is the start of a soak left out of the trend (caches and heaps
// filling); a third of the run when that is shorter.
const soakWarmup = time.Minute

// soak runs gateway load with churning tokens for SoakDuration and samples
// the RSS of the gateway and authz, then checks that the run shows no growth
// trend after its warm-up.
func (e *env) soak(ctx context.Context, sc *report.Scenario) error {
	if e.stack == nil {
		return fmt.Errorf("the soak samples the services' memory: run it on a stack the tool starts")
	}
	secs := int(e.cfg.SoakDuration/time.Second) + 2
	toks, err := e.mint(ctx, e.cfg.Tokens+e.cfg.SoakNewPerSec*secs)
	if err != nil {
		return err
	}
	active, reserve := toks[:e.cfg.Tokens], toks[e.cfg.Tokens:]
	if err := e.prime(ctx, e.authz, active); err != nil {
		return err
	}
	src := tokens.NewChurn(active, reserve)
	procs := e.soakProcs()

	rotateCtx, stopRotating := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopSampling := sampleRSS(ctx, sc, procs)
	wg.Go(func() {
		rotate := time.NewTicker(time.Second)
		defer rotate.Stop()
		for {
			select {
			case <-rotateCtx.Done():
				return
			case <-rotate.C:
				src.Rotate(e.cfg.SoakNewPerSec)
			}
		}
	})
	hc := target.NewHTTPClient(e.cfg.SoakClients)
	op := (&target.MCPCall{URL: e.mcpURL, Client: hc, Tokens: src, Protocol: e.cfg.Protocol}).Do
	pr := e.probe(ctx, report.KindGateway, e.cfg.SoakClients, e.cfg.SoakDuration, true)
	res := load.Run(ctx, load.Options{Concurrency: e.cfg.SoakClients, Duration: e.cfg.SoakDuration, OnMeasure: pr.start}, op)
	run := report.Run{Target: report.KindGateway}
	pr.finish(&run, res)
	stopRotating()
	wg.Wait()
	stopSampling()
	hc.CloseIdleConnections()
	sc.Runs = append(sc.Runs, run)
	sc.Notes = append(sc.Notes, fmt.Sprintf("%d new tokens entered during the soak.", src.Added()))
	warm := min(soakWarmup, e.cfg.SoakDuration/3)
	sc.Checks = append(sc.Checks, trendChecks(sc, procs, warm)...)
	return nil
}

// soakProcs are the processes whose RSS the soaks sample: the gateways and
// the authz replicas.
func (e *env) soakProcs() []*testenv.Process {
	var procs []*testenv.Process
	for _, p := range append(slices.Clone(e.stack.Gateways), e.stack.Authz...) {
		procs = append(procs, p.Proc)
	}
	return procs
}

// sampleRSS samples the RSS of procs into sc.Samples now and every
// soakSample until ctx ends or the returned stop is called, which takes a
// last sample and returns once sampling has stopped (sc is then the caller's
// again).
func sampleRSS(ctx context.Context, sc *report.Scenario, procs []*testenv.Process) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	smp := &rssSampler{sc: sc, procs: procs, start: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := time.NewTicker(soakSample)
		defer every.Stop()
		smp.sample()
		for {
			select {
			case <-ctx.Done():
				smp.sample()
				return
			case <-every.C:
				smp.sample()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// rssSampler appends the RSS of procs to sc.Samples; only one goroutine
// samples.
type rssSampler struct {
	sc    *report.Scenario
	procs []*testenv.Process
	start time.Time
}

func (s *rssSampler) sample() {
	smp := report.Sample{Seconds: time.Since(s.start).Seconds(), RSSBytes: map[string]int64{}}
	for _, p := range s.procs {
		if n, err := p.RSS(); err == nil {
			smp.RSSBytes[p.Name] = n
		}
	}
	s.sc.Samples = append(s.sc.Samples, smp)
}

// trendChecks checks each process's RSS trend over sc's samples after warm,
// or notes that there are too few samples.
func trendChecks(sc *report.Scenario, procs []*testenv.Process, warm time.Duration) []report.Check {
	var checks []report.Check
	for _, p := range procs {
		slope, mean, ok := report.Trend(sc.Samples, p.Name, warm.Seconds())
		if !ok {
			sc.Notes = append(sc.Notes, p.Name+": too few RSS samples for a trend; soak for a minute or more.")
			continue
		}
		// "No growth trend": after the warm-up, RSS grows by less than 1% of
		// its mean per minute. The fit runs through every sample, so the
		// collector's sawtooth averages out.
		limit := mean * 0.01
		checks = append(checks, report.Check{
			Name: fmt.Sprintf("%s: RSS trend after the first %v of the soak", p.Name, warm), Value: slope / (1 << 20), Unit: " MiB/min",
			Target: fmt.Sprintf("< %.2f MiB/min (1%% of its mean)", limit/(1<<20)), Met: slope < limit,
		})
	}
	return checks
}

// cpuTotal is the CPU time per request of a run summed over every process.
func cpuTotal(r report.Run) float64 {
	var t float64
	for _, v := range r.CPUUsPerReq {
		t += v
	}
	return t
}
