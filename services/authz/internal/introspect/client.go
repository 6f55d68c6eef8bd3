package introspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/ashttp"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

// ErrUnavailable is returned (wrapped in an [*Error]) by [Client.Introspect] when the
// authorization server could not give an answer: unreachable, timed out, an error
// status, or a malformed reply. It is never a statement about the token.
var ErrUnavailable = errors.New("authorization server unavailable")

// ErrorKind classifies introspection failures for metrics and logs.
type ErrorKind string

// The kinds of introspection failure.
const (
	KindTimeout     ErrorKind = "timeout"
	KindNetwork     ErrorKind = "network"
	KindStatus5xx   ErrorKind = "status_5xx"
	KindStatus4xx   ErrorKind = "status_4xx"
	KindRateLimited ErrorKind = "rate_limited"
	KindAuth        ErrorKind = "client_auth"
	KindTooLarge    ErrorKind = "too_large"
	KindMalformed   ErrorKind = "malformed"
	KindCanceled    ErrorKind = "canceled"
)

// Error is an introspection failure. It unwraps to [ErrUnavailable] (except for
// KindCanceled, which unwraps to the context's error) and to its cause.
type Error struct {
	Kind ErrorKind
	// Status is the HTTP status, when one was received.
	Status int
	Err    error
}

// Error describes the failure without the token or credentials.
func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("introspection failed (%s, HTTP %d): %v", e.Kind, e.Status, e.Err)
	}
	return fmt.Sprintf("introspection failed (%s): %v", e.Kind, e.Err)
}

// Unwrap returns the cause and, unless the caller gave up, ErrUnavailable.
func (e *Error) Unwrap() []error {
	if e.Kind == KindCanceled {
		return []error{e.Err}
	}
	return []error{ErrUnavailable, e.Err}
}

// AuthMethod is how the client authenticates to the introspection endpoint.
type AuthMethod string

// The supported client authentication methods (RFC 6749 §2.3.1).
const (
	ClientSecretBasic AuthMethod = "client_secret_basic"
	ClientSecretPost  AuthMethod = "client_secret_post"
)

// Config configures a [Client].
type Config struct {
	// Endpoint is the introspection endpoint URL.
	Endpoint string
	// ClientID and ClientSecret authenticate this service to the endpoint.
	ClientID     string
	ClientSecret string
	// AuthMethod defaults to ClientSecretBasic.
	AuthMethod AuthMethod
	// Timeout bounds one introspection, connection included. Default 5s.
	Timeout time.Duration
	// Transport replaces the default pooled transport (ashttp.NewTransport);
	// authz passes one it shares with the user API client.
	Transport http.RoundTripper
}

// Client calls one introspection endpoint over one pooled HTTP client. It is safe for
// concurrent use.
type Client struct {
	endpoint string
	method   AuthMethod
	basic    string
	id       string
	secret   string
	timeout  time.Duration
	hc       *http.Client
}

// NewClient returns a client for cfg. It returns an error if the endpoint is not an
// absolute http(s) URL or the auth method is unknown.
func NewClient(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("introspection endpoint %q is not an absolute http(s) URL", cfg.Endpoint)
	}
	if cfg.AuthMethod == "" {
		cfg.AuthMethod = ClientSecretBasic
	}
	if cfg.AuthMethod != ClientSecretBasic && cfg.AuthMethod != ClientSecretPost {
		return nil, fmt.Errorf("unknown client authentication method %q", cfg.AuthMethod)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	tr := cfg.Transport
	if tr == nil {
		tr = ashttp.NewTransport(cfg.Timeout, 0)
	}
	c := &Client{
		endpoint: cfg.Endpoint,
		method:   cfg.AuthMethod,
		id:       cfg.ClientID,
		secret:   cfg.ClientSecret,
		timeout:  cfg.Timeout,
		hc:       &http.Client{Transport: tr, Timeout: cfg.Timeout},
	}
	// RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
	req := &http.Request{Header: http.Header{}}
	req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	c.basic = req.Header.Get("Authorization")
	return c, nil
}

// Endpoint returns the introspection endpoint URL.
func (c *Client) Endpoint() string { return c.endpoint }

// Introspect asks the endpoint about token and returns the raw response body, which
// [Parse] has accepted, together with its parsed form.
//
// Errors are [*Error] values: they unwrap to [ErrUnavailable] when the server gave no
// usable answer, or to ctx.Err() when ctx ended first. An inactive token is not an
// error.
func (c *Client) Introspect(ctx context.Context, token string) ([]byte, *tokeninfo.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	if c.method == ClientSecretPost {
		form.Set("client_id", c.id)
		form.Set("client_secret", c.secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, &Error{Kind: KindNetwork, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.method == ClientSecretBasic {
		req.Header.Set("Authorization", c.basic)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, nil, transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, statusError(resp.StatusCode)
	}
	if len(body) > MaxBodyBytes {
		return nil, nil, &Error{Kind: KindTooLarge, Status: resp.StatusCode, Err: fmt.Errorf("response body over %d bytes", MaxBodyBytes)}
	}
	res, err := Parse(body)
	if err != nil {
		return nil, nil, &Error{Kind: KindMalformed, Status: resp.StatusCode, Err: err}
	}
	return body, res, nil
}

func transportError(ctx context.Context, err error) error {
	// The caller's own cancellation is not an outage of the authorization server.
	if cerr := context.Cause(ctx); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
		return &Error{Kind: KindCanceled, Err: cerr}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Kind: KindTimeout, Err: errors.New("no answer in time")}
	}
	return &Error{Kind: KindNetwork, Err: scrub(err)}
}

// scrub drops the request URL from *url.Error values: the message is enough, and the
// endpoint URL could carry credentials in its query for some providers.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func statusError(status int) error {
	e := &Error{Status: status, Err: errors.New(http.StatusText(status))}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Kind = KindAuth
		e.Err = errors.New("the endpoint rejected this service's client credentials")
	case status == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
	case status >= 500:
		e.Kind = KindStatus5xx
	default:
		e.Kind = KindStatus4xx
	}
	return e
}
