package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// wantChallenge is an expected error answer: status, the Bearer challenge's
// parameters (error_description only checked for presence), and the body's
// error code.
type wantChallenge struct {
	status    int
	params    map[string]string // nil: no WWW-Authenticate at all
	desc      bool              // error_description present
	bodyError string
}

func checkChallenge(t *testing.T, res *http.Response, want wantChallenge) {
	t.Helper()
	if res.StatusCode != want.status {
		t.Errorf("status %d, want %d", res.StatusCode, want.status)
	}
	values := res.Header.Values("WWW-Authenticate")
	if want.params == nil {
		if len(values) != 0 {
			t.Errorf("unexpected WWW-Authenticate %q", values)
		}
	} else {
		cs, err := oauthex.ParseWWWAuthenticate(values)
		if err != nil {
			t.Fatalf("parsing WWW-Authenticate %q: %v", values, err)
		}
		if len(cs) != 1 || cs[0].Scheme != "bearer" {
			t.Fatalf("challenges %+v, want one Bearer challenge", cs)
		}
		got := cs[0].Params
		desc, hasDesc := got["error_description"]
		if hasDesc != want.desc || (hasDesc && desc == "") {
			t.Errorf("error_description %q (present %v), want present %v", desc, hasDesc, want.desc)
		}
		delete(got, "error_description")
		if diff := cmp.Diff(want.params, got); diff != "" {
			t.Errorf("WWW-Authenticate parameters (-want +got):\n%s", diff)
		}
	}
	body := errorBody(t, res)
	if body.Error != want.bodyError || body.ErrorDescription == "" {
		t.Errorf("body %+v, want error %q with a description", body, want.bodyError)
	}
	if res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", res.Header.Get("Content-Type"))
	}
}

// TestChallenges covers every 400/401/403 answer of the shared stack; the 503s
// are in TestAuthzDown and TestAuthorizationServerFaults.
func TestChallenges(t *testing.T) {
	t.Parallel()
	g := stack.Gateway
	prm := g.URL + "/.well-known/oauth-protected-resource/mcp"
	both := scopeUser + " " + scopeOrg
	userToken := mint(t, []string{scopeUser})
	orgOnlyToken := mint(t, []string{scopeOrg})
	otherResource := mint(t, []string{scopeUser, scopeOrg}, "https://elsewhere.example.com/mcp")
	expiresIn := int64(-3600)
	expired := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP(), ExpiresIn: &expiresIn})

	unauthorized := func(scope string) wantChallenge {
		return wantChallenge{status: 401, params: map[string]string{"resource_metadata": prm, "scope": scope}, bodyError: "unauthorized"}
	}
	invalidToken := func(scope string) wantChallenge {
		return wantChallenge{status: 401, params: map[string]string{"resource_metadata": prm, "scope": scope, "error": "invalid_token"}, desc: true, bodyError: "invalid_token"}
	}
	insufficient := func(scope string) wantChallenge {
		return wantChallenge{status: 403, params: map[string]string{"resource_metadata": prm, "scope": scope, "error": "insufficient_scope"}, desc: true, bodyError: "insufficient_scope"}
	}
	invalidRequest := func(scope string) wantChallenge {
		return wantChallenge{status: 400, params: map[string]string{"resource_metadata": prm, "scope": scope, "error": "invalid_request"}, desc: true, bodyError: "invalid_request"}
	}

	// Every 401 and 400 asks for every supported scope, whatever the
	// request (package doc, Scopes); a 403 names exactly the operation's.
	tests := []struct {
		name  string
		url   string
		token string
		body  string
		hdr   []string
		want  wantChallenge
	}{
		{"no token", g.MCP(), "", listBody(), nil, unauthorized(both)},
		{"no token, tool needing more scopes", g.MCP(), "", callBody("list_my_orgs"), nil, unauthorized(both)},
		{"no token, malformed body", g.MCP(), "", `{"jsonrpc":`, nil, unauthorized(both)},
		{"no token, trailing slash", g.MCP() + "/", "", listBody(), nil, unauthorized(both)},
		{"basic scheme", g.MCP(), "", listBody(), []string{"Authorization", "Basic YWxpY2U6cHc="}, unauthorized(both)},
		{"bearer without token", g.MCP(), "", listBody(), []string{"Authorization", "Bearer"}, invalidToken(both)},
		{"bearer with two words", g.MCP(), "", listBody(), []string{"Authorization", "Bearer abc def"}, invalidToken(both)},
		{"bearer with bad characters", g.MCP(), "", listBody(), []string{"Authorization", "Bearer abc\"def"}, invalidToken(both)},
		{"unknown token", g.MCP(), "not-a-real-token-" + strings.Repeat("x", 20), listBody(), nil, invalidToken(both)},
		{"lowercase scheme, unknown token", g.MCP(), "", listBody(), []string{"Authorization", "bearer unknownunknown"}, invalidToken(both)},
		{"expired token", g.MCP(), expired, listBody(), nil, invalidToken(both)},
		{"token for another resource", g.MCP(), otherResource, listBody(), nil, invalidToken(both)},
		{"token for another resource, tool", g.MCP(), otherResource, callBody("list_my_orgs"), nil, invalidToken(both)},
		{"token lacking SCOPES", g.MCP(), orgOnlyToken, listBody(), nil, insufficient(scopeUser)},
		{"token lacking the tool's scope", g.MCP(), userToken, callBody("list_my_orgs"), nil, insufficient(both)},
		{"token in query", g.MCP() + "?access_token=" + userToken, "", listBody(), nil, invalidRequest(both)},
		{"token in query and header", g.MCP() + "?access_token=" + userToken, userToken, listBody(), nil, invalidRequest(both)},
		{"two authorization headers", g.MCP(), userToken, listBody(), []string{"Authorization", "Bearer " + userToken}, invalidRequest(both)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkChallenge(t, post(t, tt.url, tt.token, tt.body, tt.hdr...), tt.want)
		})
	}

	// The same tokens work where they should, so the refusals above are about
	// the operation, not a broken token.
	t.Run("controls", func(t *testing.T) {
		t.Parallel()
		if r := readRPC(t, post(t, g.MCP(), userToken, listBody())); r.Error != nil {
			t.Errorf("tools/list with read:user_data: %+v", r.Error)
		}
		if tr := callTool(t, g.MCP(), userToken, "who_am_i", nil); tr.IsError {
			t.Errorf("who_am_i with read:user_data: %+v", tr)
		}
	})
}
