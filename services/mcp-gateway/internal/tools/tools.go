// Package tools holds the gateway's protected MCP tools and the tool sets
// one gateway serves.
//
// # Tool sets
//
// A [Set] is built once and passed to the gateway (gateway.Options.Tools);
// nothing is registered globally. The gateway learns each tool's scopes from
// it (it asks authz for SCOPES plus those on tools/call), the protected
// resource metadata advertises them, tools/list filters on them, and the set
// checks them again before a handler runs. [BuiltIn] is the gateway's own
// tools (who_am_i, list_my_orgs).
//
// A tool comes from one of two constructors:
//
//   - [Define]: a typed Go handler; the go-sdk infers the schemas from its
//     input and output types and validates both. The built-in tools are
//     defined so.
//   - [New]: a catalog entry ([Definition]: name, description, scopes, and the
//     input and output schemas as raw JSON) and a [Handler] over the raw
//     arguments, for tools known only at run time (those an upstream MCP
//     server lists).
//
// # Adding a built-in tool
//
// Create one file in this package with a function returning the tool built
// with [Define] (its name, description, the scopes it needs, whether it needs
// the caller's user, and its typed handler), and add it to [BuiltIn].
//
// # Defense in depth
//
// The gateway authorizes a tools/call before the go-sdk parses it. The set
// checks again, against the [caller.Caller] the SDK hands the handler, that the
// caller holds the scopes of the tool actually being run; a request that did
// not pass the gateway's middleware has no Caller and is refused.
package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// CodeForbidden is the JSON-RPC error code of a tool call refused by the
// tool set because the caller lacks the tool's scopes. The gateway normally
// answers such a call with HTTP 403 before the SDK sees it. (-32001 to -32005
// and -32020 to -32022 are taken by the go-sdk.)
const CodeForbidden = -32030

// Spec declares a tool.
type Spec struct {
	// Name is the MCP tool name.
	Name string
	// Title and Description are shown to users and models.
	Title       string
	Description string
	// Scopes are the scopes the tool needs besides the SCOPES every request needs.
	Scopes []string
	// NeedsUser asks authz to return the caller's user with the decision
	// (include_user), saving a GetUser round trip; NeedsOrgs adds the orgs.
	NeedsUser bool
	NeedsOrgs bool
	// OrgsScopes, for a tool that shows the user's organizations only to
	// tokens that may see them (who_am_i), are the scopes that takes: the
	// scopes of the tool made for that data (list_my_orgs). Without them the
	// tool still runs and says why the organizations are missing
	// ([OrgsWithheld]).
	OrgsScopes []string
}

// Tool is a tool: its declaration and how to add it to a server. Build it
// with [Define] or [New].
type Tool struct {
	Spec
	add func(s *mcp.Server, env *Env)
}

// Users fetches users from authz.
type Users interface {
	// GetUser returns the user with userID. Errors are gRPC status errors.
	GetUser(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, error)
}

// Env is what handlers may use besides the caller.
type Env struct {
	// Users fetches a user when the request did not prefetch it.
	Users Users
	// Logger logs handler failures.
	Logger *slog.Logger
}

// Call is one invocation of a tool handler.
type Call struct {
	// Caller is the authenticated caller; never nil inside a handler.
	Caller *caller.Caller
	// Env gives access to authz.
	Env *Env
	// Request is the go-sdk request.
	Request *mcp.CallToolRequest
}

// OrgsWithheld is what a tool with [Spec.OrgsScopes] says when the caller's
// token does not hold them: why the user's organizations are missing.
func OrgsWithheld(scopes []string) string {
	return fmt.Sprintf("organizations are shown only to tokens granted %s (the scope list_my_orgs needs); this token was not", strings.Join(scopes, " "))
}

// Define builds a Tool from a typed handler. The handler runs only when the
// caller holds spec.Scopes; an error it returns becomes a tool error result
// (isError), which is how MCP reports a tool's own failures, unless it is a
// *jsonrpc.Error. The schemas are inferred from In and Out when the tool is
// installed, which panics if they cannot be: a Go type that is wrong.
func Define[In, Out any](spec Spec, h func(ctx context.Context, call *Call, in In) (Out, error)) Tool {
	return Tool{
		Spec: spec,
		add: func(s *mcp.Server, env *Env) {
			in, out, err := schemas[In, Out]()
			if err != nil {
				panic(fmt.Sprintf("tools: schemas of %q: %v", spec.Name, err))
			}
			tool := &mcp.Tool{
				Name:         spec.Name,
				Title:        spec.Title,
				Description:  spec.Description,
				Annotations:  &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(bool)},
				InputSchema:  in,
				OutputSchema: out,
			}
			mcp.AddTool(s, tool, func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
				var zero Out
				c, err := enforce(ctx, req, spec)
				if err != nil {
					return nil, zero, err
				}
				out, err := h(ctx, &Call{Caller: c, Env: env, Request: req}, in)
				return nil, out, err
			})
		},
	}
}

// schemas returns a tool's input and output schemas, inferred from In and Out as
// the go-sdk infers them when a tool gives none, plus the package's own types
// such as JSONObject.
//
// The input schema is handed to the SDK already encoded. The go-sdk v1.8.0
// marshals a tool's InputSchema and decodes it again on every tools/call from a
// 2026-07-28 client, to look for x-mcp-header annotations
// (validateParamHeaders); for a *jsonschema.Schema that is a full encode and
// decode per call (9 % of the gateway's CPU samples, as measured in
// bench/results/2026-11-30-make-bench), for a json.RawMessage a copy. The SDK
// still validates arguments against the resolved schema, which it derives
// from the same bytes once, when the tool is added.
func schemas[In, Out any]() (json.RawMessage, *jsonschema.Schema, error) {
	in, err := jsonschema.For[In](nil)
	if err != nil {
		return nil, nil, fmt.Errorf("input schema: %w", err)
	}
	inJSON, err := json.Marshal(in)
	if err != nil {
		return nil, nil, fmt.Errorf("input schema: %w", err)
	}
	out, err := jsonschema.For[Out](outputSchemaOptions)
	if err != nil {
		return nil, nil, fmt.Errorf("output schema: %w", err)
	}
	return inJSON, out, nil
}

// enforce returns the request's caller if it holds spec's scopes, else a
// JSON-RPC error.
func enforce(ctx context.Context, req *mcp.CallToolRequest, spec Spec) (*caller.Caller, error) {
	var c *caller.Caller
	if extra := req.GetExtra(); extra != nil {
		c = caller.FromTokenInfo(extra.TokenInfo)
	}
	if c == nil {
		return nil, &jsonrpc.Error{Code: CodeForbidden, Message: fmt.Sprintf("tool %q needs an authenticated caller", spec.Name)}
	}
	ok, err := c.Has(ctx, spec.Scopes)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "checking the caller's scopes failed; retry later"}
	}
	if !ok {
		return nil, &jsonrpc.Error{Code: CodeForbidden, Message: fmt.Sprintf("tool %q needs scopes %q", spec.Name, strings.Join(spec.Scopes, " "))}
	}
	return c, nil
}
