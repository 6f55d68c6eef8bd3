package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Definition is a tool as a catalog describes it (such as an upstream MCP
// server's tools/list): the declaration the gateway authorizes calls on, and
// the MCP definition, its schemas as raw JSON.
type Definition struct {
	Spec
	// InputSchema is the JSON Schema of the arguments; it must be a JSON
	// object whose type is "object".
	InputSchema json.RawMessage
	// OutputSchema, if set, is the JSON Schema of the result's
	// structuredContent.
	OutputSchema json.RawMessage
	// Annotations, if set, are the tool's hints to clients.
	Annotations *mcp.ToolAnnotations
}

// Handler serves a call of a tool built with [New]: args are the call's
// arguments as the client sent them, not validated against the input schema,
// and the result goes back as returned, not validated against the output
// schema (both are the handler's to do, or its upstream's). A *jsonrpc.Error
// it returns is sent as the JSON-RPC error; any other error becomes a tool
// error result (isError).
type Handler func(ctx context.Context, call *Call, args json.RawMessage) (*mcp.CallToolResult, error)

// New returns the tool def describes, served by h. The handler runs only when
// the caller holds def.Scopes. New returns an error for an invalid name
// ([ValidName]) or scope, a nil handler, or schemas the go-sdk cannot serve.
func New(def Definition, h Handler) (Tool, error) {
	if err := ValidName(def.Name); err != nil {
		return Tool{}, err
	}
	for _, s := range slices.Concat(def.Scopes, def.OrgsScopes) {
		if !scopes.Valid(s) {
			return Tool{}, fmt.Errorf("tool %q: invalid scope %q", def.Name, s)
		}
	}
	if h == nil {
		return Tool{}, fmt.Errorf("tool %q: nil handler", def.Name)
	}
	def.InputSchema = bytes.Clone(def.InputSchema)
	def.OutputSchema = bytes.Clone(def.OutputSchema)
	def.Scopes = slices.Clone(def.Scopes)
	def.OrgsScopes = slices.Clone(def.OrgsScopes)
	if err := servable(def.mcpTool()); err != nil {
		return Tool{}, fmt.Errorf("tool %q: %w", def.Name, err)
	}
	spec := def.Spec
	return Tool{
		Spec: spec,
		add: func(s *mcp.Server, env *Env) {
			s.AddTool(def.mcpTool(), func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				c, err := enforce(ctx, req, spec)
				if err != nil {
					return nil, err
				}
				res, err := h(ctx, &Call{Caller: c, Env: env, Request: req}, req.Params.Arguments)
				if err != nil {
					if wire, ok := errors.AsType[*jsonrpc.Error](err); ok {
						return nil, wire
					}
					res = &mcp.CallToolResult{}
					res.SetError(err)
				}
				if res == nil {
					res = &mcp.CallToolResult{Content: []mcp.Content{}}
				}
				return res, nil
			})
		},
	}, nil
}

// mcpTool is the go-sdk's tool for d, new on each call: a server owns the
// tool it is given.
func (d Definition) mcpTool() *mcp.Tool {
	t := &mcp.Tool{
		Name:        d.Name,
		Title:       d.Title,
		Description: d.Description,
		Annotations: d.Annotations,
		InputSchema: d.InputSchema,
	}
	if len(d.OutputSchema) > 0 {
		t.OutputSchema = d.OutputSchema
	}
	return t
}

// servable reports whether a server can serve t. The go-sdk panics on a
// tool it cannot serve (no input schema, one that is not an object schema,
// invalid x-mcp-header annotations); adding t to a scratch server turns that
// into an error when the tool is built, not a panic when the gateway starts.
func servable(t *mcp.Tool) (err error) {
	if len(t.InputSchema.(json.RawMessage)) == 0 {
		return errors.New("no input schema")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the go-sdk refuses it: %v", r)
		}
	}()
	s := mcp.NewServer(&mcp.Implementation{Name: "check", Version: "0"}, nil)
	s.AddTool(t, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) { return nil, nil })
	return nil
}

// maxNameLen is the longest tool name the MCP specification advises.
const maxNameLen = 128

// ValidName returns an error unless name is a tool name as the MCP
// specification (2025-11-25) advises: 1 to 128 ASCII letters, digits, '_',
// '-' and '.'.
func ValidName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("invalid tool name %q: must be 1 to %d characters", name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("invalid tool name %q: only letters, digits, '_', '-' and '.'", name)
		}
	}
	return nil
}
