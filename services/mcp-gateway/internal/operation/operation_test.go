package operation

import (
	"bytes"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"
)

var base = []string{"read:user_data"}

func TestFor(t *testing.T) {
	t.Parallel()
	table := NewTable(base, tools.BuiltIn().All())
	tests := []struct {
		info mcpreq.Info
		want Operation
	}{
		{mcpreq.Info{Method: "tools/list"}, Operation{Scopes: []string{"read:user_data"}}},
		{mcpreq.Info{Method: "tools/call", Name: "who_am_i"}, Operation{Scopes: []string{"read:user_data"}, NeedsUser: true,
			OrgsScopes: []string{"read:org_data"}, WithOrgs: []string{"read:user_data", "read:org_data"}}},
		{mcpreq.Info{Method: "tools/call", Name: "list_my_orgs"}, Operation{Scopes: []string{"read:user_data", "read:org_data"}, NeedsUser: true, NeedsOrgs: true}},
		{mcpreq.Info{Method: "tools/call", Name: "nope"}, Operation{Scopes: []string{"read:user_data"}}},
		{mcpreq.Info{Method: "prompts/get", Name: "list_my_orgs"}, Operation{Scopes: []string{"read:user_data"}}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, table.For(tt.info)); diff != "" {
			t.Errorf("For(%+v) (-want +got):\n%s", tt.info, diff)
		}
	}
	if !table.IsTool("who_am_i") || table.IsTool("nope") {
		t.Error("IsTool")
	}
}

// TestNoOrgsWithoutTheirScope: no operation asks authz for orgs (include_orgs)
// without requiring a scope that allows them, whatever SCOPES is; who_am_i
// asks for them only in its second question, which requires read:org_data.
func TestNoOrgsWithoutTheirScope(t *testing.T) {
	t.Parallel()
	for _, base := range [][]string{{"read:user_data"}, {"mcp"}, {"read:user_data", "read:org_data"}} {
		table := NewTable(base, tools.BuiltIn().All())
		for _, tool := range tools.BuiltIn().All() {
			op := table.For(mcpreq.Info{Method: "tools/call", Name: tool.Name})
			if op.NeedsOrgs && !slices.Contains(op.Scopes, "read:org_data") {
				t.Errorf("SCOPES %q: %s asks for orgs with scopes %q", base, tool.Name, op.Scopes)
			}
			if len(op.OrgsScopes) > 0 && (op.NeedsOrgs || !slices.Contains(op.WithOrgs, "read:org_data")) {
				t.Errorf("SCOPES %q: %s: NeedsOrgs %v, second question's scopes %q", base, tool.Name, op.NeedsOrgs, op.WithOrgs)
			}
		}
	}
}

func TestMayHold(t *testing.T) {
	t.Parallel()
	op := NewTable(base, tools.BuiltIn().All()).For(mcpreq.Info{Method: "tools/call", Name: "who_am_i"})
	tests := []struct {
		issued []string
		want   bool
	}{
		{[]string{"read:user_data"}, false},
		{nil, false},
		{[]string{"read:user_data", "read:org_data"}, true},
		{[]string{"read:org_data"}, true},
		{[]string{"admin"}, true}, // may imply read:org_data through the hierarchy
		{[]string{"read:user_data", "offline_access"}, true},
	}
	for _, tt := range tests {
		if got := op.MayHold(tt.issued); got != tt.want {
			t.Errorf("MayHold(%q) = %v, want %v", tt.issued, got, tt.want)
		}
	}
	if (Operation{Scopes: base}).MayHold([]string{"read:org_data"}) {
		t.Error("an operation without OrgsScopes may hold them")
	}
}

// FuzzScopes checks, for any body and Mcp-Method/Mcp-Name headers, that when
// the gateway accepts a request the scopes it asks authz for include every
// scope of the tool the go-sdk would then run (decoding the body the way the
// SDK does), and always the base scopes.
func FuzzScopes(f *testing.F) {
	for _, s := range []struct{ body, method, name string }{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_my_orgs"}}`, "tools/call", "list_my_orgs"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i"}}`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","Name":"list_my_orgs"}}`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_my_orgs"}}`, "tools/call", "who_am_i"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "tools/call", "list_my_orgs"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list\u005fmy_orgs"}}`, "", ""},
	} {
		f.Add([]byte(s.body), s.method, s.name)
	}
	table := NewTable(base, tools.BuiltIn().All())
	f.Fuzz(func(t *testing.T, body []byte, method, name string) {
		h := http.Header{}
		if method != "" {
			h.Set(mcpreq.HeaderMethod, method)
		}
		if name != "" {
			h.Set(mcpreq.HeaderName, name)
		}
		info, err := mcpreq.Parse(body, h)
		if err != nil {
			return // refused with 400 before authorization
		}
		scopes := table.For(info).Scopes
		for _, s := range base {
			if !slices.Contains(scopes, s) {
				t.Fatalf("scopes %q lack base scope %q", scopes, s)
			}
		}
		msg, err := jsonrpc.DecodeMessage(body)
		if err != nil {
			return
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "tools/call" {
			return
		}
		var p struct {
			Name string `json:"name"`
		}
		dec := segjson.NewDecoder(bytes.NewReader(req.Params))
		dec.DontMatchCaseInsensitiveStructFields()
		if dec.Decode(&p) != nil {
			return
		}
		tool, known := tools.BuiltIn().Lookup(p.Name)
		if !known {
			return
		}
		for _, s := range tool.Scopes {
			if !slices.Contains(scopes, s) {
				t.Fatalf("the SDK would run %q (needs %q) but the gateway asks only %q for %q", p.Name, tool.Scopes, scopes, body)
			}
		}
	})
}
