package tools

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/caller"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Set is the tools one gateway serves, sorted by name. Build it with
// [NewSet]; it does not change afterwards.
type Set struct {
	tools  []Tool
	byName map[string]int
}

// NewSet returns the set of ts. It returns an error for a tool without a
// valid name ([ValidName]) or two tools of the same name.
func NewSet(ts ...Tool) (*Set, error) {
	s := &Set{tools: slices.Clone(ts), byName: make(map[string]int, len(ts))}
	slices.SortFunc(s.tools, func(a, b Tool) int { return cmp.Compare(a.Name, b.Name) })
	for i, t := range s.tools {
		if err := ValidName(t.Name); err != nil {
			return nil, err
		}
		if t.add == nil {
			return nil, fmt.Errorf("tool %q was not built with Define or New", t.Name)
		}
		if _, dup := s.byName[t.Name]; dup {
			return nil, fmt.Errorf("two tools named %q", t.Name)
		}
		s.byName[t.Name] = i
	}
	return s, nil
}

// BuiltIn returns the gateway's own tools: who_am_i and list_my_orgs.
func BuiltIn() *Set {
	s, err := NewSet(whoAmITool(), listMyOrgsTool())
	if err != nil {
		// The built-in tools are constants of this package; TestBuiltIn
		// builds them.
		panic(err)
	}
	return s
}

// All returns every tool of s, sorted by name.
func (s *Set) All() []Tool { return slices.Clone(s.tools) }

// Lookup returns the tool of s called name.
func (s *Set) Lookup(name string) (Tool, bool) {
	i, ok := s.byName[name]
	if !ok {
		return Tool{}, false
	}
	return s.tools[i], true
}

// Scopes returns every scope any tool of s declares (Scopes and OrgsScopes),
// in the order of the tools, deduplicated.
func (s *Set) Scopes() []string {
	var out []string
	for _, t := range s.tools {
		for _, sc := range slices.Concat(t.Scopes, t.OrgsScopes) {
			if !slices.Contains(out, sc) {
				out = append(out, sc)
			}
		}
	}
	return out
}

// InstallOptions configures [Set.Install].
type InstallOptions struct {
	// ListAll makes tools/list return every tool instead of only those the
	// caller may call.
	ListAll bool
	// Others, if set, gives the scopes (besides SCOPES) of tools the server
	// serves that the set does not hold (an upstream's, package federation),
	// so that tools/list filters them likewise; ok false: no such tool, left
	// out.
	Others func(name string) (scopes []string, ok bool)
}

// Install adds every tool of s to server and, unless opts.ListAll, a
// middleware that removes from tools/list the tools the caller may not call
// (and so marks the list private: it differs between callers).
func (s *Set) Install(server *mcp.Server, env *Env, opts InstallOptions) {
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	for _, t := range s.tools {
		t.add(server, env)
	}
	if !opts.ListAll {
		server.AddReceivingMiddleware(s.listFilter(env.Logger, opts.Others))
	}
}

// Cache scopes of MCP results (cacheScope, as HTTP's Cache-Control public and
// private).
const (
	CacheScopePublic  = "public"
	CacheScopePrivate = "private"
)

// listFilter hides tools whose scopes the caller lacks, and marks the result
// private: unfiltered (ListAll) the list is the same for every caller and the
// SDK's default, public, is right. It fails closed: with no caller, or when
// authz cannot say, the tool is left out.
func (s *Set) listFilter(logger *slog.Logger, others func(string) ([]string, bool)) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			if method != "tools/list" || err != nil {
				return res, err
			}
			list, ok := res.(*mcp.ListToolsResult)
			if !ok {
				return res, err
			}
			var c *caller.Caller
			if extra := req.GetExtra(); extra != nil {
				c = caller.FromTokenInfo(extra.TokenInfo)
			}
			visible := make([]*mcp.Tool, 0, len(list.Tools))
			for _, mt := range list.Tools {
				t, known := s.Lookup(mt.Name)
				scopes := t.Scopes
				if !known && others != nil {
					scopes, known = others(mt.Name)
				}
				if !known || c == nil {
					continue
				}
				allowed, herr := c.Has(ctx, scopes)
				if herr != nil {
					logger.WarnContext(ctx, "tools/list: cannot check scopes; hiding tool", "tool", mt.Name, "error", herr)
					continue
				}
				if allowed {
					visible = append(visible, mt)
				}
			}
			filtered := *list
			filtered.Tools = visible
			// The list now depends on the caller's token: no shared cache
			// (an intermediary, another user's client) may keep it.
			filtered.CacheScope = CacheScopePrivate
			return &filtered, nil
		}
	}
}
