package propelauthfake

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/faults"
)

// Server is a fake PropelAuth for tests: a [Backend] over an in-memory table of
// tokens and users, served over real HTTP on a loopback port, with random
// credentials. PropelAuth is a third-party service tests cannot reach;
// everything else in the tests (Redis, gRPC, HTTP) is real.
//
// Beyond the Backend it counts introspections per token and connections,
// remembers the last introspection request, and lists every secret it handed
// out, for tests that check logs for leaks.
type Server struct {
	*httptest.Server

	ClientID     string
	ClientSecret string
	APIKey       string

	backend *Backend
	faults  *faults.Injector

	mu        sync.Mutex
	tokens    map[string]any // Introspection, map[string]any or Reply
	users     map[string]any // User or Reply
	tokenFunc func(token string) (map[string]any, bool)
	secrets   []string
	lastForm  url.Values
	lastAuth  string

	perToken sync.Map // token -> *atomic.Int64

	connMu    sync.Mutex
	openConns int
	maxConns  int
}

// NewServer starts a fake PropelAuth on a loopback port with random
// credentials. The caller stops it with Close.
func NewServer() *Server {
	s := &Server{
		ClientID:     "client-" + randHex(8),
		ClientSecret: "secret-" + randHex(16),
		APIKey:       "apikey-" + randHex(16),
		faults:       faults.New(),
		tokens:       map[string]any{},
		users:        map[string]any{},
	}
	s.secrets = append(s.secrets, s.ClientSecret, s.APIKey)
	s.backend = NewBackend(Options{
		ClientID: s.ClientID, ClientSecret: s.ClientSecret, APIKey: s.APIKey,
		Tokens: (*serverTokens)(s), Users: (*serverUsers)(s), Faults: s.faults,
	})
	mux := http.NewServeMux()
	mux.Handle(IntrospectPattern, s.recordIntrospection(s.backend.IntrospectHandler()))
	mux.Handle(UserPattern, s.backend.UserHandler())
	s.Server = httptest.NewUnstartedServer(mux)
	s.Server.Config.ConnState = s.connState
	s.Server.Start()
	return s
}

// Close drops open connections and releases requests held by a fault (a
// hanging request must not block the test's end), then stops the server.
func (s *Server) Close() {
	s.faults.Close()
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// AuthURL is the PROPELAUTH_AUTH_URL of this server.
func (s *Server) AuthURL() string { return s.URL }

// Issuer is the iss this server puts in introspection responses.
func (s *Server) Issuer() string { return s.URL + "/oauth/2.1" }

// IntrospectionURL is the RFC 7662 endpoint.
func (s *Server) IntrospectionURL() string { return s.URL + PathIntrospect }

// TokenOptions describes a token minted with [Server.MintToken].
type TokenOptions struct {
	Subject  string
	ClientID string
	Scopes   []string
	// Audience is put in aud as a string when it has one element, else as a
	// list.
	Audience []string
	// ExpiresIn is relative to now; zero means one hour.
	ExpiresIn time.Duration
	// NoIssuer leaves iss out, as PropelAuth's documented response does.
	NoIssuer bool
}

// MintToken registers a new random active token with PropelAuth's members and
// returns it.
func (s *Server) MintToken(o TokenOptions) string {
	tok := "pat_" + randHex(24)
	now := time.Now()
	if o.ExpiresIn == 0 {
		o.ExpiresIn = time.Hour
	}
	if o.ClientID == "" {
		o.ClientID = "mcp-client-" + randHex(4)
	}
	in := Introspection{
		Active:    true,
		Subject:   o.Subject,
		ClientID:  o.ClientID,
		Scope:     strings.Join(o.Scopes, " "),
		ExpiresAt: now.Add(o.ExpiresIn).Unix(),
		IssuedAt:  now.Unix(),
		Audience:  o.Audience,
	}
	if !o.NoIssuer {
		in.Issuer = s.Issuer()
	}
	s.setToken(tok, in)
	return tok
}

// SetClaims makes token introspect to exactly claims (which should include
// active), to test the members other RFC 7662 servers send.
func (s *Server) SetClaims(token string, claims map[string]any) { s.setToken(token, claims) }

// SetRawReply makes token introspect to status and body, verbatim.
func (s *Server) SetRawReply(token string, status int, body []byte) {
	s.setToken(token, Reply{Status: status, Body: body})
}

func (s *Server) setToken(token string, answer any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = answer
	s.secrets = append(s.secrets, token)
}

// Revoke makes token inactive.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, token)
}

// SetTokenFunc answers tokens not registered otherwise (for benchmarks that
// need endless fresh tokens). f returns the claims and whether the token is
// known.
func (s *Server) SetTokenFunc(f func(token string) (map[string]any, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFunc = f
}

// AddUser makes u fetchable.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.UserID] = u
}

// SetUserReply makes requests for user id answer status and body, verbatim
// (for answers such as PropelAuth's 400 for a malformed ID).
func (s *Server) SetUserReply(id string, status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = Reply{Status: status, Body: body}
}

// RateLimitUsers makes the next n user requests answer 429 with the given
// Retry-After header ("" for none).
func (s *Server) RateLimitUsers(n int, retryAfter string) { s.backend.RateLimitUsers(n, retryAfter) }

// SetFault makes both endpoints misbehave as mode says, after latency;
// faults.OK with no latency restores them. It panics for a latency
// faults.Injector refuses, a mistake in the test.
func (s *Server) SetFault(mode faults.Mode, latency time.Duration) {
	if err := s.faults.Set(mode, latency); err != nil {
		panic("propelauthfake: " + err.Error())
	}
}

// Secrets returns every credential and token this server has handed out, for
// tests that check logs for leaks.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.secrets...)
}

// Introspections returns how many introspection requests arrived (any
// outcome).
func (s *Server) Introspections() int64 { return s.backend.Counters().Introspections.Load() }

// IntrospectionsOf returns how many introspection requests by the
// request-validation client named token.
func (s *Server) IntrospectionsOf(token string) int64 {
	if c, ok := s.perToken.Load(token); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// UserFetches returns how many user requests arrived (any outcome).
func (s *Server) UserFetches() int64 { return s.backend.Counters().UserFetches.Load() }

// LastIntrospection returns the form and Authorization header of the latest
// introspection request.
func (s *Server) LastIntrospection() (url.Values, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastForm, s.lastAuth
}

// Conns returns how many client connections are open now, and the most that
// were open at once since the server started.
func (s *Server) Conns() (open, peak int) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.openConns, s.maxConns
}

// connState counts the connections open now and the most ever open at once.
func (s *Server) connState(_ net.Conn, state http.ConnState) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	switch state {
	case http.StateNew:
		s.openConns++
		s.maxConns = max(s.maxConns, s.openConns)
	case http.StateClosed, http.StateHijacked:
		s.openConns--
	}
}

// recordIntrospection remembers the form and Authorization header of each
// introspection request the backend answers itself (not a fault), as it
// starts answering: before the client can see the answer, and without
// parsing the body a second time.
func (s *Server) recordIntrospection(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&recorder{ResponseWriter: w, s: s, r: r}, r)
	})
}

// recorder records its request's parsed form once the answer starts.
type recorder struct {
	http.ResponseWriter
	s    *Server
	r    *http.Request
	done bool
}

func (rec *recorder) record() {
	if rec.done || rec.r.PostForm == nil {
		return
	}
	rec.done = true
	rec.s.mu.Lock()
	rec.s.lastForm, rec.s.lastAuth = rec.r.PostForm, rec.r.Header.Get("Authorization")
	rec.s.mu.Unlock()
}

func (rec *recorder) WriteHeader(status int) {
	rec.record()
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	rec.record()
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Hijack, which the Down fault uses.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// serverTokens is the Server's table as the backend's [Tokens].
type serverTokens Server

func (t *serverTokens) Introspect(token string) (any, bool) {
	s := (*Server)(t)
	c, _ := s.perToken.LoadOrStore(token, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	s.mu.Lock()
	answer, known := s.tokens[token]
	f := s.tokenFunc
	s.mu.Unlock()
	if !known && f != nil {
		return f(token)
	}
	return answer, known
}

// serverUsers is the Server's table as the backend's [Users].
type serverUsers Server

func (u *serverUsers) User(id string) (any, bool) {
	s := (*Server)(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.users[id]
	return v, ok
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
