// Package introspect is an OAuth 2.0 Token Introspection (RFC 7662) client and a
// tolerant parser of introspection responses, which it turns into
// [tokeninfo.Result] values.
//
// # Parsing
//
// [Parse] accepts what real authorization servers send: aud as a string or a list (or,
// when aud is absent, a resource member of either shape), scope as a space-separated
// string or a list (or scp, as Okta and Azure AD name it), and exp/iat/nbf as JSON
// integers or floats (fractions are truncated). It is strict where a lenient reading
// would be unsafe: active must be a JSON boolean, numeric claims given as strings are
// rejected, and the body must be a single JSON object. A null member counts as absent.
// A response that breaks these rules is [ErrMalformed]: the caller must treat it as an
// outage of the authorization server, never as a denial or an approval.
package introspect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/resource"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// MaxBodyBytes caps the introspection responses this package reads and parses.
const MaxBodyBytes = 1 << 20

// ErrMalformed is returned (wrapped) by [Parse] for a response that is not a valid
// introspection response.
var ErrMalformed = errors.New("malformed introspection response")

// Parse parses an introspection response body. If the body is not a valid
// introspection response, the error unwraps to [ErrMalformed]. An inactive
// response yields a Result with Active false and nothing else, since RFC 7662 lets
// servers omit or garble the other members of an inactive token.
func Parse(body []byte) (*tokeninfo.Result, error) {
	if len(body) > MaxBodyBytes {
		return nil, malformed("body larger than %d bytes", MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, malformed("not a JSON object: %v", err)
	}
	if m == nil {
		return nil, malformed("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, malformed("data after the JSON object")
	}
	active, ok := m["active"].(bool)
	if !ok {
		if _, present := m["active"]; !present {
			return nil, malformed("active is missing")
		}
		return nil, malformed("active is not a boolean")
	}
	if !active {
		return &tokeninfo.Result{}, nil
	}
	r := &tokeninfo.Result{Active: true}
	var err error
	if r.Subject, err = optString(m, "sub"); err != nil {
		return nil, err
	}
	if r.ClientID, err = optString(m, "client_id"); err != nil {
		return nil, err
	}
	if r.Issuer, err = optString(m, "iss"); err != nil {
		return nil, err
	}
	scopeKey := "scope"
	if m["scope"] == nil && m["scp"] != nil {
		scopeKey = "scp"
	}
	if r.Scopes, err = stringOrList(m, scopeKey, true); err != nil {
		return nil, err
	}
	audKey := "aud"
	if m["aud"] == nil && m["resource"] != nil {
		audKey = "resource"
	}
	if r.Audience, err = stringOrList(m, audKey, false); err != nil {
		return nil, err
	}
	r.CanonicalAudience = canonicalAudience(r.Audience)
	for _, c := range []struct {
		key string
		bit tokeninfo.Has
		dst *int64
	}{{"exp", tokeninfo.HasExp, &r.Exp}, {"iat", tokeninfo.HasIat, &r.Iat}, {"nbf", tokeninfo.HasNbf, &r.Nbf}} {
		v, present, err := optTime(m, c.key)
		if err != nil {
			return nil, err
		}
		if present {
			*c.dst = v
			r.Has |= c.bit
		}
	}
	claims, err := structpb.NewStruct(m)
	if err != nil {
		return nil, malformed("claims: %v", err)
	}
	if r.ClaimsWire, err = (proto.MarshalOptions{Deterministic: true}).Marshal(claims); err != nil {
		return nil, malformed("claims: %v", err)
	}
	return r, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func optString(m map[string]any, key string) (string, error) {
	switch v := m[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", malformed("%s is not a string", key)
	}
}

// stringOrList reads a member that is a string or a list of strings. With split, a
// string is a space-separated list (the scope syntax of RFC 6749 §3.3); list elements
// are split too, since some servers put "a b" in a one-element list.
func stringOrList(m map[string]any, key string, split bool) ([]string, error) {
	switch v := m[key].(type) {
	case nil:
		return nil, nil
	case string:
		if split {
			return fields(v), nil
		}
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, malformed("%s has a non-string element", key)
			}
			if split {
				out = append(out, strings.Fields(s)...)
			} else if s != "" {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	default:
		return nil, malformed("%s is neither a string nor a list of strings", key)
	}
}

func fields(s string) []string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil
	}
	return f
}

// maxTime bounds accepted timestamps (year 5138) so arithmetic on them cannot
// overflow.
const maxTime = 1e11

func optTime(m map[string]any, key string) (int64, bool, error) {
	switch v := m[key].(type) {
	case nil:
		return 0, false, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			if i < 0 || i > maxTime {
				return 0, false, malformed("%s is out of range", key)
			}
			return i, true, nil
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxTime {
			return 0, false, malformed("%s is not a valid timestamp", key)
		}
		return int64(f), true, nil
	default:
		return 0, false, malformed("%s is not a number", key)
	}
}

func canonicalAudience(aud []string) []string {
	if len(aud) == 0 {
		return nil
	}
	var out []string
	for i, a := range aud {
		c, err := resource.Canonicalize(a)
		if err == nil && c == a && out == nil {
			continue
		}
		if out == nil {
			out = make([]string, 0, len(aud))
			out = append(out, aud[:i]...)
		}
		if err == nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return aud
	}
	return out
}
