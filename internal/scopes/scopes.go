// Package scopes is the one place OAuth scope lists are parsed and checked, so
// that what the gateway and devauth accept in their configuration is exactly
// what authz accepts in a request.
//
// A scope is an RFC 6749 §3.3 scope-token (1*NQCHAR: printable ASCII except
// space, '"' and '\'), which also guarantees it can be quoted in a
// WWW-Authenticate header. authz refuses a scope longer than [MaxLength] bytes
// and a request naming more than [MaxCount] scopes with INVALID_ARGUMENT.
package scopes

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Limits authz puts on the scopes of one request (AuthorizeRequest.required_scopes).
const (
	MaxLength = 256
	MaxCount  = 64
)

// Valid reports whether s is a scope-token of at most [MaxLength] bytes.
func Valid(s string) bool {
	if s == "" || len(s) > MaxLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Parse splits a list separated by spaces, commas, tabs or newlines, drops
// duplicates (keeping the first-seen order) and checks every scope with
// [Valid]. An empty list is no error; see [ParseNonEmpty].
func Parse(s string) ([]string, error) {
	var out []string
	for _, sc := range strings.FieldsFunc(s, isSep) {
		if err := Check(sc); err != nil {
			return nil, err
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// ParseNonEmpty is [Parse] for a list that must name at least one and at most
// [MaxCount] scopes, such as the scopes every request needs.
func ParseNonEmpty(s string) ([]string, error) {
	out, err := Parse(s)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("must name at least one scope")
	}
	return out, CheckCount(out)
}

// Check returns an error saying why s is not a valid scope, or nil.
func Check(s string) error {
	if len(s) > MaxLength {
		return fmt.Errorf("scope %.40q... is %d bytes; authz accepts scopes of at most %d", s, len(s), MaxLength)
	}
	if !Valid(s) {
		return fmt.Errorf("invalid scope %q (RFC 6749 scope-token: printable ASCII except space, '\"' and '\\')", s)
	}
	return nil
}

// CheckCount returns an error when list names more scopes than authz accepts
// in one request.
func CheckCount(list []string) error {
	if len(list) > MaxCount {
		return fmt.Errorf("names %d scopes; authz accepts at most %d in one request", len(list), MaxCount)
	}
	return nil
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

func isSep(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' || r == '\r' }
