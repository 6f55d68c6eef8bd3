// Package tokeninfo holds what authz knows about a token once the authorization
// server has described it: the [Result] of an introspection, which the
// introspection client produces, the caches keep, and the decision rules and the
// gRPC handlers read. It has no behaviour of its own, so none of its readers
// depends on how it was obtained.
package tokeninfo

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Result is a parsed introspection response, laid out to stay small because
// thousands of them live in the in-process cache. It is immutable once built:
// its slices are shared by every request that reads it.
type Result struct {
	// Subject, ClientID and Issuer are the sub, client_id and iss members, "" when
	// absent.
	Subject  string
	ClientID string
	Issuer   string
	// Scopes are the granted scopes, as issued.
	Scopes []string
	// Audience is aud (or resource) as returned; CanonicalAudience holds the same
	// values in canonical form (see the resource package), without those that
	// cannot be canonicalised (they can never match a resource). The two share
	// memory when the audiences are already canonical.
	Audience          []string
	CanonicalAudience []string
	// ClaimsWire is every member of the response as a google.protobuf.Struct in
	// deterministic wire format. It is decoded per request (see [Result.Claims])
	// because a decoded Struct costs several times its wire size in memory.
	ClaimsWire []byte
	// Exp, Iat and Nbf are unix seconds; valid only when the matching Has bit is set.
	Exp, Iat, Nbf int64
	// Active is the active member.
	Active bool
	// Has records which of exp, iat and nbf were present.
	Has Has
}

// Has is a set of optional numeric claims present in a response.
type Has uint8

// The optional numeric claims.
const (
	HasExp Has = 1 << iota
	HasIat
	HasNbf
)

// Claims decodes ClaimsWire into a fresh Struct the caller owns. It returns nil for a
// Result without claims. The error is non-nil only if ClaimsWire was corrupted,
// which the introspection parser never produces.
func (r *Result) Claims() (*structpb.Struct, error) {
	if len(r.ClaimsWire) == 0 {
		return nil, nil
	}
	s := &structpb.Struct{}
	if err := proto.Unmarshal(r.ClaimsWire, s); err != nil {
		return nil, fmt.Errorf("decoding claims: %w", err)
	}
	return s, nil
}
