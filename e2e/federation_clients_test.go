package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	mcpstack "github.com/mcpauthz/mcpauthz/internal/stack"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// TestTypeScriptSDKClientFederation runs the official TypeScript MCP SDK
// client (ts/federation.mjs) through the gateway, with the real OAuth flow
// through devauth's login and consent pages, against
// @modelcontextprotocol/server-everything over streamable HTTP (it keeps
// sessions) behind the gateway: the upstream's tools, resources, templates
// and prompts are listed under its prefix, echo is called, the long-running
// tool, which needs a scope the first login did not grant, is hidden, then
// reached through the 403 step-up, and its progress notifications reach the client, a resource is read (and
// one only a resource template names), a prompt fetched and a prompt argument completed.
func TestTypeScriptSDKClientFederation(t *testing.T) {
	slow(t)
	t.Parallel()
	node := nodeModules(t)
	ev := testenv.StartEverything(t)
	file := filepath.Join(t.TempDir(), "upstreams.yaml")
	// The long-running tool needs read:org_data, which the first login
	// (E2E_FIRST_SCOPE) does not grant: hidden, then reached by the 403
	// step-up.
	conf := "upstreams:\n  - name: everything\n    url: " + ev.URL + "\n    prefix: everything_\n" +
		"    tools:\n      trigger-long-running-operation: {scopes: [read:org_data]}\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mcpstack.New(t, mcpstack.Options{Authz: 1, Gateways: 1, GatewayEnv: []string{"UPSTREAMS_FILE=" + file}})

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "federation.mjs", s.Resource, "everything_")
	cmd.Dir = "ts"
	cmd.Env = append(os.Environ(), "E2E_EMAIL="+aliceEmail, "E2E_PASSWORD=alice-password", "E2E_FIRST_SCOPE=read:user_data")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node federation.mjs: %v\n%s", err, stderr.String())
	}
	type result struct {
		Text    string `json:"text"`
		IsError bool   `json:"is_error"`
	}
	var got struct {
		Events             []string `json:"events"`
		LastRequestedScope string   `json:"last_requested_scope"`
		Tools              []string `json:"tools"`
		ToolsAfterStepUp   []string `json:"tools_after_step_up"`
		Resources          int      `json:"resources"`
		ResourceTemplates  []string `json:"resource_templates"`
		Prompts            []string `json:"prompts"`
		Echo               result   `json:"echo"`
		LongRun            struct {
			result
			Progress []struct {
				Progress float64 `json:"progress"`
				Total    float64 `json:"total"`
			} `json:"progress"`
		} `json:"long_run"`
		Read *struct {
			URI      string `json:"uri"`
			Contents []struct {
				URI     string `json:"uri"`
				HasText bool   `json:"has_text"`
				HasBlob bool   `json:"has_blob"`
			} `json:"contents"`
		} `json:"read"`
		ReadTemplated *struct {
			URI      string   `json:"uri"`
			Contents []string `json:"contents"`
		} `json:"read_templated"`
		Prompt struct {
			Messages int    `json:"messages"`
			Text     string `json:"text"`
		} `json:"prompt"`
		Completion *struct {
			Argument string   `json:"argument"`
			Values   []string `json:"values"`
		} `json:"completion"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decoding the client's output %q: %v", out, err)
	}
	t.Logf("the client saw: %s", out)
	// The SDK meets the 403 with a token refresh (the second "tokens"),
	// which cannot widen the grant: the second 403 makes the client sign in
	// again, for what the 403 names (withStepUp in ts/oauth.mjs).
	login := []string{"authorize", "login", "consent", "tokens"}
	if d := cmp.Diff(slices.Concat([]string{"registered"}, login, []string{"tokens", "403"}, login), got.Events); d != "" {
		t.Errorf("OAuth steps the TypeScript client took, the 403 step-up among them (-want +got):\n%s", d)
	}
	if !slices.Contains(strings.Fields(got.LastRequestedScope), "read:org_data") {
		t.Errorf("the step-up authorization asked for %q, without read:org_data", got.LastRequestedScope)
	}
	for _, want := range []string{"who_am_i", "everything_echo", "everything_get-sum"} {
		if !slices.Contains(got.Tools, want) {
			t.Errorf("tools/list lacks %s: %v", want, got.Tools)
		}
	}
	for _, hidden := range []string{"list_my_orgs", "everything_trigger-long-running-operation"} {
		if slices.Contains(got.Tools, hidden) {
			t.Errorf("tools/list with read:user_data only shows %s, which needs read:org_data", hidden)
		}
		if !slices.Contains(got.ToolsAfterStepUp, hidden) {
			t.Errorf("tools/list after the step-up lacks %s: %v", hidden, got.ToolsAfterStepUp)
		}
	}
	for _, name := range got.Tools {
		if name != "who_am_i" && name != "list_my_orgs" && !strings.HasPrefix(name, "everything_") {
			t.Errorf("tools/list has %s, neither built in nor under the upstream's prefix", name)
		}
	}
	if got.Resources == 0 || len(got.ResourceTemplates) == 0 {
		t.Errorf("resources/list: %d resources, templates %v; want the upstream's", got.Resources, got.ResourceTemplates)
	}
	if !slices.Contains(got.Prompts, "everything_simple-prompt") {
		t.Errorf("prompts/list lacks everything_simple-prompt: %v", got.Prompts)
	}
	if got.Echo.IsError || !strings.Contains(got.Echo.Text, "through the gateway") {
		t.Errorf("everything_echo: %+v", got.Echo)
	}
	if got.LongRun.IsError || !strings.Contains(got.LongRun.Text, "Long running operation completed") {
		t.Errorf("everything_trigger-long-running-operation: %+v", got.LongRun.result)
	}
	if len(got.LongRun.Progress) != 3 {
		t.Errorf("progress notifications received: %+v, want 3 (steps: 3)", got.LongRun.Progress)
	}
	for i, p := range got.LongRun.Progress {
		if p.Progress != float64(i+1) || p.Total != 3 {
			t.Errorf("progress notification %d: %+v, want %d of 3, in order", i, p, i+1)
		}
	}
	if got.Read == nil || len(got.Read.Contents) == 0 || got.Read.Contents[0].URI != got.Read.URI ||
		!(got.Read.Contents[0].HasText || got.Read.Contents[0].HasBlob) {
		t.Errorf("resources/read of the first resource: %+v", got.Read)
	}
	if got.ReadTemplated == nil || !slices.Contains(got.ReadTemplated.Contents, got.ReadTemplated.URI) {
		t.Errorf("resources/read of a URI of the upstream's template: %+v", got.ReadTemplated)
	}
	if got.Prompt.Messages == 0 || got.Prompt.Text == "" {
		t.Errorf("prompts/get everything_simple-prompt: %+v", got.Prompt)
	}
	if got.Completion == nil || len(got.Completion.Values) == 0 {
		t.Errorf("completion/complete of everything_completable-prompt: %+v", got.Completion)
	}
}
