package users

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/admission"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/flight"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
)

// DefaultKeyPrefix prefixes the Redis keys of cached users.
const DefaultKeyPrefix = "mcpauthz:user:"

// ServiceOptions configures a [Service].
type ServiceOptions struct {
	Client *Client
	// TTL is how long a fetched user is reused; 0 disables caching users.
	TTL time.Duration
	// NegativeTTL is how long "no such user" (a 404 from the user API, and only
	// that) is reused; 0 disables it. Keep it short: a user created meanwhile
	// stays unknown here for up to this long.
	NegativeTTL time.Duration
	// L1Max bounds the in-process tier; 0 disables it.
	L1Max int
	// Store is the shared tier; nil means in-process only.
	Store *rediscache.Store
	// Limiter bounds user API calls in flight; nil means no bound.
	Limiter *admission.Limiter
	// FetchTimeout bounds one coalesced fetch, retries included. Default 10s.
	FetchTimeout time.Duration
	KeyPrefix    string
	Logger       *slog.Logger
	Metrics      *metrics.Metrics
}

// Service returns users from the cache or the user API, coalescing concurrent
// fetches of one user: a fetch whose every caller has gone before the user API
// call started stops there. It is safe for concurrent use.
type Service struct {
	o       ServiceOptions
	l1      *clockcache.Cache[key, *authzv1.User]
	flights flight.Group[key, cached]
	salt    string
}

// cached is a user (or notFound) and when its cache entry ends: zero when it
// was not cached.
type cached struct {
	u     *authzv1.User
	until time.Time
}

// key is a user's cache key: SHA-256 over the user API's URL and the user ID.
type key = [sha256.Size]byte

// notFound is the cached answer for a user the user API does not know. Only its
// identity matters; it never leaves this package.
var notFound = &authzv1.User{}

// NewService returns a service. It returns an error if Client or Metrics is nil.
func NewService(o ServiceOptions) (*Service, error) {
	if o.Client == nil || o.Metrics == nil {
		return nil, errors.New("users: Client and Metrics are required")
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, salt: o.Client.cfg.AuthURL + "\n"}
	if o.TTL > 0 || o.NegativeTTL > 0 {
		s.l1 = clockcache.New(clockcache.Options[key, *authzv1.User]{MaxEntries: o.L1Max, Hash: clockcache.DigestHash})
	}
	o.Metrics.RegisterL1(metrics.CacheUser, s.l1.Len, s.l1.Evictions)
	return s, nil
}

// Sweep drops expired users from L1 and returns how many it dropped.
func (s *Service) Sweep() int { return s.l1.Sweep() }

// Get returns a copy of the user the caller may modify, without organizations
// unless includeOrgs.
//
// Errors: see [Client.Fetch] (ErrNotFound also from the cache, for NegativeTTL);
// one unwrapping to admission.ErrBusy when Options.Limiter had no slot for the
// call; ctx's error if ctx ends while waiting. Redis failures are never returned.
func (s *Service) Get(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, error) {
	u, _, err := s.GetUntil(ctx, userID, includeOrgs)
	return u, err
}

// GetUntil is [Service.Get] that also says until when the user stays cached
// (zero when it was not cached): until then Get answers with this same user.
func (s *Service) GetUntil(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, time.Time, error) {
	if !s.o.Client.Configured() {
		return nil, time.Time{}, ErrNotConfigured
	}
	k := sha256.Sum256([]byte(s.salt + userID))
	lookups := s.o.Metrics.CacheLookups
	var c cached
	var ok bool
	c.u, c.until, ok = s.l1.GetUntil(k)
	if ok {
		lookups.WithLabelValues(metrics.CacheUser, metrics.TierL1, metrics.ResultHit).Inc()
	} else {
		lookups.WithLabelValues(metrics.CacheUser, metrics.TierL1, metrics.ResultMiss).Inc()
		var joined bool
		var err error
		c, joined, err = s.flights.Do(ctx, k, func(call *flight.Call[key, cached]) (cached, error) {
			return s.fetch(call, k, userID)
		})
		if joined {
			s.o.Metrics.CoalescedWaits.WithLabelValues(metrics.CacheUser).Inc()
		}
		if err != nil {
			return nil, time.Time{}, err
		}
	}
	if c.u == notFound {
		return nil, time.Time{}, ErrNotFound
	}
	out := proto.Clone(c.u).(*authzv1.User)
	if !includeOrgs {
		out.Orgs = nil
	}
	return out, c.until, nil
}

// fetch runs once per user at a time: L1 again, L2, then, given a slot, the user
// API. It returns notFound, not an error, for a user cached as unknown.
func (s *Service) fetch(call *flight.Call[key, cached], k key, userID string) (cached, error) {
	ctx, cancel := context.WithTimeout(call.Context(), s.o.FetchTimeout)
	defer cancel()
	if u, until, ok := s.l1.GetUntil(k); ok {
		return cached{u, until}, nil
	}
	lookups := s.o.Metrics.CacheLookups
	var redisKey string
	if s.o.Store != nil && (s.o.TTL > 0 || s.o.NegativeTTL > 0) {
		redisKey = s.o.KeyPrefix + hex.EncodeToString(k[:])
		v, ok, err := s.o.Store.Get(ctx, redisKey)
		switch {
		case errors.Is(err, rediscache.ErrSkipped), errors.Is(err, rediscache.ErrBusy):
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultSkipped).Inc()
		case err != nil:
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultError).Inc()
		case ok:
			if u, exp, err := decode(v); err == nil && exp > time.Now().UnixNano() {
				lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultHit).Inc()
				until := time.Unix(0, exp)
				if !call.Keep(func() { s.l1.Set(k, u, until) }) {
					return cached{u: u}, nil
				}
				return cached{u, until}, nil
			}
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultMiss).Inc()
		default:
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultMiss).Inc()
		}
	}
	release, err := s.o.Limiter.Acquire(ctx)
	if err != nil {
		if errors.Is(err, admission.ErrBusy) {
			return cached{}, fmt.Errorf("fetching user: %w", err)
		}
		return cached{}, err
	}
	if !call.Commit() {
		release()
		return cached{}, ctx.Err()
	}
	u, err := s.o.Client.Fetch(ctx, userID)
	release()
	ttl := s.o.TTL
	switch {
	case errors.Is(err, ErrNotFound) && s.o.NegativeTTL > 0:
		u, ttl = notFound, s.o.NegativeTTL
	case err != nil:
		return cached{}, fmt.Errorf("fetching user: %w", err)
	}
	if ttl <= 0 {
		return cached{u: u}, nil
	}
	exp := time.Now().Add(ttl)
	kept := call.Keep(func() { s.l1.Set(k, u, exp) })
	if redisKey != "" {
		if v, err := encode(u, exp); err == nil {
			_ = s.o.Store.Set(ctx, redisKey, v, ttl)
		}
	}
	if !kept {
		return cached{u: u}, nil
	}
	return cached{u, exp}, nil
}

// The L2 entry of a user is "<expiry unix ms>\n<User wire bytes>"; that of an
// unknown user "<expiry unix ms> not_found\n", whose header older versions fail to
// parse as a number and take for a miss.
const notFoundMark = " not_found"

func encode(u *authzv1.User, exp time.Time) ([]byte, error) {
	v := strconv.AppendInt(make([]byte, 0, 512), exp.UnixMilli(), 10)
	if u == notFound {
		return append(append(v, notFoundMark...), '\n'), nil
	}
	v = append(v, '\n')
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(v, u)
}

// decode reads an L2 entry (see encode); an unknown user decodes to notFound.
func decode(v []byte) (*authzv1.User, int64, error) {
	for i, b := range v {
		if b != '\n' {
			continue
		}
		header, missing := strings.CutSuffix(string(v[:i]), notFoundMark)
		ms, err := strconv.ParseInt(header, 10, 64)
		if err != nil {
			return nil, 0, err
		}
		if missing {
			return notFound, time.UnixMilli(ms).UnixNano(), nil
		}
		u := &authzv1.User{}
		if err := proto.Unmarshal(v[i+1:], u); err != nil {
			return nil, 0, err
		}
		return u, time.UnixMilli(ms).UnixNano(), nil
	}
	return nil, 0, errors.New("no expiry header")
}
