// Package redisconn is how the services talk to Redis: it opens a client from a
// REDIS_URL with the short, retry-free timeouts a cache or a rate limiter needs,
// routes go-redis's own log lines into the service's structured log, and holds
// the [Breaker] with which a service stops calling a Redis that just failed.
//
// Redis is never essential to a request here: authz's shared cache tier and the
// gateway's shared rate limits fall back to in-process state, so a slow or dead
// Redis must cost a request one short timeout at most, and then nothing while
// the breaker is open.
//
// # URLs
//
// [Open] is the one place a REDIS_URL becomes a client, and [Parse] the one
// place that says what it names; both take go-redis's own URL forms:
//
//   - a single node, redis[s]://[user:password@]host:port[/db] (go-redis
//     ParseURL);
//   - a Redis Cluster, the same with every other seed node as an addr
//     parameter, redis://h1:7000?addr=h2:7001&addr=h3:7002 (ParseClusterURL);
//     only database 0 exists there;
//   - a primary managed by Sentinel, the Sentinels' addresses with
//     master_name, redis://s1:26379?master_name=mymaster&addr=s2:26379
//     (ParseFailoverURL). Here the URL's user and password authenticate to
//     the Sentinels; the primary's own ACL user and password are the username
//     and password parameters.
//
// A URL with master_name is Sentinel; with addr and no master_name it is a
// Cluster; otherwise a single node. rediss:// means TLS, verified against the
// system's roots (SSL_CERT_FILE or SSL_CERT_DIR can name a private CA), each
// server under the host it is dialled at.
//
// Open returns a redis.UniversalClient, the interface go-redis's single-node,
// Cluster and Sentinel clients share; callers use nothing else, and none of
// their operations touches two keys, so none needs a hash tag.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/mcpauthz/mcpauthz/internal/ratelog"
)

// Options say how a service uses Redis.
type Options struct {
	// Timeout bounds every command, waiting for a pooled connection included;
	// connecting gets at least 250ms. Required.
	Timeout time.Duration
}

// minDialTimeout keeps a very short command timeout from failing every
// connection attempt: a TCP (and TLS) handshake needs a round trip or two more
// than a command.
const minDialTimeout = 250 * time.Millisecond

// Topology is the kind of Redis deployment a URL names.
type Topology int

// The topologies.
const (
	Single Topology = iota
	Cluster
	Sentinel
)

// String returns the topology's name in logs: "single", "cluster" or
// "sentinel".
func (t Topology) String() string {
	switch t {
	case Cluster:
		return "cluster"
	case Sentinel:
		return "sentinel"
	}
	return "single"
}

// parsed is a URL as go-redis reads it: exactly one of the option sets is
// set, as the topology says.
type parsed struct {
	topology Topology
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
}

// Parse reports which topology rawURL names (see the package documentation),
// having checked it as [Open] reads it. The error never holds a password.
func Parse(rawURL string) (Topology, error) {
	p, err := parse(rawURL)
	if err != nil {
		return 0, err
	}
	return p.topology, nil
}

func parse(rawURL string) (*parsed, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the whole URL, password included
		}
		return nil, fmt.Errorf("parsing the Redis URL: %w", err)
	}
	q := u.Query()
	p := &parsed{}
	switch {
	case q.Has("master_name"):
		p.topology = Sentinel
		p.failover, err = redis.ParseFailoverURL(rawURL)
		if err == nil && p.failover.MasterName == "" {
			err = errors.New("master_name is empty")
		}
	case q.Has("addr"):
		p.topology = Cluster
		// ParseClusterURL ignores the path; a database other than 0, which a
		// Cluster does not have, would otherwise be silently dropped.
		if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
			err = fmt.Errorf("a Redis Cluster has only database 0, not %q", db)
			break
		}
		p.cluster, err = redis.ParseClusterURL(rawURL)
	default:
		p.single, err = redis.ParseURL(rawURL)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the Redis URL (%s): %w", p.topology, scrub(err, u))
	}
	return p, nil
}

// scrub returns err with every password u holds (its user info, a password
// parameter) masked, in case a go-redis error quotes one.
func scrub(err error, u *url.URL) error {
	msg := err.Error()
	var secrets []string
	if pw, ok := u.User.Password(); ok && pw != "" {
		secrets = append(secrets, pw, url.PathEscape(pw), url.QueryEscape(pw))
	}
	for _, pw := range u.Query()["password"] {
		if pw != "" {
			secrets = append(secrets, pw, url.QueryEscape(pw))
		}
	}
	changed := false
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			msg, changed = strings.ReplaceAll(msg, s, "xxxxx"), true
		}
	}
	if !changed {
		return err
	}
	return errors.New(msg)
}

// Open returns a client for rawURL, which it does not contact: Redis being down
// at start is an outage like any other, and go-redis connects (and reconnects)
// on demand. Commands are bounded by o.Timeout, including the deadline of their
// context, and never retried on a single node or a Sentinel-managed primary:
// a retry would blow the caller's budget, and the caller's fallback is the
// retry. A Cluster client follows MOVED and ASK redirections (up to go-redis's
// max_redirects, 3), and retries a failed node once, within the same deadline;
// after a failed command, or a failed connection to a node (a subscription
// reconnecting), it reloads the slot map, so that a failover is seen when
// the cluster has promoted a replica rather than at go-redis's next periodic
// reload. The pool holds go-redis's default number of connections (per node)
// unless the URL sets pool_size; see [PoolSize].
//
// It returns an error if rawURL is not a Redis URL in one of the forms of the
// package documentation, or o.Timeout is not positive. The error does not
// repeat the URL, nor any password in it.
func Open(rawURL string, o Options) (redis.UniversalClient, error) {
	if o.Timeout <= 0 {
		return nil, errors.New("redisconn: Options.Timeout must be positive")
	}
	p, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	// Per-command contexts carry the caller's deadline; without
	// ContextTimeoutEnabled go-redis would ignore it in favour of its socket
	// timeouts. One dial attempt: go-redis would otherwise try five times,
	// 100ms apart, for a server that refused the first.
	dial := max(o.Timeout, minDialTimeout)
	// Neither CLIENT SETINFO nor maintenance notifications serve a cache, and
	// each would add a command to every new connection.
	noMaint := func() *maintnotifications.Config {
		return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	switch p.topology {
	case Cluster:
		opt := p.cluster
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = dial, o.Timeout, o.Timeout, o.Timeout
		opt.DialerRetries = 1
		opt.MaxRetries = -1
		opt.DisableIdentity = true
		opt.MaintNotificationsConfig = noMaint()
		perNodeServerName(opt.TLSConfig)
		if opt.PoolSize <= 0 {
			opt.PoolSize = defaultPoolSize()
		}
		c := redis.NewClusterClient(opt)
		c.AddHook(reloadOnFailure{c})
		// A subscription reconnects through a node's own client, not
		// through the Cluster client's hooks: without this, one on a dead
		// primary would keep dialling it until some command failed.
		c.OnNewNode(func(node *redis.Client) { node.AddHook(reloadOnDialFailure{c}) })
		return c, nil
	case Sentinel:
		opt := p.failover
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = dial, o.Timeout, o.Timeout, o.Timeout
		opt.DialerRetries = 1
		opt.MaxRetries = -1
		opt.DisableIdentity = true
		perNodeServerName(opt.TLSConfig)
		if opt.PoolSize <= 0 {
			opt.PoolSize = defaultPoolSize()
		}
		return redis.NewFailoverClient(opt), nil
	}
	opt := p.single
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = dial, o.Timeout, o.Timeout, o.Timeout
	opt.DialerRetries = 1
	opt.MaxRetries = -1
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = noMaint()
	if opt.PoolSize <= 0 {
		opt.PoolSize = defaultPoolSize()
	}
	return redis.NewClient(opt), nil
}

// perNodeServerName makes a TLS client of several servers verify each
// server's certificate under the host it dials. go-redis's Cluster and
// Sentinel URL parsers set the first host of the URL as the name to verify
// every server against, which a Sentinel-named primary or a Cluster node
// elsewhere would fail unless its certificate also named that host; with
// no name, crypto/tls takes it from the address dialled.
func perNodeServerName(c *tls.Config) {
	if c != nil {
		c.ServerName = ""
	}
}

// reloadOnFailure is a hook of a Cluster client that reloads the slot map
// when a command or a pipeline fails in a way a changed topology explains.
//
// go-redis reloads on MOVED and READONLY, which only a live node sends, and
// otherwise once a minute: when a primary dies, its slots would keep pointing
// at it (every command for them failing) until that minute ran out, however
// soon the cluster promoted a replica.
type reloadOnFailure struct{ c *redis.ClusterClient }

func (h reloadOnFailure) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if topologyError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadOnFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if topologyError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

// reloadOnDialFailure is a hook of each node's client in a Cluster client
// that reloads the slot map when a connection to the node cannot be made. A
// subscription reconnects through the node's client, not through the
// Cluster client's hooks, to the node its channel's slot pointed at: without
// this, a subscription on a dead primary would keep dialling it until a
// command failed somewhere or the periodic reload came.
type reloadOnDialFailure struct{ c *redis.ClusterClient }

func (h reloadOnDialFailure) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && !errors.Is(err, context.Canceled) {
			h.c.ReloadState(ctx)
		}
		return conn, err
	}
}

func (h reloadOnDialFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h reloadOnDialFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// topologyError reports whether err may mean a node died or the cluster
// changed: a connection that failed or timed out, or a reply saying the
// cluster or a primary is down. A reply of any other kind (redis.Nil
// included) came from a live node that had the slot.
func topologyError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, prefix := range []string{"CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "LOADING"} {
			if strings.HasPrefix(msg, prefix) {
				return true
			}
		}
		return false
	}
	// A dial, read or write that failed or timed out, or a pool that could
	// not give a connection.
	return true
}

// defaultPoolSize is go-redis's default, made explicit so [PoolSize] knows it.
func defaultPoolSize() int { return 10 * runtime.GOMAXPROCS(0) }

// PoolSize returns the most connections c keeps open to one Redis server (one
// node of a Cluster), for callers that bound their own concurrency by it.
func PoolSize(c redis.UniversalClient) int {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().PoolSize
	case *redis.ClusterClient:
		return c.Options().PoolSize
	}
	return defaultPoolSize()
}

// DriverLogger adapts logger to go-redis's process-wide logger
// (redis.SetLogger), so the driver's own messages about dial failures,
// reconnects and the pool land in the structured log at debug level instead of
// as bare lines on stderr.
func DriverLogger(logger *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return driverLogger{logger}
}

type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Printf(ctx context.Context, format string, v ...any) {
	d.l.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// LogEvery is the least time between two Redis failures a [Breaker] lets its
// owner log: an outage costs one log line per period, not one per request.
const LogEvery = 10 * time.Second

// A Breaker keeps a service from calling Redis for a while after a call
// failed, so that during an outage requests skip Redis at once instead of each
// waiting out a timeout, and says which failures to log. It is safe for
// concurrent use.
type Breaker struct {
	backoff time.Duration
	logs    ratelog.Limiter
	until   atomic.Int64 // unix nanoseconds until which Redis is skipped
	now     func() time.Time
}

// NewBreaker returns a breaker that skips Redis for backoff after each
// failure.
func NewBreaker(backoff time.Duration) *Breaker {
	return &Breaker{backoff: backoff, logs: ratelog.Limiter{Every: LogEvery}, now: time.Now}
}

// Skip reports whether Redis should not be called now: less than the backoff
// has passed since the last failure.
func (b *Breaker) Skip() bool {
	return b.now().UnixNano() < b.until.Load()
}

// Fail records a failed call: Redis is skipped for the backoff from now. It
// reports whether to log this failure (one per [LogEvery]) and, if so, how
// many failures went unlogged since the last one that was. The caller decides
// what is a failure of Redis: a call that failed because its caller went away
// is not one.
func (b *Breaker) Fail() (log bool, suppressed int64) {
	now := b.now()
	b.until.Store(now.Add(b.backoff).UnixNano())
	return b.logs.AllowAt(now)
}
