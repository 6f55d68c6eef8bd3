// Package report turns load results into the load tool's outputs: one JSON
// document with everything measured, Markdown tables per scenario (kept beside
// the dated notes under bench/results/), and an SVG chart of throughput and p99 latency against
// concurrency, drawn by hand so the tool needs no charting library.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
)

// Target kinds, also the series of the chart.
const (
	KindGateway   = "gateway who_am_i"
	KindMCPFloor  = "floor: unauthenticated MCP who_am_i"
	KindAuthz     = "authz Authorize"
	KindAuthzUser = "authz Authorize + user (as the gateway calls it)"
	KindGRPCFloor = "floor: no-op gRPC (health Check)"
)

// Run is one measurement: one target at one concurrency.
type Run struct {
	Target    string            `json:"target"`
	Clients   int               `json:"clients"`
	Requests  uint64            `json:"requests"`
	Seconds   float64           `json:"seconds"`
	RPS       float64           `json:"rps"`
	P50MS     float64           `json:"p50_ms"`
	P90MS     float64           `json:"p90_ms"`
	P99MS     float64           `json:"p99_ms"`
	MaxMS     float64           `json:"max_ms"`
	MeanMS    float64           `json:"mean_ms"`
	Outcomes  map[string]uint64 `json:"outcomes"`
	Errors    uint64            `json:"errors"`
	Exhausted bool              `json:"exhausted,omitempty"`
	// Introspections and UserFetches are devauth's counter deltas over the
	// measured phase; nil when not applicable (floors).
	Introspections *int64 `json:"introspections,omitempty"`
	UserFetches    *int64 `json:"user_fetches,omitempty"`
	// AuthzCallsPerReq is the authz.v1 calls all replicas served per request
	// (from authz_grpc_requests_total); nil when not read.
	AuthzCallsPerReq *float64 `json:"authz_calls_per_req,omitempty"`
	// CPUUsPerReq is the CPU time (user + system, µs) each process spent per
	// recorded request during the measured phase, by process name
	// ("mcpload" is the load generator itself).
	CPUUsPerReq map[string]float64 `json:"cpu_us_per_req,omitempty"`
}

// CPUCores returns the cores the processes kept busy together during the run.
func (r Run) CPUCores() float64 {
	var us float64
	for _, v := range r.CPUUsPerReq {
		us += v
	}
	return us * r.RPS / 1e6
}

// FromResult converts a load result.
func FromResult(target string, r load.Result) Run {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Run{
		Target:    target,
		Clients:   r.Concurrency,
		Requests:  r.Requests,
		Seconds:   r.Elapsed.Seconds(),
		RPS:       r.Throughput(),
		P50MS:     ms(r.Latency.Quantile(0.50)),
		P90MS:     ms(r.Latency.Quantile(0.90)),
		P99MS:     ms(r.Latency.Quantile(0.99)),
		MaxMS:     ms(r.Latency.Max()),
		MeanMS:    ms(r.Latency.Mean()),
		Outcomes:  r.Outcomes,
		Errors:    r.Errors(),
		Exhausted: r.Exhausted,
	}
}

// Per1k returns n per 1,000 requests of the run, or -1 when n is unknown.
func (r Run) Per1k(n *int64) float64 {
	if n == nil || r.Requests == 0 {
		return -1
	}
	return float64(*n) * 1000 / float64(r.Requests)
}

// Check is one of the load targets (docs/performance.md) evaluated on this run's figures.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

// Format prints the value with its unit; a difference in ms keeps its sign.
func (c Check) Format() string {
	if c.Unit == " ms" {
		return fmt.Sprintf("%+.2f ms", c.Value)
	}
	return fmt.Sprintf("%.2f%s", c.Value, c.Unit)
}

// Scenario is one scenario's stack, runs, checks and notes.
type Scenario struct {
	Name        string           `json:"name"`
	Description string           `json:"description"`
	Stack       string           `json:"stack"`
	ASLatencyMS int64            `json:"as_latency_ms"`
	Protocol    string           `json:"protocol,omitempty"`
	Runs        []Run            `json:"runs"`
	Checks      []Check          `json:"checks,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
	RSSBytes    map[string]int64 `json:"rss_bytes,omitempty"`
	// Samples are RSS samples taken during the scenario (the soak).
	Samples []Sample `json:"samples,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Sample is the RSS of the services at one moment of a scenario.
type Sample struct {
	Seconds  float64          `json:"seconds"`
	RSSBytes map[string]int64 `json:"rss_bytes"`
}

// Trend fits a least-squares line to proc's RSS over the samples taken at or
// after from seconds (leaving out the warm-up of caches and heaps) and returns
// its slope in bytes per minute and the mean RSS of those samples. ok is false,
// and the figures zero, with fewer than 4 such samples.
func Trend(samples []Sample, proc string, from float64) (slopePerMin, mean float64, ok bool) {
	var xs, ys []float64
	for _, s := range samples {
		if v, ok := s.RSSBytes[proc]; ok && s.Seconds >= from {
			xs = append(xs, s.Seconds/60)
			ys = append(ys, float64(v))
		}
	}
	n := float64(len(xs))
	if n < 4 {
		return 0, 0, false
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, sy / n, true
	}
	return (n*sxy - sx*sy) / den, sy / n, true
}

// Find returns the run of target at clients.
func (s *Scenario) Find(target string, clients int) (Run, bool) {
	for _, r := range s.Runs {
		if r.Target == target && r.Clients == clients {
			return r, true
		}
	}
	return Run{}, false
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs       int      `json:"cpus"`
	CPUModel   string   `json:"cpu_model,omitempty"`
	GOMAXPROCS int      `json:"gomaxprocs"`
	GoVersion  string   `json:"go_version"`
	Kernel     string   `json:"kernel,omitempty"`
	LoadBefore string   `json:"load_before,omitempty"`
	LoadAfter  string   `json:"load_after,omitempty"`
	Notes      []string `json:"notes,omitempty"`
}

// Report is the whole output of one invocation.
type Report struct {
	Started   time.Time   `json:"started"`
	Seconds   float64     `json:"seconds"`
	Command   string      `json:"command"`
	Machine   Machine     `json:"machine"`
	Scenarios []*Scenario `json:"scenarios"`
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func f1(v float64) string {
	switch {
	case v < 0:
		return "–"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func outcomes(r Run) string {
	if r.Errors == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Outcomes)) {
		if k != load.OK {
			parts = append(parts, fmt.Sprintf("%d %s", r.Outcomes[k], k))
		}
	}
	return strings.Join(parts, ", ")
}

// WriteMarkdown writes one section per scenario: a table of runs, then the
// checks against the load targets (docs/performance.md) and the notes.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Measured %s in %.0f s on %d CPUs (%s), GOMAXPROCS %d, %s. Load average before %s, after %s.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Seconds, m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GoVersion, m.LoadBefore, m.LoadAfter)
	if r.Command != "" {
		fmt.Fprintf(&b, "Command: `%s`\n\n", r.Command)
	}
	for _, n := range m.Notes {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "### %s", s.Name)
		if s.ASLatencyMS > 0 {
			fmt.Fprintf(&b, " (authorization server +%d ms)", s.ASLatencyMS)
		}
		if s.Protocol != "" {
			fmt.Fprintf(&b, " (MCP %s)", s.Protocol)
		}
		fmt.Fprintf(&b, "\n\n%s\n\nStack: %s.\n\n", s.Description, s.Stack)
		if s.Error != "" {
			fmt.Fprintf(&b, "**Failed:** %s\n\n", s.Error)
		}
		if len(s.Runs) > 0 {
			b.WriteString("| target | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | introspections /1k req | user fetches /1k req | authz calls /req |\n")
			b.WriteString("|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|\n")
			for _, run := range s.Runs {
				ex := ""
				if run.Exhausted {
					ex = " (tokens exhausted)"
				}
				calls := "–"
				if run.AuthzCallsPerReq != nil {
					calls = fmt.Sprintf("%.2f", *run.AuthzCallsPerReq)
				}
				fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %s | %s%s | %s | %s | %s |\n",
					run.Target, run.Clients, run.RPS, ms(run.P50MS), ms(run.P90MS), ms(run.P99MS), ms(run.MaxMS),
					outcomes(run), ex, f1(run.Per1k(run.Introspections)), f1(run.Per1k(run.UserFetches)), calls)
			}
			b.WriteString("\n")
			writeCPU(&b, s.Runs)
		}
		for _, c := range s.Checks {
			mark := "met"
			if !c.Met {
				mark = "**missed**"
			}
			fmt.Fprintf(&b, "- %s: %s (target %s): %s\n", c.Name, c.Format(), c.Target, mark)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(s.RSSBytes) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(s.RSSBytes)) {
				parts = append(parts, fmt.Sprintf("%s %.1f MiB", k, float64(s.RSSBytes[k])/(1<<20)))
			}
			fmt.Fprintf(&b, "- RSS after the scenario: %s\n", strings.Join(parts, ", "))
		}
		writeSamples(&b, s.Samples)
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cpuOrder puts the processes of the CPU table in a stable, meaningful order.
var cpuOrder = []string{"mcpload", "floors", "mcp-gateway", "authz-1", "authz-2", "devauth", "redis"}

// writeCPU writes the CPU time per request of each process for every run that
// has it: the evidence of what limits each number on a shared 2-core machine.
func writeCPU(b *strings.Builder, runs []Run) {
	seen := map[string]bool{}
	for _, r := range runs {
		for k := range r.CPUUsPerReq {
			seen[k] = true
		}
	}
	if len(seen) == 0 {
		return
	}
	var cols []string
	for _, k := range cpuOrder {
		if seen[k] {
			cols = append(cols, k)
			delete(seen, k)
		}
	}
	cols = append(cols, slices.Sorted(maps.Keys(seen))...)
	b.WriteString("CPU time per request (µs, user+system, from /proc) by process, and cores kept busy:\n\n| target | clients |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c)
	}
	b.WriteString(" total | cores busy |\n|---|--:|")
	for range cols {
		b.WriteString("--:|")
	}
	b.WriteString("--:|--:|\n")
	for _, r := range runs {
		if len(r.CPUUsPerReq) == 0 {
			continue
		}
		fmt.Fprintf(b, "| %s | %d |", r.Target, r.Clients)
		var total float64
		for _, c := range cols {
			v, ok := r.CPUUsPerReq[c]
			if !ok {
				b.WriteString(" – |")
				continue
			}
			total += v
			fmt.Fprintf(b, " %.0f |", v)
		}
		fmt.Fprintf(b, " %.0f | %.2f |\n", total, r.CPUCores())
	}
	b.WriteString("\n")
}

// writeSamples writes about ten evenly spaced RSS samples as a table.
func writeSamples(b *strings.Builder, samples []Sample) {
	if len(samples) == 0 {
		return
	}
	procs := map[string]bool{}
	for _, s := range samples {
		for k := range s.RSSBytes {
			procs[k] = true
		}
	}
	names := slices.Sorted(maps.Keys(procs))
	b.WriteString("\nRSS during the scenario (MiB):\n\n| time |")
	for _, n := range names {
		fmt.Fprintf(b, " %s |", n)
	}
	b.WriteString("\n|--:|")
	for range names {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	step := max(len(samples)/10, 1)
	for i, s := range samples {
		if i%step != 0 && i != len(samples)-1 {
			continue
		}
		fmt.Fprintf(b, "| %.0f s |", s.Seconds)
		for _, n := range names {
			fmt.Fprintf(b, " %.1f |", float64(s.RSSBytes[n])/(1<<20))
		}
		b.WriteString("\n")
	}
}
