package tools

import (
	"context"
)

// whoAmITool is the built-in tool who_am_i.
func whoAmITool() Tool {
	return Define(Spec{
		Name:        "who_am_i",
		Title:       "Who am I",
		Description: "Describes the caller: the access token's subject, client, scopes, expiry, audience, issuer and claims, and the user's profile, with the user's organizations when the token is granted read:org_data.",
		Scopes:      []string{"read:user_data"},
		NeedsUser:   true,
		OrgsScopes:  whoAmIOrgsScopes,
	}, whoAmI)
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
	// OrgsWithheld says why user.orgs is empty when the token may not see
	// organizations (list_my_orgs needs read:org_data for the same data).
	OrgsWithheld string `json:"orgs_withheld,omitempty" jsonschema:"why user.orgs is empty: the token is not granted the scope organizations need"`
}

// whoAmI reports the token part from the principal and the user part from the
// user authz returned with the decision. A failed user lookup does not fail the
// tool: the token part is still useful, and user_error says what went wrong.
// The user's organizations are shown only to a token that holds read:org_data,
// as list_my_orgs requires for the same data; otherwise orgs is empty and
// orgs_withheld says why.
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
	out.OrgsWithheld = orgsWithheld(ctx, call, whoAmIOrgsScopes)
	u, err := callerUser(ctx, call, out.OrgsWithheld == "")
	if err != nil {
		out.UserError = err.Error()
		return out, nil
	}
	out.User = userFromProto(u)
	if out.OrgsWithheld != "" {
		out.User.Orgs = []Org{}
	}
	return out, nil
}

// whoAmIOrgsScopes are who_am_i's OrgsScopes.
var whoAmIOrgsScopes = []string{"read:org_data"}

// orgsWithheld returns why the caller may not see the user's organizations,
// or "" when it may: it holds scopes (confirmed by authz for this request, or
// granted, or, asked again, implied through authz's scope hierarchy). The
// gateway usually knows already (Caller.OrgsWithheld, or the scopes confirmed
// when it asked authz for the organizations); this is the tool set's own
// check, in depth.
func orgsWithheld(ctx context.Context, call *Call, scopes []string) string {
	c := call.Caller
	if c.OrgsWithheld != "" {
		return c.OrgsWithheld
	}
	ok, err := c.Has(ctx, scopes)
	switch {
	case err != nil:
		call.Env.Logger.WarnContext(ctx, "checking the scopes organizations need failed; leaving them out", "tool", call.Request.Params.Name, "error", err)
		return "organizations could not be checked right now (the authorization service did not answer); retry later"
	case !ok:
		return OrgsWithheld(scopes)
	}
	return ""
}
