// Package config reads devauth's configuration from the environment.
//
// devauth reads the same variable names as authz and mcp-gateway
// (PROPELAUTH_AUTH_URL, REQUEST_VALIDATION_CLIENT_ID, ...), so a single .env file
// drives the whole stack. [Load] validates everything at start so that a bad
// value fails with one line naming the variable instead of surfacing later as
// a confusing OAuth error.
package config

import (
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/users"
)

// DefaultScopes are the scopes clients may request when neither
// DEVAUTH_SCOPES nor the configuration file names them.
const DefaultScopes = "read:user_data read:org_data"

// Config is devauth's effective configuration. Every variable is declared
// once, as a tag on one of its fields (package envconf explains the tags).
type Config struct {
	// Listen is the HTTP listen address.
	Listen string `env:"DEVAUTH_LISTEN" envDefault:":9000" check:"listen" desc:"HTTP listen address"`
	// BaseURL is devauth's public base URL without a trailing slash; the issuer
	// is BaseURL + "/oauth/2.1". Unset, it is http://localhost:<port of
	// DEVAUTH_LISTEN>; with port 0 it stays empty until [Config.Bound] learns
	// the port.
	BaseURL string `env:"PROPELAUTH_AUTH_URL" check:"baseurl" defaultText:"http://localhost:<bound port of DEVAUTH_LISTEN>" desc:"devauth's own public base URL (its Auth URL); the issuer is {}/oauth/2.1"`
	// ValidationClientID and ValidationClientSecret authenticate callers of the
	// introspection endpoint (authz).
	ValidationClientID     string `env:"REQUEST_VALIDATION_CLIENT_ID,required" desc:"client ID callers of the introspection endpoint (authz) authenticate with"`
	ValidationClientSecret string `env:"REQUEST_VALIDATION_CLIENT_SECRET,required" secret:"true" desc:"secret of REQUEST_VALIDATION_CLIENT_ID"`
	// APIKey authenticates the backend user API and the test API.
	APIKey string `env:"PROPELAUTH_API_KEY,required" secret:"true" desc:"backend API key of the user API and of the test API"`
	// UsersFile, when set, replaces the built-in seeded users.
	UsersFile string `env:"DEVAUTH_USERS_FILE" defaultText:"the built-in users" desc:"JSON file replacing the seeded users"`
	// AutoApprove, when set, is the email of the user /authorize logs in and
	// consents for without showing any page.
	AutoApprove string `env:"DEVAUTH_AUTO_APPROVE" desc:"email of a user whom /authorize logs in and consents for without showing pages (tests, demos)"`
	// TokenTTL is the lifetime of access tokens.
	TokenTTL time.Duration `env:"DEVAUTH_TOKEN_TTL" envDefault:"1h" min:"1s" max:"720h" desc:"lifetime of the access tokens devauth issues"`
	// Scopes are the scopes clients may request, in a stable order.
	Scopes []string `env:"DEVAUTH_SCOPES" check:"scopes" defaultText:"read:user_data read:org_data" desc:"scopes clients may request (or mcp.scopes in DEVAUTH_CONFIG_FILE, which adds their descriptions; set one of the two)"`
	// TestAPI enables the /dev/* endpoints.
	TestAPI bool `env:"DEVAUTH_TEST_API" envDefault:"false" desc:"true enables /dev/* (mint tokens, counters, fault injection) for tests and the load tool; never in a demo you share"`
	// ClientTTL is how long a registered client may go unused (and hold no
	// live token) before it is removed.
	ClientTTL time.Duration `env:"DEVAUTH_CLIENT_TTL" envDefault:"24h" min:"1m" max:"720h" desc:"a dynamically registered client unused this long, and holding no live code or token, is removed"`
	// CIMDAllowLoopback lets Client ID Metadata Documents be fetched from
	// loopback addresses (http://localhost/... client_id URLs included), for
	// local tests; other private addresses stay refused.
	CIMDAllowLoopback bool `env:"DEVAUTH_CIMD_ALLOW_LOOPBACK" envDefault:"false" desc:"true lets devauth fetch Client ID Metadata Documents from loopback addresses, for local tests; other non-public addresses are always refused"`
	envconf.Logging
	// ConfigFile, when set, is the YAML file MCP was read from.
	ConfigFile string `env:"DEVAUTH_CONFIG_FILE" defaultText:"the defaults of devauth.example.yaml" desc:"YAML file with the settings of PropelAuth's MCP dashboard page (allowed redirect URIs, scopes and their descriptions, DCR, pre-registered OAuth clients); devauth.example.yaml documents it"`
	// MCP holds the settings of PropelAuth's MCP dashboard page.
	MCP MCP
	// Users are the users devauth knows: those of UsersFile, or the seeded
	// ones.
	Users *users.Directory
}

// Issuer returns the authorization server's issuer identifier.
func (c Config) Issuer() string { return c.BaseURL + "/oauth/2.1" }

// EnvNames returns every environment variable devauth reads, sorted.
func EnvNames() []string { return envconf.Names(Config{}) }

// Error is a configuration error; its message names the offending variable.
type Error = envconf.Error

// Load builds a Config from getenv. If a variable is invalid or a required one
// is missing, it returns an *Error naming the first such variable.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	if err := envconf.Load(&c, getenv); err != nil {
		return Config{}, err
	}
	switch {
	case c.BaseURL != "":
		u, _ := url.Parse(c.BaseURL) // checked by envconf
		c.BaseURL = strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	case envconf.Port(c.Listen) > 0:
		c.BaseURL = "http://localhost:" + strconv.Itoa(envconf.Port(c.Listen))
	}
	if strings.Contains(c.ValidationClientID, ":") {
		// HTTP Basic cannot carry a colon in the user-id part.
		return Config{}, envconf.Errorf("REQUEST_VALIDATION_CLIENT_ID", "must not contain ':'")
	}
	envScopes := c.Scopes
	var err error
	if c.ConfigFile != "" {
		if c.MCP, c.Scopes, err = ReadMCPFile(c.ConfigFile, envScopes, getenv); err != nil {
			return Config{}, envconf.Errorf("DEVAUTH_CONFIG_FILE", "%s: %v", c.ConfigFile, err)
		}
	} else {
		if c.Scopes == nil {
			c.Scopes, _ = scopes.Parse(DefaultScopes)
		}
		c.MCP = DefaultMCP(c.Scopes)
	}
	c.Users = users.Seed()
	if c.UsersFile != "" {
		if c.Users, err = users.LoadFile(c.UsersFile); err != nil {
			return Config{}, envconf.Errorf("DEVAUTH_USERS_FILE", "%v", err)
		}
	}
	c.AutoApprove = strings.ToLower(c.AutoApprove)
	if c.AutoApprove != "" {
		if !strings.Contains(c.AutoApprove, "@") {
			return Config{}, envconf.Errorf("DEVAUTH_AUTO_APPROVE", "%q is not an email address", c.AutoApprove)
		}
		if _, ok := c.Users.ByEmail(c.AutoApprove); !ok {
			return Config{}, envconf.Errorf("DEVAUTH_AUTO_APPROVE", "no user with email %q", c.AutoApprove)
		}
	}
	return c, nil
}

// Bound completes the configuration once DEVAUTH_LISTEN is bound to addr:
// with PROPELAUTH_AUTH_URL unset and port 0 asked for, the base URL becomes
// http://localhost:<the port bound>.
func (c *Config) Bound(addr net.Addr) {
	if c.BaseURL != "" {
		return
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		c.BaseURL = "http://localhost:" + strconv.Itoa(ta.Port)
	}
}

// LogValue prints the configuration with every secret masked, so the effective
// configuration can be logged at start.
func (c Config) LogValue() slog.Value {
	attrs := envconf.LogValue(c).Group()
	return slog.GroupValue(append(attrs, slog.Any("mcp", c.MCP))...)
}

// Mask hides a secret but says whether it is set.
func Mask(s string) string { return envconf.Mask(s) }
