// Package operation decides what authorizing one MCP request takes: the scopes
// it needs (SCOPES for every request, plus the declared scopes of the tool a
// tools/call names) and whether authz should return the caller's user with the
// decision.
package operation

import (
	"slices"

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
}

// Table maps requests to operations. It is immutable once built.
type Table struct {
	base  Operation
	tools map[string]Operation
}

// NewTable builds the table for base scopes and the given tools.
func NewTable(base []string, ts []tools.Tool) *Table {
	t := &Table{base: Operation{Scopes: slices.Clone(base)}, tools: make(map[string]Operation, len(ts))}
	for _, tool := range ts {
		t.tools[tool.Name] = Operation{
			Scopes:    Union(base, tool.Scopes),
			NeedsUser: tool.NeedsUser || tool.NeedsOrgs,
			NeedsOrgs: tool.NeedsOrgs,
		}
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

// Union returns a followed by the elements of b not in a.
func Union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
