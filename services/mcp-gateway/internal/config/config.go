// Package config reads the gateway's configuration from environment variables and
// validates it once, at start, so that a bad value stops the process with one line
// naming the variable instead of surfacing later as a confusing runtime failure.
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

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
)

// Names of every environment variable the gateway reads.
const (
	EnvListen              = "MCP_LISTEN"
	EnvMetricsListen       = "MCP_METRICS_LISTEN"
	EnvServerURL           = "MCP_SERVER_URL"
	EnvAuthzAddr           = "AUTHZ_ADDR"
	EnvScopes              = "SCOPES"
	EnvAuthorizationServer = "AUTHORIZATION_SERVER"
	EnvASMetadataURL       = "AUTHORIZATION_SERVER_METADATA_URL"
	EnvPropelAuthAuthURL   = "PROPELAUTH_AUTH_URL"
	EnvAuthzTimeout        = "AUTHZ_TIMEOUT"
	EnvAllowedOrigins      = "MCP_ALLOWED_ORIGINS"
	EnvToolsListAll        = "TOOLS_LIST_ALL"
	EnvLogLevel            = "LOG_LEVEL"
	EnvAuthzTLSCA          = "AUTHZ_TLS_CA"
	EnvAuthzTLSCert        = "AUTHZ_TLS_CERT"
	EnvAuthzTLSKey         = "AUTHZ_TLS_KEY"
	EnvAuthzTLSServerName  = "AUTHZ_TLS_SERVER_NAME"
	EnvRedisURL            = "REDIS_URL"
	EnvRateLimit           = "RATE_LIMIT"
	EnvRateLimitBurst      = "RATE_LIMIT_BURST"
	EnvDecisionCacheTTL    = "DECISION_CACHE_TTL"
	EnvMaxInFlight         = "MCP_MAX_IN_FLIGHT"
	EnvBodyTimeout         = "MCP_BODY_TIMEOUT"
	EnvMaxConnections      = "MCP_MAX_CONNECTIONS"
)

// EnvGOGC is the Go runtime's garbage-collection target, read by the runtime
// itself; main sets [DefaultGOGC] when it is unset.
const EnvGOGC = "GOGC"

// DefaultGOGC is the gateway's garbage-collection target when GOGC is unset,
// instead of Go's 100. The go-sdk allocates about 0.5 MB per tools/call (a
// 32 KiB read buffer for each JSON document it decodes) against a live heap
// of about 1 MB, so with 100 the gateway collects every few requests and
// spends about half its CPU in the collector; 400 raises the heap goal to
// 16 MB or more and, on the reference machine, the gateway's throughput by
// 1.5 to 1.9 times (BENCHMARKS.md).
const DefaultGOGC = 400

// EnvNames returns the name of every environment variable [Load] reads, sorted.
func EnvNames() []string {
	names := []string{
		EnvListen, EnvMetricsListen, EnvServerURL, EnvAuthzAddr, EnvScopes, EnvAuthorizationServer, EnvASMetadataURL,
		EnvPropelAuthAuthURL, EnvAuthzTimeout, EnvAllowedOrigins, EnvToolsListAll, EnvLogLevel,
		EnvAuthzTLSCA, EnvAuthzTLSCert, EnvAuthzTLSKey, EnvAuthzTLSServerName,
		EnvRedisURL, EnvRateLimit, EnvRateLimitBurst, EnvDecisionCacheTTL, EnvGOGC,
		EnvMaxInFlight, EnvBodyTimeout, EnvMaxConnections,
	}
	slices.Sort(names)
	return names
}

// Config is the gateway's validated configuration.
type Config struct {
	// Listen is the HTTP listen address (MCP_LISTEN): MCP, the metadata
	// documents and /healthz.
	Listen string
	// MetricsListen is the operational HTTP listen address
	// (MCP_METRICS_LISTEN): /metrics, /healthz and /readyz, kept off the
	// public listener. Equal to Listen, one listener serves everything.
	MetricsListen string
	// ServerURL is the public origin of the gateway, without a trailing slash
	// (MCP_SERVER_URL). The protected resource is ServerURL + "/mcp".
	ServerURL string
	// AuthzAddr is the gRPC target of the authz service (AUTHZ_ADDR).
	AuthzAddr string
	// Scopes are required for every MCP request (SCOPES).
	Scopes []string
	// AuthorizationServer is the issuer advertised in the protected resource
	// metadata (AUTHORIZATION_SERVER, default {PROPELAUTH_AUTH_URL}/oauth/2.1).
	AuthorizationServer string
	// ASMetadataURL, when set, is the one URL the authorization server's metadata
	// is fetched from (AUTHORIZATION_SERVER_METADATA_URL), for deployments where
	// the issuer's public host is not reachable from the gateway (the compose demo:
	// the issuer is http://localhost:9000/oauth/2.1, devauth is http://devauth:9000).
	// The document's issuer must still equal AuthorizationServer.
	ASMetadataURL string
	// AuthzTimeout bounds every call to authz (AUTHZ_TIMEOUT).
	AuthzTimeout time.Duration
	// AllowedOrigins are browser origins allowed to call /mcp besides the server's
	// own origin (MCP_ALLOWED_ORIGINS), normalised to scheme://host[:port].
	AllowedOrigins []string
	// ToolsListAll makes tools/list show every tool, not only those the caller's
	// token may call (TOOLS_LIST_ALL).
	ToolsListAll bool
	// LogLevel is the minimum level logged (LOG_LEVEL).
	LogLevel slog.Level

	// AuthzTLS secures the connection to authz, nil for plaintext. It is set
	// when any AUTHZ_TLS_* variable is: AuthzTLSCA is the CA that signed
	// authz's certificate (unset: the system roots), AuthzTLSCert and
	// AuthzTLSKey the gateway's client certificate for mutual TLS, and
	// AuthzTLSServerName the name to verify instead of AUTHZ_ADDR's host.
	AuthzTLS           *tls.Config
	AuthzTLSCA         string
	AuthzTLSCert       string
	AuthzTLSKey        string
	AuthzTLSServerName string
	// RedisURL is the rate limiter's shared store (REDIS_URL); unset, each
	// replica limits on its own.
	RedisURL string
	// RateLimit is every principal's request budget (RATE_LIMIT and
	// RATE_LIMIT_BURST); the zero Limit is off.
	RateLimit ratelimit.Limit
	// DecisionCacheTTL is how long an allowed decision may be reused without
	// asking authz again (DECISION_CACHE_TTL); zero, the default, asks authz
	// on every request. Package decisioncache explains what keeps revocation
	// immediate.
	DecisionCacheTTL time.Duration

	// MaxInFlight bounds the MCP requests served at once past the token
	// check (MCP_MAX_IN_FLIGHT), a stream for as long as it is open; beyond
	// it a request gets 503 before its body is read.
	MaxInFlight int
	// BodyTimeout bounds the time from a request's headers to the end of
	// its body (MCP_BODY_TIMEOUT); a slower body gets 408.
	BodyTimeout time.Duration
	// MaxConnections bounds the connections open at once
	// (MCP_MAX_CONNECTIONS); beyond it new connections wait in the kernel's
	// accept queue. Zero leaves them unbounded.
	MaxConnections int
}

// Defaults for unset variables.
const (
	DefaultListen        = ":8000"
	DefaultMetricsListen = ":9092"
	DefaultServerURL     = "http://localhost:8000"
	DefaultAuthzAddr     = "localhost:50051"
	DefaultScopes        = "read:user_data"
	DefaultAuthzTimeout  = 2 * time.Second
	// MaxDecisionCacheTTL bounds DECISION_CACHE_TTL: the cache is meant to
	// absorb bursts of requests, and a revocation the authorization server
	// makes without telling authz can take up to this much longer to apply.
	MaxDecisionCacheTTL = time.Minute
	// DefaultMaxInFlight is MCP_MAX_IN_FLIGHT's default. On the reference
	// machine (2 cores) the gateway saturates near 5,000 requests/s with 32
	// clients, and at 128 every further request only waits longer
	// (BENCHMARKS.md); but a burst of 500 requests at once (the load tool's
	// stampede: one new token's first uses) drains in about a tenth of a
	// second and should not be refused. 512 lets that through and still
	// bounds what requests with a token that merely looks valid can make the
	// gateway hold in body buffers: 512 × 1 MiB at most, and only for bytes
	// actually sent within MCP_BODY_TIMEOUT.
	DefaultMaxInFlight = 512
	// DefaultBodyTimeout is MCP_BODY_TIMEOUT's default: an MCP client sends
	// its body (under a megabyte, usually under a kilobyte) right after its
	// headers, so ten seconds leaves ample room for a slow link while
	// freeing what a stalled or trickling client holds six times sooner than
	// the server's former 60 s read timeout.
	DefaultBodyTimeout = 10 * time.Second
	// DefaultMaxConnections is MCP_MAX_CONNECTIONS's default. Once requests
	// without a token cost no body, what an attacker without one can still
	// make the gateway hold is connections: about 14 KiB each while idle
	// (kept alive for up to two minutes), about 60 KiB while trickling the
	// largest headers allowed (for up to five seconds). 4,096 of those is at
	// most about 240 MiB; it is also Linux's default accept queue
	// (net.core.somaxconn), where further connections wait.
	DefaultMaxConnections = 4096
)

// Error is a configuration error for one variable. Its message starts with the
// variable's name so the one line a failed start prints says what to fix.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return e.Var + ": " + e.Msg }

func errorf(name, format string, args ...any) error {
	return &Error{Var: name, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and validates the configuration using getenv (os.Getenv in
// production). An invalid or missing value returns an *[Error] naming the variable.
func Load(getenv func(string) string) (Config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var c Config
	var err error

	c.Listen = get(EnvListen, DefaultListen)
	if _, port, perr := net.SplitHostPort(c.Listen); perr != nil || port == "" {
		return c, errorf(EnvListen, "must be host:port or :port, got %q", c.Listen)
	}
	c.MetricsListen = get(EnvMetricsListen, DefaultMetricsListen)
	if _, port, perr := net.SplitHostPort(c.MetricsListen); perr != nil || port == "" {
		return c, errorf(EnvMetricsListen, "must be host:port or :port (or equal to %s to serve everything on one listener), got %q", EnvListen, c.MetricsListen)
	}

	if c.ServerURL, err = origin(get(EnvServerURL, DefaultServerURL)); err != nil {
		return c, errorf(EnvServerURL, "%v", err)
	}

	c.AuthzAddr = get(EnvAuthzAddr, DefaultAuthzAddr)

	if c.Scopes, err = scopes.ParseNonEmpty(get(EnvScopes, DefaultScopes)); err != nil {
		return c, errorf(EnvScopes, "%v", err)
	}
	// SCOPES with the tools' own scopes are checked against authz's limit
	// by gateway.New, which knows the tools.

	as := get(EnvAuthorizationServer, "")
	if as == "" {
		base := get(EnvPropelAuthAuthURL, "")
		if base == "" {
			return c, errorf(EnvPropelAuthAuthURL, "must be set (or set %s to the issuer URL)", EnvAuthorizationServer)
		}
		if _, err := absoluteURL(base); err != nil {
			return c, errorf(EnvPropelAuthAuthURL, "%v", err)
		}
		as = strings.TrimRight(base, "/") + "/oauth/2.1"
	}
	if c.AuthorizationServer, err = absoluteURL(as); err != nil {
		return c, errorf(EnvAuthorizationServer, "%v", err)
	}

	if v := get(EnvASMetadataURL, ""); v != "" {
		if c.ASMetadataURL, err = absoluteURL(v); err != nil {
			return c, errorf(EnvASMetadataURL, "%v", err)
		}
	}

	c.AuthzTimeout = DefaultAuthzTimeout
	if v := get(EnvAuthzTimeout, ""); v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d <= 0 || d > time.Minute {
			return c, errorf(EnvAuthzTimeout, "must be a duration between 1ms and 1m such as 2s, got %q", v)
		}
		c.AuthzTimeout = d
	}

	for _, o := range strings.FieldsFunc(get(EnvAllowedOrigins, ""), isListSep) {
		n, oerr := origin(o)
		if oerr != nil {
			return c, errorf(EnvAllowedOrigins, "%q: %v", o, oerr)
		}
		if !slices.Contains(c.AllowedOrigins, n) {
			c.AllowedOrigins = append(c.AllowedOrigins, n)
		}
	}

	if v := get(EnvToolsListAll, ""); v != "" {
		if c.ToolsListAll, err = strconv.ParseBool(v); err != nil {
			return c, errorf(EnvToolsListAll, "must be true or false, got %q", v)
		}
	}

	if v := get(EnvLogLevel, ""); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return c, errorf(EnvLogLevel, "must be debug, info, warn or error, got %q", v)
		}
	}

	if err := c.loadAuthzTLS(func(name string) string { return get(name, "") }); err != nil {
		return c, err
	}

	if c.RedisURL = get(EnvRedisURL, ""); c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			return c, errorf(EnvRedisURL, "%s", strings.ReplaceAll(err.Error(), c.RedisURL, MaskURL(c.RedisURL)))
		}
	}
	if c.RateLimit, err = ratelimit.ParseRate(get(EnvRateLimit, "")); err != nil {
		return c, errorf(EnvRateLimit, "%v", err)
	}
	if v := get(EnvRateLimitBurst, ""); v != "" {
		n, perr := strconv.Atoi(v)
		switch {
		case perr != nil || n < 1 || n > ratelimit.MaxCount:
			return c, errorf(EnvRateLimitBurst, "must be a whole number of requests from 1 to %d, got %q", ratelimit.MaxCount, v)
		case !c.RateLimit.Enabled():
			return c, errorf(EnvRateLimitBurst, "set, but %s is off; set %s too (e.g. 600/m)", EnvRateLimit, EnvRateLimit)
		}
		c.RateLimit.Burst = n
	}
	if v := get(EnvDecisionCacheTTL, ""); v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d < 0 || d > MaxDecisionCacheTTL {
			return c, errorf(EnvDecisionCacheTTL, "must be a duration from 0 (off) to %s such as 1s, got %q", MaxDecisionCacheTTL, v)
		}
		c.DecisionCacheTTL = d
	}
	c.MaxInFlight = DefaultMaxInFlight
	if v := get(EnvMaxInFlight, ""); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > 1_000_000 {
			return c, errorf(EnvMaxInFlight, "must be a whole number of requests from 1 to 1000000, got %q", v)
		}
		c.MaxInFlight = n
	}
	c.BodyTimeout = DefaultBodyTimeout
	if v := get(EnvBodyTimeout, ""); v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d < time.Millisecond || d > 5*time.Minute {
			return c, errorf(EnvBodyTimeout, "must be a duration from 1ms to 5m such as 10s, got %q", v)
		}
		c.BodyTimeout = d
	}
	c.MaxConnections = DefaultMaxConnections
	if v := get(EnvMaxConnections, ""); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 0 || n > 10_000_000 {
			return c, errorf(EnvMaxConnections, "must be a whole number of connections, 0 for no bound, got %q", v)
		}
		c.MaxConnections = n
	}
	return c, nil
}

// loadAuthzTLS reads the AUTHZ_TLS_* files now, so that a missing or mismatched
// one stops the start with its variable's name instead of failing every call.
func (c *Config) loadAuthzTLS(get func(string) string) error {
	c.AuthzTLSCA, c.AuthzTLSCert, c.AuthzTLSKey, c.AuthzTLSServerName = get(EnvAuthzTLSCA), get(EnvAuthzTLSCert), get(EnvAuthzTLSKey), get(EnvAuthzTLSServerName)
	if c.AuthzTLSCA == "" && c.AuthzTLSCert == "" && c.AuthzTLSKey == "" && c.AuthzTLSServerName == "" {
		return nil
	}
	// TLS 1.3 only: authz is ours and speaks it.
	t := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.AuthzTLSServerName}
	if c.AuthzTLSCA != "" {
		b, err := os.ReadFile(c.AuthzTLSCA)
		if err != nil {
			return errorf(EnvAuthzTLSCA, "%v", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return errorf(EnvAuthzTLSCA, "%s holds no PEM certificate", c.AuthzTLSCA)
		}
	}
	switch {
	case c.AuthzTLSCert == "" && c.AuthzTLSKey != "":
		return errorf(EnvAuthzTLSCert, "must be set with %s: the gateway's client certificate (PEM file)", EnvAuthzTLSKey)
	case c.AuthzTLSCert != "" && c.AuthzTLSKey == "":
		return errorf(EnvAuthzTLSKey, "must be set with %s: its private key (PEM file)", EnvAuthzTLSCert)
	case c.AuthzTLSCert != "":
		certPEM, err := os.ReadFile(c.AuthzTLSCert)
		if err != nil {
			return errorf(EnvAuthzTLSCert, "%v", err)
		}
		keyPEM, err := os.ReadFile(c.AuthzTLSKey)
		if err != nil {
			return errorf(EnvAuthzTLSKey, "%v", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			// A fixed description, never key material.
			return errorf(EnvAuthzTLSKey, "with %s %s: %v", EnvAuthzTLSCert, c.AuthzTLSCert, err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	c.AuthzTLS = t
	return nil
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

// OneListener reports whether MCP_METRICS_LISTEN equals MCP_LISTEN: one
// listener then serves the public and the operational endpoints.
func (c Config) OneListener() bool { return c.MetricsListen == c.Listen }

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
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String(EnvListen, c.Listen),
		slog.String(EnvMetricsListen, c.MetricsListen),
		slog.String(EnvServerURL, c.ServerURL),
		slog.String(EnvAuthzAddr, c.AuthzAddr),
		slog.String(EnvScopes, strings.Join(c.Scopes, " ")),
		slog.String(EnvAuthorizationServer, c.AuthorizationServer),
		slog.String(EnvASMetadataURL, c.ASMetadataURL),
		slog.Duration(EnvAuthzTimeout, c.AuthzTimeout),
		slog.String(EnvAllowedOrigins, strings.Join(c.AllowedOrigins, ",")),
		slog.Bool(EnvToolsListAll, c.ToolsListAll),
		slog.String(EnvLogLevel, c.LogLevel.String()),
		slog.String(EnvAuthzTLSCA, c.AuthzTLSCA),
		slog.String(EnvAuthzTLSCert, c.AuthzTLSCert),
		slog.String(EnvAuthzTLSKey, c.AuthzTLSKey),
		slog.String(EnvAuthzTLSServerName, c.AuthzTLSServerName),
		slog.String(EnvRedisURL, MaskURL(c.RedisURL)),
		slog.String(EnvRateLimit, c.RateLimit.String()),
		slog.Duration(EnvDecisionCacheTTL, c.DecisionCacheTTL),
		slog.Int(EnvMaxInFlight, c.MaxInFlight),
		slog.Duration(EnvBodyTimeout, c.BodyTimeout),
		slog.Int(EnvMaxConnections, c.MaxConnections),
	)
}

func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }

// origin validates an http(s) URL with no path, query or fragment and returns it
// as scheme://host[:port], lowercased, default port dropped, as browsers send
// it in the Origin header.
func origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("must be an http or https URL such as https://mcp.example.com, got %q", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("must be scheme://host[:port] only, got %q", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("must not have a path (the gateway serves /mcp at the root), got %q", raw)
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// absoluteURL validates an absolute http(s) URL without query or fragment and
// returns it unchanged: an issuer is compared byte for byte (RFC 8414 §3.3), so a
// trailing slash is significant.
func absoluteURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("must be an absolute http or https URL without query, got %q", raw)
	}
	return raw, nil
}

// NormalizeOrigin returns a browser Origin header value in the form
// [Config.AllowedOrigins] uses (lowercase, default port dropped), or false when
// it is not an http(s) origin (e.g. "null").
func NormalizeOrigin(raw string) (string, bool) {
	o, err := origin(raw)
	return o, err == nil
}
