// Package users holds devauth's user directory, which the shared PropelAuth
// backend (propelauthfake) serves through "Fetch User By User ID"
// ([Directory.User]).
//
// The directory is either the built-in seed ([Seed]: alice and bob, the users
// every test and README example relies on) or a JSON file ([Parse]).
package users

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/seedusers"
)

// ErrBadCredentials means the email is unknown, the password is wrong, or the
// user may not log in (locked or disabled).
var ErrBadCredentials = errors.New("invalid email or password")

// User is one account. Password is never serialized by the API.
type User struct {
	ID             string
	Email          string
	Password       string
	EmailConfirmed bool
	Username       string
	FirstName      string
	LastName       string
	PictureURL     string
	Locked         bool
	Enabled        bool
	MFAEnabled     bool
	CanCreateOrgs  bool
	CreatedAt      int64
	LastActiveAt   int64
	Properties     map[string]any
	Metadata       map[string]any
	Orgs           []Org
}

// Org is a user's membership in one organization.
type Org struct {
	ID             string   `json:"org_id"`
	Name           string   `json:"org_name"`
	URLSafeName    string   `json:"url_safe_org_name"`
	Role           string   `json:"user_role"`
	InheritedRoles []string `json:"inherited_user_roles_plus_current_role"`
	Permissions    []string `json:"user_permissions"`
}

// Directory is an immutable set of users, safe for concurrent use.
type Directory struct {
	users   []User
	byID    map[string]int
	byEmail map[string]int
}

// DefaultPictureURL is PropelAuth's default avatar, which it reports for users
// who never uploaded one.
const DefaultPictureURL = "https://img.propelauth.com/2a27d237-db8c-4f82-84fb-5824dfaedc87.png"

// Seed returns the built-in users documented in the shared brief.
func Seed() *Directory {
	d, err := New([]User{
		{
			ID: seedusers.AliceID, Email: seedusers.AliceEmail, Password: seedusers.AlicePassword,
			EmailConfirmed: true, Username: "alice", FirstName: "Alice", LastName: "Liddell",
			PictureURL: DefaultPictureURL, Enabled: true, CanCreateOrgs: true,
			CreatedAt: 1735689600, LastActiveAt: 1767225600,
			Properties: map[string]any{}, Metadata: map[string]any{},
			Orgs: []Org{{
				ID: seedusers.AcmeOrgID, Name: "Acme", URLSafeName: "acme", Role: "Admin",
				InheritedRoles: []string{"Admin", "Member"}, Permissions: []string{"read:org", "write:org"},
			}},
		},
		{
			ID: seedusers.BobID, Email: seedusers.BobEmail, Password: seedusers.BobPassword,
			EmailConfirmed: true, Username: "bob", FirstName: "Bob", LastName: "Builder",
			PictureURL: DefaultPictureURL, Enabled: true, CanCreateOrgs: false,
			CreatedAt: 1738368000, LastActiveAt: 1767225600,
			Properties: map[string]any{}, Metadata: map[string]any{},
		},
	})
	if err != nil {
		panic(err) // the seed is a constant; a failure is a programming error
	}
	return d
}

// New builds a directory. It returns an error if a user lacks an id or email,
// or if an email has whitespace, or if an id or email (case-insensitively)
// appears twice.
func New(list []User) (*Directory, error) {
	d := &Directory{byID: map[string]int{}, byEmail: map[string]int{}}
	for i, u := range list {
		if u.ID == "" {
			return nil, fmt.Errorf("user %d: user_id is required", i)
		}
		if !strings.Contains(u.Email, "@") {
			return nil, fmt.Errorf("user %q: email %q is not an email address", u.ID, u.Email)
		}
		if strings.IndexFunc(u.Email, unicode.IsSpace) >= 0 {
			// ByEmail trims what a login form sends; a stored address with
			// spaces could never be found.
			return nil, fmt.Errorf("user %q: email %q contains whitespace", u.ID, u.Email)
		}
		email := strings.ToLower(u.Email)
		if _, dup := d.byID[u.ID]; dup {
			return nil, fmt.Errorf("user %q: duplicate user_id", u.ID)
		}
		if _, dup := d.byEmail[email]; dup {
			return nil, fmt.Errorf("user %q: duplicate email %q", u.ID, u.Email)
		}
		if u.Properties == nil {
			u.Properties = map[string]any{}
		}
		if u.Metadata == nil {
			u.Metadata = map[string]any{}
		}
		d.byID[u.ID] = len(d.users)
		d.byEmail[email] = len(d.users)
		d.users = append(d.users, u)
	}
	return d, nil
}

// Len returns the number of users.
func (d *Directory) Len() int { return len(d.users) }

// ByID returns the user with that id.
func (d *Directory) ByID(id string) (User, bool) {
	i, ok := d.byID[id]
	if !ok {
		return User{}, false
	}
	return d.users[i], true
}

// ByEmail returns the user with that email, compared case-insensitively.
func (d *Directory) ByEmail(email string) (User, bool) {
	i, ok := d.byEmail[strings.ToLower(strings.TrimSpace(email))]
	if !ok {
		return User{}, false
	}
	return d.users[i], true
}

// Authenticate checks an email and password. It returns [ErrBadCredentials]
// for an unknown email, a wrong password, a user without a password, or a
// locked or disabled user, so the login page cannot be used to probe which
// emails exist.
func (d *Directory) Authenticate(email, password string) (User, error) {
	u, ok := d.ByEmail(email)
	if !ok || u.Password == "" {
		return User{}, ErrBadCredentials
	}
	if subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) != 1 {
		return User{}, ErrBadCredentials
	}
	if u.Locked || !u.Enabled {
		return User{}, ErrBadCredentials
	}
	return u, nil
}

// fileUser is one entry of a DEVAUTH_USERS_FILE: PropelAuth's user fields
// plus the login password and the org memberships as a list.
type fileUser struct {
	UserID         string         `json:"user_id"`
	Email          string         `json:"email"`
	Password       string         `json:"password"`
	EmailConfirmed *bool          `json:"email_confirmed"`
	Username       string         `json:"username"`
	FirstName      string         `json:"first_name"`
	LastName       string         `json:"last_name"`
	PictureURL     string         `json:"picture_url"`
	Locked         bool           `json:"locked"`
	Enabled        *bool          `json:"enabled"`
	MFAEnabled     bool           `json:"mfa_enabled"`
	CanCreateOrgs  bool           `json:"can_create_orgs"`
	CreatedAt      int64          `json:"created_at"`
	LastActiveAt   int64          `json:"last_active_at"`
	Properties     map[string]any `json:"properties"`
	Metadata       map[string]any `json:"metadata"`
	Orgs           []Org          `json:"orgs"`
}

type file struct {
	Users []fileUser `json:"users"`
}

// maxFileSize bounds DEVAUTH_USERS_FILE; a dev directory is tiny.
const maxFileSize = 4 << 20

// Parse decodes a users file:
//
//	{"users": [{"user_id": "...", "email": "...", "password": "...",
//	            "first_name": "...", "orgs": [{"org_id": "...", ...}], ...}]}
//
// Unknown fields are rejected so a typo does not silently drop a setting.
// email_confirmed and enabled default to true. It returns an error describing
// the first problem found.
func Parse(data []byte) (*Directory, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("users file is larger than %d bytes", maxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decoding users file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding users file: trailing data after the JSON object")
	}
	if len(f.Users) == 0 {
		return nil, errors.New("users file lists no users")
	}
	list := make([]User, 0, len(f.Users))
	for _, fu := range f.Users {
		u := User{
			ID: fu.UserID, Email: fu.Email, Password: fu.Password, EmailConfirmed: true,
			Username: fu.Username, FirstName: fu.FirstName, LastName: fu.LastName,
			PictureURL: fu.PictureURL, Locked: fu.Locked, Enabled: true, MFAEnabled: fu.MFAEnabled,
			CanCreateOrgs: fu.CanCreateOrgs, CreatedAt: fu.CreatedAt, LastActiveAt: fu.LastActiveAt,
			Properties: fu.Properties, Metadata: fu.Metadata, Orgs: fu.Orgs,
		}
		if fu.EmailConfirmed != nil {
			u.EmailConfirmed = *fu.EmailConfirmed
		}
		if fu.Enabled != nil {
			u.Enabled = *fu.Enabled
		}
		if u.PictureURL == "" {
			u.PictureURL = DefaultPictureURL
		}
		seen := map[string]bool{}
		for _, o := range u.Orgs {
			if o.ID == "" || o.Name == "" {
				return nil, fmt.Errorf("user %q: every org needs org_id and org_name", u.ID)
			}
			if seen[o.ID] {
				return nil, fmt.Errorf("user %q: duplicate org_id %q", u.ID, o.ID)
			}
			seen[o.ID] = true
		}
		list = append(list, u)
	}
	return New(list)
}

// LoadFile reads and parses a users file; see [Parse].
func LoadFile(path string) (*Directory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading users file: %w", err)
	}
	return Parse(data)
}

// PropelAuth returns u as PropelAuth's backend API shows it. Every org lists
// its role among the inherited roles, and its permissions as a list, even an
// empty one, as PropelAuth does.
func (u User) PropelAuth() propelauthfake.User {
	p := propelauthfake.User{
		UserID: u.ID, Email: u.Email, EmailConfirmed: u.EmailConfirmed, HasPassword: u.Password != "",
		Username: u.Username, FirstName: u.FirstName, LastName: u.LastName, PictureURL: u.PictureURL,
		Locked: u.Locked, Enabled: u.Enabled, MFAEnabled: u.MFAEnabled, CanCreateOrgs: u.CanCreateOrgs,
		CreatedAt: u.CreatedAt, LastActiveAt: u.LastActiveAt, Properties: u.Properties, Metadata: u.Metadata,
	}
	if len(u.Orgs) > 0 {
		p.OrgIDToOrgInfo = make(map[string]propelauthfake.Org, len(u.Orgs))
	}
	for _, o := range u.Orgs {
		if o.InheritedRoles == nil {
			o.InheritedRoles = []string{o.Role}
		}
		if o.Permissions == nil {
			o.Permissions = []string{}
		}
		p.OrgIDToOrgInfo[o.ID] = propelauthfake.Org{
			OrgID: o.ID, OrgName: o.Name, URLSafeOrgName: o.URLSafeName, UserRole: o.Role,
			InheritedUserRolesPlusCurrentRole: o.InheritedRoles, UserPermissions: o.Permissions,
		}
	}
	return p
}

// User implements propelauthfake.Users: devauth's Fetch User By User ID is the
// shared PropelAuth backend's, answering from the directory.
func (d *Directory) User(id string) (any, bool) {
	u, ok := d.ByID(id)
	if !ok {
		return nil, false
	}
	return u.PropelAuth(), true
}
