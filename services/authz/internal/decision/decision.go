// Package decision decides whether an introspected token may be used on a resource
// with a set of scopes. It is pure: no I/O, no clock of its own, no allocation on an
// allowed decision.
//
// # Rules, in order
//
//  1. The token must be active (DenialInactive otherwise).
//  2. When the response carries iss, it must equal the expected issuer exactly
//     (RFC 8414 §3.3 string comparison; DenialIssuerMismatch).
//  3. exp, when present, must not be more than the clock skew in the past
//     (DenialExpired). A response without exp is accepted: RFC 7662 makes exp
//     optional and active=true is the authorization server's verdict; the cache
//     bounds how long such a result is reused (CACHE_TTL).
//  4. nbf and iat, when present, must not be more than the skew in the future
//     (DenialNotYetValid).
//  5. One of the token's audiences, canonicalised (RFC 8707), must equal the
//     canonical resource (DenialAudienceMismatch). A token without audience matches
//     nothing: the MCP spec requires audience validation.
//  6. Every required scope must be granted directly or implied by a granted scope
//     through the [Hierarchy] (DenialInsufficientScope, with the missing scopes).
package decision

import (
	"fmt"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// Reason says why a token was denied. The zero value means allowed.
type Reason uint8

// The reasons.
const (
	Allowed Reason = iota
	DenialInactive
	DenialExpired
	DenialAudienceMismatch
	DenialInsufficientScope
	DenialIssuerMismatch
	DenialNotYetValid
)

var reasonNames = [...]string{"allowed", "token_inactive", "token_expired", "audience_mismatch", "insufficient_scope", "issuer_mismatch", "token_not_yet_valid"}

// String returns the reason's metric label, such as "audience_mismatch".
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Reasons lists every reason, for pre-declaring metric labels.
func Reasons() []Reason {
	return []Reason{Allowed, DenialInactive, DenialExpired, DenialAudienceMismatch, DenialInsufficientScope, DenialIssuerMismatch, DenialNotYetValid}
}

// Outcome is a decision.
type Outcome struct {
	Reason Reason
	// Missing lists the required scopes the token lacks (DenialInsufficientScope).
	Missing []string
	// Description is safe to show to the client: it never contains the token,
	// claims values or secrets.
	Description string
}

// Allowed reports whether the outcome allows the request.
func (o Outcome) Allowed() bool { return o.Reason == Allowed }

// Policy holds the configured checks. Its zero value checks no issuer, allows no
// skew and has no hierarchy.
type Policy struct {
	// Issuer is the expected iss; empty disables the check.
	Issuer string
	// Skew is the allowed clock difference with the authorization server.
	Skew time.Duration
	// Hierarchy expands granted scopes.
	Hierarchy *Hierarchy
}

// Decide applies the rules to r for the canonical resource (see
// resource.Canonicalize) and the required scopes at time now.
func (p *Policy) Decide(r *tokeninfo.Result, canonicalResource string, required []string, now time.Time) Outcome {
	if r == nil || !r.Active {
		return Outcome{Reason: DenialInactive, Description: "the token is not active"}
	}
	if r.Issuer != "" && p.Issuer != "" && r.Issuer != p.Issuer {
		return Outcome{Reason: DenialIssuerMismatch, Description: "the token was issued by another authorization server"}
	}
	skew := int64(p.Skew / time.Second)
	unix := now.Unix()
	if r.Has&tokeninfo.HasExp != 0 && unix-skew >= r.Exp {
		return Outcome{Reason: DenialExpired, Description: "the token has expired"}
	}
	if r.Has&tokeninfo.HasNbf != 0 && r.Nbf > unix+skew {
		return Outcome{Reason: DenialNotYetValid, Description: "the token is not valid yet"}
	}
	if r.Has&tokeninfo.HasIat != 0 && r.Iat > unix+skew {
		return Outcome{Reason: DenialNotYetValid, Description: "the token was issued in the future"}
	}
	if !audienceMatches(r.CanonicalAudience, canonicalResource) {
		return Outcome{Reason: DenialAudienceMismatch, Description: "the token was not issued for this resource"}
	}
	var missing []string
	for _, s := range required {
		if !p.Hierarchy.Grants(r.Scopes, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return Outcome{
			Reason:      DenialInsufficientScope,
			Missing:     missing,
			Description: "the token lacks the required scope: " + strings.Join(missing, " "),
		}
	}
	return Outcome{}
}

func audienceMatches(aud []string, res string) bool {
	for _, a := range aud {
		if a == res {
			return true
		}
	}
	return false
}
