// Package propelauthfake speaks the PropelAuth backend endpoints the services
// call, over token and user data the caller provides: token introspection
// (RFC 7662, POST {AUTH_URL}/oauth/2.1/introspect) and Fetch User By User ID
// (GET {AUTH_URL}/api/backend/v1/user/{user_id}). It is the one implementation
// of their wire format, of the credential checks as PropelAuth makes them and
// of fault injection: devauth serves its real endpoints with a [Backend] over
// its token store and user directory, and authz's tests run a [Server], the
// same Backend over an in-memory table.
//
// # Wire format
//
// Introspection takes an application/x-www-form-urlencoded body with token
// (and token_type_hint, ignored), authenticated with the request-validation
// client's credentials, by HTTP Basic (client_secret_basic) or in the form
// (client_secret_post). It answers an active token with its members
// ([Introspection]) and any other token with {"active":false}. Bad credentials
// are 401 invalid_client with a Basic challenge; a malformed request is 400
// invalid_request.
//
// Fetch User By User ID takes "Authorization: Bearer {API_KEY}" and
// include_orgs=true|false, and answers the [User], with org_id_to_org_info
// only when include_orgs is true. A missing or wrong key is 401, an unknown
// user 404, a bad include_orgs 400, and a rate-limited call 429 (see
// [Backend.RateLimitUsers]).
//
// Every answer is JSON with Cache-Control: no-store. Errors have the body
// {"error": code, "error_description": text}.
//
// # Faults and counts
//
// Both endpoints count every request, whatever its outcome ([Counters]: the
// count measures the load put on the authorization server), then apply the
// [faults.Injector], then answer.
package propelauthfake

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mcpauthz/mcpauthz/internal/faults"
)

// Paths of the endpoints, and the ServeMux patterns to register their
// handlers under (the user handler reads the {user_id} wildcard).
const (
	PathIntrospect    = "/oauth/2.1/introspect"
	PathUser          = "/api/backend/v1/user/"
	IntrospectPattern = "POST " + PathIntrospect
	UserPattern       = "GET " + PathUser + "{user_id}"
)

// DefaultRealm is the realm of the Basic challenge when [Options.Realm] is
// empty.
const DefaultRealm = "PropelAuth"

// maxFormBody bounds form bodies; the endpoints take a token and credentials.
const maxFormBody = 64 << 10

// Error codes of the answers.
const (
	errInvalidRequest  = "invalid_request"
	errInvalidClient   = "invalid_client"
	errUnauthorized    = "unauthorized"
	errNotFound        = "not_found"
	errBadRequest      = "bad_request"
	errTooManyRequests = "too_many_requests"
)

// Introspection is the introspection endpoint's answer about an active token,
// with PropelAuth's members. Empty members are left out.
type Introspection struct {
	Active    bool     `json:"active"`
	Subject   string   `json:"sub,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Scope     string   `json:"scope,omitempty"` // space-separated
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	Audience  Audience `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
}

// Audience is the aud member: a string when it names one resource, a list when
// it names several (RFC 7662 allows both; PropelAuth sends the string).
type Audience []string

// MarshalJSON encodes a one-element audience as a string.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// User is a user as Fetch User By User ID returns it. Empty optional names are
// left out.
type User struct {
	UserID                 string         `json:"user_id"`
	Email                  string         `json:"email"`
	EmailConfirmed         bool           `json:"email_confirmed"`
	HasPassword            bool           `json:"has_password"`
	Username               string         `json:"username,omitempty"`
	FirstName              string         `json:"first_name,omitempty"`
	LastName               string         `json:"last_name,omitempty"`
	PictureURL             string         `json:"picture_url,omitempty"`
	Locked                 bool           `json:"locked"`
	Enabled                bool           `json:"enabled"`
	MFAEnabled             bool           `json:"mfa_enabled"`
	CanCreateOrgs          bool           `json:"can_create_orgs"`
	CreatedAt              int64          `json:"created_at"`
	LastActiveAt           int64          `json:"last_active_at"`
	UpdatePasswordRequired bool           `json:"update_password_required"`
	Properties             map[string]any `json:"properties"`
	Metadata               map[string]any `json:"metadata"`
	// OrgIDToOrgInfo holds the user's organizations by org_id. The endpoint
	// sends it only for include_orgs=true, then always as an object.
	OrgIDToOrgInfo map[string]Org `json:"org_id_to_org_info,omitzero"`
}

// Org is one entry of org_id_to_org_info.
type Org struct {
	OrgID                             string   `json:"org_id"`
	OrgName                           string   `json:"org_name"`
	URLSafeOrgName                    string   `json:"url_safe_org_name"`
	UserRole                          string   `json:"user_role"`
	InheritedUserRolesPlusCurrentRole []string `json:"inherited_user_roles_plus_current_role"`
	UserPermissions                   []string `json:"user_permissions"`
}

// Reply is an answer sent exactly as given, for tests of a server that
// misbehaves for one token or one user: any status, any body.
type Reply struct {
	Status int
	Body   []byte
}

func (r Reply) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.Status)
	_, _ = w.Write(r.Body)
}

// Tokens is the token data behind the introspection endpoint.
type Tokens interface {
	// Introspect returns what the endpoint answers about token, once the
	// request-validation client is authenticated. ok false answers
	// {"active":false}: the token is unknown, expired or revoked, or not an
	// access token. Otherwise members is the answer: usually an
	// [Introspection]; a test of another RFC 7662 server's members may return
	// any value that encodes as a JSON object, and a [Reply] is sent as it is.
	// It must be safe for concurrent use.
	Introspect(token string) (members any, ok bool)
}

// Users is the user data behind Fetch User By User ID.
type Users interface {
	// User returns the user with that ID: a [User], which the endpoint sends
	// with or without its organizations as asked, or a [Reply], sent as it is.
	// ok false answers 404. It must be safe for concurrent use.
	User(id string) (user any, ok bool)
}

// Counters count the requests each endpoint received, whatever their outcome.
// The zero value is ready; they are safe for concurrent use.
type Counters struct {
	Introspections atomic.Int64
	UserFetches    atomic.Int64
}

// Options configure a [Backend].
type Options struct {
	// ClientID and ClientSecret are the request-validation client's
	// credentials, the only ones introspection accepts. An empty ClientID or
	// ClientSecret accepts none.
	ClientID, ClientSecret string
	// APIKey is the backend API key Fetch User By User ID accepts; empty
	// accepts none.
	APIKey string
	Tokens Tokens
	Users  Users
	// Faults is applied to both endpoints; nil means none.
	Faults *faults.Injector
	// Counters, if set, is counted into; otherwise the Backend keeps its own
	// (see [Backend.Counters]).
	Counters *Counters
	// Realm names the server in the Basic challenge of a 401;
	// DefaultRealm if empty.
	Realm string
}

// Backend serves the two endpoints. It is safe for concurrent use.
type Backend struct {
	o Options

	mu          sync.Mutex
	rateLimited int
	retryAfter  string
}

// NewBackend returns a backend over o's data. It panics if o.Tokens or
// o.Users is nil, a programming error.
func NewBackend(o Options) *Backend {
	if o.Tokens == nil || o.Users == nil {
		panic("propelauthfake: Options.Tokens and Options.Users are required")
	}
	if o.Counters == nil {
		o.Counters = &Counters{}
	}
	if o.Realm == "" {
		o.Realm = DefaultRealm
	}
	return &Backend{o: o}
}

// Counters returns the counters the backend counts into.
func (b *Backend) Counters() *Counters { return b.o.Counters }

// Register adds both endpoints to mux, at [IntrospectPattern] and
// [UserPattern].
func (b *Backend) Register(mux *http.ServeMux) {
	mux.Handle(IntrospectPattern, b.IntrospectHandler())
	mux.Handle(UserPattern, b.UserHandler())
}

// IntrospectHandler returns the introspection endpoint.
func (b *Backend) IntrospectHandler() http.Handler {
	return b.counted(&b.o.Counters.Introspections, http.HandlerFunc(b.introspect))
}

// UserHandler returns Fetch User By User ID. It must be registered under
// [UserPattern], whose {user_id} wildcard names the user.
func (b *Backend) UserHandler() http.Handler {
	return b.counted(&b.o.Counters.UserFetches, http.HandlerFunc(b.user))
}

// counted counts every request, then applies the faults.
func (b *Backend) counted(n *atomic.Int64, h http.Handler) http.Handler {
	if b.o.Faults != nil {
		h = b.o.Faults.Wrap(h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// RateLimitUsers makes the next n user requests that present the right API key
// answer 429, with the given Retry-After header ("" for none). n <= 0 ends it.
func (b *Backend) RateLimitUsers(n int, retryAfter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rateLimited, b.retryAfter = max(n, 0), retryAfter
}

// rateLimit takes one request from the rate-limited ones; ok is true if the
// request is rate limited.
func (b *Backend) rateLimit() (retryAfter string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rateLimited == 0 {
		return "", false
	}
	b.rateLimited--
	return b.retryAfter, true
}

func (b *Backend) introspect(w http.ResponseWriter, r *http.Request) {
	if msg, ok := ParseForm(w, r); !ok {
		WriteError(w, http.StatusBadRequest, errInvalidRequest, msg)
		return
	}
	creds, ok := ClientCredentials(r)
	if !ok || !creds.Are(b.o.ClientID, b.o.ClientSecret) {
		WriteInvalidClient(w, b.o.Realm, "introspection needs the request-validation client credentials")
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		WriteError(w, http.StatusBadRequest, errInvalidRequest, "token is required")
		return
	}
	members, ok := b.o.Tokens.Introspect(tok)
	if !ok {
		WriteJSON(w, http.StatusOK, Introspection{Active: false})
		return
	}
	if reply, ok := members.(Reply); ok {
		reply.write(w)
		return
	}
	WriteJSON(w, http.StatusOK, members)
}

func (b *Backend) user(w http.ResponseWriter, r *http.Request) {
	if !BearerMatches(r, b.o.APIKey) {
		WriteError(w, http.StatusUnauthorized, errUnauthorized, "invalid or missing API key")
		return
	}
	if retryAfter, limited := b.rateLimit(); limited {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		WriteError(w, http.StatusTooManyRequests, errTooManyRequests, "rate limit exceeded")
		return
	}
	include := false
	switch v := r.URL.Query().Get("include_orgs"); v {
	case "", "false":
	case "true":
		include = true
	default:
		WriteError(w, http.StatusBadRequest, errBadRequest, "include_orgs must be true or false")
		return
	}
	v, ok := b.o.Users.User(r.PathValue("user_id"))
	if !ok {
		WriteError(w, http.StatusNotFound, errNotFound, "user not found")
		return
	}
	switch v := v.(type) {
	case Reply:
		v.write(w)
	case User:
		if !include {
			v.OrgIDToOrgInfo = nil
		} else if v.OrgIDToOrgInfo == nil {
			v.OrgIDToOrgInfo = map[string]Org{}
		}
		WriteJSON(w, http.StatusOK, v)
	default:
		panic(fmt.Sprintf("propelauthfake: Users.User returned a %T, not a User or a Reply", v))
	}
}

// ParseForm reads an application/x-www-form-urlencoded body of at most 64 KiB,
// the only encoding RFC 6749, 7009 and 7662 define for the token-style
// endpoints, into r.PostForm. It returns a description of the problem for any
// other content type or a malformed or oversized body.
func ParseForm(w http.ResponseWriter, r *http.Request) (problem string, ok bool) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return "the body must be application/x-www-form-urlencoded", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return "malformed form body", false
	}
	return "", true
}

// Credentials are client credentials as a request sent them. Values from HTTP
// Basic are kept raw: RFC 6749 section 2.3.1 says to form-encode them first,
// but many clients do not, so both readings are accepted.
type Credentials struct {
	ID, Secret string
	// Basic reports whether they came by HTTP Basic (client_secret_basic).
	Basic bool
}

// Are reports, in constant time, whether c are the credentials of the client
// id with secret. An empty id or secret matches nothing.
func (c Credentials) Are(id, secret string) bool {
	return id != "" && c.IDIs(id) && c.SecretIs(secret)
}

// IDIs reports, in constant time, whether the client ID is want.
func (c Credentials) IDIs(want string) bool { return c.matches(c.ID, want) }

// SecretIs reports, in constant time, whether the secret is want. An empty
// want never matches.
func (c Credentials) SecretIs(want string) bool { return want != "" && c.matches(c.Secret, want) }

func (c Credentials) matches(got, want string) bool {
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		return true
	}
	if !c.Basic {
		return false
	}
	u, err := url.QueryUnescape(got)
	return err == nil && subtle.ConstantTimeCompare([]byte(u), []byte(want)) == 1
}

// ClientID returns the client ID, form-decoded when it came by HTTP Basic.
func (c Credentials) ClientID() string {
	if c.Basic {
		if u, err := url.QueryUnescape(c.ID); err == nil {
			return u
		}
	}
	return c.ID
}

// ClientCredentials returns the client credentials of r from HTTP Basic
// (client_secret_basic) or from the form (client_secret_post, or a bare
// client_id for public clients). ok is false when both methods are used at
// once, which RFC 6749 section 2.3 forbids, or when no client ID is present.
// The form must already be parsed.
func ClientCredentials(r *http.Request) (c Credentials, ok bool) {
	bid, bsecret, basic := r.BasicAuth()
	fid, fsecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if basic {
		c := Credentials{ID: bid, Secret: bsecret, Basic: true}
		if fsecret != "" || (fid != "" && fid != c.ClientID()) {
			return Credentials{}, false
		}
		return c, bid != ""
	}
	return Credentials{ID: fid, Secret: fsecret}, fid != ""
}

// BearerMatches reports, in constant time, whether r carries
// "Authorization: Bearer <key>", as the backend API authenticates callers. An
// empty key never matches.
func BearerMatches(r *http.Request, key string) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(key)) == 1
}

// WriteJSON writes v as a JSON answer with the given status and no caching.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorBody is the JSON body of an error answer (RFC 6749 section 5.2).
type ErrorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// WriteError writes an error answer with the given status, error code and
// description.
func WriteError(w http.ResponseWriter, status int, code, description string) {
	WriteJSON(w, status, ErrorBody{Error: code, ErrorDescription: description})
}

// WriteInvalidClient answers 401 invalid_client with the Basic challenge RFC
// 6749 section 5.2 requires, naming realm.
func WriteInvalidClient(w http.ResponseWriter, realm, description string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
	WriteError(w, http.StatusUnauthorized, errInvalidClient, description)
}
