// Package propelauthtest is an in-process stand-in for the PropelAuth endpoints authz
// calls, for tests only: token introspection (RFC 7662 at /oauth/2.1/introspect) and
// Fetch User By User ID (/api/backend/v1/user/{id}). It speaks their wire format,
// checks credentials as PropelAuth does, counts calls, and can be told to fail.
//
// PropelAuth is a third-party service tests cannot reach; everything else in the
// tests (Redis, gRPC, HTTP) is real.
package propelauthtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault makes the server misbehave on both endpoints.
type Fault string

// The faults. They match the devauth test API's fault modes.
const (
	FaultNone     Fault = "ok"
	FaultError500 Fault = "error500"
	FaultGarbage  Fault = "garbage"
	FaultHang     Fault = "hang"
	FaultDown     Fault = "down"
)

// Server is a fake PropelAuth. Its zero value is not usable; call [New].
type Server struct {
	*httptest.Server

	ClientID     string
	ClientSecret string
	APIKey       string

	mu          sync.Mutex
	tokens      map[string]map[string]any
	raw         map[string]rawReply
	users       map[string]User
	userReplies map[string]rawReply
	rateLimited int
	retryAfter  string
	fault       Fault
	latency     time.Duration
	tokenFunc   func(token string) (map[string]any, bool)
	secrets     []string
	lastForm    url.Values
	lastAuth    string

	introspections atomic.Int64
	userFetches    atomic.Int64
	perToken       sync.Map // token -> *atomic.Int64

	connMu    sync.Mutex
	openConns int
	maxConns  int
}

type rawReply struct {
	status int
	body   []byte
}

// New starts a fake PropelAuth on a loopback port with random credentials and stops
// it when the test ends (via tb.Cleanup by the caller's Close, or explicitly).
func New() *Server {
	s := &Server{
		ClientID:     "client-" + randHex(8),
		ClientSecret: "secret-" + randHex(16),
		APIKey:       "apikey-" + randHex(16),
		tokens:       map[string]map[string]any{},
		raw:          map[string]rawReply{},
		users:        map[string]User{},
		userReplies:  map[string]rawReply{},
		fault:        FaultNone,
	}
	s.secrets = append(s.secrets, s.ClientSecret, s.APIKey)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/2.1/introspect", s.introspect)
	mux.HandleFunc("GET /api/backend/v1/user/{id}", s.fetchUser)
	s.Server = httptest.NewUnstartedServer(mux)
	s.Server.Config.ConnState = s.connState
	s.Server.Start()
	return s
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

// Conns returns how many client connections are open now, and the most that
// were open at once since the server started.
func (s *Server) Conns() (open, peak int) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.openConns, s.maxConns
}

// Close drops open connections (a hanging request must not block the test's end)
// and stops the server.
func (s *Server) Close() {
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// AuthURL is the PROPELAUTH_AUTH_URL of this server.
func (s *Server) AuthURL() string { return s.URL }

// Issuer is the iss this server puts in introspection responses.
func (s *Server) Issuer() string { return s.URL + "/oauth/2.1" }

// IntrospectionURL is the RFC 7662 endpoint.
func (s *Server) IntrospectionURL() string { return s.URL + "/oauth/2.1/introspect" }

// TokenOptions describes a token minted with [Server.MintToken].
type TokenOptions struct {
	Subject  string
	ClientID string
	Scopes   []string
	// Audience is put in aud as a string when it has one element, else as a list.
	Audience []string
	// ExpiresIn is relative to now; zero means one hour.
	ExpiresIn time.Duration
	// NoIssuer leaves iss out, as PropelAuth's documented response does.
	NoIssuer bool
}

// MintToken registers a new random active token with PropelAuth-shaped claims and
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
	claims := map[string]any{
		"active":    true,
		"sub":       o.Subject,
		"client_id": o.ClientID,
		"scope":     strings.Join(o.Scopes, " "),
		"exp":       now.Add(o.ExpiresIn).Unix(),
		"iat":       now.Unix(),
	}
	if len(o.Audience) == 1 {
		claims["aud"] = o.Audience[0]
	} else if len(o.Audience) > 1 {
		claims["aud"] = o.Audience
	}
	if !o.NoIssuer {
		claims["iss"] = s.Issuer()
	}
	s.SetClaims(tok, claims)
	return tok
}

// SetClaims makes token introspect to exactly claims (which should include active).
func (s *Server) SetClaims(token string, claims map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = claims
	s.secrets = append(s.secrets, token)
}

// SetRawReply makes token introspect to status and body, verbatim.
func (s *Server) SetRawReply(token string, status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw[token] = rawReply{status: status, body: body}
	s.secrets = append(s.secrets, token)
}

// Revoke makes token inactive.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, token)
	delete(s.raw, token)
}

// SetTokenFunc answers tokens not registered otherwise (for benchmarks that need
// endless fresh tokens). f returns the claims and whether the token is known.
func (s *Server) SetTokenFunc(f func(token string) (map[string]any, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFunc = f
}

// SetFault makes both endpoints misbehave; FaultNone restores them. latency is added
// before every answer.
func (s *Server) SetFault(f Fault, latency time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
	s.latency = latency
}

// Secrets returns every credential and token this server has handed out, for tests
// that check logs for leaks.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.secrets...)
}

// Introspections returns how many introspection requests arrived (any outcome).
func (s *Server) Introspections() int64 { return s.introspections.Load() }

// IntrospectionsOf returns how many introspection requests named token.
func (s *Server) IntrospectionsOf(token string) int64 {
	if c, ok := s.perToken.Load(token); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// UserFetches returns how many user requests arrived (any outcome).
func (s *Server) UserFetches() int64 { return s.userFetches.Load() }

// LastIntrospection returns the form and Authorization header of the latest
// introspection request.
func (s *Server) LastIntrospection() (url.Values, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastForm, s.lastAuth
}

// misbehave applies the configured latency and fault; it reports whether the
// request was answered by the fault.
func (s *Server) misbehave(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	fault, latency := s.fault, s.latency
	s.mu.Unlock()
	if latency > 0 {
		// Read the body first: the server notices a client hanging up only once
		// the body has been read, and a caller that gives up must not leave this
		// handler waiting out the latency (nor Close waiting for it).
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return true
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return true
		}
	}
	switch fault {
	case FaultError500:
		http.Error(w, "internal error", http.StatusInternalServerError)
	case FaultGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("<html>upstream proxy error</html>"))
	case FaultHang:
		// The server notices a client hanging up only once the body has been read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	case FaultDown:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
			}
		}
	default:
		return false
	}
	return true
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	s.introspections.Add(1)
	if s.misbehave(w, r) {
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 §2.3.1: both are form-encoded inside Basic.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	s.mu.Lock()
	s.lastForm, s.lastAuth = r.PostForm, r.Header.Get("Authorization")
	s.mu.Unlock()
	if id != s.ClientID || secret != s.ClientSecret {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client"})
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	c, _ := s.perToken.LoadOrStore(token, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	s.mu.Lock()
	raw, isRaw := s.raw[token]
	claims, known := s.tokens[token]
	f := s.tokenFunc
	s.mu.Unlock()
	if isRaw {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(raw.status)
		_, _ = w.Write(raw.body)
		return
	}
	if !known && f != nil {
		claims, known = f(token)
	}
	if !known {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	writeJSON(w, http.StatusOK, claims)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
