package scenario

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/floor"
	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
)

// config returns a tiny configuration against the real binaries and floors.
func config(t *testing.T) *Config {
	t.Helper()
	fl, err := floor.Start(t.Context(), floor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.Stop)
	return &Config{
		// make test's binaries when it gives them, else built from source
		// (stack.Binary), every one the scenarios start.
		BinDir:         os.Getenv("MCPAUTHZ_BIN_DIR"),
		Dir:            t.TempDir(),
		Clients:        []int{2},
		Warmup:         50 * time.Millisecond,
		Duration:       200 * time.Millisecond,
		Tokens:         20,
		ColdTokens:     30,
		StampedeSize:   20,
		StampedeRounds: 1,
		ChurnShare:     0.1,
		SweepClients:   []int{1, 2},
		SweepDuration:  100 * time.Millisecond,
		FloorMCPURL:    fl.MCPURL,
		FloorGRPCAddr:  fl.GRPCAddr,
		FloorPID:       fl.Pid(),
		Logger:         slog.New(slog.DiscardHandler),
	}
}

func findRun(t *testing.T, sc *report.Scenario, target string) report.Run {
	t.Helper()
	for _, r := range sc.Runs {
		if r.Target == target {
			return r
		}
	}
	t.Fatalf("scenario %s has no run of %q: %+v", sc.Name, target, sc.Runs)
	return report.Run{}
}

// TestScenariosAgainstRealStack runs warm, cold and stampede for a fraction
// of a second each against the real binaries, and checks that every target
// answered and that devauth's counters were read: zero introspections on
// warm tokens, one per token when cold.
func TestScenariosAgainstRealStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the stack three times: go test without -short (make test) runs it")
	}
	cfg := config(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	t.Run("warm", func(t *testing.T) {
		sc := Run(ctx, cfg, Warm)
		if sc.Error != "" {
			t.Fatalf("warm failed: %s", sc.Error)
		}
		for _, kind := range []string{report.KindGateway, report.KindMCPFloor, report.KindAuthz, report.KindGRPCFloor} {
			r := findRun(t, sc, kind)
			if r.Requests == 0 || r.Errors != 0 {
				t.Errorf("%s: %d requests, outcomes %v: want some, all ok", kind, r.Requests, r.Outcomes)
			}
		}
		for _, kind := range []string{report.KindGateway, report.KindAuthz} {
			r := findRun(t, sc, kind)
			if r.Introspections == nil || r.UserFetches == nil {
				t.Fatalf("%s: devauth counters not read", kind)
			}
			if *r.Introspections != 0 {
				t.Errorf("%s: %d introspections on warm tokens, want 0", kind, *r.Introspections)
			}
			// One Authorize carries everything a who_am_i needs; the
			// gateway's decision cache (on by default) may save it.
			lo := 0.9
			if kind == report.KindGateway {
				lo = 0
			}
			if c := r.AuthzCallsPerReq; c == nil || *c < lo || *c > 1.1 {
				t.Errorf("%s: authz calls per request %v, want %v to 1", kind, deref(c), lo)
			}
		}
		if len(sc.RSSBytes) == 0 {
			t.Error("no RSS recorded for the services")
		}
		var sawIntro bool
		for _, c := range sc.Checks {
			if strings.HasPrefix(c.Name, "introspections per distinct token per CACHE_TTL") {
				sawIntro = true
				if c.Value != 1 || !c.Met {
					t.Errorf("check %q = %v (met %v), want exactly 1: each token introspected once while priming", c.Name, c.Value, c.Met)
				}
			}
		}
		if !sawIntro {
			t.Errorf("no introspections-per-token check in %+v", sc.Checks)
		}
	})

	t.Run("cold", func(t *testing.T) {
		sc := Run(ctx, cfg, Cold)
		if sc.Error != "" {
			t.Fatalf("cold failed: %s", sc.Error)
		}
		for _, kind := range []string{report.KindGateway, report.KindAuthz} {
			r := findRun(t, sc, kind)
			if r.Introspections == nil {
				t.Fatalf("%s: devauth counters not read", kind)
			}
			if r.Requests == 0 || r.Outcomes[load.OK] != r.Requests {
				t.Errorf("%s: outcomes %v, want all ok", kind, r.Outcomes)
			}
			// Every request used a new token: one introspection each.
			if got := *r.Introspections; got != int64(r.Requests) {
				t.Errorf("%s: %d introspections for %d requests with new tokens, want one each", kind, got, r.Requests)
			}
		}
	})

	t.Run("stampede", func(t *testing.T) {
		sc := Run(ctx, cfg, Stampede)
		if sc.Error != "" {
			t.Fatalf("stampede failed: %s", sc.Error)
		}
		for _, kind := range []string{report.KindGateway, report.KindAuthz} {
			r := findRun(t, sc, kind)
			if r.Requests != 20 || r.Introspections == nil {
				t.Fatalf("%s: %d requests, introspections %v: want 20 and counted", kind, r.Requests, r.Introspections)
			}
			if got := *r.Introspections; got < 1 || got > 2 {
				t.Errorf("%s: %d introspections for one stampede on 2 replicas, want 1 or 2", kind, got)
			}
		}
	})
}

func TestExternalSkipsTopologyScenarios(t *testing.T) {
	t.Parallel()
	cfg := &Config{External: &External{GatewayURL: "http://127.0.0.1:1", AuthzTarget: "127.0.0.1:1"}, Logger: slog.New(slog.DiscardHandler)}
	for _, name := range []string{TwoReplicas, NoRedis} {
		sc := Run(t.Context(), cfg, name)
		if !strings.HasPrefix(sc.Error, "skipped") {
			t.Errorf("%s against an external stack: Error %q, want skipped", name, sc.Error)
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestSoakDescriptionNamesItsSampling: the soak's description, which every
// report prints, states the RSS sampling interval the soak really uses (it
// once said 10 s while sampling every 2 s).
func TestSoakDescriptionNamesItsSampling(t *testing.T) {
	t.Parallel()
	cfg := &Config{SoakDuration: 10 * time.Minute, SoakClients: 2, Tokens: 1000, SoakNewPerSec: 10}
	got := describe(Soak, cfg)
	if want := fmt.Sprintf("sampled every %v.", soakSample); !strings.HasSuffix(got, want) {
		t.Errorf("describe(Soak) = %q, want it to end with %q", got, want)
	}
}
