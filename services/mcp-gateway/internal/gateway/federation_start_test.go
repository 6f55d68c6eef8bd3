package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/federation"
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
	gwURL, identURL := "http://"+gwAddr, identityUpstreamURL(identAddr)
	startIdentityUpstream(t, identAddr, gwURL)
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
	// The success series must be there, so that a renamed metric or label
	// fails here rather than making the error series' absence meaningless.
	metrics := fetch(t, gw.MetricsURL+"/metrics")
	if m := `mcp_gateway_upstream_catalog_refreshes_total{result="ok",upstream="ident"} `; !strings.Contains(metrics, m) {
		t.Errorf("metrics lack the successful catalog fetch %s", m)
	}
	if m := `mcp_gateway_upstream_catalog_refreshes_total{result="error",upstream="ident"}`; strings.Contains(metrics, m) {
		t.Errorf("metrics count a failed catalog fetch: %s", m)
	}
}

// TestFederationDownAndSlow: of three upstreams, one refuses connections
// and one accepts them but never answers. The gateway starts anyway (after
// start_timeout), lists the third one's tools and none of theirs, and its
// metrics and log lines name the two it left out. A call the third one
// does not answer within its timeout is a JSON-RPC error naming it, on
// HTTP 200, and every log line about that call names the upstream.
func TestFederationDownAndSlow(t *testing.T) {
	t.Parallel()
	alpha := newGoUpstream(t, "alpha")
	// It reads the request (so the server notices the gateway going away)
	// and answers nothing until the test ends.
	stopHanging := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-stopHanging:
		}
	}))
	t.Cleanup(func() {
		close(stopHanging)
		hang.Close()
	})
	file := writeFile(t, "upstreams.yaml", fmt.Sprintf(`
start_timeout: 1s
upstreams:
  - {name: alpha, url: %s, timeout: 1s}
  - {name: down, url: http://%s/mcp}
  - {name: hang, url: %s/mcp}
`, alpha.url(), testenv.FreeAddr(t), hang.URL))
	gw := stacktest.NewGateway(t, stack.Authz.Addr, stack.Devauth.URL, map[string]string{"UPSTREAMS_FILE": file, "LOG_LEVEL": "debug"})
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: gw.MCP()})

	r, _, res := rpc(t, gw.MCP(), token, "tools/list", map[string]any{})
	want := []string{"alpha_block", "alpha_echo", "alpha_odd_name_", "alpha_slow", "who_am_i"}
	if diff := cmp.Diff(want, toolNames(t, r)); res.StatusCode != http.StatusOK || diff != "" {
		t.Errorf("tools/list with two upstreams down: status %d (-want +got):\n%s", res.StatusCode, diff)
	}

	metrics := fetch(t, gw.MetricsURL+"/metrics")
	for _, want := range []string{
		`mcp_gateway_upstream_up{upstream="alpha"} 1`,
		`mcp_gateway_upstream_up{upstream="down"} 0`,
		`mcp_gateway_upstream_up{upstream="hang"} 0`,
		`mcp_gateway_upstream_catalog_entries{kind="tool",upstream="down"} 0`,
		`mcp_gateway_upstream_catalog_entries{kind="tool",upstream="hang"} 0`,
		`mcp_gateway_upstream_catalog_refreshes_total{result="error",upstream="down"}`,
		`mcp_gateway_upstream_catalog_refreshes_total{result="error",upstream="hang"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	logs := gw.Logs()
	for _, up := range []string{"down", "hang"} {
		if !slices.ContainsFunc(strings.Split(logs, "\n"), func(l string) bool {
			return strings.Contains(l, `"msg":"upstream catalog unavailable`) && strings.Contains(l, `"upstream":"`+up+`"`)
		}) {
			t.Errorf("no log line says upstream %s is left out:\n%s", up, logs)
		}
	}

	// alpha_block never ends by itself: alpha's 1s timeout answers.
	r, _, res = rpc(t, gw.MCP(), token, "tools/call", map[string]any{"name": "alpha_block", "arguments": map[string]any{}})
	if res.StatusCode != http.StatusOK || r.Error == nil || r.Error.Code != federation.CodeTimeout || !strings.Contains(r.Error.Message, `upstream "alpha"`) {
		t.Errorf("a call alpha does not answer: status %d, error %+v; want %d naming alpha", res.StatusCode, r.Error, federation.CodeTimeout)
	}
	routed := 0
	for _, line := range strings.Split(gw.Logs(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || (l["tool"] != "alpha_block" && l["name"] != "alpha_block") {
			continue
		}
		routed++
		if l["upstream"] != "alpha" {
			t.Errorf("a log line of the routed call does not name its upstream: %s", line)
		}
	}
	if routed < 2 {
		t.Errorf("%d log lines about the routed call, want the failure and the request lines:\n%s", routed, gw.Logs())
	}
}
