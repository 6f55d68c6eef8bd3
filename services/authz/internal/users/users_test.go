package users

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

func TestParseUser(t *testing.T) {
	t.Parallel()
	body := `{"user_id":"u1","email":"a@example.com","email_confirmed":true,"has_password":false,
		"username":null,"first_name":"A","last_name":null,"picture_url":null,"properties":{},"metadata":null,
		"locked":false,"enabled":true,"mfa_enabled":true,"can_create_orgs":false,
		"created_at":1700000000.0,"last_active_at":null,"update_password_required":false,"legacy_user_id":null,
		"org_id_to_org_info":{
			"b":{"org_id":"b","org_name":"B","url_safe_org_name":"b","org_metadata":{},"user_role":"Owner","inherited_user_roles_plus_current_role":["Owner","Admin"],"org_role_structure":"single_role_in_hierarchy","additional_roles":[],"user_permissions":["x"]},
			"a":{"org_id":"a","org_name":"A","url_safe_org_name":"a","user_role":"Member","inherited_user_roles_plus_current_role":["Member"],"user_permissions":[]}}}`
	got, err := ParseUser([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := &authzv1.User{
		UserId: "u1", Email: "a@example.com", EmailConfirmed: true, FirstName: "A", Enabled: true, MfaEnabled: true,
		CreatedAt:  &timestamppb.Timestamp{Seconds: 1700000000},
		Properties: got.GetProperties(),
		Orgs: []*authzv1.OrgMembership{
			{OrgId: "a", OrgName: "A", UrlSafeOrgName: "a", UserRole: "Member", InheritedUserRolesPlusCurrentRole: []string{"Member"}, UserPermissions: []string{}},
			{OrgId: "b", OrgName: "B", UrlSafeOrgName: "b", UserRole: "Owner", InheritedUserRolesPlusCurrentRole: []string{"Owner", "Admin"}, UserPermissions: []string{"x"}},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("ParseUser (-want +got):\n%s", diff)
	}
	for _, bad := range []string{``, `[]`, `{}`, `{"user_id":5}`, `{"user_id":"u","created_at":"yesterday"}`, `<html>`} {
		if _, err := ParseUser([]byte(bad)); err == nil {
			t.Errorf("ParseUser(%q) succeeded", bad)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"-1":                            0,
		"999999":                        time.Hour,
		"soon":                          0,
		"Thu, 01 Jan 2026 00:00:05 GMT": 5 * time.Second,
		"Wed, 31 Dec 2025 23:59:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func newTestClient(t *testing.T, as *propelauthfake.Server, apiKey string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{AuthURL: as.AuthURL(), APIKey: apiKey, BaseBackoff: time.Millisecond, MaxRetryWait: 10 * time.Millisecond, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFetch(t *testing.T) {
	t.Parallel()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	as.AddUser(propelauthfake.User{UserID: "u1", Email: "u1@example.com", Enabled: true, CreatedAt: 1700000000})
	c := newTestClient(t, as, as.APIKey)
	u, err := c.Fetch(t.Context(), "u1")
	if err != nil || u.GetEmail() != "u1@example.com" {
		t.Fatalf("Fetch = %v, %v", u, err)
	}
	tests := []struct {
		name  string
		setup func()
		id    string
		key   string
		want  error
	}{
		{name: "not found", id: "nobody", want: ErrNotFound},
		{name: "bad key", id: "u1", key: "wrong", want: ErrUpstreamAuth},
		{name: "no key", id: "u1", key: "-", want: ErrNotConfigured},
		{name: "rate limited", id: "u1", setup: func() { as.RateLimitUsers(10, "") }, want: ErrRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
				defer as.RateLimitUsers(0, "")
			}
			key := as.APIKey
			switch tt.key {
			case "-":
				key = ""
			case "":
			default:
				key = tt.key
			}
			_, err := newTestClient(t, as, key).Fetch(t.Context(), tt.id)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Fetch error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFetchGivesUpBeforeDeadline(t *testing.T) {
	t.Parallel()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	as.RateLimitUsers(100, "60")
	c, err := NewClient(ClientConfig{AuthURL: as.AuthURL(), APIKey: as.APIKey, MaxRetryWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err = c.Fetch(ctx, "u1")
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("Fetch error = %v, want ErrRateLimited", err)
	}
	if as.UserFetches() != 1 {
		t.Errorf("retried although Retry-After (60s) exceeds the deadline: %d attempts", as.UserFetches())
	}
}

func TestNewClientRejectsBadURL(t *testing.T) {
	t.Parallel()
	if _, err := NewClient(ClientConfig{AuthURL: "auth.example.com"}); err == nil {
		t.Error("NewClient accepted a URL without scheme")
	}
	c, err := NewClient(ClientConfig{})
	if err != nil || c.Configured() {
		t.Errorf("empty config: %v, configured %v", err, c.Configured())
	}
}

// TestL2Encoding: users and "no such user" survive a trip through an L2 entry,
// and a "no such user" entry's header is not a number, so a version that
// predates it takes it for a miss rather than for an empty user.
func TestL2Encoding(t *testing.T) {
	t.Parallel()
	exp := time.UnixMilli(1_800_000_000_123)
	user := &authzv1.User{UserId: "u1", Email: "a@example.com"}
	for _, tt := range []struct {
		name string
		u    *authzv1.User
	}{{"user", user}, {"not found", notFound}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := encode(tt.u, exp)
			if err != nil {
				t.Fatal(err)
			}
			got, gotExp, err := decode(v)
			if err != nil {
				t.Fatalf("decode(%q): %v", v, err)
			}
			if gotExp != exp.UnixNano() {
				t.Errorf("expiry = %v, want %v", gotExp, exp.UnixNano())
			}
			if tt.u == notFound {
				if got != notFound {
					t.Errorf("decoded %v, want notFound", got)
				}
				header, _, _ := strings.Cut(string(v), "\n")
				if _, err := strconv.ParseInt(header, 10, 64); err == nil {
					t.Errorf("header %q parses as an expiry: older versions would read an empty user", header)
				}
				return
			}
			if diff := cmp.Diff(tt.u, got, protocmp.Transform()); diff != "" {
				t.Errorf("decoded user (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"", "123", "x\n", "123 not_found", "123\n\xff"} {
		if _, _, err := decode([]byte(bad)); err == nil {
			t.Errorf("decode(%q) succeeded", bad)
		}
	}
}
