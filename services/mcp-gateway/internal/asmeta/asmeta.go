// Package asmeta serves the authorization server's metadata (RFC 8414) at the
// gateway's own /.well-known/oauth-authorization-server, for MCP clients of the
// 2025-03-26 era that look for it on the MCP server's origin. (PropelAuth's root
// URL answers 404 there; its metadata lives at the path-inserted URL.)
//
// The document is fetched from the issuer's RFC 8414 path-inserted URL, then the
// OpenID Connect discovery URLs, checked (a JSON object whose issuer is exactly
// the configured one, RFC 8414 §3.3) and cached: fresh for TTL, and served stale
// for up to StaleFor more while the authorization server cannot be reached.
// Concurrent misses share one fetch (golang.org/x/sync/singleflight), which
// runs on without a caller that stops waiting. There is one document, so it is
// held in a field rather than in a cache of entries.
package asmeta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/httperror"
)

// Defaults for [Options].
const (
	DefaultTTL          = 5 * time.Minute
	DefaultStaleFor     = time.Hour
	DefaultFetchTimeout = 5 * time.Second
	maxDocument         = 1 << 20
)

// ErrUnavailable wraps failures to reach the authorization server (network
// errors, timeouts, 5xx): the gateway answers 503.
var ErrUnavailable = errors.New("authorization server unavailable")

// ErrInvalid wraps answers that are not usable metadata (no document at any
// URL, not a JSON object, wrong issuer): the gateway answers 502.
var ErrInvalid = errors.New("authorization server metadata invalid")

// Options configures [New].
type Options struct {
	// Issuer is the authorization server's issuer identifier.
	Issuer string
	// MetadataURL, if set, is the only URL fetched, instead of those
	// [MetadataURLs] derives from Issuer. The document's issuer is still checked.
	MetadataURL string
	// Client fetches the metadata; http.DefaultClient when nil.
	Client *http.Client
	// TTL is how long a fetched document is served without refetching.
	TTL time.Duration
	// StaleFor is how much longer than TTL a document may be served while
	// refetching fails.
	StaleFor time.Duration
	// FetchTimeout bounds one fetch of all candidate URLs.
	FetchTimeout time.Duration
	// Logger logs failed fetches.
	Logger *slog.Logger
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Proxy fetches, caches and serves the metadata. It is safe for concurrent use.
type Proxy struct {
	opts   Options
	urls   []string
	flight singleflight.Group

	mu      sync.Mutex
	doc     []byte
	fetched time.Time
}

// New returns a Proxy for opts.Issuer; it fetches nothing until first asked.
func New(opts Options) *Proxy {
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.StaleFor < 0 {
		opts.StaleFor = 0
	} else if opts.StaleFor == 0 {
		opts.StaleFor = DefaultStaleFor
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	urls := MetadataURLs(opts.Issuer)
	if opts.MetadataURL != "" {
		urls = []string{opts.MetadataURL}
	}
	return &Proxy{opts: opts, urls: urls}
}

// MetadataURLs returns where to look for issuer's metadata, in order: RFC 8414
// with the well-known path inserted before the issuer's path, OpenID Connect
// discovery with the path inserted, and OpenID Connect discovery appended to
// the issuer (for an issuer without a path, the first two are the root forms).
func MetadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimRight(u.Path, "/")
	at := func(p string) string {
		v := *u
		v.Path, v.RawPath = p, ""
		return v.String()
	}
	if path == "" {
		return []string{at("/.well-known/oauth-authorization-server"), at("/.well-known/openid-configuration")}
	}
	return []string{
		at("/.well-known/oauth-authorization-server" + path),
		at("/.well-known/openid-configuration" + path),
		at(path + "/.well-known/openid-configuration"),
	}
}

// Get returns the metadata document. Errors wrap [ErrUnavailable] or
// [ErrInvalid].
func (p *Proxy) Get(ctx context.Context) ([]byte, error) {
	if doc := p.fresh(); doc != nil {
		return doc, nil
	}
	// The fetch outlives an impatient caller: others may be waiting for it.
	ch := p.flight.DoChan("", func() (any, error) {
		return p.refetch(context.WithoutCancel(ctx))
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// fresh returns the cached document if it is younger than the TTL.
func (p *Proxy) fresh() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.doc != nil && p.opts.Now().Sub(p.fetched) < p.opts.TTL {
		return p.doc
	}
	return nil
}

// refetch fetches the document and returns it, or when that fails the cached
// one if it may still be served, else the error.
func (p *Proxy) refetch(ctx context.Context) ([]byte, error) {
	if doc := p.fresh(); doc != nil {
		return doc, nil // fetched while this caller looked
	}
	fctx, cancel := context.WithTimeout(ctx, p.opts.FetchTimeout)
	doc, err := p.fetch(fctx)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	if err == nil {
		p.doc, p.fetched = doc, now
		return doc, nil
	}
	stale := p.doc != nil && now.Sub(p.fetched) < p.opts.TTL+p.opts.StaleFor
	p.opts.Logger.WarnContext(ctx, "fetching authorization server metadata failed", "issuer", p.opts.Issuer, "error", err, "serving_stale", stale)
	if stale {
		return p.doc, nil
	}
	return nil, err
}

func (p *Proxy) fetch(ctx context.Context) ([]byte, error) {
	if len(p.urls) == 0 {
		return nil, fmt.Errorf("%w: issuer %q is not a URL", ErrInvalid, p.opts.Issuer)
	}
	var notFound []string
	for _, u := range p.urls {
		doc, status, err := p.get(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("%w: GET %s: %v", ErrUnavailable, u, err)
		}
		switch {
		case status == http.StatusOK:
			if err := checkDocument(doc, p.opts.Issuer); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, u, err)
			}
			return doc, nil
		case status >= 500 || status == http.StatusTooManyRequests:
			return nil, fmt.Errorf("%w: GET %s: status %d", ErrUnavailable, u, status)
		default:
			notFound = append(notFound, fmt.Sprintf("%s: %d", u, status))
		}
	}
	return nil, fmt.Errorf("%w: no metadata at %s", ErrInvalid, strings.Join(notFound, ", "))
}

func (p *Proxy) get(ctx context.Context, u string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := p.opts.Client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxDocument+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) > maxDocument {
		return nil, res.StatusCode, fmt.Errorf("document larger than %d bytes", maxDocument)
	}
	return body, res.StatusCode, nil
}

func checkDocument(doc []byte, issuer string) error {
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(doc, &meta); err != nil || meta == nil {
		return errors.New("not a JSON object")
	}
	var got string
	if err := json.Unmarshal(meta["issuer"], &got); err != nil {
		return errors.New(`no "issuer" string`)
	}
	if got != issuer {
		return fmt.Errorf("issuer %q, want %q", got, issuer)
	}
	return nil
}

// ServeHTTP answers GET (and CORS preflight) with the cached document: 200, or
// 503 with Retry-After when the authorization server cannot be reached, or 502
// when what it serves is not valid metadata.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.Header().Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		httperror.Response{Status: http.StatusMethodNotAllowed, Description: "use GET"}.Write(w)
		return
	}
	doc, err := p.Get(r.Context())
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			httperror.Response{Status: http.StatusBadGateway, Error: "bad_gateway", Description: "the authorization server does not publish valid metadata"}.Write(w)
			return
		}
		httperror.Response{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Description: "the authorization server's metadata cannot be fetched right now", RetryAfter: 5 * time.Second}.Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(p.opts.TTL.Seconds())))
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc))
}
