package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// Install registers the upstream entries of the routing table in server, so
// that its lists (tools, prompts, resources, resource templates) show them
// with the SDK's pagination for every protocol era, and keeps them in step
// with every later table. Unless listAll, it also adds a middleware that
// leaves out of prompts/list, resources/list and resources/templates/list
// what the caller's token may not use (tools/list is the tool set's filter,
// told of upstream tools by [Federation.ToolScopes]). Call it once.
func (f *Federation) Install(server *mcp.Server, listAll bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.server = server
	f.registered = emptyTable()
	f.sync()
	if !listAll {
		server.AddReceivingMiddleware(f.listFilter)
	}
}

// ToolScopes returns the scopes (besides SCOPES) a call of the upstream tool
// the gateway shows as name needs, and whether there is such a tool.
func (f *Federation) ToolScopes(name string) ([]string, bool) {
	e, ok := f.cur.Load().tools[name]
	if !ok {
		return nil, false
	}
	return e.scopes, true
}

// IsTool reports whether name is an upstream tool the gateway serves now.
func (f *Federation) IsTool(name string) bool {
	_, ok := f.cur.Load().tools[name]
	return ok
}

// sync brings the server's registrations to the table in use. Called with
// f.mu held.
func (f *Federation) sync() {
	if f.server == nil {
		return
	}
	old, cur := f.registered, f.cur.Load()
	changed := func(o, n *entry) bool { return o == nil || o.up != n.up || !bytes.Equal(o.raw, n.raw) }

	var gone []string
	for name := range old.tools {
		if cur.tools[name] == nil {
			gone = append(gone, name)
		}
	}
	f.server.RemoveTools(gone...)
	for name, e := range cur.tools {
		if changed(old.tools[name], e) {
			f.addTool(e)
		}
	}

	gone = gone[:0]
	for name := range old.prompts {
		if cur.prompts[name] == nil {
			gone = append(gone, name)
		}
	}
	f.server.RemovePrompts(gone...)
	for name, e := range cur.prompts {
		if changed(old.prompts[name], e) {
			f.add(e, kindPrompt)
		}
	}

	gone = gone[:0]
	for uri := range old.resources {
		if cur.resources[uri] == nil {
			gone = append(gone, uri)
		}
	}
	f.server.RemoveResources(gone...)
	for uri, e := range cur.resources {
		if changed(old.resources[uri], e) {
			f.add(e, kindResource)
		}
	}

	gone = gone[:0]
	for _, e := range old.templates {
		if cur.lookup(kindTemplate, e.exposed) == nil {
			gone = append(gone, e.exposed)
		}
	}
	f.server.RemoveResourceTemplates(gone...)
	for _, e := range cur.templates {
		if changed(old.lookup(kindTemplate, e.exposed), e) {
			f.add(e, kindTemplate)
		}
	}
	f.registered = cur
}

// errNotRouted answers a request for an upstream entry that reached the
// go-sdk server instead of being forwarded: it should not happen.
var errNotRouted = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "this request must be forwarded to its upstream; the gateway did not route it"}

func (f *Federation) addTool(e *entry) {
	t, err := mcpTool(e)
	if err == nil {
		err = safely(func() {
			f.server.AddTool(t, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) { return nil, errNotRouted })
		})
	}
	if err != nil {
		e.up.log.Warn("upstream tool not listed: the gateway cannot serve its definition", "tool", e.key, "error", err)
	}
}

// add registers a prompt, resource or template from its raw definition.
func (f *Federation) add(e *entry, kind string) {
	var err error
	switch kind {
	case kindPrompt:
		var p mcp.Prompt
		if err = json.Unmarshal(e.raw, &p); err == nil {
			p.Name = e.exposed
			err = safely(func() {
				f.server.AddPrompt(&p, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) { return nil, errNotRouted })
			})
		}
	case kindResource:
		var r mcp.Resource
		if err = json.Unmarshal(e.raw, &r); err == nil {
			err = safely(func() {
				f.server.AddResource(&r, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
					return nil, errNotRouted
				})
			})
		}
	case kindTemplate:
		var r mcp.ResourceTemplate
		if err = json.Unmarshal(e.raw, &r); err == nil {
			err = safely(func() {
				f.server.AddResourceTemplate(&r, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
					return nil, errNotRouted
				})
			})
		}
	}
	if err != nil {
		e.up.log.Warn("upstream entry not listed: the gateway cannot serve its definition", "kind", kind, "key", e.key, "error", err)
	}
}

// mcpTool is the go-sdk tool of e: its definition as listed, under the
// exposed name, with the schemas kept as raw JSON.
func mcpTool(e *entry) (*mcp.Tool, error) {
	var t mcp.Tool
	if err := json.Unmarshal(e.raw, &t); err != nil {
		return nil, err
	}
	var schemas struct {
		InputSchema  json.RawMessage `json:"inputSchema"`
		OutputSchema json.RawMessage `json:"outputSchema"`
	}
	if err := json.Unmarshal(e.raw, &schemas); err != nil {
		return nil, err
	}
	if len(schemas.InputSchema) == 0 || schemas.InputSchema[0] != '{' {
		return nil, errors.New("inputSchema is not a JSON object")
	}
	t.Name = e.exposed
	t.InputSchema = schemas.InputSchema
	t.OutputSchema = nil
	if len(schemas.OutputSchema) > 0 && string(schemas.OutputSchema) != "null" {
		t.OutputSchema = schemas.OutputSchema
	}
	return &t, nil
}

// safely runs add, turning the go-sdk's panic on a definition it cannot
// serve into an error.
func safely(add func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the go-sdk refuses it: %v", r)
		}
	}()
	add()
	return nil
}

// listFilter leaves out of the upstream lists the entries whose scopes the
// caller lacks, and marks those lists private. It fails closed: with no
// caller, or when authz cannot say, the entry is left out.
func (f *Federation) listFilter(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if err != nil {
			return res, err
		}
		var c *caller.Caller
		if extra := req.GetExtra(); extra != nil {
			c = caller.FromTokenInfo(extra.TokenInfo)
		}
		t := f.cur.Load()
		allowed := func(e *entry) bool {
			if e == nil || c == nil {
				return e == nil && c != nil // not an upstream entry: not ours to filter
			}
			ok, herr := c.Has(ctx, e.scopes)
			if herr != nil {
				e.up.log.WarnContext(ctx, method+": cannot check scopes; hiding entry", "key", e.key, "error", herr)
			}
			return ok && herr == nil
		}
		switch r := res.(type) {
		case *mcp.ListPromptsResult:
			out := *r
			out.Prompts = filter(r.Prompts, func(p *mcp.Prompt) bool { return allowed(t.prompts[p.Name]) })
			out.CacheScope = tools.CacheScopePrivate
			return &out, nil
		case *mcp.ListResourcesResult:
			out := *r
			out.Resources = filter(r.Resources, func(p *mcp.Resource) bool { return allowed(t.resources[p.URI]) })
			out.CacheScope = tools.CacheScopePrivate
			return &out, nil
		case *mcp.ListResourceTemplatesResult:
			out := *r
			out.ResourceTemplates = filter(r.ResourceTemplates, func(p *mcp.ResourceTemplate) bool {
				return allowed(t.lookup(kindTemplate, p.URITemplate))
			})
			out.CacheScope = tools.CacheScopePrivate
			return &out, nil
		}
		return res, err
	}
}

func filter[T any](in []T, keep func(T) bool) []T {
	out := make([]T, 0, len(in))
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
