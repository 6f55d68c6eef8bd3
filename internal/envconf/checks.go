package envconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/redisconn"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
)

// Check validates (and may normalise) the value of a variable declared with
// `check:"name"`. String applies to a string variable, List to a list; a nil
// one means the check does not apply to that type.
type Check struct {
	String func(string) (string, error)
	List   func([]string) ([]string, error)
}

// Checks are the shared validators, by the name the check tag uses.
var Checks = map[string]Check{
	// listen: host:port or :port, port 0 to 65535 (0: any free port).
	"listen": {String: func(v string) (string, error) { return v, ListenAddr(v) }},
	// url: an absolute http(s) URL with a host, without user info (credentials
	// have variables of their own) or fragment.
	"url": {String: func(v string) (string, error) { return v, HTTPURL(v) }},
	// baseurl: a url that other URLs are built on, or an issuer (RFC 8414
	// §2): no query either.
	"baseurl": {String: func(v string) (string, error) { return v, BaseURL(v) }},
	// origin: scheme://host[:port] only, normalised as browsers send it in
	// the Origin header (lowercase, default port dropped).
	"origin": {
		String: Origin,
		List: func(in []string) ([]string, error) {
			var out []string
			for _, o := range in {
				n, err := Origin(o)
				if err != nil {
					return nil, fmt.Errorf("%q: %v", o, err)
				}
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
			return out, nil
		},
	},
	// redisurl: a Redis URL in one of the forms redisconn opens (a single
	// node, a Cluster, a Sentinel-managed primary); an error never shows a
	// password.
	"redisurl": {String: func(v string) (string, error) { return v, RedisURL(v) }},
	// scopes: at least one RFC 6749 scope-token, within authz's limits
	// (package scopes).
	"scopes": {List: func(in []string) ([]string, error) {
		if len(in) == 0 {
			return nil, errors.New("must name at least one scope")
		}
		for _, s := range in {
			if err := scopes.Check(s); err != nil {
				return nil, err
			}
		}
		return in, scopes.CheckCount(in)
	}},
}

// ListenAddr returns an error unless v is host:port or :port with a port
// from 0 to 65535 (0 asks the kernel for any free port).
func ListenAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil || port == "" {
		return fmt.Errorf("%q is not host:port or :port (e.g. :8000, 127.0.0.1:8000, 127.0.0.1:0)", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has a port outside 0 to 65535", v)
	}
	return nil
}

// Port returns the port of a listen address such as ":8000" or
// "127.0.0.1:0", or -1 when it has none.
func Port(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return p
}

// HTTPURL returns an error unless v is an absolute http or https URL with a
// host, without user info or fragment.
func HTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", v)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry credentials", MaskURL(v))
	}
	if u.Fragment != "" || strings.HasSuffix(v, "#") {
		return fmt.Errorf("%q must not have a fragment", v)
	}
	return nil
}

// BaseURL is [HTTPURL] without a query either: the URL of an authorization
// server that other URLs are built on, or an issuer (RFC 8414 §2).
func BaseURL(v string) error {
	if err := HTTPURL(v); err != nil {
		return err
	}
	if u, _ := url.Parse(v); u.RawQuery != "" || u.ForceQuery {
		return fmt.Errorf("%q must not have a query", v)
	}
	return nil
}

// Origin validates an http(s) URL with no path, query or fragment and
// returns it as scheme://host[:port], lowercased, default port dropped, as
// browsers send it in the Origin header.
func Origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("must be an http or https URL such as https://mcp.example.com, got %q", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("must be scheme://host[:port] only, got %q", MaskURL(raw))
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("must not have a path, got %q", raw)
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

// RedisURL returns an error unless v is a Redis URL that redisconn.Open
// takes: a single node (redis[s]://[user:password@]host:port[/db]), a
// Cluster (addr parameters) or a Sentinel-managed primary (master_name), in
// go-redis's URL forms, so that a URL passes this check exactly when the
// service can open it. The error never holds a password. Connecting is the
// Redis client's job.
func RedisURL(v string) error {
	if _, err := redisconn.Parse(v); err != nil {
		return errors.New(strings.ReplaceAll(err.Error(), v, MaskURL(v)))
	}
	return nil
}

// MaskURL hides the passwords of a URL for printing it: the user info's, as
// in redis://user:pass@host/0, and a password parameter's, which is where
// go-redis's Sentinel form takes the primary's password
// (redis://s1:26379?master_name=m&password=pass). An unparseable URL is shown
// as "<unparseable>", since where its password is cannot be told.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable>"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	if u.RawQuery != "" {
		// Parameter by parameter, so that the others keep their order and
		// spelling.
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			switch name, err := url.QueryUnescape(k); {
			case err != nil:
				params[i] = "xxxxx" // go-redis would refuse it; whose value is it?
			case name == "password":
				params[i] = "password=xxxxx"
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	return u.String()
}

// Mask hides a secret but says whether it is set: "<set>", or "" for an
// empty one.
func Mask(s string) string {
	if s == "" {
		return ""
	}
	return "<set>"
}

// KeyPair reads a PEM certificate and its private key from the files that
// variables certVar and keyVar name. A file that cannot be read is an [*Error]
// naming its variable; a key that does not match the certificate names
// keyVar. Errors never hold key material.
func KeyPair(certVar, certFile, keyVar, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, Errorf(certVar, "%v", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, Errorf(keyVar, "%v", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// tls's errors are fixed descriptions, never key material.
		return tls.Certificate{}, Errorf(keyVar, "with %s %s: %v", certVar, certFile, err)
	}
	return pair, nil
}

// CertPool reads PEM CA certificates from the file variable name names. A
// file that cannot be read, or holds no certificate, is an [*Error] naming
// the variable.
func CertPool(name, file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, Errorf(name, "%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, Errorf(name, "%s holds no PEM certificate", file)
	}
	return pool, nil
}
