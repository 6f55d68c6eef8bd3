// Command mcpload measures the cost of authentication on every MCP tool call:
// it drives the gateway (tools/call who_am_i over stateless streamable HTTP)
// and authz (Authorize over gRPC) with N concurrent clients and M distinct
// tokens for a bounded time, and measures in the same run, as floors, the
// gateway's own tools without authentication and a no-op gRPC call
// (bin/mcp-floor, started by package floor).
//
// By default it starts the stack itself for every scenario, from bin/ (`make
// build`): devauth with its test API, one or two authz replicas, a private
// redis-server, the gateway, all on loopback. With -gateway and -authz it
// drives an already running stack instead.
//
// It prints a Markdown table per scenario; with -out it also writes
// results.json, results.md and, when the sweep ran, an SVG chart of
// throughput and p99 against concurrency.
//
//	mcpload -scenarios warm,cold -duration 5s -out /tmp/bench
//	mcpload -as-latency 0,30ms -out /tmp/bench/as
//	mcpload -gateway http://127.0.0.1:8000 -authz 127.0.0.1:50051 \
//	        -devauth http://127.0.0.1:9000 -api-key KEY -scenarios warm
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/floor"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
	"github.com/mcpauthz/mcpauthz/bench/internal/scenario"
	"github.com/mcpauthz/mcpauthz/bench/internal/target"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcpload:", err)
		os.Exit(1)
	}
}

// options are the parsed flags.
type options struct {
	scenarios      []string
	binDir         string
	out            string
	logDir         string
	clients        []int
	sweep          []int
	duration       time.Duration
	warmup         time.Duration
	rounds         int
	sweepDuration  time.Duration
	tokens         int
	coldTokens     int
	stampede       int
	stampedeRounds int
	churn          float64
	soak           time.Duration
	soakClients    int
	soakNew        int
	restartEvery   time.Duration
	asLatency      []time.Duration
	maxTime        time.Duration
	pprofDir       string
	ext            scenario.External
	replot         string
	protocol       string
	gatewayEnv     envList
	authzEnv       envList
}

// gatewayGOGC returns the GOGC the gateway binary at bin runs with when GOGC
// is unset: the default it declares (mcp-gateway -list-env=json). The floors'
// process runs with it when mcpload's own environment sets none, so that the
// floor is the gateway's tools on a server tuned the same way.
func gatewayGOGC(bin string) (int, error) {
	out, err := exec.Command(bin, "-list-env=json").Output()
	if err != nil {
		return 0, fmt.Errorf("%s -list-env=json: %w", bin, err)
	}
	var vars []struct {
		Name    string `json:"name"`
		Default string `json:"default"`
	}
	if err := json.Unmarshal(out, &vars); err != nil {
		return 0, fmt.Errorf("%s -list-env=json: %w", bin, err)
	}
	for _, v := range vars {
		if v.Name == "GOGC" {
			return strconv.Atoi(v.Default)
		}
	}
	return 0, fmt.Errorf("%s declares no GOGC", bin)
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (l *envList) String() string { return strings.Join(*l, " ") }

func (l *envList) Set(v string) error {
	k, _, ok := strings.Cut(v, "=")
	if !ok || k == "" || strings.ContainsAny(k, " \t") {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	*l = append(*l, v)
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "0" {
			out = append(out, 0)
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%q is not a duration such as 30ms", f)
		}
		out = append(out, d)
	}
	return out, nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("mcpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", strings.Join(scenario.All, ","), "comma-separated scenarios: "+strings.Join(scenario.Known, ", ")+" (soak only when named)")
	fs.StringVar(&o.binDir, "bin", "", "directory of the service binaries and mcp-floor (default: bin/ at the repository root)")
	fs.StringVar(&o.out, "out", "", "directory to write results.json, results.md and the SVG chart to")
	fs.StringVar(&o.logDir, "logs", "", "directory for the services' logs (default: a temporary directory, removed after a successful run)")
	clients := fs.String("clients", "4,32", "concurrent clients of the throughput scenarios")
	sweep := fs.String("sweep", "1,2,4,8,16,32,64,128", "concurrent clients of the sweep")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "measured time per target, concurrency and round")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unrecorded warm-up before each measurement")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds of the warm scenarios and the sweep: each target is measured this many times, in turn with the others, and the rounds merged")
	fs.DurationVar(&o.sweepDuration, "sweep-duration", time.Second, "measured time per point of the sweep and round")
	fs.IntVar(&o.tokens, "tokens", 1000, "distinct tokens (M) of the warm scenarios")
	fs.IntVar(&o.coldTokens, "cold-tokens", 4000, "single-use tokens minted per target for the cold scenario (the run ends when they are used up)")
	fs.IntVar(&o.stampede, "stampede", 500, "concurrent first uses of one token in the stampede")
	fs.IntVar(&o.stampedeRounds, "stampede-rounds", 3, "stampedes per target")
	fs.Float64Var(&o.churn, "churn", 0.05, "share of the M tokens replaced by new ones each second in churn")
	fs.DurationVar(&o.soak, "soak-duration", 10*time.Minute, "length of the soak scenario")
	fs.IntVar(&o.soakClients, "soak-clients", 4, "concurrent clients of the soak")
	fs.IntVar(&o.soakNew, "soak-new", 10, "new tokens brought in each second during the soak")
	fs.DurationVar(&o.restartEvery, "restart-every", time.Minute, "how often the federated-soak scenario restarts the upstream")
	asl := fs.String("as-latency", "0", "comma-separated delays devauth adds to every introspection and user fetch (e.g. 0,30ms); every scenario runs once per value")
	fs.DurationVar(&o.maxTime, "max-time", 15*time.Minute, "hard cap on the whole run")
	fs.StringVar(&o.ext.GatewayURL, "gateway", "", "drive this running gateway (base URL) instead of starting stacks")
	fs.StringVar(&o.ext.AuthzTarget, "authz", "", "gRPC target of the running authz (with -gateway)")
	fs.StringVar(&o.ext.DevauthURL, "devauth", "", "base URL of the running devauth, for tokens and counters (with -gateway)")
	fs.StringVar(&o.ext.APIKey, "api-key", "", "devauth's PROPELAUTH_API_KEY (with -devauth); default $PROPELAUTH_API_KEY")
	fs.StringVar(&o.ext.Resource, "resource", "", "resource to mint tokens for (default: the gateway URL + /mcp)")
	fs.StringVar(&o.pprofDir, "pprof", "", "directory to save CPU and allocation profiles (NAME.pprof, NAME.allocs.pprof) of the gateway, authz and the floors during every measurement (needs binaries from bench/profiling/build.sh, e.g. -bin bin/pprof)")
	fs.StringVar(&o.protocol, "protocol", target.ProtocolVersion, "MCP protocol version the clients speak (e.g. 2025-06-18: no Mcp-Method/Mcp-Name headers, no _meta)")
	fs.StringVar(&o.replot, "replot", "", "rewrite the Markdown (stdout, and -out) and SVG (-out) from this results.json without measuring")
	fs.Var(&o.gatewayEnv, "gateway-env", "KEY=VALUE added to the started gateway's environment (repeatable), e.g. DECISION_CACHE_TTL=1s")
	fs.Var(&o.authzEnv, "authz-env", "KEY=VALUE added to every started authz replica's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	for s := range strings.SplitSeq(*scen, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(scenario.Known, s) {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", s, strings.Join(scenario.Known, ", "))
		}
		o.scenarios = append(o.scenarios, s)
	}
	if o.clients, err = parseInts(*clients); err != nil {
		return nil, fmt.Errorf("-clients: %w", err)
	}
	if o.sweep, err = parseInts(*sweep); err != nil {
		return nil, fmt.Errorf("-sweep: %w", err)
	}
	if o.asLatency, err = parseDurations(*asl); err != nil {
		return nil, fmt.Errorf("-as-latency: %w", err)
	}
	switch {
	case o.duration <= 0 || o.sweepDuration <= 0 || o.warmup < 0:
		return nil, errors.New("-duration and -sweep-duration must be positive, -warmup not negative")
	case !validProtocol(o.protocol):
		return nil, fmt.Errorf("-protocol: %q is not a version such as 2025-06-18", o.protocol)
	case o.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case o.tokens < 1 || o.coldTokens < 1 || o.stampede < 1 || o.stampedeRounds < 1 || o.soakClients < 1 || o.soakNew < 0:
		return nil, errors.New("-tokens, -cold-tokens, -stampede, -stampede-rounds and -soak-clients must be at least 1, -soak-new not negative")
	case o.restartEvery <= 0:
		return nil, errors.New("-restart-every must be positive")
	case o.soak <= 0:
		return nil, errors.New("-soak-duration must be positive")
	case o.churn <= 0 || o.churn > 1:
		return nil, errors.New("-churn must be in (0, 1]")
	case (o.ext.GatewayURL == "") != (o.ext.AuthzTarget == ""):
		return nil, errors.New("-gateway and -authz go together")
	case slices.Contains(o.scenarios, scenario.Federated) && scenario.FederatedPhase(o.rounds, o.warmup, o.duration) > scenario.DirectAssertionTTL:
		return nil, fmt.Errorf("-scenarios federated: -rounds %d, -warmup %v and -duration %v measure for up to %v at one concurrency, longer than the direct calls' assertion lives (%v): shorten them",
			o.rounds, o.warmup, o.duration, scenario.FederatedPhase(o.rounds, o.warmup, o.duration), scenario.DirectAssertionTTL)
	}
	if o.ext.APIKey == "" {
		o.ext.APIKey = os.Getenv("PROPELAUTH_API_KEY")
	}
	return o, nil
}

func validProtocol(v string) bool {
	_, err := time.Parse("2006-01-02", v)
	return err == nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if o.replot != "" {
		return replot(o.replot, o.out, stdout)
	}
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()

	if o.ext.GatewayURL == "" && o.binDir == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		o.binDir = filepath.Join(root, "bin")
	}
	gogc := 0 // the gateway's default GOGC; 0 when no binary says (an external stack without -bin)
	if o.binDir != "" {
		if gogc, err = gatewayGOGC(filepath.Join(o.binDir, "mcp-gateway")); err != nil {
			return fmt.Errorf("%w (run `make build`, or pass -bin)", err)
		}
	}
	logDir, keepLogs := o.logDir, o.logDir != ""
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "mcpload-"); err != nil {
			return err
		}
	}

	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
	}
	floorOpts := floor.Options{GOGC: floorGOGC(gogc), Pprof: o.pprofDir != "", LogFile: filepath.Join(logDir, "floors.log")}
	if o.binDir != "" {
		floorOpts.Bin = filepath.Join(o.binDir, "mcp-floor")
		if _, err := os.Stat(floorOpts.Bin); err != nil {
			return fmt.Errorf("%s is missing: run `make build`, or pass -bin", floorOpts.Bin)
		}
	}
	fl, err := floor.Start(ctx, floorOpts)
	if err != nil {
		return err
	}
	defer fl.Stop()

	rep := &report.Report{Started: time.Now(), Command: "mcpload " + strings.Join(args, " "), Machine: machine()}
	rep.Machine.LoadBefore = loadavg()
	rep.Machine.Notes = append(rep.Machine.Notes, floorsGCNote(gogc))
	start := time.Now()
	failed := false
	var sweeps []*report.Scenario
	for _, lat := range o.asLatency {
		cfg := &scenario.Config{
			BinDir: o.binDir, Dir: logDir,
			Clients: o.clients, Warmup: o.warmup, Duration: o.duration, Rounds: o.rounds,
			Tokens: o.tokens, ColdTokens: o.coldTokens,
			StampedeSize: o.stampede, StampedeRounds: o.stampedeRounds, ChurnShare: o.churn,
			SweepClients: o.sweep, SweepDuration: o.sweepDuration,
			SoakDuration: o.soak, SoakClients: o.soakClients, SoakNewPerSec: o.soakNew,
			RestartEvery: o.restartEvery,
			ASLatency:    lat,
			Protocol:     o.protocol,
			FloorMCPURL:  fl.MCPURL, FloorGRPCAddr: fl.GRPCAddr, FloorPID: fl.Pid(),
			ProfileDir: o.pprofDir, FloorPprof: fl.PprofAddr,
			GatewayEnv: o.gatewayEnv, AuthzEnv: o.authzEnv,
			Logger: logger,
		}
		if o.ext.GatewayURL != "" {
			ext := o.ext
			cfg.External = &ext
		}
		for _, name := range o.scenarios {
			if ctx.Err() != nil {
				break
			}
			logger.Info("scenario starting", "scenario", name, "as_latency", lat)
			sc := scenario.Run(ctx, cfg, name)
			if sc.Error != "" {
				failed = true
				logger.Error("scenario failed", "scenario", name, "error", sc.Error)
			}
			rep.Scenarios = append(rep.Scenarios, sc)
			if name == scenario.Sweep {
				sweeps = append(sweeps, sc)
			}
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.Machine.LoadAfter = loadavg()

	if err := rep.WriteMarkdown(stdout); err != nil {
		return err
	}
	if o.out != "" {
		if err := writeOutputs(o.out, rep, sweeps); err != nil {
			return err
		}
	}
	if failed || ctx.Err() != nil {
		return fmt.Errorf("some scenarios failed or the run was cut short (%v); service logs kept in %s", ctx.Err(), logDir)
	}
	if !keepLogs {
		_ = os.RemoveAll(logDir)
	}
	return nil
}

func writeOutputs(dir string, rep *report.Report, sweeps []*report.Scenario) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name string, f func(io.Writer) error) error {
		fh, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := f(fh); err != nil {
			fh.Close()
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return fh.Close()
	}
	if err := write("results.json", rep.WriteJSON); err != nil {
		return err
	}
	if err := write("results.md", rep.WriteMarkdown); err != nil {
		return err
	}
	for _, sc := range sweeps {
		name := "sweep.svg"
		sub := fmt.Sprintf("warm cache, loopback, %d CPUs; every process on the same machine", rep.Machine.CPUs)
		if sc.ASLatencyMS > 0 {
			name = fmt.Sprintf("sweep-as%dms.svg", sc.ASLatencyMS)
			sub += fmt.Sprintf("; authorization server +%d ms", sc.ASLatencyMS)
		}
		chart := sweepChart(sc, sub)
		if err := write(name, func(w io.Writer) error { return report.WriteSVG(w, chart) }); err != nil {
			return err
		}
	}
	return nil
}

// replot rewrites the outputs of a past run from its results.json.
func replot(path, out string, stdout io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := rep.WriteMarkdown(stdout); err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	var sweeps []*report.Scenario
	for _, sc := range rep.Scenarios {
		if sc.Name == scenario.Sweep {
			sweeps = append(sweeps, sc)
		}
	}
	return writeOutputs(out, &rep, sweeps)
}

// sweepChart draws the sweep: one row for the MCP targets, one for the gRPC
// targets, whose throughputs differ by an order of magnitude.
func sweepChart(sc *report.Scenario, subtitle string) report.Chart {
	series := func(kind string, dashed bool) report.Series {
		s := report.Series{Name: kind, Dashed: dashed}
		for _, r := range sc.Runs {
			if r.Target == kind {
				s.Points = append(s.Points, report.Point{Clients: r.Clients, RPS: r.RPS, P99MS: r.P99MS})
			}
		}
		return s
	}
	return report.Chart{
		Title:    "mcpauthz: the cost of authentication, against concurrency",
		Subtitle: subtitle,
		Rows: []report.Row{
			{Title: "MCP tools/call who_am_i: gateway (authenticated) vs unauthenticated go-sdk server",
				Series: []report.Series{series(report.KindGateway, false), series(report.KindMCPFloor, true)}},
			{Title: "gRPC: authz Authorize (L1 cache hit) vs no-op unary call (grpc.health.v1 Check)",
				Series: []report.Series{series(report.KindAuthz, false), series(report.KindGRPCFloor, true)}},
		},
	}
}

// repoRoot finds the directory holding go.work, from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (go.work): pass -bin")
		}
		dir = parent
	}
}

// floorGOGC returns the floors' GOGC: the one set where mcpload runs, else
// the gateway's default ("" when unknown: Go's default), so that the floors
// collect garbage as often as the gateway does and the ratios measure
// authentication, not a GC setting.
func floorGOGC(gatewayDefault int) string {
	if gogc := os.Getenv("GOGC"); gogc != "" {
		return gogc
	}
	if gatewayDefault > 0 {
		return strconv.Itoa(gatewayDefault)
	}
	return ""
}

// floorsGCNote says how often the floors collect garbage, which moves their
// cost as much as anything they do.
func floorsGCNote(gatewayDefault int) string {
	gogc := os.Getenv("GOGC")
	switch {
	case gogc != "":
	case gatewayDefault == 0:
		gogc = "100 (Go's default; the gateway's is unknown without -bin)"
	default:
		gogc = strconv.Itoa(gatewayDefault) + " (the gateway's default)"
	}
	return "Floors' GOGC: " + gogc + "."
}

func machine() report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
