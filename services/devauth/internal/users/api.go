package users

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// UserJSON is PropelAuth's user object as "Fetch User By User ID" returns it.
type UserJSON struct {
	UserID                 string             `json:"user_id"`
	Email                  string             `json:"email"`
	EmailConfirmed         bool               `json:"email_confirmed"`
	HasPassword            bool               `json:"has_password"`
	Username               string             `json:"username,omitempty"`
	FirstName              string             `json:"first_name,omitempty"`
	LastName               string             `json:"last_name,omitempty"`
	PictureURL             string             `json:"picture_url,omitempty"`
	Locked                 bool               `json:"locked"`
	Enabled                bool               `json:"enabled"`
	MFAEnabled             bool               `json:"mfa_enabled"`
	CanCreateOrgs          bool               `json:"can_create_orgs"`
	CreatedAt              int64              `json:"created_at"`
	LastActiveAt           int64              `json:"last_active_at"`
	UpdatePasswordRequired bool               `json:"update_password_required"`
	Properties             map[string]any     `json:"properties"`
	Metadata               map[string]any     `json:"metadata"`
	OrgIDToOrgInfo         map[string]OrgJSON `json:"org_id_to_org_info,omitzero"`
}

// OrgJSON is one entry of org_id_to_org_info.
type OrgJSON = Org

// JSON renders u as PropelAuth does; orgs are included only when includeOrgs
// is set (then always as an object, empty for users without orgs).
func (u User) JSON(includeOrgs bool) UserJSON {
	j := UserJSON{
		UserID: u.ID, Email: u.Email, EmailConfirmed: u.EmailConfirmed, HasPassword: u.Password != "",
		Username: u.Username, FirstName: u.FirstName, LastName: u.LastName, PictureURL: u.PictureURL,
		Locked: u.Locked, Enabled: u.Enabled, MFAEnabled: u.MFAEnabled, CanCreateOrgs: u.CanCreateOrgs,
		CreatedAt: u.CreatedAt, LastActiveAt: u.LastActiveAt, Properties: u.Properties, Metadata: u.Metadata,
	}
	if includeOrgs {
		j.OrgIDToOrgInfo = map[string]OrgJSON{}
		for _, o := range u.Orgs {
			if o.InheritedRoles == nil {
				o.InheritedRoles = []string{o.Role}
			}
			if o.Permissions == nil {
				o.Permissions = []string{}
			}
			j.OrgIDToOrgInfo[o.ID] = o
		}
	}
	return j
}

// APIHandler serves GET /api/backend/v1/user/{user_id} with PropelAuth's
// status codes: 401 for a missing or wrong API key, 404 for an unknown user,
// 400 for a bad include_orgs value.
func APIHandler(dir *Directory, apiKey string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !BearerMatches(r, apiKey) {
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or missing API key")
			return
		}
		include := false
		switch v := r.URL.Query().Get("include_orgs"); v {
		case "", "false":
		case "true":
			include = true
		default:
			writeError(w, http.StatusBadRequest, "bad_request", "include_orgs must be true or false")
			return
		}
		u, ok := dir.ByID(r.PathValue("user_id"))
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "user not found")
			return
		}
		WriteJSON(w, http.StatusOK, u.JSON(include))
	})
}

// BearerMatches reports whether r carries "Authorization: Bearer <key>", in
// constant time. An empty key never matches.
func BearerMatches(r *http.Request, key string) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(key)) == 1
}

// WriteJSON writes v as a JSON response with the given status and no caching.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, map[string]string{"error": code, "error_description": msg})
}
