// Package caller carries the authenticated caller of one MCP request from the
// gateway's authorization middleware to the tool handlers.
//
// The gateway asks authz once per request; the resulting [Caller] travels in the
// go-sdk's [auth.TokenInfo] (Extra["caller"]), which the SDK hands to every
// handler as req.Extra.TokenInfo, so no handler re-fetches the principal or the
// user. The token itself is not in the Caller: a handler that needs to know
// whether the caller holds more scopes asks [Caller.Has], which goes back to
// authz through a closure the gateway built.
package caller

import (
	"context"
	"slices"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// extraKey is the key of the Caller in auth.TokenInfo.Extra.
const extraKey = "caller"

// CheckFunc asks authz whether the request's token may be used with scopes
// (granted directly or through the scope hierarchy). It returns an error when
// authz cannot answer.
type CheckFunc func(ctx context.Context, scopes []string) (bool, error)

// Caller is who the request's token represents, as authz decided. Principal
// and User may be shared with other requests (the decision cache reuses
// authz's response), so they are read only.
type Caller struct {
	// Principal is the token's identity. Never nil.
	Principal *authzv1.Principal
	// User is the subject's user, when the operation asked authz for it and the
	// lookup succeeded.
	User *authzv1.User
	// UserError says why User is nil although it was asked for.
	UserError string
	// UserRequested reports whether authz was asked for the user (include_user).
	UserRequested bool
	// OrgsWithheld, when set, says why the user's organizations must not be
	// shown: the operation shows them only to tokens holding more scopes, and
	// authz said this one does not (or could not say). User then holds no
	// organizations.
	OrgsWithheld string

	confirmed []string
	check     CheckFunc
}

// New returns the caller of a request that authz allowed for confirmed scopes.
// check, if non-nil, answers [Caller.Has] for scopes beyond those.
func New(p *authzv1.Principal, confirmed []string, check CheckFunc) *Caller {
	return &Caller{Principal: p, confirmed: confirmed, check: check}
}

// Confirm records that authz allowed this request's token with scopes too, so
// that [Caller.Has] answers for them without asking again.
func (c *Caller) Confirm(scopes []string) {
	// Clip: confirmed may be the operation table's slice, shared by every
	// request; append must copy it, not write past its end.
	c.confirmed = append(slices.Clip(c.confirmed), scopes...)
}

// Has reports whether the caller may use every scope in scopes: true at once for
// scopes the token was issued with or that authz confirmed for this request;
// otherwise authz is asked (scope hierarchies live there). It returns an error
// only when authz cannot answer.
func (c *Caller) Has(ctx context.Context, scopes []string) (bool, error) {
	missing := false
	for _, s := range scopes {
		if !slices.Contains(c.confirmed, s) && !slices.Contains(c.Principal.GetScopes(), s) {
			missing = true
			break
		}
	}
	if !missing {
		return true, nil
	}
	if c.check == nil {
		return false, nil
	}
	return c.check(ctx, scopes)
}

// TokenInfo returns the go-sdk view of the caller: scopes, expiry and user ID
// from the principal, and the Caller itself in Extra for [FromTokenInfo].
func (c *Caller) TokenInfo() *auth.TokenInfo {
	ti := &auth.TokenInfo{
		Scopes: c.Principal.GetScopes(),
		UserID: c.Principal.GetSubject(),
		Extra:  map[string]any{extraKey: c},
	}
	if exp := c.Principal.GetExpiresAt(); exp != nil {
		ti.Expiration = exp.AsTime()
	}
	return ti
}

// FromTokenInfo returns the Caller stored by [Caller.TokenInfo], or nil when ti
// is nil or holds none (a request that did not pass the gateway's middleware).
func FromTokenInfo(ti *auth.TokenInfo) *Caller {
	if ti == nil {
		return nil
	}
	c, _ := ti.Extra[extraKey].(*Caller)
	return c
}

type ctxKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the Caller in ctx, or nil.
func FromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(ctxKey{}).(*Caller)
	return c
}
