package scenario

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/report"
)

// TestFederatedAgainstRealStack runs the federated scenario for a fraction of
// a second per target against the real binaries (identity-upstream
// included) and checks that every target answered: through the gateway to
// both upstreams, and directly, the identity-upstream call with the
// assertion the tool signs (so its kid and claims are what the upstream
// accepts from the gateway). Figures are not checked: they are measurements.
func TestFederatedAgainstRealStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the stack and an upstream: go test without -short (make test) runs it")
	}
	cfg := config(t)
	sc := Run(t.Context(), cfg, Federated)
	if sc.Error != "" {
		t.Fatalf("federated failed: %s", sc.Error)
	}
	for _, kind := range []string{KindDirectNone, KindGatewayNone, KindDirectJWT, KindGatewayJWT, report.KindGateway} {
		r := findRun(t, sc, kind)
		if r.Requests == 0 || r.Errors != 0 {
			t.Errorf("%s: %d requests, outcomes %v: want some, all ok", kind, r.Requests, r.Outcomes)
		}
		if _, ok := r.CPUUsPerReq["mcpload"]; !ok {
			t.Errorf("%s: no CPU accounting: %v", kind, r.CPUUsPerReq)
		}
	}
	if _, ok := findRun(t, sc, KindGatewayJWT).CPUUsPerReq[identityUpstream]; !ok {
		t.Errorf("the upstream's CPU is not accounted for: %v", findRun(t, sc, KindGatewayJWT).CPUUsPerReq)
	}
}

// TestFederatedSoakAgainstRealStack soaks for a few seconds while the
// upstream restarts every second and checks that it restarted, that the
// gateway's RSS was sampled, and that the clients saw only JSON-RPC errors
// naming the upstream around the restarts (the gateway's contract), never a
// hang or a dropped connection.
func TestFederatedSoakAgainstRealStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the stack and restarts an upstream: go test without -short (make test) runs it")
	}
	cfg := config(t)
	cfg.SoakDuration, cfg.SoakClients, cfg.RestartEvery = 5*time.Second, 2, time.Second
	sc := Run(t.Context(), cfg, FederatedSoak)
	if sc.Error != "" {
		t.Fatalf("federated-soak failed: %s", sc.Error)
	}
	r := findRun(t, sc, KindGatewayJWT)
	if r.Outcomes[load.OK] == 0 {
		t.Errorf("no successful call: %v", r.Outcomes)
	}
	restarts := 0
	for _, n := range sc.Notes {
		if strings.HasPrefix(n, "restart ") {
			restarts++
		}
	}
	if restarts < 3 {
		t.Errorf("%d restarts noted in 5 s at one a second, want at least 3: %q", restarts, sc.Notes)
	}
	// identity-upstream's CPU time cannot be followed across restarts: the
	// row leaves it out and a note says so.
	if _, ok := r.CPUUsPerReq[identityUpstream]; ok {
		t.Errorf("the soak row accounts for %s's CPU across restarts: %v", identityUpstream, r.CPUUsPerReq)
	}
	if !slices.ContainsFunc(sc.Notes, func(n string) bool { return strings.HasPrefix(n, identityUpstream+"'s CPU time is not accounted for") }) {
		t.Errorf("no note that %s's CPU is left out: %q", identityUpstream, sc.Notes)
	}
	if len(sc.Samples) < 2 || sc.Samples[0].RSSBytes["mcp-gateway"] == 0 {
		t.Errorf("gateway RSS not sampled: %+v", sc.Samples)
	}
	for _, c := range sc.Checks {
		if strings.HasPrefix(c.Name, "failed requests that were not") || strings.HasPrefix(c.Name, "JSON-RPC errors that name") || strings.HasPrefix(c.Name, "upstream restarts") {
			if !c.Met {
				t.Errorf("check %q: %v, want %s; outcomes %v, notes %q", c.Name, c.Value, c.Target, r.Outcomes, sc.Notes)
			}
		}
	}
}

func TestAssertionKeySigns(t *testing.T) {
	t.Parallel()
	k, err := newAssertionKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := k.sign("http://gw", "http://up/mcp", "user-1", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a compact JWS", a)
	}
	b64 := base64.RawURLEncoding
	var header map[string]string
	var claims map[string]any
	h, _ := b64.DecodeString(parts[0])
	p, _ := b64.DecodeString(parts[1])
	if err := json.Unmarshal(h, &header); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(p, &claims); err != nil {
		t.Fatal(err)
	}
	// The kid is the key's RFC 7638 thumbprint, as the gateway names its key
	// in the JWKS identity-upstream fetches: recomputed here by go-jose.
	tp, err := (&jose.JSONWebKey{Key: &k.priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"alg": "ES256", "kid": b64.EncodeToString(tp), "typ": "JWT"}, header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if claims["iss"] != "http://gw" || claims["aud"] != "http://up/mcp" || claims["sub"] != "user-1" || claims["exp"].(float64)-claims["iat"].(float64) != 300 {
		t.Errorf("claims %v", claims)
	}
	sig, _ := b64.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if len(sig) != 64 || !ecdsa.Verify(&k.priv.PublicKey, digest[:], r, s) {
		t.Error("the signature does not verify")
	}
}

func TestSummarizeRestarts(t *testing.T) {
	t.Parallel()
	s := time.Second
	ms := time.Millisecond
	restarts := []restartEvent{{at: 10 * s, took: 80 * ms, kill: true}, {at: 20 * s, took: 90 * ms}}
	fails := []failure{
		{at: 20*s + 5*ms, took: 2 * ms, label: "jsonrpc error -32010"},
		{at: 2 * s, took: ms, label: "transport"},
		{at: 10*s + 1*ms, took: 1 * ms, label: "jsonrpc error -32010"},
		{at: 10*s + 50*ms, took: 3 * ms, label: "jsonrpc error -32010"},
		// Sent before restart 1, answered (failed) after it: restart 1's.
		{at: 10*s - 5*ms, took: 20 * ms, label: "jsonrpc error -32010"},
		// Sent before restart 2, answered before it: still restart 1's.
		{at: 20*s - 9*ms, took: 4 * ms, label: "jsonrpc error -32011"},
	}
	got := summarizeRestarts(restarts, fails)
	want := []string{
		"1 failed requests before the first restart.",
		"restart 1 at 10.0 s (SIGKILL, back up after 80 ms): 4 failed requests (jsonrpc error -32010 x3, jsonrpc error -32011 x1), answered from +2 ms to +9995 ms after it, the slowest answered in 20.0 ms.",
		"restart 2 at 20.0 s (SIGTERM, back up after 90 ms): 1 failed requests (jsonrpc error -32010 x1), answered from +7 ms to +7 ms after it, the slowest answered in 2.0 ms.",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}

// TestFederatedChecks: the targets are evaluated per identity setting on the
// figures of the run.
func TestFederatedChecks(t *testing.T) {
	t.Parallel()
	sc := &report.Scenario{Runs: []report.Run{
		{Target: KindDirectNone, Clients: 32, RPS: 1000},
		{Target: KindGatewayNone, Clients: 32, RPS: 800},
		{Target: KindDirectJWT, Clients: 32, RPS: 1000},
		{Target: KindGatewayJWT, Clients: 32, RPS: 600},
		{Target: KindDirectNone, Clients: 4, P50MS: 1},
		{Target: KindGatewayNone, Clients: 4, P50MS: 1.4},
		{Target: KindDirectJWT, Clients: 4, P50MS: 1},
		{Target: KindGatewayJWT, Clients: 4, P50MS: 1.6},
	}}
	checkFederated(sc)
	got := map[string]bool{}
	for _, c := range sc.Checks {
		got[c.Name] = c.Met
	}
	want := map[string]bool{
		"identity: none: gateway / direct throughput at 32 clients": true,
		"identity: none: gateway p50 minus direct p50 at 4 clients": true,
		"identity: jwt: gateway / direct throughput at 32 clients":  false,
		"identity: jwt: gateway p50 minus direct p50 at 4 clients":  false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("checks met (-want +got):\n%s", diff)
	}
}

// TestNamedShare: the share counts requests, not kinds of message, and only
// JSON-RPC errors: a tool error or the error log's "(other)" changes nothing.
func TestNamedShare(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msgs map[string]uint64
		want float64
	}{
		{"none", map[string]uint64{}, 1},
		{"all named", map[string]uint64{`jsonrpc error -32010: upstream "identity" is unavailable: refused`: 90, `jsonrpc error -32011: upstream "identity" did not answer within 10s`: 10}, 1},
		{"by count", map[string]uint64{`jsonrpc error -32010: upstream "identity" is unavailable: refused`: 3, "jsonrpc error -32603: internal error": 1}, 0.75},
		{"other kinds ignored", map[string]uint64{`jsonrpc error -32010: upstream "identity" is unavailable: EOF`: 5, `tool error: {"isError":true}`: 7, "(other)": 2}, 1},
		{"another upstream", map[string]uint64{`jsonrpc error -32010: upstream "floor" is unavailable: refused`: 1, `jsonrpc error -32010: upstream "identity" is unavailable: refused`: 1}, 0.5},
	}
	for _, tt := range tests {
		if got := namedShare(tt.msgs); got != tt.want {
			t.Errorf("%s: share %v, want %v", tt.name, got, tt.want)
		}
	}
}
