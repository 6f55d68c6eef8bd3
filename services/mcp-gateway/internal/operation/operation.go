// Package operation decides what authorizing one MCP request takes: the scopes
// it needs (SCOPES for every request, plus the declared scopes of the tool a
// tools/call names), whether authz should return the caller's user with the
// decision, and whether with the user's organizations.
//
// Organizations are returned only when authz confirmed scopes that allow them:
// for list_my_orgs its own scope (read:org_data), required; for who_am_i, which
// works without it, a second question with that scope added, asked only when
// the token may hold it (see [Operation.OrgsScopes]).
package operation

import (
	"slices"

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/mcpreq"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// Operation is what authorizing one kind of request takes.
type Operation struct {
	// Scopes are every scope the request needs, base scopes first.
	Scopes []string
	// NeedsUser asks authz for the caller's user (include_user); NeedsOrgs for
	// the user's orgs too (include_orgs).
	NeedsUser bool
	NeedsOrgs bool
	// OrgsScopes, when set (who_am_i), are the scopes a token must hold for
	// the user's orgs to be shown. The decision is then asked without orgs,
	// and, if the token may hold them, asked again for WithOrgs (Scopes plus
	// OrgsScopes) with include_orgs: authz returns the orgs only when it
	// allows that.
	OrgsScopes []string
	WithOrgs   []string
}

// MayHold reports whether a token issued scopes may hold o's OrgsScopes,
// granted or through authz's scope hierarchy, so that asking authz for
// WithOrgs is worth a call: it holds them all as issued, or holds a scope
// besides o's Scopes (which might imply them). A token issued only o's Scopes
// is taken not to hold them, without a call: a hierarchy in which one of
// those scopes implies an orgs scope is not seen, and the orgs are withheld
// (fail closed).
func (o Operation) MayHold(issued []string) bool {
	if len(o.OrgsScopes) == 0 {
		return false
	}
	all := true
	for _, s := range o.OrgsScopes {
		if !slices.Contains(issued, s) {
			all = false
			break
		}
	}
	if all {
		return true
	}
	for _, s := range issued {
		if !slices.Contains(o.Scopes, s) {
			return true
		}
	}
	return false
}

// Table maps requests to operations. It is immutable once built.
type Table struct {
	base  Operation
	tools map[string]Operation
}

// NewTable builds the table for base scopes and the tools served (a tool
// set's [tools.Set.All]).
func NewTable(base []string, ts []tools.Tool) *Table {
	t := &Table{base: Operation{Scopes: slices.Clone(base)}, tools: make(map[string]Operation, len(ts))}
	for _, tool := range ts {
		op := Operation{
			Scopes:    scopes.Union(base, tool.Scopes),
			NeedsUser: tool.NeedsUser || tool.NeedsOrgs,
			NeedsOrgs: tool.NeedsOrgs,
		}
		if len(tool.OrgsScopes) > 0 && !tool.NeedsOrgs {
			op.NeedsUser = true
			op.OrgsScopes = slices.Clone(tool.OrgsScopes)
			op.WithOrgs = scopes.Union(op.Scopes, tool.OrgsScopes)
		}
		t.tools[tool.Name] = op
	}
	return t
}

// Base is the operation of any request that is not a call of a known tool,
// and of a request whose body could not be parsed.
func (t *Table) Base() Operation { return t.base }

// For returns the operation of a parsed request: the tool's for a tools/call of
// a known tool, else the base one (an unknown tool is refused by the go-sdk
// with a JSON-RPC error after the base authorization).
func (t *Table) For(info mcpreq.Info) Operation {
	if op, ok := t.tools[info.Tool()]; ok {
		return op
	}
	return t.base
}

// IsTool reports whether name is a known tool.
func (t *Table) IsTool(name string) bool {
	_, ok := t.tools[name]
	return ok
}
