package propelauthtest

import (
	"net/http"
	"strconv"
)

// User is a PropelAuth user as Fetch User By User ID returns it (with
// include_orgs=true).
type User struct {
	UserID                 string             `json:"user_id"`
	Email                  string             `json:"email"`
	EmailConfirmed         bool               `json:"email_confirmed"`
	HasPassword            bool               `json:"has_password"`
	Username               *string            `json:"username,omitempty"`
	FirstName              *string            `json:"first_name,omitempty"`
	LastName               *string            `json:"last_name,omitempty"`
	PictureURL             *string            `json:"picture_url,omitempty"`
	Properties             map[string]any     `json:"properties,omitempty"`
	Metadata               map[string]any     `json:"metadata"`
	Locked                 bool               `json:"locked"`
	Enabled                bool               `json:"enabled"`
	MFAEnabled             bool               `json:"mfa_enabled"`
	CanCreateOrgs          bool               `json:"can_create_orgs"`
	CreatedAt              int64              `json:"created_at"`
	LastActiveAt           int64              `json:"last_active_at"`
	UpdatePasswordRequired bool               `json:"update_password_required"`
	OrgIDToOrgInfo         map[string]OrgInfo `json:"org_id_to_org_info,omitempty"`
	LegacyUserID           *string            `json:"legacy_user_id"`
}

// OrgInfo is one entry of org_id_to_org_info.
type OrgInfo struct {
	OrgID                             string         `json:"org_id"`
	OrgName                           string         `json:"org_name"`
	URLSafeOrgName                    string         `json:"url_safe_org_name"`
	OrgMetadata                       map[string]any `json:"org_metadata"`
	UserRole                          string         `json:"user_role"`
	InheritedUserRolesPlusCurrentRole []string       `json:"inherited_user_roles_plus_current_role"`
	OrgRoleStructure                  string         `json:"org_role_structure,omitempty"`
	AdditionalRoles                   []string       `json:"additional_roles"`
	UserPermissions                   []string       `json:"user_permissions"`
}

// Ptr returns a pointer to s, for the optional string fields of [User].
func Ptr(s string) *string { return &s }

// AddUser makes u fetchable.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.UserID] = u
}

// SetUserReply makes requests for user id answer status and body, verbatim (for
// answers such as PropelAuth's 400 for a malformed ID).
func (s *Server) SetUserReply(id string, status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userReplies[id] = rawReply{status: status, body: body}
}

// RateLimitUsers makes the next n user requests answer 429 with the given
// Retry-After header ("" for none).
func (s *Server) RateLimitUsers(n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimited = n
	s.retryAfter = retryAfter
}

func (s *Server) fetchUser(w http.ResponseWriter, r *http.Request) {
	s.userFetches.Add(1)
	if s.misbehave(w, r) {
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.APIKey {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "unauthorized"})
		return
	}
	s.mu.Lock()
	limited := s.rateLimited > 0
	if limited {
		s.rateLimited--
	}
	retryAfter := s.retryAfter
	u, ok := s.users[r.PathValue("id")]
	raw, isRaw := s.userReplies[r.PathValue("id")]
	s.mu.Unlock()
	if limited {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": "rate limited"})
		return
	}
	if isRaw {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(raw.status)
		_, _ = w.Write(raw.body)
		return
	}
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"user_id": "not found"})
		return
	}
	includeOrgs, _ := strconv.ParseBool(r.URL.Query().Get("include_orgs"))
	if !includeOrgs {
		u.OrgIDToOrgInfo = nil
	}
	writeJSON(w, http.StatusOK, u)
}
