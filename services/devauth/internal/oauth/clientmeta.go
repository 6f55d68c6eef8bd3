package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
// adopted by MCP 2025-11-25): a client_id that is an https URL names a JSON
// document with the client's metadata. These bounds follow the draft's
// advice: the document is small, fetched quickly, and cached for a while.
const (
	maxMetadataDocument = 5 << 10
	metadataFetchTime   = 5 * time.Second
	metadataCacheTTL    = 2 * time.Minute
	metadataErrorTTL    = 10 * time.Second
	metadataCacheSize   = 1000
)

type cachedClient struct {
	client  store.Client
	err     error
	expires time.Time
}

// metadataResolver fetches, validates and caches Client ID Metadata Documents.
type metadataResolver struct {
	hc            *http.Client
	allowLoopback bool
	now           func() time.Time
	scopes        []string // so documents are normalized like DCR requests
	log           *slog.Logger

	mu    sync.Mutex
	cache map[string]cachedClient
}

func newMetadataResolver(hc *http.Client, allowLoopback bool, now func() time.Time, scopes []string, log *slog.Logger) *metadataResolver {
	if hc == nil {
		hc = &http.Client{
			Timeout: metadataFetchTime,
			Transport: &http.Transport{
				// No proxy: the address checked at dial time must be the
				// document's server, not a proxy that would reach anything.
				Proxy:                 nil,
				DialContext:           (&net.Dialer{Timeout: metadataFetchTime, Control: dialControl(allowLoopback)}).DialContext,
				TLSHandshakeTimeout:   metadataFetchTime,
				ResponseHeaderTimeout: metadataFetchTime,
				MaxIdleConns:          10,
				IdleConnTimeout:       30 * time.Second,
			},
			// The document must live at the client_id URL itself; following a
			// redirect would let another origin speak for the client.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &metadataResolver{hc: hc, allowLoopback: allowLoopback, now: now, scopes: scopes, log: log, cache: map[string]cachedClient{}}
}

// refusedPrefixes are the ranges a metadata fetch has no business reaching:
// anything that is not a public unicast address. A client_id URL is chosen
// by whoever calls /authorize, so without this it could make devauth probe
// its own network (cloud metadata services, Redis, the admin ports of a
// private subnet).
var refusedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8",       // "this network" (RFC 791), includes unspecified
		"10.0.0.0/8",      // private (RFC 1918)
		"100.64.0.0/10",   // shared address space, CGNAT (RFC 6598)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata services (RFC 3927)
		"172.16.0.0/12",   // private (RFC 1918)
		"192.0.0.0/24",    // IETF protocol assignments (RFC 6890)
		"192.0.2.0/24",    // documentation (RFC 5737)
		"192.168.0.0/16",  // private (RFC 1918)
		"198.18.0.0/15",   // benchmarking (RFC 2544)
		"198.51.100.0/24", // documentation (RFC 5737)
		"203.0.113.0/24",  // documentation (RFC 5737)
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, and the broadcast address
		"::/128",          // unspecified
		"::1/128",         // loopback
		"64:ff9b::/96",    // NAT64, which reaches IPv4 space (RFC 6052)
		"64:ff9b:1::/48",  // local-use NAT64 (RFC 8215)
		"100::/64",        // discard-only (RFC 6666)
		"2001::/23",       // IETF protocol assignments, incl. Teredo (RFC 2928)
		"2001:db8::/32",   // documentation (RFC 3849)
		"2002::/16",       // 6to4, which reaches IPv4 space (RFC 3056)
		"fc00::/7",        // unique local addresses, ULA (RFC 4193)
		"fe80::/10",       // link-local
		"fec0::/10",       // site-local, deprecated (RFC 3879)
		"ff00::/8",        // multicast
	} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

// refusedAddr reports whether a metadata fetch may not connect to ip; a
// loopback address is allowed when allowLoopback is set. IPv4-mapped IPv6
// addresses are judged as the IPv4 address they carry.
func refusedAddr(ip netip.Addr, allowLoopback bool) bool {
	ip = ip.Unmap()
	if ip.Zone() != "" {
		return true // a scoped address is link-local or site-local by definition
	}
	if allowLoopback && ip.IsLoopback() {
		return false
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// dialControl refuses, at connect time, every address [refusedAddr]
// refuses. It runs on the address the name resolved to, just before the
// connection is made, so a name that resolves to a public address when
// checked and to a private one when used (DNS rebinding) gains nothing.
func dialControl(allowLoopback bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("refusing to dial %q: not an IP address and port", address)
		}
		if refusedAddr(ap.Addr(), allowLoopback) {
			return fmt.Errorf("refusing to fetch client metadata from %s: not a public address", ap.Addr())
		}
		return nil
	}
}

// ValidateClientIDURL checks a client_id URL as the CIMD draft requires:
// https (or http on loopback when allowLoopback), a path component, no
// fragment, no user info, no dot segments.
func ValidateClientIDURL(id string, allowLoopback bool) (*url.URL, error) {
	if len(id) > maxURILength {
		return nil, errors.New("client_id URL is too long")
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, errors.New("client_id is not a valid URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowLoopback && IsLoopbackHost(u.Hostname()):
	default:
		return nil, errors.New("a client_id URL must use https")
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("client_id URL has no host")
	}
	if u.User != nil || u.Fragment != "" || strings.Contains(id, "#") {
		return nil, errors.New("client_id URL must not have user info or a fragment")
	}
	if u.Path == "" || u.Path == "/" {
		return nil, errors.New("client_id URL must have a path")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, errors.New("client_id URL must not have dot segments")
		}
	}
	return u, nil
}

// clientIDDocument is the subset of the metadata document devauth reads.
type clientIDDocument struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	ClientMetadata
}

// ParseClientIDDocument validates a fetched metadata document for the client
// id it was fetched from. It returns an error when the document is not JSON,
// its client_id differs from id, it carries a client_secret or asks for a
// shared-secret auth method (the draft forbids both), or its redirect URIs
// are invalid.
func ParseClientIDDocument(id string, body []byte, supportedScopes []string) (store.Client, error) {
	var doc clientIDDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return store.Client{}, errors.New("client metadata document is not a JSON object")
	}
	if doc.ClientID != id {
		return store.Client{}, errors.New("client metadata document's client_id does not equal its URL")
	}
	if doc.ClientSecret != "" {
		return store.Client{}, errors.New("client metadata document must not contain a client_secret")
	}
	switch doc.TokenEndpointAuthMethod {
	case "", "none":
	default:
		return store.Client{}, fmt.Errorf("token_endpoint_auth_method %q is not supported for metadata-document clients (none)", doc.TokenEndpointAuthMethod)
	}
	m := doc.ClientMetadata
	if err := normalizeMetadata(&m, supportedScopes); err != nil {
		var me *MetadataError
		if errors.As(err, &me) {
			return store.Client{}, errors.New("client metadata document: " + me.Description)
		}
		return store.Client{}, err
	}
	return store.Client{
		ID: id, Name: m.ClientName, RedirectURIs: m.RedirectURIs, TokenEndpointAuthMethod: "none",
		GrantTypes: m.GrantTypes, ResponseTypes: m.ResponseTypes, Scope: m.Scope,
		ClientURI: m.ClientURI, LogoURI: m.LogoURI,
	}, nil
}

// resolve returns the client described by the document at id, from cache
// when fresh. Failures are cached briefly so a broken client cannot make
// devauth fetch on every request. Its errors are safe to show to users.
func (m *metadataResolver) resolve(ctx context.Context, id string) (store.Client, error) {
	now := m.now()
	m.mu.Lock()
	if c, ok := m.cache[id]; ok && now.Before(c.expires) {
		m.mu.Unlock()
		return c.client, c.err
	}
	m.mu.Unlock()

	c, err := m.fetch(ctx, id)
	ttl := metadataCacheTTL
	if err != nil {
		ttl = metadataErrorTTL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cache) >= metadataCacheSize {
		for k, v := range m.cache {
			if !now.Before(v.expires) {
				delete(m.cache, k)
			}
		}
		if len(m.cache) >= metadataCacheSize {
			clear(m.cache) // crude, but bounded; a dev server sees few clients
		}
	}
	m.cache[id] = cachedClient{client: c, err: err, expires: now.Add(ttl)}
	return c, err
}

// errMetadataUnavailable is what a user sees for any failure to obtain the
// document: an unreachable or refused address, a status other than 200, the
// wrong content type, a body too large. One message for all of them, so
// /authorize cannot be used to learn what answers at a URL (an open port, a
// status code, a content type); the detail goes to devauth's log.
var errMetadataUnavailable = errors.New("the client metadata document could not be fetched from the client_id URL (it must answer 200 with a JSON document of at most 5 KB)")

func (m *metadataResolver) fetch(ctx context.Context, id string) (store.Client, error) {
	if _, err := ValidateClientIDURL(id, m.allowLoopback); err != nil {
		return store.Client{}, err
	}
	body, err := m.get(ctx, id)
	if err != nil {
		m.log.Info("client metadata document not fetched", "client_id", id, "error", err.Error())
		return store.Client{}, errMetadataUnavailable
	}
	return ParseClientIDDocument(id, body, m.scopes)
}

// get fetches the document at id. Its errors are detailed, for the log only.
func (m *metadataResolver) get(ctx context.Context, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, metadataFetchTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return nil, fmt.Errorf("content type %q", mt)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataDocument+1))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if len(body) > maxMetadataDocument {
		return nil, fmt.Errorf("larger than %d bytes", maxMetadataDocument)
	}
	return body, nil
}
