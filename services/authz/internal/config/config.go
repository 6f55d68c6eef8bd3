// Package config reads authz's configuration from the environment, validates it and
// renders it for the start-up log with secrets masked.
//
// Every error names the offending variable, so `authz` can fail with one clear line.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/decision"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/mtls"
)

// Config is authz's configuration.
type Config struct {
	Listen            string
	MetricsListen     string
	AuthURL           string
	ClientID          string
	ClientSecret      string
	IntrospectionURL  string
	IntrospectionAuth string
	APIKey            string
	RedisURL          string
	RedisTimeout      time.Duration
	CacheTTL          time.Duration
	NegativeCacheTTL  time.Duration
	UserCacheTTL      time.Duration
	// UserNegativeCacheTTL is how long an unknown user (404) is cached.
	UserNegativeCacheTTL time.Duration
	IntrospectTimeout    time.Duration
	// MaxInFlight bounds introspections, and separately user API calls, in
	// flight (INTROSPECTION_MAX_IN_FLIGHT); MaxConns bounds connections per host
	// to the authorization server (INTROSPECTION_MAX_CONNS).
	MaxInFlight    int
	MaxConns       int
	ClockSkew      time.Duration
	ScopeHierarchy *decision.Hierarchy
	L1MaxEntries   int
	Issuer         string
	LogLevel       slog.Level

	// TLSCert, TLSKey and TLSClientCA are the PEM files of AUTHZ_TLS_*; TLS is
	// the server configuration built from them, nil for plaintext gRPC.
	TLSCert     string
	TLSKey      string
	TLSClientCA string
	TLS         *tls.Config
	// GetUserCallers are the client identities allowed to call GetUser
	// (AUTHZ_GETUSER_CALLERS); empty = every caller that passed the handshake.
	GetUserCallers []string
	// InvalidateCallers are those allowed to call InvalidateToken
	// (AUTHZ_INVALIDATE_CALLERS); empty = every caller that passed the handshake.
	InvalidateCallers []string
}

// The environment variables read, and their defaults ("" = none).
var vars = []struct{ name, def string }{
	{"AUTHZ_LISTEN", ":50051"},
	{"AUTHZ_METRICS_LISTEN", ":9091"},
	{"PROPELAUTH_AUTH_URL", ""},
	{"REQUEST_VALIDATION_CLIENT_ID", ""},
	{"REQUEST_VALIDATION_CLIENT_SECRET", ""},
	{"INTROSPECTION_URL", ""},
	{"INTROSPECTION_AUTH_METHOD", "client_secret_basic"},
	{"PROPELAUTH_API_KEY", ""},
	{"REDIS_URL", ""},
	{"REDIS_TIMEOUT", "100ms"},
	{"CACHE_TTL", "60s"},
	{"NEGATIVE_CACHE_TTL", "10s"},
	{"USER_CACHE_TTL", "30s"},
	{"USER_NEGATIVE_CACHE_TTL", "5s"},
	{"INTROSPECTION_TIMEOUT", "5s"},
	{"INTROSPECTION_MAX_IN_FLIGHT", "64"},
	{"INTROSPECTION_MAX_CONNS", "128"},
	{"CLOCK_SKEW", "30s"},
	{"SCOPE_HIERARCHY", ""},
	{"L1_MAX_ENTRIES", "100000"},
	{"AUTHORIZATION_SERVER", ""},
	{"LOG_LEVEL", "info"},
	{"AUTHZ_TLS_CERT", ""},
	{"AUTHZ_TLS_KEY", ""},
	{"AUTHZ_TLS_CLIENT_CA", ""},
	{"AUTHZ_GETUSER_CALLERS", ""},
	{"AUTHZ_INVALIDATE_CALLERS", ""},
}

// EnvVars returns the name of every environment variable Load reads, sorted.
func EnvVars() []string {
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.name
	}
	slices.Sort(names)
	return names
}

// Error is a configuration error about one variable.
type Error struct {
	Var string
	Msg string
}

// Error returns one line naming the variable.
func (e *Error) Error() string { return "invalid configuration: " + e.Var + ": " + e.Msg }

// Load reads the configuration through getenv (os.Getenv in production) and
// validates it. The error is an [*Error] naming the first bad variable.
func Load(getenv func(string) string) (Config, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, v := range vars {
			if v.name == name {
				return v.def
			}
		}
		panic("config: unknown variable " + name)
	}
	var c Config
	var err error
	bad := func(name, format string, args ...any) error {
		return &Error{Var: name, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Listen, err = listenAddr(get("AUTHZ_LISTEN")); err != nil {
		return c, bad("AUTHZ_LISTEN", "%v", err)
	}
	if c.MetricsListen, err = listenAddr(get("AUTHZ_METRICS_LISTEN")); err != nil {
		return c, bad("AUTHZ_METRICS_LISTEN", "%v", err)
	}
	if c.AuthURL = strings.TrimRight(get("PROPELAUTH_AUTH_URL"), "/"); c.AuthURL != "" {
		if err := httpURL(c.AuthURL); err != nil {
			return c, bad("PROPELAUTH_AUTH_URL", "%v", err)
		}
	}
	c.IntrospectionURL = get("INTROSPECTION_URL")
	switch {
	case c.IntrospectionURL != "":
		if err := httpURL(c.IntrospectionURL); err != nil {
			return c, bad("INTROSPECTION_URL", "%v", err)
		}
	case c.AuthURL != "":
		c.IntrospectionURL = c.AuthURL + "/oauth/2.1/introspect"
	default:
		return c, bad("PROPELAUTH_AUTH_URL", "required (or set INTROSPECTION_URL for another RFC 7662 provider)")
	}
	if c.ClientID = get("REQUEST_VALIDATION_CLIENT_ID"); c.ClientID == "" {
		return c, bad("REQUEST_VALIDATION_CLIENT_ID", "required: the introspection endpoint authenticates this service")
	}
	if c.ClientSecret = get("REQUEST_VALIDATION_CLIENT_SECRET"); c.ClientSecret == "" {
		return c, bad("REQUEST_VALIDATION_CLIENT_SECRET", "required: the introspection endpoint authenticates this service")
	}
	switch c.IntrospectionAuth = get("INTROSPECTION_AUTH_METHOD"); c.IntrospectionAuth {
	case "client_secret_basic", "client_secret_post":
	default:
		return c, bad("INTROSPECTION_AUTH_METHOD", "%q is not client_secret_basic or client_secret_post", c.IntrospectionAuth)
	}
	c.APIKey = get("PROPELAUTH_API_KEY")
	if c.RedisURL = get("REDIS_URL"); c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			return c, bad("REDIS_URL", "%v", maskErr(err, c.RedisURL))
		}
	}
	durations := []struct {
		name     string
		dst      *time.Duration
		min, max time.Duration
	}{
		{"CACHE_TTL", &c.CacheTTL, time.Millisecond, 24 * time.Hour},
		{"NEGATIVE_CACHE_TTL", &c.NegativeCacheTTL, 0, time.Hour},
		{"USER_CACHE_TTL", &c.UserCacheTTL, 0, 24 * time.Hour},
		{"USER_NEGATIVE_CACHE_TTL", &c.UserNegativeCacheTTL, 0, time.Hour},
		{"INTROSPECTION_TIMEOUT", &c.IntrospectTimeout, time.Millisecond, 5 * time.Minute},
		{"REDIS_TIMEOUT", &c.RedisTimeout, time.Millisecond, 10 * time.Second},
		{"CLOCK_SKEW", &c.ClockSkew, 0, 10 * time.Minute},
	}
	for _, d := range durations {
		v := get(d.name)
		if *d.dst, err = time.ParseDuration(v); err != nil {
			return c, bad(d.name, "%q is not a duration such as 30s or 1m", v)
		}
		if *d.dst < d.min || *d.dst > d.max {
			return c, bad(d.name, "%s is outside [%s, %s]", *d.dst, d.min, d.max)
		}
	}
	if c.ScopeHierarchy, err = decision.ParseHierarchy(get("SCOPE_HIERARCHY")); err != nil {
		return c, bad("SCOPE_HIERARCHY", "%v", err)
	}
	v := get("L1_MAX_ENTRIES")
	if c.L1MaxEntries, err = strconv.Atoi(v); err != nil || c.L1MaxEntries < 0 || c.L1MaxEntries > 100_000_000 {
		return c, bad("L1_MAX_ENTRIES", "%q is not an integer in [0, 100000000] (0 disables the in-process cache)", v)
	}
	v = get("INTROSPECTION_MAX_IN_FLIGHT")
	if c.MaxInFlight, err = strconv.Atoi(v); err != nil || c.MaxInFlight < 1 || c.MaxInFlight > 100_000 {
		return c, bad("INTROSPECTION_MAX_IN_FLIGHT", "%q is not an integer in [1, 100000]", v)
	}
	v = get("INTROSPECTION_MAX_CONNS")
	if c.MaxConns, err = strconv.Atoi(v); err != nil || c.MaxConns < 1 || c.MaxConns > 100_000 {
		return c, bad("INTROSPECTION_MAX_CONNS", "%q is not an integer in [1, 100000]", v)
	}
	switch c.Issuer = get("AUTHORIZATION_SERVER"); {
	case c.Issuer != "":
		if err := httpURL(c.Issuer); err != nil {
			return c, bad("AUTHORIZATION_SERVER", "%v", err)
		}
	case c.AuthURL != "":
		c.Issuer = c.AuthURL + "/oauth/2.1"
	default:
		return c, bad("AUTHORIZATION_SERVER", "required when PROPELAUTH_AUTH_URL is unset (the expected iss)")
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("LOG_LEVEL"))); err != nil {
		return c, bad("LOG_LEVEL", "%q is not debug, info, warn or error", get("LOG_LEVEL"))
	}
	if err := c.loadTLS(get); err != nil {
		return c, err
	}
	return c, nil
}

// loadTLS reads AUTHZ_TLS_*, AUTHZ_GETUSER_CALLERS and AUTHZ_INVALIDATE_CALLERS.
// The files are read now so that a missing or mismatched one stops the start
// with its variable's name.
func (c *Config) loadTLS(get func(string) string) error {
	c.TLSCert, c.TLSKey, c.TLSClientCA = get("AUTHZ_TLS_CERT"), get("AUTHZ_TLS_KEY"), get("AUTHZ_TLS_CLIENT_CA")
	c.GetUserCallers = callerList(get("AUTHZ_GETUSER_CALLERS"))
	c.InvalidateCallers = callerList(get("AUTHZ_INVALIDATE_CALLERS"))
	// An allow-list set, named in errors about what it needs.
	var list string
	switch {
	case len(c.GetUserCallers) > 0:
		list = "AUTHZ_GETUSER_CALLERS"
	case len(c.InvalidateCallers) > 0:
		list = "AUTHZ_INVALIDATE_CALLERS"
	}
	switch {
	case c.TLSCert == "" && c.TLSKey == "" && c.TLSClientCA == "":
		if list != "" {
			return &Error{Var: list, Msg: "needs mutual TLS (AUTHZ_TLS_CERT, AUTHZ_TLS_KEY, AUTHZ_TLS_CLIENT_CA) to identify callers"}
		}
		return nil
	case c.TLSCert == "":
		return &Error{Var: "AUTHZ_TLS_CERT", Msg: "required with AUTHZ_TLS_KEY or AUTHZ_TLS_CLIENT_CA: the server certificate (PEM file)"}
	case c.TLSKey == "":
		return &Error{Var: "AUTHZ_TLS_KEY", Msg: "required with AUTHZ_TLS_CERT: its private key (PEM file)"}
	case c.TLSClientCA == "" && list != "":
		return &Error{Var: list, Msg: "needs AUTHZ_TLS_CLIENT_CA: callers are identified by their client certificates"}
	}
	certPEM, err := os.ReadFile(c.TLSCert)
	if err != nil {
		return &Error{Var: "AUTHZ_TLS_CERT", Msg: err.Error()}
	}
	keyPEM, err := os.ReadFile(c.TLSKey)
	if err != nil {
		return &Error{Var: "AUTHZ_TLS_KEY", Msg: err.Error()}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error is a fixed description, never key material.
		return &Error{Var: "AUTHZ_TLS_KEY", Msg: fmt.Sprintf("with AUTHZ_TLS_CERT %s: %v", c.TLSCert, err)}
	}
	var pool *x509.CertPool
	if c.TLSClientCA != "" {
		caPEM, err := os.ReadFile(c.TLSClientCA)
		if err != nil {
			return &Error{Var: "AUTHZ_TLS_CLIENT_CA", Msg: err.Error()}
		}
		if pool, err = mtls.CertPool(caPEM); err != nil {
			return &Error{Var: "AUTHZ_TLS_CLIENT_CA", Msg: fmt.Sprintf("%s: %v", c.TLSClientCA, err)}
		}
	}
	c.TLS = mtls.ServerConfig(pair, pool)
	return nil
}

// callerList splits a comma- or space-separated list of caller identities,
// dropping duplicates.
func callerList(v string) []string {
	var ids []string
	for _, id := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func listenAddr(v string) (string, error) {
	if _, port, err := net.SplitHostPort(v); err != nil {
		return "", fmt.Errorf("%q is not host:port", v)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("%q has a bad port", v)
	}
	return v, nil
}

func httpURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", v)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry credentials", v)
	}
	return nil
}

// maskErr keeps a parse error from echoing a URL that may hold a password.
func maskErr(err error, raw string) error {
	msg := strings.ReplaceAll(err.Error(), raw, MaskURL(raw))
	return fmt.Errorf("%s", msg)
}

// MaskURL hides the password of a URL such as redis://user:pass@host/0.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable>"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "<set>"
}

// LogValue renders the effective configuration with every secret masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("AUTHZ_LISTEN", c.Listen),
		slog.String("AUTHZ_METRICS_LISTEN", c.MetricsListen),
		slog.String("PROPELAUTH_AUTH_URL", c.AuthURL),
		slog.String("INTROSPECTION_URL", c.IntrospectionURL),
		slog.String("INTROSPECTION_AUTH_METHOD", c.IntrospectionAuth),
		slog.String("REQUEST_VALIDATION_CLIENT_ID", c.ClientID),
		slog.String("REQUEST_VALIDATION_CLIENT_SECRET", mask(c.ClientSecret)),
		slog.String("PROPELAUTH_API_KEY", mask(c.APIKey)),
		slog.String("REDIS_URL", MaskURL(c.RedisURL)),
		slog.Duration("REDIS_TIMEOUT", c.RedisTimeout),
		slog.Duration("CACHE_TTL", c.CacheTTL),
		slog.Duration("NEGATIVE_CACHE_TTL", c.NegativeCacheTTL),
		slog.Duration("USER_CACHE_TTL", c.UserCacheTTL),
		slog.Duration("USER_NEGATIVE_CACHE_TTL", c.UserNegativeCacheTTL),
		slog.Duration("INTROSPECTION_TIMEOUT", c.IntrospectTimeout),
		slog.Int("INTROSPECTION_MAX_IN_FLIGHT", c.MaxInFlight),
		slog.Int("INTROSPECTION_MAX_CONNS", c.MaxConns),
		slog.Duration("CLOCK_SKEW", c.ClockSkew),
		slog.String("SCOPE_HIERARCHY", c.ScopeHierarchy.String()),
		slog.Int("L1_MAX_ENTRIES", c.L1MaxEntries),
		slog.String("AUTHORIZATION_SERVER", c.Issuer),
		slog.String("LOG_LEVEL", c.LogLevel.String()),
		slog.String("AUTHZ_TLS_CERT", c.TLSCert),
		slog.String("AUTHZ_TLS_KEY", c.TLSKey),
		slog.String("AUTHZ_TLS_CLIENT_CA", c.TLSClientCA),
		slog.String("AUTHZ_GETUSER_CALLERS", strings.Join(c.GetUserCallers, ",")),
		slog.String("AUTHZ_INVALIDATE_CALLERS", strings.Join(c.InvalidateCallers, ",")),
	)
}
