package oauth

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/pages"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// authzError is a failed authorization request. Before the client and its
// redirect URI are trusted the error is shown to the user; afterwards it is
// sent back to the client (RFC 6749 section 4.1.2.1).
type authzError struct {
	redirect bool
	code     string
	desc     string
}

func pageError(desc string) *authzError { return &authzError{desc: desc} }

func redirectError(code, desc string) *authzError {
	return &authzError{redirect: true, code: code, desc: desc}
}

const maxStateLength = 2048

// parseAuthorize validates an authorization request. When the error is a
// redirect error, the returned request carries the trusted redirect URI and
// the state to send back.
func (s *Server) parseAuthorize(r *http.Request, q url.Values) (*authRequest, *authzError) {
	for _, p := range []string{"client_id", "redirect_uri"} {
		if len(q[p]) > 1 {
			return nil, pageError(p + " is repeated")
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		return nil, pageError("The request has no client_id.")
	}
	client, err := s.client(r.Context(), clientID)
	if err != nil {
		return nil, pageError("The application is not known: " + err.Error() + ".")
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" {
		return nil, pageError("The request has no redirect_uri.")
	}
	if !redirectRegistered(client, redirectURI) {
		return nil, pageError("The redirect_uri is not registered for this application.")
	}
	// Registration checked it too, but a Client ID Metadata Document is
	// fetched here, and the allow list holds every kind of client alike.
	if !s.opts.AllowedRedirects.Allows(redirectURI) {
		return nil, pageError("The redirect_uri is not among the allowed redirect URIs (Allowed MCP Clients).")
	}

	// Copies, because values parsed from the query can share the memory of
	// the whole raw query, which a parked request would otherwise keep.
	req := &authRequest{client: client, redirectURI: strings.Clone(redirectURI)}
	if st := q.Get("state"); len(st) <= maxStateLength {
		req.state = strings.Clone(st)
	} else {
		return req, redirectError(errInvalidRequest, "state is too long")
	}
	for p, vs := range q {
		if len(vs) > 1 {
			return req, redirectError(errInvalidRequest, p+" is repeated")
		}
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		return req, redirectError(errInvalidRequest, "response_type is required")
	default:
		return req, redirectError(errUnsupportedResponseType, "only response_type=code is supported")
	}
	if !allowsGrant(client, "authorization_code") {
		return req, redirectError(errUnauthorizedClient, "the client is not registered for authorization_code")
	}
	req.challenge = strings.Clone(q.Get("code_challenge"))
	if req.challenge == "" {
		return req, redirectError(errInvalidRequest, "code_challenge is required (PKCE)")
	}
	if m := q.Get("code_challenge_method"); m != "S256" {
		return req, redirectError(errInvalidRequest, "code_challenge_method must be S256")
	}
	if !validChallenge(req.challenge) {
		return req, redirectError(errInvalidRequest, "code_challenge must be 43 base64url characters (S256)")
	}
	scopes, aerr := s.requestedScopes(client, q.Get("scope"))
	if aerr != nil {
		return req, aerr
	}
	req.scopes = scopes
	req.resource = strings.Clone(q.Get("resource"))
	if req.resource == "" {
		return req, redirectError(errInvalidRequest, "resource is required (RFC 8707)")
	}
	if err := validateResource(req.resource); err != nil {
		return req, redirectError(errInvalidTarget, err.Error())
	}
	return req, nil
}

// requestedScopes returns the scopes asked for, or the client's registered
// scopes (else every supported scope) when none are. A client that
// registered a scope may only ask for scopes within it (RFC 7591 section 2:
// the scopes "the client can use when requesting access tokens"); anything
// else is invalid_scope (RFC 6749 section 4.1.2.1). offline_access is
// accepted and dropped: some MCP clients always add it (SEP-2207), and
// devauth issues refresh tokens regardless.
func (s *Server) requestedScopes(client store.Client, raw string) ([]string, *authzError) {
	registered := strings.Fields(client.Scope)
	var out []string
	for _, sc := range strings.Fields(raw) {
		if sc == "offline_access" {
			continue
		}
		if !slices.Contains(s.opts.Scopes, sc) {
			return nil, redirectError(errInvalidScope, "unsupported scope "+sc)
		}
		if len(registered) > 0 && !slices.Contains(registered, sc) {
			return nil, redirectError(errInvalidScope, "scope "+sc+" is not among the scopes the client registered ("+client.Scope+")")
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if len(registered) > 0 {
		return registered, nil
	}
	return append([]string(nil), s.opts.Scopes...), nil
}

// validateResource checks an RFC 8707 resource indicator: an absolute URI
// without a fragment.
func validateResource(res string) error {
	if len(res) > maxURILength {
		return errors.New("resource is too long")
	}
	u, err := url.Parse(res)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("resource must be an absolute URI")
	}
	if u.Fragment != "" || strings.Contains(res, "#") {
		return errors.New("resource must not have a fragment")
	}
	return nil
}

func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// authorize handles GET /authorize: validate, then sign in, ask consent, or
// (with auto-approve) answer at once.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	req, aerr := s.parseAuthorize(r, r.URL.Query())
	if aerr != nil {
		s.fail(w, r, req, aerr, http.StatusFound)
		return
	}
	if s.opts.AutoApprove != "" {
		u, ok := s.opts.Users.ByEmail(s.opts.AutoApprove)
		if !ok {
			s.fail(w, r, req, redirectError(errServerError, "auto-approve user is missing"), http.StatusFound)
			return
		}
		s.log.Info("authorization auto-approved", "client_id", req.client.ID, "sub", u.ID, "resource", req.resource)
		s.issueCode(w, r, req, u.ID, http.StatusFound)
		return
	}
	if r.URL.Query().Get("prompt") == "none" {
		// Every authorization needs the user's consent here, so a silent
		// request can never succeed (OIDC Core section 3.1.2.6).
		s.fail(w, r, req, redirectError("consent_required", "user interaction is required"), http.StatusFound)
		return
	}
	sess := s.sessions.getOrCreate(w, r)
	id := s.sessions.addPending(sess, req)
	if u, ok := s.opts.Users.ByID(sess.userID); ok && sess.userID != "" {
		s.showConsent(w, req, id, sess, u)
		return
	}
	s.showLogin(w, http.StatusOK, req, id, sess, "", "")
}

// maxFormBody bounds the login and consent form bodies.
const maxFormBody = 64 << 10

// authorizeSubmit handles the login and consent forms.
func (s *Server) authorizeSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Bad request", Message: "The form could not be read."})
		return
	}
	sess, ok := s.sessions.lookup(r)
	if !ok {
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Session expired", Message: "Your sign-in session expired or cookies are disabled."})
		return
	}
	if !sess.checkCSRF(r.PostForm.Get("csrf_token")) {
		pages.RenderError(w, http.StatusForbidden, pages.Error{Title: "Request refused", Message: "The form's security token is missing or wrong."})
		return
	}
	reqID := r.PostForm.Get("request_id")
	action := r.PostForm.Get("action")
	req, ok := s.sessions.pendingRequest(sess, reqID, action == "approve" || action == "deny")
	if !ok {
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Request expired", Message: "This authorization request expired or was already answered."})
		return
	}
	switch action {
	case "login":
		email := r.PostForm.Get("email")
		account, addr := "", clientAddress(r)
		if u, ok := s.opts.Users.ByEmail(email); ok {
			account = u.ID
		}
		if wait, msg, blocked := s.logins.blocked(account, addr); blocked {
			s.log.Warn("sign-in refused: too many failed attempts", "client_id", req.client.ID, "sub", account)
			w.Header().Set("Retry-After", retryAfter(wait))
			s.showLogin(w, http.StatusTooManyRequests, req, reqID, sess, email, msg)
			return
		}
		u, err := s.opts.Users.Authenticate(email, r.PostForm.Get("password"))
		if err != nil {
			s.logins.failed(account, addr)
			s.log.Info("login failed", "client_id", req.client.ID)
			s.showLogin(w, http.StatusOK, req, reqID, sess, email, "Invalid email or password.")
			return
		}
		s.logins.succeeded(u.ID)
		sess = s.sessions.login(w, sess, u.ID)
		s.log.Info("user signed in", "sub", u.ID)
		s.showConsent(w, req, reqID, sess, u)
	case "approve":
		if _, ok := s.opts.Users.ByID(sess.userID); !ok || sess.userID == "" {
			id := s.sessions.addPending(sess, req)
			s.showLogin(w, http.StatusOK, req, id, sess, "", "Please sign in first.")
			return
		}
		s.log.Info("authorization approved", "client_id", req.client.ID, "sub", sess.userID, "resource", req.resource)
		s.issueCode(w, r, req, sess.userID, http.StatusSeeOther)
	case "deny":
		s.log.Info("authorization denied", "client_id", req.client.ID, "sub", sess.userID)
		s.fail(w, r, req, redirectError(errAccessDenied, "the user denied the request"), http.StatusSeeOther)
	default:
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Bad request", Message: "Unknown form action."})
	}
}

func (s *Server) showLogin(w http.ResponseWriter, status int, req *authRequest, id string, sess sessionView, email, msg string) {
	pages.RenderLogin(w, status, pages.Login{
		Action: s.opts.BaseURL + PathAuthorize, ClientName: displayName(req.client), Resource: req.resource,
		RequestID: id, CSRF: sess.csrf, Email: email, Error: msg, Hint: s.opts.LoginHint,
	})
}

func (s *Server) showConsent(w http.ResponseWriter, req *authRequest, id string, sess sessionView, u users.User) {
	sc := make([]pages.Scope, 0, len(req.scopes))
	for _, name := range req.scopes {
		sc = append(sc, pages.Scope{Name: name, Description: s.opts.ScopeDescriptions[name]})
	}
	pages.RenderConsent(w, pages.Consent{
		Action: s.opts.BaseURL + PathAuthorize, ClientName: displayName(req.client), ClientID: req.client.ID,
		RedirectURI: req.redirectURI, Resource: req.resource, Scopes: sc, UserEmail: u.Email,
		RequestID: id, CSRF: sess.csrf,
	})
}

// issueCode stores an authorization code and redirects to the client with
// code, state and iss (RFC 9207).
func (s *Server) issueCode(w http.ResponseWriter, r *http.Request, req *authRequest, userID string, status int) {
	code, err := s.opts.Store.SaveCode(store.Code{
		Grant:         store.Grant{Subject: userID, ClientID: req.client.ID, Scopes: req.scopes, Resource: req.resource},
		RedirectURI:   req.redirectURI,
		CodeChallenge: req.challenge,
		ExpiresAt:     s.opts.Store.Now().Add(CodeTTL),
	})
	if err != nil {
		s.fail(w, r, req, redirectError(errTemporarilyUnavailable, "too many pending authorization codes"), status)
		return
	}
	s.redirect(w, r, req, url.Values{"code": {code}}, status)
}

// fail shows err to the user or sends it to the client.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, req *authRequest, err *authzError, status int) {
	if !err.redirect || req == nil {
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Authorization failed", Message: err.desc})
		return
	}
	v := url.Values{"error": {err.code}}
	if err.desc != "" {
		v.Set("error_description", err.desc)
	}
	s.redirect(w, r, req, v, status)
}

func (s *Server) redirect(w http.ResponseWriter, r *http.Request, req *authRequest, v url.Values, status int) {
	u, err := url.Parse(req.redirectURI)
	if err != nil { // registered URIs were validated; unreachable in practice
		pages.RenderError(w, http.StatusBadRequest, pages.Error{Title: "Authorization failed", Message: "Invalid redirect URI."})
		return
	}
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	if req.state != "" {
		q.Set("state", req.state)
	}
	q.Set("iss", s.issuer)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), status)
}
