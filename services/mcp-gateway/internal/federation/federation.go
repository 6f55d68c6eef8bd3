package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstreamconf"
)

// Options configure [New].
type Options struct {
	// File is the validated upstreams file. Required.
	File *upstreamconf.File
	// Issuer is the iss claim of identity assertions: MCP_SERVER_URL.
	// Required when an upstream uses identity: jwt.
	Issuer string
	// Builtin are the names of the gateway's own tools, which upstream tools
	// may not take.
	Builtin []string
	// Logger receives the federation's log lines, each about one upstream
	// with upstream=NAME. Nil discards them.
	Logger *slog.Logger
	// Metrics receives the mcp_gateway_upstream_* metrics. Nil: a private
	// set.
	Metrics *metrics.Metrics
	// HTTPClient, if set, is the client of HTTP upstreams (tests).
	HTTPClient *http.Client
	// ClientVersion is the version the gateway names itself with upstream.
	ClientVersion string
}

// Federation fronts the upstreams of one file. Create it with [New], fetch
// the catalogs with [Federation.Start], hand it to the gateway (which calls
// [Federation.Install]), follow changes with [Federation.Run] and end it
// with [Federation.Close]. It is safe for concurrent use.
type Federation struct {
	file    *upstreamconf.File
	log     *slog.Logger
	metrics *metrics.Metrics
	signer  *identity.Signer
	builtin []string
	members []*member

	// cur is the routing table requests read; swapped whole.
	cur atomic.Pointer[table]

	// mu serializes catalog changes: cats, the builds, and the go-sdk
	// server's registrations.
	mu         sync.Mutex
	cats       map[*member]*upstream.Catalog
	server     *mcp.Server
	registered *table
}

// member is one upstream.
type member struct {
	conf     *upstreamconf.Upstream
	conn     upstream.Conn
	audience string
	log      *slog.Logger
	jwt      bool
}

// New opens a connection to every upstream of opts.File (stdio children are
// started; HTTP upstreams are not contacted yet) and loads the identity
// signing key when an upstream uses identity: jwt. The error names the
// upstream or key file at fault.
func New(opts Options) (*Federation, error) {
	if opts.File == nil {
		return nil, errors.New("federation: Options.File is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	f := &Federation{
		file:    opts.File,
		log:     opts.Logger,
		metrics: opts.Metrics,
		builtin: slices.Clone(opts.Builtin),
		cats:    map[*member]*upstream.Catalog{},
	}
	f.cur.Store(emptyTable())
	needSigner := false
	for i := range opts.File.Upstreams {
		needSigner = needSigner || opts.File.Upstreams[i].Identity == upstreamconf.IdentityJWT
	}
	if needSigner {
		s, err := identity.New(identity.Options{
			Issuer:           opts.Issuer,
			TTL:              opts.File.Identity.TTL,
			KeyFile:          opts.File.Identity.SigningKeyFile,
			PreviousKeyFiles: opts.File.Identity.PreviousKeyFiles,
			Logger:           opts.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		f.signer = s
	}
	for i := range opts.File.Upstreams {
		u := &opts.File.Upstreams[i]
		m := &member{conf: u, log: opts.Logger.With("upstream", u.Name), jwt: u.Identity == upstreamconf.IdentityJWT}
		m.audience = u.URL
		if !u.HTTP() {
			m.audience = identity.StdioAudience(u.Name)
		}
		uo := upstream.Options{
			Name:             u.Name,
			URL:              u.URL,
			Command:          u.Command,
			Env:              u.Env,
			Dir:              u.Dir,
			Timeout:          u.Timeout,
			MaxResponseBytes: u.MaxResponseBytes,
			MaxSessions:      u.MaxSessions,
			SessionIdle:      u.SessionIdle,
			MaxConcurrent:    u.MaxConcurrent,
			HTTPClient:       opts.HTTPClient,
			ClientVersion:    opts.ClientVersion,
			Logger:           opts.Logger,
			Metrics:          opts.Metrics.Upstream(u.Name),
		}
		if m.jwt && u.HTTP() {
			uo.GatewayIdentity = f.gatewayIdentity(m)
		}
		if u.Sessions == upstreamconf.SessionsShared {
			uo.Sessions = upstream.SessionsShared
		}
		if len(u.Headers) > 0 {
			uo.Headers = http.Header{}
			for k, v := range u.Headers {
				uo.Headers.Set(k, v)
			}
		}
		conn, err := upstream.New(uo)
		if err != nil {
			f.Close()
			return nil, err
		}
		m.conn = conn
		f.members = append(f.members, m)
		// Its up series is at 0 from Metrics.Upstream until it answers.
		for _, kind := range []string{kindTool, kindResource, kindTemplate, kindPrompt} {
			opts.Metrics.UpstreamCatalog(u.Name, kind, 0)
		}
	}
	return f, nil
}

// The principal the gateway names itself with in the identity assertions of
// the requests it makes of its own toward an HTTP upstream (discovery,
// catalog, session setup and teardown), so that an upstream verifying every
// request serves them too. An upstream tells them from a user's by this
// subject, and has no reason to let it call tools: the gateway never does.
const (
	GatewaySubject  = "mcpauthz:gateway"
	GatewayClientID = "mcpauthz-gateway"
)

// gatewayIdentity returns the assertion of the gateway itself toward m.
func (f *Federation) gatewayIdentity(m *member) func() string {
	return func() string {
		a, err := f.signer.Assertion(identity.Principal{Subject: GatewaySubject, ClientID: GatewayClientID}, m.audience)
		if err != nil {
			m.log.Error("signing the gateway's own identity assertion", "error", err)
			return ""
		}
		return a
	}
}

// Signer returns the identity signer, or nil when no upstream uses
// identity: jwt.
func (f *Federation) Signer() *identity.Signer { return f.signer }

// Scopes returns every scope the file names (upstreams' and tools'), for
// the protected resource metadata's scopes_supported.
func (f *Federation) Scopes() []string {
	var out []string
	for _, u := range f.file.Upstreams {
		out = scopes.Union(out, u.Scopes)
		names := make([]string, 0, len(u.Tools))
		for n := range u.Tools {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			out = scopes.Union(out, u.Tools[n].Scopes)
		}
	}
	return out
}

// Start fetches every upstream's catalog, each within the file's
// start_timeout, and builds the routing table. An upstream that does not
// answer is logged and left out until it does ([Federation.Run] keeps
// trying). Two upstreams (or an upstream and a built-in tool) offering the
// same name are an error, a *[CollisionError] naming both.
func (f *Federation) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	cats := make([]*upstream.Catalog, len(f.members))
	for i, m := range f.members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, f.file.StartTimeout)
			defer cancel()
			cats[i] = f.fetch(ctx, m)
		})
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.members {
		f.cats[m] = cats[i]
	}
	t, _, err := build(f.members, f.cats, f.builtin, nil, true, nil)
	if err != nil {
		return err
	}
	f.swap(t, nil)
	for _, m := range f.members {
		if f.cats[m] != nil {
			m.log.Info("upstream catalog", "entries", t.describe(m.conf.Name), "protocol_version", f.cats[m].ProtocolVersion)
		}
	}
	return nil
}

// fetch lists m's catalog, recording the outcome; nil when it failed.
func (f *Federation) fetch(ctx context.Context, m *member) *upstream.Catalog {
	cat, err := m.conn.Catalog(ctx)
	if err != nil {
		f.metrics.UpstreamRefresh(m.conf.Name, "error")
		m.log.Warn("upstream catalog unavailable; its tools, prompts and resources are left out until it answers", "error", err)
		return nil
	}
	f.metrics.UpstreamRefresh(m.conf.Name, "ok")
	return cat
}

// swap makes t the routing table, updates the catalog metrics and the
// go-sdk server's registrations. Called with f.mu held.
func (f *Federation) swap(t *table, conflicts map[string]int) {
	f.cur.Store(t)
	for name, kinds := range t.counts {
		for kind, n := range kinds {
			f.metrics.UpstreamCatalog(name, kind, n)
		}
	}
	for name, n := range conflicts {
		f.metrics.UpstreamConflicts(name, n)
	}
	f.sync()
}

// Run follows the upstreams' catalogs until ctx is done: each is fetched
// again when the upstream says a list changed, every refresh interval, and,
// while it is down, with a backoff from 1s to 30s.
func (f *Federation) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, m := range f.members {
		wg.Go(func() { f.follow(ctx, m) })
	}
	wg.Wait()
}

// Backoff bounds of catalog retries while an upstream is down.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

func (f *Federation) follow(ctx context.Context, m *member) {
	backoff := retryMin
	for {
		f.mu.Lock()
		down := f.cats[m] == nil
		f.mu.Unlock()
		var wait time.Duration
		switch {
		case down:
			wait = backoff
			backoff = min(2*backoff, retryMax)
		case m.conf.Refresh > 0:
			wait = m.conf.Refresh
			backoff = retryMin
		default:
			backoff = retryMin
		}
		var (
			tick  <-chan time.Time
			timer *time.Timer
		)
		if wait > 0 {
			timer = time.NewTimer(wait)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
		case <-m.conn.Changed():
		case <-tick:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		f.refresh(ctx, m)
	}
}

// refresh fetches m's catalog again and rebuilds the table: a newcomer
// whose name is taken is left out (logged and counted); an upstream that
// fails loses its entries until it answers again.
func (f *Federation) refresh(ctx context.Context, m *member) {
	ctx, cancel := context.WithTimeout(ctx, max(f.file.StartTimeout, m.conf.Timeout))
	defer cancel()
	cat := f.fetch(ctx, m)
	if ctx.Err() != nil && cat == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	was := f.cats[m] != nil
	f.cats[m] = cat
	t, conflicts, err := build(f.members, f.cats, f.builtin, f.cur.Load(), false, func(up, kind, name, holder string) {
		f.log.Warn("upstream entry left out: its name is taken", "upstream", up, "kind", kind, "name", name, "taken_by", holder)
	})
	if err != nil {
		// Not strict: build does not fail. Keep the table in use.
		m.log.Error("catalog rebuild failed", "error", err)
		return
	}
	f.swap(t, conflicts)
	switch {
	case cat != nil && !was:
		m.log.Info("upstream catalog", "entries", t.describe(m.conf.Name), "protocol_version", cat.ProtocolVersion)
	case cat != nil:
		m.log.Debug("upstream catalog refreshed", "entries", t.describe(m.conf.Name))
	}
}

// Close ends every upstream connection (sessions, child processes).
func (f *Federation) Close() error {
	var errs []error
	for _, m := range f.members {
		if m.conn != nil {
			errs = append(errs, m.conn.Close())
		}
	}
	return errors.Join(errs...)
}
