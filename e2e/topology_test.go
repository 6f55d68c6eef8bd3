package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	launcher "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Seeded devauth user the tests log in as.
const (
	aliceEmail = seedusers.AliceEmail
	aliceID    = seedusers.AliceID
	acmeOrgID  = seedusers.AcmeOrgID
)

// topology is the docker-compose topology played by processes on loopback
// (internal/stack): one redis-server, devauth, N authz replicas sharing that
// Redis and M gateways, gateway i talking to authz replica i mod N.
type topology struct {
	redis      *testenv.Redis
	devauthURL string
	apiKey     string
	clientID   string
	secret     string
	// resource is the public MCP URL every gateway serves (as behind one load
	// balancer), so a token is valid on all of them.
	resource string
	authz    []*authzReplica
	gateways []*gatewayProc
}

type authzReplica struct {
	addr       string
	metricsURL string
	proc       *testenv.Process
	client     authzv1.AuthzServiceClient
}

type gatewayProc struct {
	url  string
	proc *testenv.Process
}

// startTopology starts the processes and stops them when t ends. devauthEnv adds
// variables to devauth's environment (e.g. DEVAUTH_AUTO_APPROVE).
func startTopology(t *testing.T, nAuthz, nGateways int, devauthEnv ...string) *topology {
	t.Helper()
	s := launcher.New(t, launcher.Options{
		Redis: true, Authz: nAuthz, Gateways: nGateways,
		DevauthEnv: devauthEnv,
		// Introspections are counted exactly below; on a loaded CI machine a
		// first Redis dial has taken longer than the 100ms default, which
		// would turn a shared-cache hit into a (correct) introspection.
		AuthzEnv:   []string{"REDIS_TIMEOUT=2s"},
		GatewayEnv: []string{"SCOPES=read:user_data"},
	})
	c := s.Options.Credentials
	top := &topology{
		redis: s.Redis, devauthURL: s.Devauth.URL, resource: s.Resource,
		apiKey: c.APIKey, clientID: c.ClientID, secret: c.ClientSecret,
	}
	for _, a := range s.Authz {
		conn, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		top.authz = append(top.authz, &authzReplica{addr: a.Addr, metricsURL: a.MetricsURL, proc: a.Proc, client: authzv1.NewAuthzServiceClient(conn)})
	}
	for _, g := range s.Gateways {
		top.gateways = append(top.gateways, &gatewayProc{url: g.URL, proc: g.Proc})
	}
	return top
}

// mint asks devauth's test API for a token for alice with scopes on the topology's
// resource.
func (top *topology) mint(t *testing.T, scopes ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"email": aliceEmail, "scopes": scopes, "resource": top.resource, "expires_in": 3600})
	var out struct {
		AccessToken string `json:"access_token"`
	}
	top.devauthJSON(t, http.MethodPost, "/dev/tokens", body, &out)
	if out.AccessToken == "" {
		t.Fatal("devauth minted an empty token")
	}
	return out.AccessToken
}

type devauthStats struct {
	Introspections int `json:"introspections"`
	UserFetches    int `json:"user_fetches"`
}

func (top *topology) stats(t *testing.T) devauthStats {
	t.Helper()
	var s devauthStats
	top.devauthJSON(t, http.MethodGet, "/dev/stats", nil, &s)
	return s
}

func (top *topology) devauthJSON(t *testing.T, method, path string, body []byte, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, top.devauthURL+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+top.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
}

// revoke revokes token at devauth (RFC 7009) with the request-validation client.
func (top *topology) revoke(t *testing.T, token string) {
	t.Helper()
	form := url.Values{"token": {token}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, top.devauthURL+"/oauth/2.1/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(top.clientID, top.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %s", resp.Status)
	}
}

// callResult is what a tools/call over raw HTTP came back with.
type callResult struct {
	status int
	header http.Header
	// structured is result.structuredContent of a successful call.
	structured map[string]any
}

// callTool sends one stateless JSON-RPC tools/call to gateway g, as a 2025-11-25
// client would.
func callTool(ctx context.Context, t *testing.T, g *gatewayProc, token, tool string) callResult {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, tool)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("tools/call %s: %v", tool, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := callResult{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		return res
	}
	var rpc struct {
		Result struct {
			IsError           bool           `json:"isError"`
			StructuredContent map[string]any `json:"structuredContent"`
		} `json:"result"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	// A stateless server may answer as JSON or as one SSE event.
	payload := raw
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				payload = []byte(data)
			}
		}
	}
	if err := json.Unmarshal(payload, &rpc); err != nil {
		t.Fatalf("tools/call %s: decoding %q: %v", tool, raw, err)
	}
	if rpc.Error != nil || rpc.Result.IsError {
		t.Fatalf("tools/call %s failed: %s", tool, raw)
	}
	res.structured = rpc.Result.StructuredContent
	return res
}

// TestTopologySharesCacheAcrossReplicas plays docker compose with processes: two
// authz replicas on one Redis behind two gateways. A token introspected through one
// path is answered from the shared cache through the other; revocation through
// InvalidateToken on one replica is seen through the other at once.
func TestTopologySharesCacheAcrossReplicas(t *testing.T) {
	t.Parallel()
	top := startTopology(t, 2, 2)
	ctx := t.Context()
	token := top.mint(t, "read:user_data", "read:org_data")
	before := top.stats(t)

	first := callTool(ctx, t, top.gateways[0], token, "who_am_i")
	if first.status != http.StatusOK || first.structured["subject"] != aliceID {
		t.Fatalf("who_am_i through gateway 0: status %d, output %v", first.status, first.structured)
	}
	afterFirst := top.stats(t)
	if got := afterFirst.Introspections - before.Introspections; got != 1 {
		t.Errorf("introspections after the first call = %d, want 1", got)
	}

	// Through the other gateway and the other authz replica: nothing reaches the
	// authorization server, the shared Redis tier answers.
	for range 5 {
		second := callTool(ctx, t, top.gateways[1], token, "who_am_i")
		if second.status != http.StatusOK || second.structured["subject"] != aliceID {
			t.Fatalf("who_am_i through gateway 1: status %d, output %v", second.status, second.structured)
		}
	}
	afterSecond := top.stats(t)
	if afterSecond != afterFirst {
		t.Errorf("devauth calls grew from %+v to %+v through the second path; want all answered from cache", afterFirst, afterSecond)
	}
	user, ok := first.structured["user"].(map[string]any)
	if !ok || user["email"] != aliceEmail {
		t.Errorf("who_am_i user = %v, want alice's profile", first.structured["user"])
	}

	// Revoke at the authorization server, then tell one replica: the other refuses
	// the token on its very next request.
	top.revoke(t, token)
	start := time.Now()
	if _, err := top.authz[0].client.InvalidateToken(ctx, &authzv1.InvalidateTokenRequest{Token: token}); err != nil {
		t.Fatalf("InvalidateToken: %v", err)
	}
	var refused callResult
	deadline := time.Now().Add(2 * time.Second)
	for {
		refused = callTool(ctx, t, top.gateways[1], token, "who_am_i")
		if refused.status == http.StatusUnauthorized || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if refused.status != http.StatusUnauthorized {
		t.Fatalf("after revocation + InvalidateToken, gateway 1 answered %d; want 401", refused.status)
	}
	t.Logf("revocation seen across replicas after %v", time.Since(start))
	if ch := refused.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
		t.Errorf("401 challenge %q lacks error=\"invalid_token\"", ch)
	}
	if again := callTool(ctx, t, top.gateways[0], token, "who_am_i"); again.status != http.StatusUnauthorized {
		t.Errorf("gateway 0 after revocation answered %d; want 401", again.status)
	}
}
