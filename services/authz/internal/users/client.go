// Package users fetches PropelAuth users (Fetch User By User ID) and caches them in
// the same two tiers as tokens: in-process, then Redis.
//
// # Errors
//
// Every failure unwraps to one of the sentinels below; the gRPC layer maps them to
// status codes and constant messages.
package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/ashttp"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

// The errors of this package.
var (
	// ErrNotFound: the user API does not know the user.
	ErrNotFound = errors.New("user not found")
	// ErrRateLimited: the user API kept answering 429 after the allowed retries.
	ErrRateLimited = errors.New("user API rate limit exceeded")
	// ErrNotConfigured: no API key (or no auth URL) is configured.
	ErrNotConfigured = errors.New("user lookups are disabled: set PROPELAUTH_API_KEY and PROPELAUTH_AUTH_URL")
	// ErrUpstreamAuth: the user API rejected the API key (a misconfiguration).
	ErrUpstreamAuth = errors.New("the user API rejected PROPELAUTH_API_KEY")
	// ErrUnavailable: the user API could not be reached, failed or answered garbage.
	ErrUnavailable = errors.New("user API unavailable")
	// ErrInvalidID: the user API refused the user ID as malformed.
	ErrInvalidID = errors.New("invalid user id")
)

// MaxUserBytes caps the user API responses the client reads: a user with
// hundreds of organizations fits many times over.
const MaxUserBytes = 1 << 20

// ClientConfig configures a [Client].
type ClientConfig struct {
	// AuthURL is PROPELAUTH_AUTH_URL; users are at {AuthURL}/api/backend/v1/user/{id}.
	AuthURL string
	// APIKey is PROPELAUTH_API_KEY; empty (or an empty AuthURL) makes every fetch
	// fail with ErrNotConfigured.
	APIKey string
	// Timeout bounds one HTTP attempt. Default 5s.
	Timeout time.Duration
	// MaxAttempts bounds attempts when rate limited (default 4: three retries).
	MaxAttempts int
	// BaseBackoff is the first retry delay without Retry-After, doubled per retry
	// with jitter (default 200ms).
	BaseBackoff time.Duration
	// MaxRetryWait caps any single wait, Retry-After included (default 2s).
	MaxRetryWait time.Duration
	// Transport replaces the default pooled transport (ashttp.NewTransport).
	Transport http.RoundTripper
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
}

// Client calls the user API. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	hc  *http.Client
}

// NewClient returns a client. It returns an error if AuthURL is set but is not an
// absolute http(s) URL.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.AuthURL != "" {
		u, err := url.Parse(cfg.AuthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("auth URL %q is not an absolute http(s) URL", cfg.AuthURL)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 4
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = 200 * time.Millisecond
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	tr := cfg.Transport
	if tr == nil {
		tr = ashttp.NewTransport(cfg.Timeout, 0)
	}
	return &Client{cfg: cfg, hc: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// Configured reports whether an API key and auth URL are set.
func (c *Client) Configured() bool { return c.cfg.APIKey != "" && c.cfg.AuthURL != "" }

// Fetch returns the user with its organizations. 429 answers are retried with
// exponential backoff, honouring Retry-After up to MaxRetryWait, within ctx.
//
// Errors unwrap to ErrNotConfigured, ErrNotFound, ErrRateLimited, ErrUpstreamAuth,
// ErrInvalidID or ErrUnavailable, or are ctx's error.
func (c *Client) Fetch(ctx context.Context, userID string) (*authzv1.User, error) {
	if !c.Configured() {
		return nil, ErrNotConfigured
	}
	u := c.cfg.AuthURL + "/api/backend/v1/user/" + url.PathEscape(userID) + "?include_orgs=true"
	for attempt := 1; ; attempt++ {
		user, retryAfter, err := c.once(ctx, u)
		if !errors.Is(err, ErrRateLimited) || attempt >= c.cfg.MaxAttempts {
			c.count(err)
			return user, err
		}
		wait := c.cfg.BaseBackoff << (attempt - 1)
		wait = wait/2 + rand.N(wait/2+1)
		if retryAfter > 0 {
			wait = retryAfter
		}
		wait = min(wait, c.cfg.MaxRetryWait)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			c.count(err)
			return nil, err
		}
		c.cfg.Metrics.UserFetchRetries.Inc()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (c *Client) count(err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case errors.Is(err, ErrRateLimited):
		result = "rate_limited"
	case errors.Is(err, ErrUpstreamAuth):
		result = "unauthorized"
	default:
		result = "error"
	}
	c.cfg.Metrics.UserFetches.WithLabelValues(result).Inc()
}

// once makes one attempt; on 429 it returns the Retry-After delay (0 if absent).
func (c *Client) once(ctx context.Context, u string) (*authzv1.User, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := c.hc.Do(req)
	c.cfg.Metrics.UserFetchDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, 0, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL adds nothing and is long
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxUserBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: reading response: %v", ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound:
		return nil, 0, ErrNotFound
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), ErrRateLimited
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		c.cfg.Logger.Error("the user API rejected PROPELAUTH_API_KEY; check the key", "status", resp.StatusCode)
		return nil, 0, ErrUpstreamAuth
	case resp.StatusCode == http.StatusBadRequest:
		return nil, 0, ErrInvalidID
	default:
		return nil, 0, fmt.Errorf("%w: HTTP %d", ErrUnavailable, resp.StatusCode)
	}
	if len(body) > MaxUserBytes {
		return nil, 0, fmt.Errorf("%w: response over %d bytes", ErrUnavailable, MaxUserBytes)
	}
	user, err := ParseUser(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return user, 0, nil
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

type apiUser struct {
	UserID         string            `json:"user_id"`
	Email          string            `json:"email"`
	EmailConfirmed bool              `json:"email_confirmed"`
	HasPassword    bool              `json:"has_password"`
	Username       *string           `json:"username"`
	FirstName      *string           `json:"first_name"`
	LastName       *string           `json:"last_name"`
	PictureURL     *string           `json:"picture_url"`
	Locked         bool              `json:"locked"`
	Enabled        bool              `json:"enabled"`
	MFAEnabled     bool              `json:"mfa_enabled"`
	CanCreateOrgs  bool              `json:"can_create_orgs"`
	CreatedAt      *float64          `json:"created_at"`
	LastActiveAt   *float64          `json:"last_active_at"`
	Properties     map[string]any    `json:"properties"`
	Metadata       map[string]any    `json:"metadata"`
	Orgs           map[string]apiOrg `json:"org_id_to_org_info"`
}

type apiOrg struct {
	OrgID          string   `json:"org_id"`
	OrgName        string   `json:"org_name"`
	URLSafeOrgName string   `json:"url_safe_org_name"`
	UserRole       string   `json:"user_role"`
	Inherited      []string `json:"inherited_user_roles_plus_current_role"`
	Permissions    []string `json:"user_permissions"`
}

// ParseUser converts a Fetch User By User ID response body into a User, with orgs
// sorted by org_id. It returns an error for a body that is not such a response.
func ParseUser(body []byte) (*authzv1.User, error) {
	var a apiUser
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("decoding user: %w", err)
	}
	if a.UserID == "" {
		return nil, errors.New("decoding user: user_id is missing")
	}
	u := &authzv1.User{
		UserId:         a.UserID,
		Email:          a.Email,
		EmailConfirmed: a.EmailConfirmed,
		HasPassword:    a.HasPassword,
		Username:       deref(a.Username),
		FirstName:      deref(a.FirstName),
		LastName:       deref(a.LastName),
		PictureUrl:     deref(a.PictureURL),
		Locked:         a.Locked,
		Enabled:        a.Enabled,
		MfaEnabled:     a.MFAEnabled,
		CanCreateOrgs:  a.CanCreateOrgs,
		CreatedAt:      unixTime(a.CreatedAt),
		LastActiveAt:   unixTime(a.LastActiveAt),
	}
	var err error
	if a.Properties != nil {
		if u.Properties, err = structpb.NewStruct(a.Properties); err != nil {
			return nil, fmt.Errorf("decoding user properties: %w", err)
		}
	}
	if a.Metadata != nil {
		if u.Metadata, err = structpb.NewStruct(a.Metadata); err != nil {
			return nil, fmt.Errorf("decoding user metadata: %w", err)
		}
	}
	for id, o := range a.Orgs {
		if o.OrgID == "" {
			o.OrgID = id
		}
		u.Orgs = append(u.Orgs, &authzv1.OrgMembership{
			OrgId:                             o.OrgID,
			OrgName:                           o.OrgName,
			UrlSafeOrgName:                    o.URLSafeOrgName,
			UserRole:                          o.UserRole,
			InheritedUserRolesPlusCurrentRole: o.Inherited,
			UserPermissions:                   o.Permissions,
		})
	}
	slices.SortFunc(u.Orgs, func(a, b *authzv1.OrgMembership) int {
		switch {
		case a.OrgId < b.OrgId:
			return -1
		case a.OrgId > b.OrgId:
			return 1
		}
		return 0
	})
	return u, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func unixTime(f *float64) *timestamppb.Timestamp {
	if f == nil || *f <= 0 || *f > 1e11 {
		return nil
	}
	return timestamppb.New(time.Unix(int64(*f), 0))
}
