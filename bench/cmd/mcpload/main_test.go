package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
	"github.com/mcpauthz/mcpauthz/bench/internal/scenario"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

func TestParseFlagsRejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown scenario", []string{"-scenarios", "warm,tepid"}, `unknown scenario "tepid"`},
		{"bad clients", []string{"-clients", "4,x"}, "-clients"},
		{"zero clients", []string{"-clients", "0"}, "-clients"},
		{"bad sweep", []string{"-sweep", ""}, "-sweep"},
		{"bad latency", []string{"-as-latency", "30"}, "-as-latency"},
		{"negative latency", []string{"-as-latency", "-1ms"}, "-as-latency"},
		{"zero duration", []string{"-duration", "0s"}, "-duration"},
		{"no tokens", []string{"-tokens", "0"}, "-tokens"},
		{"no rounds", []string{"-rounds", "0"}, "-rounds"},
		{"bad protocol", []string{"-protocol", "latest"}, "-protocol"},
		{"churn too big", []string{"-churn", "1.5"}, "-churn"},
		{"gateway without authz", []string{"-gateway", "http://127.0.0.1:8000"}, "-gateway and -authz"},
		{"stray argument", []string{"warm"}, "unexpected arguments"},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
		{"gateway env without =", []string{"-gateway-env", "DECISION_CACHE_TTL"}, "not KEY=VALUE"},
		{"authz env without key", []string{"-authz-env", "=1s"}, "not KEY=VALUE"},
		// 2 rounds x 5 targets x (0.5 s + 60 s + 5 s grace) > 10 min.
		{"federated outlasting its assertion", []string{"-scenarios", "federated", "-duration", "60s"}, "assertion lives"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseFlags(%q) error %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestParseFlagsDefaultsAndLists(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-scenarios", "warm,sweep", "-as-latency", "0,30ms", "-clients", "1,8",
		"-gateway-env", "DECISION_CACHE_TTL=1s", "-gateway-env", "LOG_LEVEL=debug", "-authz-env", "CACHE_TTL=5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{scenario.Warm, scenario.Sweep}, o.scenarios); diff != "" {
		t.Errorf("scenarios (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]time.Duration{0, 30 * time.Millisecond}, o.asLatency); diff != "" {
		t.Errorf("as-latency (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1, 8}, o.clients); diff != "" {
		t.Errorf("clients (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(envList{"DECISION_CACHE_TTL=1s", "LOG_LEVEL=debug"}, o.gatewayEnv); diff != "" {
		t.Errorf("gateway-env (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(envList{"CACHE_TTL=5s"}, o.authzEnv); diff != "" {
		t.Errorf("authz-env (-want +got):\n%s", diff)
	}
	def, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(scenario.All, def.scenarios); diff != "" {
		t.Errorf("default scenarios (-want +got):\n%s", diff)
	}
}

func TestWriteOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sc := &report.Scenario{Name: scenario.Sweep, ASLatencyMS: 30, Runs: []report.Run{
		{Target: report.KindGateway, Clients: 1, RPS: 100, P99MS: 1},
		{Target: report.KindGateway, Clients: 2, RPS: 180, P99MS: 1.5},
		{Target: report.KindMCPFloor, Clients: 1, RPS: 150, P99MS: 0.8},
	}}
	rep := &report.Report{Machine: report.Machine{CPUs: 2}, Scenarios: []*report.Scenario{sc}}
	if err := writeOutputs(dir, rep, []*report.Scenario{sc}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "results.md", "sweep-as30ms.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			t.Errorf("%s not written (%v) or empty", f, err)
		}
	}
	chart := sweepChart(sc, "")
	if len(chart.Rows) != 2 || len(chart.Rows[0].Series) != 2 || len(chart.Rows[0].Series[0].Points) != 2 || len(chart.Rows[0].Series[1].Points) != 1 {
		t.Errorf("chart %+v: want 2 rows, the first with 2 gateway points and 1 floor point", chart)
	}
}

func TestReplot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sc := &report.Scenario{Name: scenario.Sweep, Runs: []report.Run{{Target: report.KindGateway, Clients: 1, RPS: 100, P99MS: 1}}}
	rep := &report.Report{Scenarios: []*report.Scenario{sc}}
	if err := writeOutputs(dir, rep, []*report.Scenario{sc}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var md bytes.Buffer
	if err := run(t.Context(), []string{"-replot", filepath.Join(dir, "results.json"), "-out", out}, &md, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| gateway who_am_i | 1 | 100 |") {
		t.Errorf("replotted Markdown lacks the run:\n%s", md.String())
	}
	if _, err := os.Stat(filepath.Join(out, "sweep.svg")); err != nil {
		t.Errorf("replot wrote no chart: %v", err)
	}
	if err := run(t.Context(), []string{"-replot", filepath.Join(dir, "missing.json")}, io.Discard, io.Discard); err == nil {
		t.Error("replot of a missing file succeeded")
	}
}

// TestFloorGOGCIsTheGateways checks that gatewayGOGC, the floors' GOGC, is
// the one the real gateway binary runs with when GOGC is unset (it reports it
// as go_gc_gogc_percent), so the floors stay tuned like the gateway they are
// compared with.
func TestFloorGOGCIsTheGateways(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "mcp-gateway")
	gogc, err := gatewayGOGC(bin)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.StartProcess(t, "mcp-gateway", bin, testenv.ProcessOptions{
		Env: []string{
			"MCP_LISTEN=127.0.0.1:0",
			"MCP_METRICS_LISTEN=127.0.0.1:0",
			"AUTHZ_ADDR=127.0.0.1:9", // nobody: /metrics does not need authz
			"PROPELAUTH_AUTH_URL=http://127.0.0.1:9",
		},
		ReadyListener: "MCP_METRICS_LISTEN", ReadyPath: "/healthz",
	})
	metricsAddr, err := p.Listening(t.Context(), "MCP_METRICS_LISTEN")
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\ngo_gc_gogc_percent %d\n", gogc); !bytes.Contains(body, []byte(want)) {
		t.Errorf("the gateway's /metrics lacks %q: gatewayGOGC does not read the gateway's default GOGC", strings.TrimSpace(want))
	}
}
