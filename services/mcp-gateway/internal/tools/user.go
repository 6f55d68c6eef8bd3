package tools

import (
	"context"
	"errors"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// User is the caller's user as tools return it.
type User struct {
	UserID         string `json:"user_id" jsonschema:"the user's ID (the token subject)"`
	Email          string `json:"email" jsonschema:"the user's email address"`
	FirstName      string `json:"first_name,omitempty"`
	LastName       string `json:"last_name,omitempty"`
	Username       string `json:"username,omitempty"`
	PictureURL     string `json:"picture_url,omitempty"`
	EmailConfirmed bool   `json:"email_confirmed"`
	MFAEnabled     bool   `json:"mfa_enabled"`
	CreatedAt      string `json:"created_at,omitempty" jsonschema:"when the user was created (RFC 3339)"`
	LastActiveAt   string `json:"last_active_at,omitempty" jsonschema:"when the user was last active (RFC 3339)"`
	Orgs           []Org  `json:"orgs" jsonschema:"the organizations the user belongs to"`
}

// Org is one organization membership of the caller's user.
type Org struct {
	OrgID          string   `json:"org_id"`
	OrgName        string   `json:"org_name"`
	URLSafeOrgName string   `json:"url_safe_org_name,omitempty"`
	Role           string   `json:"role" jsonschema:"the user's role in the organization"`
	InheritedRoles []string `json:"inherited_roles" jsonschema:"the role and every role it inherits"`
	Permissions    []string `json:"permissions" jsonschema:"the user's permissions in the organization"`
}

func userFromProto(u *authzv1.User) *User {
	if u == nil {
		return nil
	}
	return &User{
		UserID:         u.GetUserId(),
		Email:          u.GetEmail(),
		FirstName:      u.GetFirstName(),
		LastName:       u.GetLastName(),
		Username:       u.GetUsername(),
		PictureURL:     u.GetPictureUrl(),
		EmailConfirmed: u.GetEmailConfirmed(),
		MFAEnabled:     u.GetMfaEnabled(),
		CreatedAt:      rfc3339(u.GetCreatedAt()),
		LastActiveAt:   rfc3339(u.GetLastActiveAt()),
		Orgs:           orgsFromProto(u.GetOrgs()),
	}
}

func orgsFromProto(in []*authzv1.OrgMembership) []Org {
	out := make([]Org, 0, len(in))
	for _, o := range in {
		out = append(out, Org{
			OrgID:          o.GetOrgId(),
			OrgName:        o.GetOrgName(),
			URLSafeOrgName: o.GetUrlSafeOrgName(),
			Role:           o.GetUserRole(),
			InheritedRoles: nonNil(o.GetInheritedUserRolesPlusCurrentRole()),
			Permissions:    nonNil(o.GetUserPermissions()),
		})
	}
	return out
}

// rfc3339 formats ts, or returns "" for an unset timestamp.
func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// nonNil keeps empty lists as [] rather than null, which the output schema
// (type array) would refuse.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// errUserUnavailable is what a tool reports when the user cannot be fetched.
var errUserUnavailable = errors.New("the user's profile is unavailable right now; retry later")

// callerUser returns the caller's user, with orgs when orgs is set (the
// caller may see them): the one authz returned with the decision when there is
// one, otherwise a GetUser call. A user authz returned may hold orgs although
// orgs is not set; the caller leaves them out. It returns a message safe to
// show the client on failure.
func callerUser(ctx context.Context, call *Call, orgs bool) (*authzv1.User, error) {
	c := call.Caller
	if c.User != nil {
		return c.User, nil
	}
	if c.UserRequested && c.UserError != "" {
		return nil, errors.New("looking up the user failed: " + c.UserError)
	}
	u, err := call.Env.Users.GetUser(ctx, c.Principal.GetSubject(), orgs)
	if err != nil {
		call.Env.Logger.WarnContext(ctx, "fetching user failed", "tool", call.Request.Params.Name, "error", err)
		switch status.Code(err) {
		case codes.NotFound:
			return nil, errors.New("the token's subject is not a known user")
		default:
			return nil, errUserUnavailable
		}
	}
	return u, nil
}
