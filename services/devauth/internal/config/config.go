// Package config reads devauth's configuration from the environment.
//
// devauth reads the same variable names as authz and mcp-gateway
// (PROPELAUTH_AUTH_URL, REQUEST_VALIDATION_CLIENT_ID, ...), so a single .env file
// drives the whole stack. [Load] validates everything at start so that a bad
// value fails with one line naming the variable instead of surfacing later as
// a confusing OAuth error.
package config

import (
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Environment variable names read by devauth.
const (
	EnvListen           = "DEVAUTH_LISTEN"
	EnvAuthURL          = "PROPELAUTH_AUTH_URL"
	EnvValidationID     = "REQUEST_VALIDATION_CLIENT_ID"
	EnvValidationSecret = "REQUEST_VALIDATION_CLIENT_SECRET"
	EnvAPIKey           = "PROPELAUTH_API_KEY"
	EnvUsersFile        = "DEVAUTH_USERS_FILE"
	EnvAutoApprove      = "DEVAUTH_AUTO_APPROVE"
	EnvTokenTTL         = "DEVAUTH_TOKEN_TTL"
	EnvScopes           = "DEVAUTH_SCOPES"
	EnvTestAPI          = "DEVAUTH_TEST_API"
	EnvClientTTL        = "DEVAUTH_CLIENT_TTL"
	EnvCIMDLoopback     = "DEVAUTH_CIMD_ALLOW_LOOPBACK"
	EnvLogLevel         = "LOG_LEVEL"
)

// Defaults for optional variables.
const (
	DefaultListen    = ":9000"
	DefaultAuthURL   = "http://localhost:9000"
	DefaultTokenTTL  = time.Hour
	DefaultScopes    = "read:user_data read:org_data"
	DefaultClientTTL = 24 * time.Hour
)

// Config is devauth's effective configuration.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string
	// BaseURL is devauth's public base URL without a trailing slash; the issuer
	// is BaseURL + "/oauth/2.1".
	BaseURL string
	// ValidationClientID and ValidationClientSecret authenticate callers of the
	// introspection endpoint (authz).
	ValidationClientID     string
	ValidationClientSecret string
	// APIKey authenticates the backend user API and the test API.
	APIKey string
	// UsersFile, when set, replaces the built-in seeded users.
	UsersFile string
	// AutoApprove, when set, is the email of the user /authorize logs in and
	// consents for without showing any page.
	AutoApprove string
	// TokenTTL is the lifetime of access tokens.
	TokenTTL time.Duration
	// Scopes are the scopes clients may request, in a stable order.
	Scopes []string
	// TestAPI enables the /dev/* endpoints.
	TestAPI bool
	// ClientTTL is how long a registered client may go unused (and hold no
	// live token) before it is removed.
	ClientTTL time.Duration
	// CIMDAllowLoopback lets Client ID Metadata Documents be fetched from
	// loopback addresses (http://localhost/... client_id URLs included), for
	// local tests; other private addresses stay refused.
	CIMDAllowLoopback bool
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// ConfigFile, when set, is the YAML file MCP was read from.
	ConfigFile string
	// MCP holds the settings of PropelAuth's MCP dashboard page.
	MCP MCP
}

// Issuer returns the authorization server's issuer identifier.
func (c Config) Issuer() string { return c.BaseURL + "/oauth/2.1" }

// EnvNames returns every environment variable devauth reads, sorted.
func EnvNames() []string {
	names := []string{
		EnvListen, EnvAuthURL, EnvValidationID, EnvValidationSecret, EnvAPIKey,
		EnvUsersFile, EnvAutoApprove, EnvTokenTTL, EnvScopes, EnvTestAPI, EnvClientTTL,
		EnvCIMDLoopback, EnvLogLevel, EnvConfigFile,
	}
	slices.Sort(names)
	return names
}

// Error is a configuration error; its message names the offending variable.
type Error struct {
	Var    string
	Reason string
}

func (e *Error) Error() string { return e.Var + ": " + e.Reason }

// Load builds a Config from getenv. If a variable is invalid or a required one
// is missing, it returns an *Error naming the first such variable.
func Load(getenv func(string) string) (Config, error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := Config{
		Listen:                 get(EnvListen),
		ValidationClientID:     get(EnvValidationID),
		ValidationClientSecret: get(EnvValidationSecret),
		APIKey:                 get(EnvAPIKey),
		UsersFile:              get(EnvUsersFile),
		AutoApprove:            strings.ToLower(get(EnvAutoApprove)),
		ConfigFile:             get(EnvConfigFile),
		TokenTTL:               DefaultTokenTTL,
		ClientTTL:              DefaultClientTTL,
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if err := validateListen(c.Listen); err != nil {
		return Config{}, &Error{EnvListen, err.Error()}
	}

	base := get(EnvAuthURL)
	if base == "" {
		base = DefaultAuthURL
	}
	normalized, err := parseBaseURL(base)
	if err != nil {
		return Config{}, &Error{EnvAuthURL, err.Error()}
	}
	c.BaseURL = normalized

	for _, req := range []struct{ name, value string }{
		{EnvValidationID, c.ValidationClientID},
		{EnvValidationSecret, c.ValidationClientSecret},
		{EnvAPIKey, c.APIKey},
	} {
		if req.value == "" {
			return Config{}, &Error{req.name, "required but not set"}
		}
	}
	if strings.Contains(c.ValidationClientID, ":") {
		// HTTP Basic cannot carry a colon in the user-id part.
		return Config{}, &Error{EnvValidationID, "must not contain ':'"}
	}

	if v := get(EnvTokenTTL); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Config{}, &Error{EnvTokenTTL, fmt.Sprintf("%q is not a duration (e.g. 1h, 15m)", v)}
		}
		if d < time.Second || d > 30*24*time.Hour {
			return Config{}, &Error{EnvTokenTTL, fmt.Sprintf("%v is out of range [1s, 720h]", d)}
		}
		c.TokenTTL = d
	}

	var envScopes []string
	if v := get(EnvScopes); v != "" {
		if envScopes, err = scopes.Parse(v); err != nil {
			return Config{}, &Error{EnvScopes, err.Error()}
		}
		if len(envScopes) == 0 {
			return Config{}, &Error{EnvScopes, "must list at least one scope"}
		}
	}
	if c.ConfigFile != "" {
		if c.MCP, c.Scopes, err = ReadMCPFile(c.ConfigFile, envScopes, getenv); err != nil {
			return Config{}, &Error{EnvConfigFile, c.ConfigFile + ": " + err.Error()}
		}
	} else {
		if c.Scopes = envScopes; c.Scopes == nil {
			c.Scopes, _ = scopes.Parse(DefaultScopes)
		}
		c.MCP = DefaultMCP(c.Scopes)
	}

	for _, b := range []struct {
		name string
		dst  *bool
	}{{EnvTestAPI, &c.TestAPI}, {EnvCIMDLoopback, &c.CIMDAllowLoopback}} {
		if v := get(b.name); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, &Error{b.name, fmt.Sprintf("%q is not a boolean", v)}
			}
			*b.dst = on
		}
	}

	if v := get(EnvClientTTL); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Config{}, &Error{EnvClientTTL, fmt.Sprintf("%q is not a duration (e.g. 24h, 30m)", v)}
		}
		if d < time.Minute || d > 30*24*time.Hour {
			return Config{}, &Error{EnvClientTTL, fmt.Sprintf("%v is out of range [1m, 720h]", d)}
		}
		c.ClientTTL = d
	}

	if v := get(EnvLogLevel); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return Config{}, &Error{EnvLogLevel, fmt.Sprintf("%q is not one of debug, info, warn, error", v)}
		}
	}
	if c.AutoApprove != "" && !strings.Contains(c.AutoApprove, "@") {
		return Config{}, &Error{EnvAutoApprove, fmt.Sprintf("%q is not an email address", c.AutoApprove)}
	}
	return c, nil
}

func parseBaseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q must be an http or https URL", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q must not have a query, fragment or user info", s)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

func validateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

// LogValue prints the configuration with every secret masked, so the effective
// configuration can be logged at start.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String(EnvListen, c.Listen),
		slog.String(EnvAuthURL, c.BaseURL),
		slog.String(EnvValidationID, c.ValidationClientID),
		slog.String(EnvValidationSecret, Mask(c.ValidationClientSecret)),
		slog.String(EnvAPIKey, Mask(c.APIKey)),
		slog.String(EnvUsersFile, c.UsersFile),
		slog.String(EnvAutoApprove, c.AutoApprove),
		slog.String(EnvTokenTTL, c.TokenTTL.String()),
		slog.String(EnvScopes, strings.Join(c.Scopes, " ")),
		slog.Bool(EnvTestAPI, c.TestAPI),
		slog.String(EnvClientTTL, c.ClientTTL.String()),
		slog.Bool(EnvCIMDLoopback, c.CIMDAllowLoopback),
		slog.String(EnvLogLevel, c.LogLevel.String()),
		slog.String(EnvConfigFile, c.ConfigFile),
		slog.Any("mcp", c.MCP),
	)
}

// Mask hides a secret but says whether it is set.
func Mask(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}
