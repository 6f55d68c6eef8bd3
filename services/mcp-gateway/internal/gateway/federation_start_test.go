package gateway_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// TestFederationVerifyingUpstreamAtStart: an upstream that verifies every
// request's identity assertion against the gateway's JWKS
// (examples/identity-upstream), running before the gateway starts, answers
// the gateway's first catalog request: the gateway serves its JWKS while it
// fetches the catalogs, so the upstream's tools are listed as soon as the
// gateway serves, with no catalog failure logged or counted.
func TestFederationVerifyingUpstreamAtStart(t *testing.T) {
	t.Parallel()
	gwAddr, identAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	gwURL, identURL := "http://"+gwAddr, "http://"+identAddr+"/mcp"
	testenv.StartProcess(t, "identity-upstream", testenv.Binary(t, "identity-upstream"), testenv.ProcessOptions{
		Args:     []string{"-listen", identAddr, "-jwks", gwURL + identity.JWKSPath, "-issuer", gwURL, "-audience", identURL},
		ReadyURL: "http://" + identAddr + "/healthz",
	})
	file := writeFile(t, "upstreams.yaml", "upstreams:\n  - name: ident\n    url: "+identURL+"\n")
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file, "MCP_LISTEN": gwAddr})
	if gw.URL != gwURL {
		t.Fatalf("gateway URL %s, want %s", gw.URL, gwURL)
	}

	// No waiting: NewGateway returns once the gateway serves.
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP()})
	r, _, _ := rpc(t, gw.MCP(), token, "tools/list", map[string]any{})
	if names := toolNames(t, r); !slices.Contains(names, "whoami") {
		t.Errorf("tools/list right after start: %q, want whoami", names)
	}
	r, _, _ = rpc(t, gw.MCP(), token, "tools/call", map[string]any{"name": "whoami", "arguments": map[string]any{}})
	if r.Error != nil || !strings.Contains(string(r.Result), stacktest.AliceID) {
		t.Errorf("whoami: %+v %s", r.Error, r.Result)
	}
	if strings.Contains(gw.Logs(), "upstream catalog unavailable") {
		t.Errorf("the gateway logged a catalog failure:\n%s", gw.Logs())
	}
	res, err := http.Get(gw.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if m := `mcp_gateway_upstream_catalog_refreshes_total{result="error",upstream="ident"}`; strings.Contains(string(b), m) {
		t.Errorf("metrics count a failed catalog fetch: %s", m)
	}
}
