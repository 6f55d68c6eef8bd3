package users

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/google/go-cmp/cmp"
)

func TestSeed(t *testing.T) {
	t.Parallel()
	d := Seed()
	alice, ok := d.ByEmail("Alice@Example.com")
	if !ok || alice.ID != seedusers.AliceID {
		t.Fatalf("alice = %+v", alice)
	}
	wantOrgs := []Org{{
		ID: seedusers.AcmeOrgID, Name: "Acme", URLSafeName: "acme", Role: "Admin",
		InheritedRoles: []string{"Admin", "Member"}, Permissions: []string{"read:org", "write:org"},
	}}
	if diff := cmp.Diff(wantOrgs, alice.Orgs); diff != "" {
		t.Errorf("alice orgs (-want +got):\n%s", diff)
	}
	bob, ok := d.ByID(seedusers.BobID)
	if !ok || bob.Email != seedusers.BobEmail || bob.FirstName != "Bob" || bob.LastName != "Builder" || len(bob.Orgs) != 0 || bob.MFAEnabled {
		t.Errorf("bob = %+v", bob)
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	d, err := Parse([]byte(`{"users":[
		{"user_id":"1","email":"a@x.example","password":"pw"},
		{"user_id":"2","email":"locked@x.example","password":"pw","locked":true},
		{"user_id":"3","email":"off@x.example","password":"pw","enabled":false},
		{"user_id":"4","email":"nopw@x.example"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		email, password string
		wantID          string
	}{
		{"a@x.example", "pw", "1"},
		{" A@X.example ", "pw", "1"},
		{"a@x.example", "PW", ""},
		{"a@x.example", "", ""},
		{"nobody@x.example", "pw", ""},
		{"locked@x.example", "pw", ""},
		{"off@x.example", "pw", ""},
		{"nopw@x.example", "", ""},
	}
	for _, tt := range tests {
		u, err := d.Authenticate(tt.email, tt.password)
		if tt.wantID == "" {
			if !errors.Is(err, ErrBadCredentials) {
				t.Errorf("Authenticate(%q, %q) err = %v, want ErrBadCredentials", tt.email, tt.password, err)
			}
			continue
		}
		if err != nil || u.ID != tt.wantID {
			t.Errorf("Authenticate(%q) = %v %v", tt.email, u.ID, err)
		}
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"minimal", `{"users":[{"user_id":"1","email":"a@b.example"}]}`, ""},
		{"full", `{"users":[{"user_id":"1","email":"a@b.example","password":"p","email_confirmed":false,"username":"u",
			"first_name":"F","last_name":"L","picture_url":"https://p.example/x.png","locked":false,"enabled":true,
			"mfa_enabled":true,"can_create_orgs":true,"created_at":1,"last_active_at":2,"properties":{"k":"v"},
			"metadata":{"m":1},"orgs":[{"org_id":"o","org_name":"O","url_safe_org_name":"o","user_role":"Member",
			"inherited_user_roles_plus_current_role":["Member"],"user_permissions":[]}]}]}`, ""},
		{"not json", `users: []`, "decoding"},
		{"unknown field", `{"users":[{"user_id":"1","email":"a@b.example","pasword":"typo"}]}`, "unknown field"},
		{"no users", `{"users":[]}`, "no users"},
		{"missing id", `{"users":[{"email":"a@b.example"}]}`, "user_id"},
		{"bad email", `{"users":[{"user_id":"1","email":"ab"}]}`, "email"},
		{"email with a space", `{"users":[{"user_id":"1","email":"a@b.example "}]}`, "whitespace"},
		{"duplicate id", `{"users":[{"user_id":"1","email":"a@b.example"},{"user_id":"1","email":"c@b.example"}]}`, "duplicate user_id"},
		{"duplicate email", `{"users":[{"user_id":"1","email":"a@b.example"},{"user_id":"2","email":"A@b.example"}]}`, "duplicate email"},
		{"org without id", `{"users":[{"user_id":"1","email":"a@b.example","orgs":[{"org_name":"x"}]}]}`, "org_id"},
		{"duplicate org", `{"users":[{"user_id":"1","email":"a@b.example","orgs":[{"org_id":"o","org_name":"x"},{"org_id":"o","org_name":"y"}]}]}`, "duplicate org_id"},
		{"trailing", `{"users":[{"user_id":"1","email":"a@b.example"}]} {}`, "trailing"},
		{"wrong type", `{"users":[{"user_id":1,"email":"a@b.example"}]}`, "decoding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := Parse([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil || d.Len() != 1 {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	d, err := Parse([]byte(`{"users":[{"user_id":"1","email":"a@b.example","password":"p","orgs":[{"org_id":"o","org_name":"O","user_role":"Owner"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := d.ByID("1")
	want := propelauthfake.User{
		UserID: "1", Email: "a@b.example", EmailConfirmed: true, HasPassword: true, PictureURL: DefaultPictureURL,
		Enabled: true, Properties: map[string]any{}, Metadata: map[string]any{},
		OrgIDToOrgInfo: map[string]propelauthfake.Org{"o": {OrgID: "o", OrgName: "O", UserRole: "Owner",
			InheritedUserRolesPlusCurrentRole: []string{"Owner"}, UserPermissions: []string{}}},
	}
	if diff := cmp.Diff(want, u.PropelAuth()); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(p, []byte(`{"users":[{"user_id":"1","email":"a@b.example"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := LoadFile(p); err != nil || d.Len() != 1 {
		t.Errorf("LoadFile: %v", err)
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"users":[{"user_id":"1","email":"a@b.example","password":"p","orgs":[{"org_id":"o","org_name":"O"}]}]}`))
	f.Add([]byte(`{"users":[]}`))
	f.Add([]byte(`{"users":[{"user_id":"1","email":"a@b.example"},{"user_id":"1","email":"a@b.example"}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"users":[{"user_id":"1","email":"a@b.example","enabled":null,"properties":{"a":[1,{"b":null}]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		if d.Len() == 0 {
			t.Fatal("Parse accepted a directory with no users")
		}
		for _, u := range d.users {
			got, ok := d.ByID(u.ID)
			if !ok || got.Email != u.Email {
				t.Fatalf("user %q not found by id", u.ID)
			}
			if _, ok := d.ByEmail(u.Email); !ok {
				t.Fatalf("user %q not found by email", u.Email)
			}
			_ = u.PropelAuth()
		}
	})
}
