package tools

import (
	"context"
)

func init() {
	register(define(Spec{
		Name:        "who_am_i",
		Title:       "Who am I",
		Description: "Describes the caller: the access token's subject, client, scopes, expiry, audience, issuer and claims, and the user's profile and organizations.",
		Scopes:      []string{"read:user_data"},
		NeedsUser:   true,
		NeedsOrgs:   true,
	}, whoAmI))
}

// WhoAmIInput takes no arguments.
type WhoAmIInput struct{}

// WhoAmI is who_am_i's structured output.
type WhoAmI struct {
	Subject   string     `json:"subject" jsonschema:"the token's subject (user ID)"`
	ClientID  string     `json:"client_id" jsonschema:"the OAuth client the token was issued to"`
	Scopes    []string   `json:"scopes" jsonschema:"the scopes granted to the token"`
	ExpiresAt string     `json:"expires_at,omitempty" jsonschema:"when the token expires (RFC 3339)"`
	Audience  []string   `json:"audience" jsonschema:"the resources the token was issued for"`
	Issuer    string     `json:"issuer,omitempty" jsonschema:"the authorization server that issued the token"`
	Claims    JSONObject `json:"claims,omitempty" jsonschema:"every member of the introspection response"`
	User      *User      `json:"user,omitempty" jsonschema:"the user behind the token"`
	UserError string     `json:"user_error,omitempty" jsonschema:"why user is missing, when the lookup failed"`
}

// whoAmI reports the token part from the principal and the user part from the
// user authz returned with the decision. A failed user lookup does not fail the
// tool: the token part is still useful, and user_error says what went wrong.
func whoAmI(ctx context.Context, call *Call, _ WhoAmIInput) (WhoAmI, error) {
	p := call.Caller.Principal
	out := WhoAmI{
		Subject:   p.GetSubject(),
		ClientID:  p.GetClientId(),
		Scopes:    nonNil(p.GetScopes()),
		ExpiresAt: rfc3339(p.GetExpiresAt()),
		Audience:  nonNil(p.GetAudience()),
		Issuer:    p.GetIssuer(),
	}
	claims, err := claimsJSON(p)
	if err != nil {
		return WhoAmI{}, err
	}
	out.Claims = claims
	u, err := callerUser(ctx, call)
	if err != nil {
		out.UserError = err.Error()
		return out, nil
	}
	out.User = userFromProto(u)
	return out, nil
}
