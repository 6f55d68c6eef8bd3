package stack

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
)

// TestStack starts the whole topology the way the tests and the load tool
// use it, every binary on port 0: Redis, devauth, two balanced authz
// replicas, two gateways. It checks the URLs the stack reports are the ones
// the binaries serve, and that a token minted for the resource works through
// both gateways, whose calls reach both replicas.
func TestStack(t *testing.T) {
	t.Parallel()
	s := New(t, Options{Redis: true, Authz: 2, Balance: true, Gateways: 2, GatewayEnv: []string{"LOG_LEVEL=debug"}})
	if len(s.Authz) != 2 || len(s.Gateways) != 2 || s.Redis == nil {
		t.Fatalf("started %d replicas, %d gateways, Redis %v", len(s.Authz), len(s.Gateways), s.Redis)
	}
	if a, b := s.Authz[0].Addr, s.Authz[1].Addr; port(a) != port(b) || !strings.HasPrefix(a, "127.0.0.1:") || !strings.HasPrefix(b, "127.0.0.2:") {
		t.Errorf("balanced replicas on %s and %s: want one port on 127.0.0.1 and 127.0.0.2", a, b)
	}

	var md struct{ Issuer string }
	getJSON(t, "http://"+s.Devauth.Addr+"/.well-known/oauth-authorization-server/oauth/2.1", &md)
	if md.Issuer != s.Devauth.URL+"/oauth/2.1" {
		t.Errorf("devauth's issuer %q, want %q", md.Issuer, s.Devauth.URL+"/oauth/2.1")
	}
	for _, g := range s.Gateways {
		var prm struct {
			Resource             string
			AuthorizationServers []string `json:"authorization_servers"`
		}
		getJSON(t, "http://"+g.Addr+"/.well-known/oauth-protected-resource/mcp", &prm)
		if prm.Resource != s.Resource || len(prm.AuthorizationServers) != 1 || prm.AuthorizationServers[0] != md.Issuer {
			t.Errorf("%s serves resource %q for %v; want %q for %s", g.Name, prm.Resource, prm.AuthorizationServers, s.Resource, md.Issuer)
		}
	}

	// Tokens minted for the resource work through both gateways; with a new
	// token per call, every call reaches authz, and round robin spreads
	// them over both replicas.
	for i := range 8 {
		g := s.Gateways[i%2]
		tok := mint(t, s)
		if status, body := whoAmI(t, "http://"+g.Addr, tok); status != http.StatusOK || !strings.Contains(body, seedusers.AliceEmail) {
			t.Fatalf("who_am_i through %s: %d %s", g.Name, status, body)
		}
	}
	for _, a := range s.Authz {
		if n := authorizeCalls(t, a.MetricsURL); n == 0 {
			t.Errorf("%s served no Authorize call: the gateways do not balance over the replicas", a.Name)
		}
	}

	extra := s.AddAuthz(t, "authz-extra", "CACHE_TTL=5s")
	if out := extra.Proc.Output(); !strings.Contains(out, `"CACHE_TTL":"5s"`) || !strings.Contains(out, `"REDIS_URL":""`) {
		t.Errorf("the extra replica does not run with its own CACHE_TTL and without Redis:\n%s", out)
	}
	for _, p := range s.Processes() {
		for _, secret := range s.Options.Credentials.Secrets() {
			if strings.Contains(p.Output(), secret) {
				t.Errorf("%s logged a secret", p.Name)
			}
		}
	}
}

func TestStartRefusesGatewaysWithoutAuthz(t *testing.T) {
	t.Parallel()
	s, err := Start(t.Context(), Options{Gateways: 1})
	s.Close()
	if err == nil {
		t.Error("Start with a gateway and no authz succeeded")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func mint(t *testing.T, s *Stack) string {
	t.Helper()
	body := `{"email":"` + seedusers.AliceEmail + `","scopes":["read:user_data"],"resource":"` + s.Resource + `"}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.Devauth.Addr+"/dev/tokens", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Options.Credentials.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("minting: %s, %v", res.Status, err)
	}
	return tok.AccessToken
}

func whoAmI(t *testing.T, base, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/mcp",
		strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+tok)
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// authorizeCalls reads how many Authorize calls a replica served from its
// /metrics.
func authorizeCalls(t *testing.T, metricsURL string) float64 {
	t.Helper()
	res, err := http.Get(metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "authz_grpc_requests_total{") || !strings.Contains(line, `/authz.v1.AuthzService/Authorize"`) {
			continue
		}
		f := strings.Fields(line)
		n, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		sum += n
	}
	return sum
}

// TestBinary: a bin directory must hold the binary; without one it is built.
func TestBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Binary(dir, "authz"); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing from the bin directory: error %v, want one saying to run make build", err)
	}
	want := filepath.Join(dir, "authz")
	if err := os.WriteFile(want, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Binary(dir, "authz"); err != nil || got != want {
		t.Errorf("Binary(dir) = %q, %v; want %q", got, err, want)
	}
	if got, err := Binary("", "authz"); err != nil || filepath.Base(got) != "authz" {
		t.Errorf("Binary(\"\") = %q, %v; want a built authz", got, err)
	}
}
