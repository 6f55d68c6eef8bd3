// Package testapi serves devauth's test-only endpoints (/dev/*): minting
// tokens without a browser, reading and resetting request counters, and
// injecting faults. Gateway tests, end-to-end tests and the load tool code
// against these endpoints: change them only together.
//
// The endpoints exist only when DEVAUTH_TEST_API=true (otherwise 404) and
// every call needs "Authorization: Bearer {PROPELAUTH_API_KEY}" (401 otherwise).
package testapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/stats"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// DefaultClientID is the client_id of minted tokens when the request names none.
const DefaultClientID = "devauth-test-client"

// DefaultExpiresIn is the lifetime of minted tokens when the request omits expires_in.
const DefaultExpiresIn = 3600

// Deps are what the test API acts on.
type Deps struct {
	APIKey   string
	Users    *users.Directory
	Store    *store.Store
	Counters *stats.Counters
	Faults   *faults.Injector
	Logger   *slog.Logger
}

// Register adds the /dev/* routes to mux.
func Register(mux *http.ServeMux, d Deps) {
	auth := func(h http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !propelauthfake.BearerMatches(r, d.APIKey) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="devauth test API"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or missing API key")
				return
			}
			h(w, r)
		})
	}
	mux.Handle("POST /dev/tokens", auth(d.mintToken))
	mux.Handle("GET /dev/stats", auth(func(w http.ResponseWriter, r *http.Request) {
		propelauthfake.WriteJSON(w, http.StatusOK, d.Counters.Snapshot())
	}))
	mux.Handle("POST /dev/stats/reset", auth(func(w http.ResponseWriter, r *http.Request) {
		d.Counters.Reset()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.Handle("POST /dev/faults", auth(d.setFaults))
}

// TokenRequest is the body of POST /dev/tokens.
type TokenRequest struct {
	UserID   string   `json:"user_id"`
	Email    string   `json:"email"`
	Scopes   []string `json:"scopes"`
	Resource string   `json:"resource"`
	ClientID string   `json:"client_id"`
	// ExpiresIn is in seconds; nil means [DefaultExpiresIn], zero or negative
	// mints an already-expired token.
	ExpiresIn *int64 `json:"expires_in"`
}

// TokenResponse is the answer to POST /dev/tokens.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// FaultRequest is the body of POST /dev/faults.
type FaultRequest struct {
	Mode      string `json:"mode"`
	LatencyMS int64  `json:"latency_ms"`
}

const maxBody = 64 << 10

// ParseTokenRequest decodes and validates a POST /dev/tokens body. It returns
// an error describing the first problem: malformed JSON, unknown fields, an
// invalid scope, a resource that is not an absolute URI, or neither user_id
// nor email. user_id need not name a known user (tests mint tokens for
// deleted users); email must.
func ParseTokenRequest(body []byte) (TokenRequest, error) {
	var req TokenRequest
	if err := decodeStrict(body, &req); err != nil {
		return TokenRequest{}, err
	}
	if req.UserID == "" && req.Email == "" {
		return TokenRequest{}, errors.New("one of user_id or email is required")
	}
	for _, s := range req.Scopes {
		if !scopes.Valid(s) {
			return TokenRequest{}, fmt.Errorf("invalid scope %q", s)
		}
	}
	if req.Resource != "" {
		u, err := url.Parse(req.Resource)
		if err != nil || !u.IsAbs() || u.Fragment != "" {
			return TokenRequest{}, errors.New("resource must be an absolute URI without a fragment")
		}
	}
	if req.ExpiresIn != nil && (*req.ExpiresIn > 365*24*3600 || *req.ExpiresIn < -365*24*3600) {
		return TokenRequest{}, errors.New("expires_in out of range")
	}
	return req, nil
}

func (d Deps) mintToken(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeError(w, http.StatusBadRequest, "invalid_request", "body unreadable or too large")
		return
	}
	req, err := ParseTokenRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	subject := req.UserID
	if req.Email != "" {
		u, ok := d.Users.ByEmail(req.Email)
		if !ok {
			writeError(w, http.StatusBadRequest, "invalid_request", "no user with that email")
			return
		}
		if subject != "" && subject != u.ID {
			writeError(w, http.StatusBadRequest, "invalid_request", "user_id and email name different users")
			return
		}
		subject = u.ID
	}
	clientID := req.ClientID
	if clientID == "" {
		clientID = DefaultClientID
	}
	expiresIn := int64(DefaultExpiresIn)
	if req.ExpiresIn != nil {
		expiresIn = *req.ExpiresIn
	}
	scopes := req.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	tok, _, err := d.Store.IssueAccessToken(store.Grant{
		Subject: subject, ClientID: clientID, Scopes: scopes, Resource: req.Resource,
	}, time.Duration(expiresIn)*time.Second)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error())
		return
	}
	d.Counters.TokensIssued.Add(1)
	d.Logger.Debug("test token minted", "token", store.Fingerprint(tok), "sub", subject, "client_id", clientID)
	propelauthfake.WriteJSON(w, http.StatusOK, TokenResponse{
		AccessToken: tok, TokenType: "Bearer", ExpiresIn: expiresIn, Scope: strings.Join(scopes, " "),
	})
}

// ParseFaultRequest decodes and validates a POST /dev/faults body.
func ParseFaultRequest(body []byte) (faults.Mode, time.Duration, error) {
	var req FaultRequest
	if err := decodeStrict(body, &req); err != nil {
		return "", 0, err
	}
	m, err := faults.ParseMode(req.Mode)
	if err != nil {
		return "", 0, err
	}
	if req.LatencyMS < 0 || req.LatencyMS > faults.MaxLatency.Milliseconds() {
		return "", 0, errors.New("latency_ms out of range")
	}
	return m, time.Duration(req.LatencyMS) * time.Millisecond, nil
}

func (d Deps) setFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeError(w, http.StatusBadRequest, "invalid_request", "body unreadable or too large")
		return
	}
	m, latency, err := ParseFaultRequest(body)
	if err == nil {
		err = d.Faults.Set(m, latency)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	d.Logger.Info("fault injection set", "mode", string(m), "latency", latency)
	w.WriteHeader(http.StatusNoContent)
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("malformed JSON body: " + err.Error())
	}
	if dec.More() {
		return errors.New("malformed JSON body: trailing data")
	}
	return nil
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	propelauthfake.WriteError(w, status, code, msg)
}
