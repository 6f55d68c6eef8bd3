// Package config reads the gateway's configuration from environment variables and
// validates it once, at start, so that a bad value stops the process with one line
// naming the variable instead of surfacing later as a confusing runtime failure.
package config

import (
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstreamconf"
)

// Config is the gateway's validated configuration. Every variable is
// declared once, as a tag on one of its fields (package envconf explains the
// tags).
type Config struct {
	// Listen is the HTTP listen address (MCP_LISTEN): MCP, the metadata
	// documents and /healthz.
	Listen string `env:"MCP_LISTEN" envDefault:":8000" check:"listen" desc:"HTTP listen address of /mcp, the metadata documents and /healthz"`
	// MetricsListen is the operational HTTP listen address
	// (MCP_METRICS_LISTEN): /metrics, /healthz and /readyz, kept off the
	// public listener. Equal to Listen (with a port other than 0), one
	// listener serves everything.
	MetricsListen string `env:"MCP_METRICS_LISTEN" envDefault:":9092" check:"listen" desc:"HTTP listen address of /metrics, /healthz and /readyz, kept off the public one; equal to MCP_LISTEN (with a port other than 0), one listener serves everything"`
	// ServerURL is the public origin of the gateway, without a trailing slash
	// (MCP_SERVER_URL). The protected resource is ServerURL + "/mcp". Unset,
	// it is http://localhost:<port of MCP_LISTEN>; with port 0 it stays empty
	// until [Config.Bound] learns the port.
	ServerURL string `env:"MCP_SERVER_URL" check:"origin" defaultText:"http://localhost:<bound port of MCP_LISTEN>" desc:"public base URL (scheme://host[:port]); the protected resource, and every token's audience, is {}/mcp"`
	// AuthzAddr is the gRPC target of the authz service (AUTHZ_ADDR).
	AuthzAddr string `env:"AUTHZ_ADDR" envDefault:"localhost:50051" desc:"gRPC target of authz; dns:///authz:50051 balances over replicas"`
	// Scopes are required for every MCP request (SCOPES).
	Scopes []string `env:"SCOPES" envDefault:"read:user_data" check:"scopes" desc:"scopes every MCP request needs (space- or comma-separated), advertised in the metadata; at most 64 together with the tools' own scopes, each at most 256 bytes (authz's limits)"`
	// AuthURL is PROPELAUTH_AUTH_URL, which AuthorizationServer defaults to.
	AuthURL string `env:"PROPELAUTH_AUTH_URL" check:"baseurl" desc:"Auth URL of the authorization server; the issuer is {}/oauth/2.1 (required unless AUTHORIZATION_SERVER is set)"`
	// AuthorizationServer is the issuer advertised in the protected resource
	// metadata (AUTHORIZATION_SERVER, default {PROPELAUTH_AUTH_URL}/oauth/2.1).
	AuthorizationServer string `env:"AUTHORIZATION_SERVER" check:"baseurl" defaultText:"{PROPELAUTH_AUTH_URL}/oauth/2.1" desc:"issuer advertised in the protected resource metadata (compared byte for byte: a trailing slash counts)"`
	// ASMetadataURL, when set, is the one URL the authorization server's metadata
	// is fetched from (AUTHORIZATION_SERVER_METADATA_URL), for deployments where
	// the issuer's public host is not reachable from the gateway (the compose demo:
	// the issuer is http://localhost:9000/oauth/2.1, devauth is http://devauth:9000).
	// The document's issuer must still equal AuthorizationServer.
	ASMetadataURL string `env:"AUTHORIZATION_SERVER_METADATA_URL" check:"baseurl" defaultText:"derived from AUTHORIZATION_SERVER (RFC 8414, then OpenID discovery)" desc:"the one URL to fetch the authorization server's metadata from, when the issuer's host is not reachable from the gateway; its issuer must still match"`
	// AuthzTimeout bounds every call to authz (AUTHZ_TIMEOUT).
	AuthzTimeout time.Duration `env:"AUTHZ_TIMEOUT" envDefault:"2s" min:"1ms" max:"1m" desc:"deadline of one call to authz"`
	// AllowedOrigins are browser origins allowed to call /mcp besides the server's
	// own origin (MCP_ALLOWED_ORIGINS), normalised to scheme://host[:port].
	AllowedOrigins []string `env:"MCP_ALLOWED_ORIGINS" check:"origin" desc:"browser origins allowed to call /mcp besides MCP_SERVER_URL's (comma-separated)"`
	// ToolsListAll makes tools/list show every tool, not only those the caller's
	// token may call (TOOLS_LIST_ALL).
	ToolsListAll bool `env:"TOOLS_LIST_ALL" envDefault:"false" desc:"true: tools/list shows every tool, not only those the caller's scopes allow"`
	// UpstreamsFile names the YAML file of upstream MCP servers the gateway
	// fronts (UPSTREAMS_FILE); Upstreams is that file, read and validated by
	// [Load] (nil when unset). Package upstreamconf documents it.
	UpstreamsFile string `env:"UPSTREAMS_FILE" defaultText:"none: only the built-in tools" desc:"YAML file of upstream MCP servers to front (streamable HTTP or stdio), their scopes, prefixes and identity assertions; ${VAR} in it reads the gateway's environment (docs/configuration.md, UPSTREAMS_FILE)"`
	Upstreams     *upstreamconf.File
	envconf.Logging
	// OTel is tracing's OTEL_* variables (package tracing).
	tracing.OTel

	// AuthzTLS secures the connection to authz, nil for plaintext. It is set
	// when any AUTHZ_TLS_* variable is: AuthzTLSCA is the CA that signed
	// authz's certificate (unset: the system roots), AuthzTLSCert and
	// AuthzTLSKey the gateway's client certificate for mutual TLS, and
	// AuthzTLSServerName the name to verify instead of AUTHZ_ADDR's host.
	AuthzTLS           *tls.Config
	AuthzTLSCA         string `env:"AUTHZ_TLS_CA" defaultText:"the system roots" desc:"PEM CA certificate(s) that signed authz's certificate; setting any AUTHZ_TLS_* makes the gateway dial authz over TLS"`
	AuthzTLSCert       string `env:"AUTHZ_TLS_CERT" desc:"the gateway's PEM client certificate, for mutual TLS with authz"`
	AuthzTLSKey        string `env:"AUTHZ_TLS_KEY" desc:"PEM private key of AUTHZ_TLS_CERT"`
	AuthzTLSServerName string `env:"AUTHZ_TLS_SERVER_NAME" defaultText:"the host of AUTHZ_ADDR" desc:"name to verify in authz's certificate"`
	// RedisURL is the rate limiter's shared store (REDIS_URL); unset, each
	// replica limits on its own.
	RedisURL string `env:"REDIS_URL" check:"redisurl" desc:"Redis where every replica keeps its RATE_LIMIT state (used only with RATE_LIMIT): one node, a Cluster or a Sentinel-managed primary, as authz's REDIS_URL; unset: each replica limits on its own"`
	// RateLimitSpec and RateLimitBurst are RATE_LIMIT and RATE_LIMIT_BURST
	// as set; RateLimit is every principal's request budget they make (the
	// zero Limit is off).
	RateLimitSpec  string `env:"RATE_LIMIT" defaultText:"off" desc:"per-principal request budget: 600/m, 10/s or 36000/h (a bare number is per minute); beyond it, 429 with Retry-After"`
	RateLimitBurst int    `env:"RATE_LIMIT_BURST" min:"1" max:"1000000000" defaultText:"the count of RATE_LIMIT" desc:"requests a principal may send at once before the steady rate applies"`
	RateLimit      ratelimit.Limit
	// DecisionCacheTTL is the longest an allowed decision is reused without
	// asking authz again (DECISION_CACHE_TTL); zero asks authz on every
	// request. A decision is never kept past the end of authz's own cached
	// answer (AuthorizeResponse.reusable_until), so reusing it answers as
	// asking authz would, and InvalidateToken reaches it through
	// WatchInvalidations. Package decisioncache explains the rules.
	DecisionCacheTTL time.Duration `env:"DECISION_CACHE_TTL" envDefault:"60s" min:"0s" max:"1m" desc:"reuse each allowed decision up to this long, never past the token's exp or the end of authz's own cached answer (reusable_until), so reusing it answers as asking authz again would; InvalidateToken still applies at once; 0: ask authz on every request"`

	// AuditLog is where the audit log goes (AUDIT_LOG): empty (off),
	// "stdout", or the absolute path of a file to append to. Package audit
	// describes the events.
	AuditLog string `env:"AUDIT_LOG" defaultText:"off" desc:"audit log of every MCP request that reached a decision, as JSON lines: stdout, or the absolute path of a file (appended to, created 0600, reopened on SIGHUP); see docs/audit.md"`
	// AuditLogArguments puts tool and prompt arguments in the audit log as
	// sent (canonical JSON) besides their hash (AUDIT_LOG_ARGUMENTS).
	AuditLogArguments bool `env:"AUDIT_LOG_ARGUMENTS" envDefault:"false" desc:"true: audit events carry tools/call and prompts/get arguments themselves, not only their SHA-256 (they may hold personal data or secrets)"`

	// MaxInFlight bounds the MCP requests served at once past the token
	// check (MCP_MAX_IN_FLIGHT), a stream for as long as it is open; beyond
	// it a request gets 503 before its body is read. The default, 512, lets
	// a burst of 500 requests at once through (the load tool's stampede: one
	// new token's first uses drain in about a tenth of a second) and still
	// bounds what requests with a token that merely looks valid can make the
	// gateway hold in body buffers: 512 × 1 MiB at most, and only for bytes
	// actually sent within MCP_BODY_TIMEOUT.
	MaxInFlight int `env:"MCP_MAX_IN_FLIGHT" envDefault:"512" min:"1" max:"1000000" desc:"MCP requests served at once past the token check; beyond it, a fast 503 with Retry-After before the body is read; requests without a usable token do not count"`
	// BodyTimeout bounds the time from a request's headers to the end of
	// its body (MCP_BODY_TIMEOUT); a slower body gets 408. An MCP client
	// sends its body (under a megabyte, usually under a kilobyte) right
	// after its headers, so the default of ten seconds leaves ample room for
	// a slow link and frees what a stalled client holds.
	BodyTimeout time.Duration `env:"MCP_BODY_TIMEOUT" envDefault:"10s" min:"1ms" max:"5m" desc:"time from a request's headers to the end of its body; a slower body gets 408 and its connection is closed"`
	// MaxConnections bounds the connections open at once
	// (MCP_MAX_CONNECTIONS); beyond it new connections wait in the kernel's
	// accept queue. Zero leaves them unbounded. Once requests without a
	// token cost no body, what an attacker without one can still make the
	// gateway hold is connections, tens of KiB each; the default of 4,096 is
	// also Linux's default accept queue (net.core.somaxconn).
	MaxConnections int `env:"MCP_MAX_CONNECTIONS" envDefault:"4096" min:"0" max:"10000000" desc:"connections open at once; beyond it new ones wait in the kernel's accept queue until one closes; 0: no bound"`
	// GOGC is the Go runtime's garbage-collection target, read by the
	// runtime itself. When it is unset the gateway sets its declared default
	// instead of Go's 100: the go-sdk makes much short-lived garbage per
	// tools/call against a small live heap, so with 100 the gateway collects
	// every few requests and spends much of its CPU in the collector
	// (docs/performance.md).
	GOGC string `env:"GOGC" envDefault:"400" desc:"the Go runtime's garbage-collection target; unset, the gateway uses 400 instead of Go's 100 (the go-sdk makes much short-lived garbage per tool call); set GOMEMLIMIT or a lower GOGC to bound memory"`
}

// Defaults of variables that code elsewhere falls back on, from the
// declarations above.
var (
	DefaultMaxInFlight = Defaults().MaxInFlight
	DefaultBodyTimeout = Defaults().BodyTimeout
)

// Defaults returns the declared defaults of the variables, as an empty
// environment sets them (before the rules of [Load] that involve several).
func Defaults() Config {
	var c Config
	if err := envconf.Load(&c, func(string) string { return "" }); err != nil {
		panic(err) // no variable is required, and defaults are checked
	}
	return c
}

// EnvNames returns the name of every environment variable [Load] reads, sorted.
func EnvNames() []string { return envconf.Names(Config{}) }

// Error is a configuration error for one variable. Its message starts with the
// variable's name so the one line a failed start prints says what to fix.
type Error = envconf.Error

// Load reads and validates the configuration using getenv (os.Getenv in
// production). An invalid or missing value returns an *[Error] naming the variable.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	if err := envconf.Load(&c, getenv); err != nil {
		return c, err
	}
	if c.ServerURL == "" {
		if port := envconf.Port(c.Listen); port > 0 {
			c.ServerURL = "http://localhost:" + strconv.Itoa(port)
		}
	}
	// SCOPES with the tools' own scopes are checked against authz's limit
	// by gateway.New, which knows the tools.
	if c.AuthorizationServer == "" {
		if c.AuthURL == "" {
			return c, envconf.Errorf("PROPELAUTH_AUTH_URL", "must be set (or set AUTHORIZATION_SERVER to the issuer URL)")
		}
		c.AuthorizationServer = strings.TrimRight(c.AuthURL, "/") + "/oauth/2.1"
	}
	if err := c.loadAuthzTLS(); err != nil {
		return c, err
	}
	if c.UpstreamsFile != "" {
		f, err := upstreamconf.Load(c.UpstreamsFile, getenv)
		if err != nil {
			return c, envconf.Errorf("UPSTREAMS_FILE", "%v", err)
		}
		c.Upstreams = f
	}
	var err error
	if c.RateLimit, err = ratelimit.ParseRate(c.RateLimitSpec); err != nil {
		return c, envconf.Errorf("RATE_LIMIT", "%v", err)
	}
	if c.RateLimitBurst != 0 {
		if !c.RateLimit.Enabled() {
			return c, envconf.Errorf("RATE_LIMIT_BURST", "set, but RATE_LIMIT is off; set RATE_LIMIT too (e.g. 600/m)")
		}
		c.RateLimit.Burst = c.RateLimitBurst
	}
	if err := c.checkAuditLog(); err != nil {
		return c, err
	}
	if err := c.OTel.Check(); err != nil {
		return c, err
	}
	return c, nil
}

// AuditStdout is the value of AUDIT_LOG that sends the audit log to standard
// output.
const AuditStdout = "stdout"

// checkAuditLog refuses an AUDIT_LOG that is neither stdout nor an absolute
// path: a relative one would depend on the working directory, and a word
// like "off" or "stderr" would silently become a file of that name.
func (c *Config) checkAuditLog() error {
	switch {
	case c.AuditLog == "" && c.AuditLogArguments:
		return envconf.Errorf("AUDIT_LOG_ARGUMENTS", "set, but AUDIT_LOG is off; set AUDIT_LOG too (stdout or a file path)")
	case c.AuditLog == "" || c.AuditLog == AuditStdout:
		return nil
	case !filepath.IsAbs(c.AuditLog):
		return envconf.Errorf("AUDIT_LOG", "%q is neither stdout nor an absolute file path (unset it to turn the audit log off)", c.AuditLog)
	}
	return nil
}

// Bound completes the configuration once MCP_LISTEN is bound to addr: with
// MCP_SERVER_URL unset and port 0 asked for, the server URL becomes
// http://localhost:<the port bound>.
func (c *Config) Bound(addr net.Addr) {
	if c.ServerURL != "" {
		return
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		c.ServerURL = "http://localhost:" + strconv.Itoa(ta.Port)
	}
}

// loadAuthzTLS reads the AUTHZ_TLS_* files now, so that a missing or mismatched
// one stops the start with its variable's name instead of failing every call.
func (c *Config) loadAuthzTLS() error {
	if c.AuthzTLSCA == "" && c.AuthzTLSCert == "" && c.AuthzTLSKey == "" && c.AuthzTLSServerName == "" {
		return nil
	}
	// TLS 1.3 only: authz is ours and speaks it.
	t := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.AuthzTLSServerName}
	if c.AuthzTLSCA != "" {
		pool, err := envconf.CertPool("AUTHZ_TLS_CA", c.AuthzTLSCA)
		if err != nil {
			return err
		}
		t.RootCAs = pool
	}
	switch {
	case c.AuthzTLSCert == "" && c.AuthzTLSKey != "":
		return envconf.Errorf("AUTHZ_TLS_CERT", "must be set with AUTHZ_TLS_KEY: the gateway's client certificate (PEM file)")
	case c.AuthzTLSCert != "" && c.AuthzTLSKey == "":
		return envconf.Errorf("AUTHZ_TLS_KEY", "must be set with AUTHZ_TLS_CERT: its private key (PEM file)")
	case c.AuthzTLSCert != "":
		pair, err := envconf.KeyPair("AUTHZ_TLS_CERT", c.AuthzTLSCert, "AUTHZ_TLS_KEY", c.AuthzTLSKey)
		if err != nil {
			return err
		}
		t.Certificates = []tls.Certificate{pair}
	}
	c.AuthzTLS = t
	return nil
}

// OneListener reports whether MCP_METRICS_LISTEN equals MCP_LISTEN: one
// listener then serves the public and the operational endpoints. Two
// addresses with port 0 are two listeners, each on a port of its own.
func (c Config) OneListener() bool { return c.MetricsListen == c.Listen && envconf.Port(c.Listen) != 0 }

// Resource is the protected resource identifier: exactly {MCP_SERVER_URL}/mcp.
func (c Config) Resource() string { return c.ServerURL + "/mcp" }

// ResourceMetadataURL is the absolute URL of the protected resource metadata for
// [Config.Resource], as RFC 9728 §3.1 builds it (well-known path inserted before
// the resource's path).
func (c Config) ResourceMetadataURL() string {
	return c.ServerURL + "/.well-known/oauth-protected-resource/mcp"
}

// LogValue prints the configuration at start, with REDIS_URL's password masked
// (the TLS variables are file paths).
func (c Config) LogValue() slog.Value { return envconf.LogValue(c) }

// NormalizeOrigin returns a browser Origin header value in the form
// [Config.AllowedOrigins] uses (lowercase, default port dropped), or false when
// it is not an http(s) origin (e.g. "null").
func NormalizeOrigin(raw string) (string, bool) {
	o, err := envconf.Origin(raw)
	return o, err == nil
}
