package tools

import (
	"context"
)

// listMyOrgsTool is the built-in tool list_my_orgs.
func listMyOrgsTool() Tool {
	return Define(Spec{
		Name:        "list_my_orgs",
		Title:       "List my organizations",
		Description: "Lists the organizations the caller belongs to, with the caller's role, inherited roles and permissions in each.",
		Scopes:      []string{"read:org_data"},
		NeedsUser:   true,
		NeedsOrgs:   true,
	}, listMyOrgs)
}

// ListMyOrgsInput takes no arguments.
type ListMyOrgsInput struct{}

// MyOrgs is list_my_orgs's structured output.
type MyOrgs struct {
	Orgs []Org `json:"orgs" jsonschema:"the caller's organizations, sorted by org_id"`
}

// listMyOrgs uses the user authz returned with the decision; without it (e.g.
// the lookup failed) the tool fails, since it has nothing else to report.
func listMyOrgs(ctx context.Context, call *Call, _ ListMyOrgsInput) (MyOrgs, error) {
	u, err := callerUser(ctx, call, true)
	if err != nil {
		return MyOrgs{}, err
	}
	return MyOrgs{Orgs: orgsFromProto(u.GetOrgs())}, nil
}
