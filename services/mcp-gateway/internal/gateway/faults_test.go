package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/authzclient"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

func unavailable() wantChallenge {
	return wantChallenge{status: http.StatusServiceUnavailable, bodyError: "temporarily_unavailable"}
}

func checkUnavailable(t *testing.T, res *http.Response) {
	t.Helper()
	if ra := res.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	checkChallenge(t, res, unavailable())
}

// TestAuthzDown: with authz stopped, requests get 503 + Retry-After (never a
// 401 that would make clients discard good tokens) and /readyz fails; they
// recover when authz is back.
func TestAuthzDown(t *testing.T) {
	t.Parallel()
	az := stacktest.NewAuthz(t, stack.Devauth, stack.Redis.URL())
	g := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, map[string]string{"AUTHZ_TIMEOUT": "1s"})
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	callTool(t, g.MCP(), token, "who_am_i", nil)

	az.Proc.Stop()
	for _, body := range []string{callBody("who_am_i"), listBody()} {
		checkUnavailable(t, post(t, g.MCP(), token, body))
	}
	// A request without a token still gets its 401: no authz needed for that.
	checkChallenge(t, post(t, g.MCP(), "", listBody()), wantChallenge{status: 401, params: map[string]string{
		"resource_metadata": g.URL + "/.well-known/oauth-protected-resource/mcp", "scope": scopeUser + " " + scopeOrg}, bodyError: "unauthorized"})
	if res, b := get(t, g.MetricsURL+"/readyz"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with authz down: %d %s", res.StatusCode, b)
	}
	if res, _ := get(t, g.URL+"/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("/healthz with authz down: %d", res.StatusCode)
	}
}

// TestAuthorizationServerFaults: when devauth fails, a token authz has not
// cached gets 503, whatever the failure; a token authz has cached keeps
// working; everything recovers when devauth does.
func TestAuthorizationServerFaults(t *testing.T) {
	t.Parallel()
	d := stacktest.NewDevauth(t)
	az := stacktest.NewAuthz(t, d, "", "INTROSPECTION_TIMEOUT=500ms")
	g := stacktest.NewGateway(t, az.Addr, d.URL, map[string]string{"AUTHZ_TIMEOUT": "1500ms"})
	mintFor := func() string {
		return d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	}
	cached := mintFor()
	callTool(t, g.MCP(), cached, "who_am_i", nil)

	for _, mode := range []string{"error500", "garbage", "down", "hang"} {
		t.Run(mode, func(t *testing.T) {
			d.Fault(t, mode, 0)
			defer d.Fault(t, "ok", 0)
			checkUnavailable(t, post(t, g.MCP(), mintFor(), listBody()))
			if r := readRPC(t, post(t, g.MCP(), cached, listBody())); r.Error != nil {
				t.Errorf("cached token during %s: %+v", mode, r.Error)
			}
		})
	}
	if tr := callTool(t, g.MCP(), mintFor(), "who_am_i", nil); tr.IsError {
		t.Errorf("after recovery: %+v", tr)
	}
}

// TestGracefulShutdown: a request in flight when the gateway is told to stop
// completes; new connections are refused.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	d := stacktest.NewDevauth(t)
	az := stacktest.NewAuthz(t, d, "")
	// who_am_i makes two authz calls, each slowed by devauth's delay: a
	// deadline far from the default's 2 s keeps a loaded machine from
	// turning this test about draining into one about timeouts (it flaked
	// with 503 at a load average of 11).
	g := stacktest.NewGateway(t, az.Addr, d.URL, map[string]string{"AUTHZ_TIMEOUT": "20s"})
	token := d.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	d.Fault(t, "ok", 700) // a slow introspection keeps the request in flight

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, g.MCP(), strings.NewReader(callBody("who_am_i")))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- result{status: res.StatusCode, body: string(b)}
	}()
	d.WaitIntrospections(t, 1)
	stopped := make(chan struct{})
	go func() { g.Stop(); close(stopped) }()

	r := <-done
	if r.err != nil || r.status != http.StatusOK {
		t.Errorf("in-flight request during shutdown: %d %s, %v; want 200", r.status, r.body, r.err)
	}
	<-stopped
	for _, url := range []string{g.URL, g.MetricsURL} {
		if _, err := http.Get(url + "/healthz"); err == nil {
			t.Errorf("the gateway still accepts connections on %s after shutdown", url)
		}
	}
}

// TestNoTokenInLogs: whatever happened so far in this package, the shared
// gateway never logged a token it saw, nor a secret. It names the token of a
// denial by the short form of the token_ref authz returns for it, which is
// how authz's logs name it too, and never by the whole token_ref.
func TestNoTokenInLogs(t *testing.T) {
	t.Parallel()
	token := mint(t, []string{scopeOrg})
	post(t, stack.Gateway.MCP(), token, listBody()).Body.Close()                     // 403
	post(t, stack.Gateway.MCP()+"?access_token="+token, "", listBody()).Body.Close() // 400
	post(t, stack.Gateway.MCP(), token+"x", listBody()).Body.Close()                 // 401
	logs := stack.Gateway.Logs()
	for _, secret := range []string{token, stacktest.APIKey, stacktest.ClientSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("gateway logs contain a secret or token (%.8s...)", secret)
		}
	}

	az, err := authzclient.New(stack.Authz.Addr, authzclient.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer az.Close()
	res, err := az.Authorize(t.Context(), &authzv1.AuthorizeRequest{Token: token, Resource: stack.Gateway.MCP(), RequiredScopes: []string{scopeUser}})
	if err != nil || len(res.GetTokenRef()) != 64 {
		t.Fatalf("Authorize: %v, %v; want a token_ref", res, err)
	}
	if strings.Contains(logs, res.GetTokenRef()) {
		t.Error("gateway logs contain a whole token_ref, a decision cache key")
	}
	want := `"token_ref":"` + tokenref.Short(res.GetTokenRef()) + `"`
	for line := range strings.Lines(logs) {
		if strings.Contains(line, `"msg":"denied"`) && strings.Contains(line, want) {
			return
		}
	}
	t.Errorf("no denial logged with %s:\n%s", want, logs)
}
