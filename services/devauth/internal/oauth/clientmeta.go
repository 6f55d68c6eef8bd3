package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
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

	mu    sync.Mutex
	cache map[string]cachedClient
}

func newMetadataResolver(hc *http.Client, allowLoopback bool, now func() time.Time, scopes []string) *metadataResolver {
	if hc == nil {
		hc = &http.Client{
			Timeout: metadataFetchTime,
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
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
	return &metadataResolver{hc: hc, allowLoopback: allowLoopback, now: now, scopes: scopes, cache: map[string]cachedClient{}}
}

// dialControl refuses addresses a metadata fetch has no business reaching
// (cloud metadata services on link-local, multicast, unspecified), and
// loopback unless allowed, so a client_id URL cannot be used to probe the
// machine devauth runs on.
func dialControl(allowLoopback bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return fmt.Errorf("refusing to dial non-IP address %q", host)
		}
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
			(ip.IsLoopback() && !allowLoopback) {
			return fmt.Errorf("refusing to fetch client metadata from %s", ip)
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

func (m *metadataResolver) fetch(ctx context.Context, id string) (store.Client, error) {
	if _, err := ValidateClientIDURL(id, m.allowLoopback); err != nil {
		return store.Client{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, metadataFetchTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return store.Client{}, errors.New("client_id is not a fetchable URL")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.hc.Do(req)
	if err != nil {
		return store.Client{}, errors.New("fetching the client metadata document failed")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return store.Client{}, fmt.Errorf("fetching the client metadata document answered HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return store.Client{}, fmt.Errorf("client metadata document has Content-Type %q, want application/json", mt)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataDocument+1))
	if err != nil {
		return store.Client{}, errors.New("reading the client metadata document failed")
	}
	if len(body) > maxMetadataDocument {
		return store.Client{}, fmt.Errorf("client metadata document is larger than %d bytes", maxMetadataDocument)
	}
	return ParseClientIDDocument(id, body, m.scopes)
}
