// Package config reads authz's configuration from the environment, validates it and
// renders it for the start-up log with secrets masked.
//
// Every variable is declared once, as a tag on a field of [Config] (package
// envconf explains the tags); [Load] adds the rules that involve several
// variables. Every error names the offending variable, so `authz` fails with
// one clear line.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/decision"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/mtls"
)

// Config is authz's configuration.
type Config struct {
	Listen        string `env:"AUTHZ_LISTEN" envDefault:":50051" check:"listen" desc:"gRPC listen address"`
	MetricsListen string `env:"AUTHZ_METRICS_LISTEN" envDefault:":9091" check:"listen" desc:"HTTP listen address of /metrics, /healthz and /readyz"`
	// AuthURL has no trailing slash.
	AuthURL           string        `env:"PROPELAUTH_AUTH_URL" check:"baseurl" desc:"Auth URL of the authorization server: authz introspects at {}/oauth/2.1/introspect and fetches users at {}/api/backend/v1/user/{id}; required unless INTROSPECTION_URL and AUTHORIZATION_SERVER are set"`
	ClientID          string        `env:"REQUEST_VALIDATION_CLIENT_ID,required" desc:"client ID authz authenticates to the introspection endpoint with"`
	ClientSecret      string        `env:"REQUEST_VALIDATION_CLIENT_SECRET,required" secret:"true" desc:"secret of REQUEST_VALIDATION_CLIENT_ID"`
	IntrospectionURL  string        `env:"INTROSPECTION_URL" check:"url" defaultText:"{PROPELAUTH_AUTH_URL}/oauth/2.1/introspect" desc:"RFC 7662 introspection endpoint, for providers other than PropelAuth"`
	IntrospectionAuth string        `env:"INTROSPECTION_AUTH_METHOD" envDefault:"client_secret_basic" desc:"how authz authenticates to the introspection endpoint: client_secret_basic or client_secret_post"`
	APIKey            string        `env:"PROPELAUTH_API_KEY" secret:"true" desc:"backend API key of the user API (GetUser)"`
	RedisURL          string        `env:"REDIS_URL" check:"redisurl" desc:"Redis shared by every replica as the second cache tier: one node (redis[s]://[user:password@]host:port[/db]), a Cluster (?addr=...) or a Sentinel-managed primary (?master_name=...), see docs/redis.md; unset: the in-process cache only"`
	RedisTimeout      time.Duration `env:"REDIS_TIMEOUT" envDefault:"100ms" min:"1ms" max:"10s" desc:"deadline of one Redis operation; past it the read counts as a miss, Redis is skipped for 500 ms and the request goes on to the authorization server"`
	CacheTTL          time.Duration `env:"CACHE_TTL" envDefault:"60s" min:"1ms" max:"24h" desc:"upper bound on a cached introspection; never past the token's exp"`
	NegativeCacheTTL  time.Duration `env:"NEGATIVE_CACHE_TTL" envDefault:"10s" min:"0s" max:"1h" desc:"how long an inactive or unknown token's answer is cached"`
	UserCacheTTL      time.Duration `env:"USER_CACHE_TTL" envDefault:"30s" min:"0s" max:"24h" desc:"how long a fetched user is cached"`
	// UserNegativeCacheTTL is how long an unknown user (404) is cached.
	UserNegativeCacheTTL time.Duration `env:"USER_NEGATIVE_CACHE_TTL" envDefault:"5s" min:"0s" max:"1h" desc:"how long 'no such user' (a 404 from the user API, never another failure) is cached"`
	IntrospectTimeout    time.Duration `env:"INTROSPECTION_TIMEOUT" envDefault:"5s" min:"1ms" max:"5m" desc:"deadline of one introspection or user fetch"`
	// MaxInFlight bounds introspections, and separately user API calls, in
	// flight (INTROSPECTION_MAX_IN_FLIGHT); MaxConns bounds connections per host
	// to the authorization server (INTROSPECTION_MAX_CONNS).
	MaxInFlight int           `env:"INTROSPECTION_MAX_IN_FLIGHT" envDefault:"64" min:"1" max:"100000" desc:"introspections running at once per replica, and as many user lookups; beyond it a miss waits up to 250 ms for a slot, then gets UNAVAILABLE (the gateway's 503)"`
	MaxConns    int           `env:"INTROSPECTION_MAX_CONNS" envDefault:"128" min:"1" max:"100000" desc:"connections per replica to the authorization server's host, introspection and user API together"`
	ClockSkew   time.Duration `env:"CLOCK_SKEW" envDefault:"30s" min:"0s" max:"10m" desc:"tolerance when comparing exp and iat with the local clock"`
	// ScopeHierarchySpec is SCOPE_HIERARCHY as set; ScopeHierarchy is what
	// it says, parsed.
	ScopeHierarchySpec string `env:"SCOPE_HIERARCHY" desc:"broader scopes imply narrower ones, transitively, e.g. admin=read:user_data,read:org_data;read:user_data=read:profile"`
	ScopeHierarchy     *decision.Hierarchy
	L1MaxEntries       int    `env:"L1_MAX_ENTRIES" envDefault:"100000" min:"0" max:"100000000" desc:"entries in the in-process (L1) cache; 0 turns it off"`
	Issuer             string `env:"AUTHORIZATION_SERVER" check:"baseurl" defaultText:"{PROPELAUTH_AUTH_URL}/oauth/2.1" desc:"issuer expected in introspection's iss (when it returns one)"`
	envconf.Logging

	// TLSCert, TLSKey and TLSClientCA are the PEM files of AUTHZ_TLS_*; TLS is
	// the server configuration built from them, nil for plaintext gRPC.
	TLSCert     string `env:"AUTHZ_TLS_CERT" desc:"PEM certificate of the gRPC port; setting it (with AUTHZ_TLS_KEY) turns TLS on"`
	TLSKey      string `env:"AUTHZ_TLS_KEY" desc:"PEM private key of AUTHZ_TLS_CERT"`
	TLSClientCA string `env:"AUTHZ_TLS_CLIENT_CA" desc:"PEM CA certificate(s): every caller must then present a client certificate signed by it (mutual TLS)"`
	TLS         *tls.Config
	// GetUserCallers are the client identities allowed to call GetUser
	// (AUTHZ_GETUSER_CALLERS); empty = every caller that passed the handshake.
	GetUserCallers []string `env:"AUTHZ_GETUSER_CALLERS" defaultText:"any caller" desc:"with mutual TLS, the client identities (URI SAN or CN, comma-separated) allowed to call GetUser; others get PERMISSION_DENIED"`
	// InvalidateCallers are those allowed to call InvalidateToken
	// (AUTHZ_INVALIDATE_CALLERS); empty = every caller that passed the handshake.
	InvalidateCallers []string `env:"AUTHZ_INVALIDATE_CALLERS" defaultText:"any caller" desc:"with mutual TLS, the client identities allowed to call InvalidateToken; others get PERMISSION_DENIED"`
}

// Error is a configuration error about one variable.
type Error = envconf.Error

// Load reads the configuration through getenv (os.Getenv in production) and
// validates it. The error is an [*Error] naming the first bad variable.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	if err := envconf.Load(&c, getenv); err != nil {
		return c, err
	}
	c.AuthURL = strings.TrimRight(c.AuthURL, "/")
	switch {
	case c.IntrospectionURL != "":
	case c.AuthURL != "":
		c.IntrospectionURL = c.AuthURL + "/oauth/2.1/introspect"
	default:
		return c, envconf.Errorf("PROPELAUTH_AUTH_URL", "required (or set INTROSPECTION_URL for another RFC 7662 provider)")
	}
	switch c.IntrospectionAuth {
	case "client_secret_basic", "client_secret_post":
	default:
		return c, envconf.Errorf("INTROSPECTION_AUTH_METHOD", "%q is not client_secret_basic or client_secret_post", c.IntrospectionAuth)
	}
	var err error
	if c.ScopeHierarchy, err = decision.ParseHierarchy(c.ScopeHierarchySpec); err != nil {
		return c, envconf.Errorf("SCOPE_HIERARCHY", "%v", err)
	}
	switch {
	case c.Issuer != "":
	case c.AuthURL != "":
		c.Issuer = c.AuthURL + "/oauth/2.1"
	default:
		return c, envconf.Errorf("AUTHORIZATION_SERVER", "required when PROPELAUTH_AUTH_URL is unset (the expected iss)")
	}
	if err := c.loadTLS(); err != nil {
		return c, err
	}
	return c, nil
}

// loadTLS checks that AUTHZ_TLS_* and the allow-lists go together, and reads
// the files now so that a missing or mismatched one stops the start with its
// variable's name.
func (c *Config) loadTLS() error {
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
			return envconf.Errorf(list, "needs mutual TLS (AUTHZ_TLS_CERT, AUTHZ_TLS_KEY, AUTHZ_TLS_CLIENT_CA) to identify callers")
		}
		return nil
	case c.TLSCert == "":
		return envconf.Errorf("AUTHZ_TLS_CERT", "required with AUTHZ_TLS_KEY or AUTHZ_TLS_CLIENT_CA: the server certificate (PEM file)")
	case c.TLSKey == "":
		return envconf.Errorf("AUTHZ_TLS_KEY", "required with AUTHZ_TLS_CERT: its private key (PEM file)")
	case c.TLSClientCA == "" && list != "":
		return envconf.Errorf(list, "needs AUTHZ_TLS_CLIENT_CA: callers are identified by their client certificates")
	}
	pair, err := envconf.KeyPair("AUTHZ_TLS_CERT", c.TLSCert, "AUTHZ_TLS_KEY", c.TLSKey)
	if err != nil {
		return err
	}
	var pool *x509.CertPool
	if c.TLSClientCA != "" {
		if pool, err = envconf.CertPool("AUTHZ_TLS_CLIENT_CA", c.TLSClientCA); err != nil {
			return err
		}
	}
	c.TLS = mtls.ServerConfig(pair, pool)
	return nil
}

// EnvVars returns the name of every environment variable Load reads, sorted.
func EnvVars() []string { return envconf.Names(Config{}) }

// LogValue renders the effective configuration with every secret masked.
func (c Config) LogValue() slog.Value { return envconf.LogValue(c) }
