package decision

import (
	"errors"
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"slices"
	"strings"
)

// Hierarchy records which scopes imply which others ("admin" implies
// "read:user_data", say), transitively. A nil *Hierarchy implies nothing.
type Hierarchy struct {
	// implied maps a scope to every scope it implies, directly or not, sorted.
	implied map[string][]string
}

// ErrBadHierarchy is returned (wrapped) by [ParseHierarchy] for a malformed
// specification.
var ErrBadHierarchy = errors.New("bad scope hierarchy")

// ParseHierarchy parses a specification such as
// "admin=read:user_data,read:org_data;read:user_data=read:profile": rules separated
// by ";", each a broader scope, "=", and the narrower scopes it implies separated by
// ",". Whitespace around names is ignored; an empty spec yields an empty hierarchy.
// Cycles are allowed (the scopes then imply each other). Scope names must be valid
// RFC 6749 scope tokens; otherwise the error unwraps to ErrBadHierarchy.
func ParseHierarchy(spec string) (*Hierarchy, error) {
	direct := map[string][]string{}
	for rule := range strings.SplitSeq(spec, ";") {
		rule = strings.TrimSpace(rule)
		if rule == "" {
			continue
		}
		broad, narrow, ok := strings.Cut(rule, "=")
		broad = strings.TrimSpace(broad)
		if !ok || !scopes.Valid(broad) {
			return nil, fmt.Errorf("%w: rule %q is not scope=scope,scope", ErrBadHierarchy, rule)
		}
		for n := range strings.SplitSeq(narrow, ",") {
			n = strings.TrimSpace(n)
			if !scopes.Valid(n) || strings.Contains(n, "=") {
				return nil, fmt.Errorf("%w: %q in rule %q is not a valid scope", ErrBadHierarchy, n, rule)
			}
			if n != broad {
				direct[broad] = append(direct[broad], n)
			}
		}
	}
	h := &Hierarchy{implied: make(map[string][]string, len(direct))}
	for broad := range direct {
		seen := map[string]bool{broad: true}
		stack := slices.Clone(direct[broad])
		var all []string
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue
			}
			seen[s] = true
			all = append(all, s)
			stack = append(stack, direct[s]...)
		}
		slices.Sort(all)
		h.implied[broad] = all
	}
	return h, nil
}

// Grants reports whether the granted scopes include want, directly or through the
// hierarchy.
func (h *Hierarchy) Grants(granted []string, want string) bool {
	for _, g := range granted {
		if g == want {
			return true
		}
	}
	if h == nil {
		return false
	}
	for _, g := range granted {
		if _, ok := slices.BinarySearch(h.implied[g], want); ok {
			return true
		}
	}
	return false
}

// Implied returns the scopes broad implies, sorted; nil if none.
func (h *Hierarchy) Implied(broad string) []string {
	if h == nil {
		return nil
	}
	return slices.Clone(h.implied[broad])
}

// String renders the expanded hierarchy, for the effective-config log line.
func (h *Hierarchy) String() string {
	if h == nil || len(h.implied) == 0 {
		return ""
	}
	keys := make([]string, 0, len(h.implied))
	for k := range h.implied {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(k + "=" + strings.Join(h.implied[k], ","))
	}
	return b.String()
}
