package tools

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
)

// echoDefinition is a catalog entry as an upstream server could list it.
var echoDefinition = Definition{
	Spec: Spec{
		Name:        "upstream.echo",
		Title:       "Echo",
		Description: "Returns its arguments.",
		Scopes:      []string{"use:echo"},
	},
	InputSchema:  json.RawMessage(`{"type":"object","properties":{"say":{"type":"string"},"fail":{"type":"string"}},"required":["say"]}`),
	OutputSchema: json.RawMessage(`{"type":"object","properties":{"said":{"type":"string"}}}`),
	Annotations:  &mcp.ToolAnnotations{ReadOnlyHint: true},
}

// echo answers with the arguments it received, or fails as args.fail asks.
func echo(_ context.Context, call *Call, args json.RawMessage) (*mcp.CallToolResult, error) {
	var in struct{ Say, Fail string }
	if err := json.Unmarshal(args, &in); err != nil {
		return nil, err
	}
	switch in.Fail {
	case "tool":
		return nil, errors.New("upstream refused: " + in.Say)
	case "rpc":
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "bad say"}
	case "nil":
		return nil, nil
	}
	return &mcp.CallToolResult{
		Content:           []mcp.Content{&mcp.TextContent{Text: in.Say + " from " + call.Caller.Principal.GetSubject()}},
		StructuredContent: json.RawMessage(`{"said":` + string(mustJSON(in.Say)) + `}`),
	}, nil
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestCatalogTool serves a tool built from a catalog entry beside the
// built-in ones: tools/list shows its definition as given, to callers holding
// its scope; a call reaches the handler with the raw arguments only for those
// callers, and the handler's errors come back as MCP reports them.
func TestCatalogTool(t *testing.T) {
	t.Parallel()
	tool, err := New(echoDefinition, echo)
	if err != nil {
		t.Fatal(err)
	}
	set, err := NewSet(append(BuiltIn().All(), tool)...)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"read:org_data", "use:echo", "read:user_data"}, set.Scopes()); diff != "" {
		t.Errorf("Scopes() (-want +got):\n%s", diff)
	}
	callers := map[string]*caller.Caller{
		"echo": caller.New(principal("read:user_data", "use:echo"), nil, nil),
		"user": caller.New(principal("read:user_data"), nil, nil),
	}
	url := serveSet(t, set, callers, &fakeUsers{user: alice}, InstallOptions{})

	list, err := connect(t, url, "echo").ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var listed *mcp.Tool
	var names []string
	for _, lt := range list.Tools {
		names = append(names, lt.Name)
		if lt.Name == echoDefinition.Name {
			listed = lt
		}
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"upstream.echo", "who_am_i"}, names); diff != "" {
		t.Errorf("tools/list (-want +got):\n%s", diff)
	}
	if listed == nil {
		t.Fatal("tools/list lacks the catalog tool")
	}
	if diff := cmp.Diff(decode(t, echoDefinition.InputSchema), decode(t, mustJSON(listed.InputSchema))); diff != "" {
		t.Errorf("input schema (-given +listed):\n%s", diff)
	}
	if diff := cmp.Diff(decode(t, echoDefinition.OutputSchema), decode(t, mustJSON(listed.OutputSchema))); diff != "" {
		t.Errorf("output schema (-given +listed):\n%s", diff)
	}
	if listed.Title != "Echo" || listed.Description != echoDefinition.Description || listed.Annotations == nil || !listed.Annotations.ReadOnlyHint {
		t.Errorf("listed as %+v", listed)
	}

	cs := connect(t, url, "echo")
	call := func(args map[string]any) (*mcp.CallToolResult, error) {
		return cs.CallTool(t.Context(), &mcp.CallToolParams{Name: echoDefinition.Name, Arguments: args})
	}
	res, err := call(map[string]any{"say": "hello"})
	if err != nil || res.IsError {
		t.Fatalf("call: %+v, %v", res, err)
	}
	if got := res.Content[0].(*mcp.TextContent).Text; got != "hello from u-alice" {
		t.Errorf("text %q", got)
	}
	if diff := cmp.Diff(map[string]any{"said": "hello"}, res.StructuredContent); diff != "" {
		t.Errorf("structured content (-want +got):\n%s", diff)
	}
	res, err = call(map[string]any{"say": "no", "fail": "tool"})
	if err != nil || !res.IsError || res.Content[0].(*mcp.TextContent).Text != "upstream refused: no" {
		t.Errorf("a handler error: %+v, %v; want a tool error result", res, err)
	}
	if _, err = call(map[string]any{"say": "x", "fail": "rpc"}); err == nil || !strings.Contains(err.Error(), "bad say") {
		t.Errorf("a handler's JSON-RPC error: %v", err)
	}
	if res, err = call(map[string]any{"say": "x", "fail": "nil"}); err != nil || res.IsError {
		t.Errorf("a handler returning nothing: %+v, %v; want an empty result", res, err)
	}

	// Without the tool's scope, the set refuses the call before the handler.
	_, err = connect(t, url, "user").CallTool(t.Context(), &mcp.CallToolParams{Name: echoDefinition.Name, Arguments: map[string]any{"say": "x"}})
	if err == nil || !strings.Contains(err.Error(), `needs scopes "use:echo"`) {
		t.Errorf("call without the scope: %v; want refused", err)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	with := func(f func(*Definition)) Definition {
		d := echoDefinition
		f(&d)
		return d
	}
	tests := []struct {
		name string
		def  Definition
		h    Handler
		want string
	}{
		{"empty name", with(func(d *Definition) { d.Name = "" }), echo, "invalid tool name"},
		{"name with a space", with(func(d *Definition) { d.Name = "echo it" }), echo, "invalid tool name"},
		{"long name", with(func(d *Definition) { d.Name = strings.Repeat("x", 129) }), echo, "invalid tool name"},
		{"bad scope", with(func(d *Definition) { d.Scopes = []string{`a"b`} }), echo, "invalid scope"},
		{"bad orgs scope", with(func(d *Definition) { d.OrgsScopes = []string{""} }), echo, "invalid scope"},
		{"nil handler", echoDefinition, nil, "nil handler"},
		{"no input schema", with(func(d *Definition) { d.InputSchema = nil }), echo, "no input schema"},
		{"input schema not an object schema", with(func(d *Definition) { d.InputSchema = json.RawMessage(`{"type":"string"}`) }), echo, `type "object"`},
		{"input schema not JSON", with(func(d *Definition) { d.InputSchema = json.RawMessage(`{`) }), echo, "go-sdk refuses"},
		{"output schema not JSON", with(func(d *Definition) { d.OutputSchema = json.RawMessage(`nope`) }), echo, "go-sdk refuses"},
	}
	for _, tt := range tests {
		if _, err := New(tt.def, tt.h); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestNewSetRefuses(t *testing.T) {
	t.Parallel()
	echoTool, err := New(echoDefinition, echo)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		tools []Tool
		want  string
	}{
		{"duplicate", []Tool{whoAmITool(), echoTool, whoAmITool()}, `two tools named "who_am_i"`},
		{"not built", []Tool{{Spec: Spec{Name: "bare"}}}, "not built"},
		{"bad name", []Tool{Define(Spec{Name: "who am i"}, whoAmI)}, "invalid tool name"},
	}
	for _, tt := range tests {
		if _, err := NewSet(tt.tools...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewSet = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	empty, err := NewSet()
	if err != nil || len(empty.All()) != 0 || len(empty.Scopes()) != 0 {
		t.Errorf("NewSet() = %v, %v; want an empty set", empty, err)
	}
}
