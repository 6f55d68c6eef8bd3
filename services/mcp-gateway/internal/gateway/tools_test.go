package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"google.golang.org/protobuf/encoding/protojson"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// echoTool is a tool built from a catalog entry, as the tools an upstream MCP
// server lists will be, needing its own scope.
func echoTool(t *testing.T) tools.Tool {
	t.Helper()
	tool, err := tools.New(tools.Definition{
		Spec:        tools.Spec{Name: "upstream.echo", Description: "Echoes.", Scopes: []string{"use:echo"}},
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(_ context.Context, call *tools.Call, args json.RawMessage) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo " + string(args) + " for " + call.Caller.Principal.GetSubject()}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tool
}

// TestInjectedTools: what the gateway authorizes and advertises follows the
// tool set it is given: the 401's scopes and scopes_supported name the
// tools' scopes, a tools/call asks authz for the tool's scopes and a 403
// names them, tools/list shows the tools the token may call, and a tool not
// in the set is the base operation's, unknown to the go-sdk.
func TestInjectedTools(t *testing.T) {
	t.Parallel()
	set, err := tools.NewSet(append(tools.BuiltIn().All(), echoTool(t))...)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := tools.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	principal := func(scopes ...string) string {
		return `{"allowed": true, "principal": {"subject": "user-1", "scopes": ["` + strings.Join(scopes, `", "`) + `"]}, "tokenRef": "ref"}`
	}
	tests := []struct {
		name          string
		set           *tools.Set
		supported     []string
		authz         string
		tool          string
		wantStatus    int
		wantScope     string // of the 403's challenge
		wantListed    []string
		wantToolError bool // the go-sdk knows no such tool
	}{
		{"catalog tool allowed", set, []string{scopeUser, scopeOrg, "use:echo"}, principal(scopeUser, "use:echo"), "upstream.echo", 200, "", []string{"upstream.echo", "who_am_i"}, false},
		{"catalog tool without its scope", set, []string{scopeUser, scopeOrg, "use:echo"}, principal(scopeUser), "upstream.echo", 403, scopeUser + " use:echo", []string{"who_am_i"}, false},
		{"no tools", empty, []string{scopeUser}, principal(scopeUser), "who_am_i", 200, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			az := &scriptAuthz{}
			res := &authzv1.AuthorizeResponse{}
			if err := protojson.Unmarshal([]byte(tt.authz), res); err != nil {
				t.Fatal(err)
			}
			az.set(res, nil)
			public, _ := startAnswering(t, nil, tt.set, az, &scriptAS{})
			base := "http://" + public

			prm, err := oauthex.GetProtectedResourceMetadata(t.Context(), base+"/.well-known/oauth-protected-resource/mcp", "https://mcp.example.com/mcp", http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.supported, prm.ScopesSupported); diff != "" {
				t.Errorf("scopes_supported (-want +got):\n%s", diff)
			}
			if got := challengeParams(t, post(t, base+"/mcp", "", listBody()))["scope"]; got != strings.Join(tt.supported, " ") {
				t.Errorf("401 scope %q, want %q", got, strings.Join(tt.supported, " "))
			}

			r := post(t, base+"/mcp", "tok", callBody(tt.tool))
			if r.StatusCode != tt.wantStatus {
				b, _ := io.ReadAll(r.Body)
				t.Fatalf("tools/call %s: status %d, want %d: %s", tt.tool, r.StatusCode, tt.wantStatus, b)
			}
			switch {
			case tt.wantStatus == http.StatusForbidden:
				if got := challengeParams(t, r)["scope"]; got != tt.wantScope {
					t.Errorf("403 scope %q, want %q", got, tt.wantScope)
				}
			case tt.wantToolError:
				rpc := readRPC(t, r)
				var tr toolResult
				_ = json.Unmarshal(rpc.Result, &tr)
				if rpc.Error == nil && !tr.IsError {
					t.Errorf("tools/call of a tool not in the set: %s, want an error", rpc.Result)
				}
			default:
				var tr toolResult
				if err := json.Unmarshal(readRPC(t, r).Result, &tr); err != nil || tr.IsError || len(tr.Content) == 0 || !strings.Contains(tr.Content[0].Text, "for user-1") {
					t.Errorf("tools/call %s: %+v, %v", tt.tool, tr, err)
				}
			}
			var listed []string
			var list struct {
				Tools []struct{ Name string } `json:"tools"`
			}
			if err := json.Unmarshal(readRPC(t, post(t, base+"/mcp", "tok", listBody())).Result, &list); err != nil {
				t.Fatal(err)
			}
			for _, lt := range list.Tools {
				listed = append(listed, lt.Name)
			}
			slices.Sort(listed)
			if diff := cmp.Diff(tt.wantListed, listed); diff != "" {
				t.Errorf("tools/list (-want +got):\n%s", diff)
			}
		})
	}
}

// TestScopesWithTools: SCOPES may name as many scopes as authz takes in one
// question, the tools' scopes counted; one more is refused by New, naming
// SCOPES.
func TestScopesWithTools(t *testing.T) {
	t.Parallel()
	set := tools.BuiltIn()
	list := func(n int) string {
		var out []string
		for i := range n {
			out = append(out, "s:"+string(rune('a'+i/26))+string(rune('a'+i%26)))
		}
		return strings.Join(out, " ")
	}
	most := scopes.MaxCount - len(set.Scopes())
	if _, err := gateway.New(gateway.Options{Config: loadConfig(t, map[string]string{"SCOPES": list(most)}), Authz: &scriptAuthz{}, Tools: set}); err != nil {
		t.Errorf("SCOPES of %d scopes besides the tools' %d: %v", most, len(set.Scopes()), err)
	}
	_, err := gateway.New(gateway.Options{Config: loadConfig(t, map[string]string{"SCOPES": list(most + 1)}), Authz: &scriptAuthz{}, Tools: set})
	if cerr, ok := errors.AsType[*config.Error](err); !ok || cerr.Var != "SCOPES" {
		t.Errorf("SCOPES of %d scopes besides the tools' %d: %v, want a config.Error naming %s", most+1, len(set.Scopes()), err, "SCOPES")
	}
	if _, err := gateway.New(gateway.Options{Config: loadConfig(t, nil), Authz: &scriptAuthz{}}); err == nil {
		t.Error("New without Tools succeeded")
	}
}

// challengeParams returns the parameters of res's one Bearer challenge.
func challengeParams(t *testing.T, res *http.Response) map[string]string {
	t.Helper()
	defer res.Body.Close()
	cs, err := oauthex.ParseWWWAuthenticate(res.Header.Values("WWW-Authenticate"))
	if err != nil || len(cs) != 1 || cs[0].Scheme != "bearer" {
		t.Fatalf("WWW-Authenticate %q: %+v, %v; want one Bearer challenge", res.Header.Values("WWW-Authenticate"), cs, err)
	}
	return cs[0].Params
}
