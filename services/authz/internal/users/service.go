package users

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/rediscache"
)

// DefaultKeyPrefix prefixes the Redis keys of cached users.
const DefaultKeyPrefix = "mcpauthz:user:"

// ServiceOptions configures a [Service].
type ServiceOptions struct {
	Client *Client
	// TTL is how long a fetched user is reused; 0 disables caching.
	TTL time.Duration
	// L1Max bounds the in-process tier; 0 disables it.
	L1Max int
	// Store is the shared tier; nil means in-process only.
	Store *rediscache.Store
	// FetchTimeout bounds one coalesced fetch, retries included. Default 10s.
	FetchTimeout time.Duration
	KeyPrefix    string
	Logger       *slog.Logger
	Metrics      *metrics.Metrics
}

// Service returns users from the cache or the user API, coalescing concurrent
// fetches of one user. It is safe for concurrent use.
type Service struct {
	o     ServiceOptions
	l1    *clockcache.Cache[*authzv1.User]
	group singleflight.Group
	salt  string
}

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
	if o.TTL > 0 {
		s.l1 = clockcache.New[*authzv1.User](o.L1Max, clockcache.Options{})
	}
	o.Metrics.RegisterL1(metrics.CacheUser, s.l1.Len, s.l1.Evictions)
	return s, nil
}

// Sweep drops expired users from L1 and returns how many it dropped.
func (s *Service) Sweep() int { return s.l1.Sweep() }

// Get returns a copy of the user the caller may modify, without organizations
// unless includeOrgs.
//
// Errors: see [Client.Fetch]; ctx's error if ctx ends while waiting. Redis failures
// are never returned.
func (s *Service) Get(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, error) {
	if !s.o.Client.Configured() {
		return nil, ErrNotConfigured
	}
	k := sha256.Sum256([]byte(s.salt + userID))
	lookups := s.o.Metrics.CacheLookups
	u, ok := s.l1.Get(k)
	if ok {
		lookups.WithLabelValues(metrics.CacheUser, metrics.TierL1, metrics.ResultHit).Inc()
	} else {
		lookups.WithLabelValues(metrics.CacheUser, metrics.TierL1, metrics.ResultMiss).Inc()
		var ran bool
		ch := s.group.DoChan(string(k[:]), func() (any, error) {
			ran = true
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.FetchTimeout)
			defer cancel()
			return s.fetch(ctx, k, userID)
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			if !ran {
				s.o.Metrics.CoalescedWaits.WithLabelValues(metrics.CacheUser).Inc()
			}
			if r.Err != nil {
				return nil, r.Err
			}
			u = r.Val.(*authzv1.User)
		}
	}
	out := proto.Clone(u).(*authzv1.User)
	if !includeOrgs {
		out.Orgs = nil
	}
	return out, nil
}

func (s *Service) fetch(ctx context.Context, k clockcache.Key, userID string) (*authzv1.User, error) {
	if u, ok := s.l1.Get(k); ok {
		return u, nil
	}
	lookups := s.o.Metrics.CacheLookups
	var redisKey string
	if s.o.Store != nil && s.o.TTL > 0 {
		redisKey = s.o.KeyPrefix + hex.EncodeToString(k[:])
		v, ok, err := s.o.Store.Get(ctx, redisKey)
		switch {
		case errors.Is(err, rediscache.ErrSkipped):
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultSkipped).Inc()
		case err != nil:
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultError).Inc()
		case ok:
			if u, exp, err := decode(v); err == nil && exp > time.Now().UnixNano() {
				lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultHit).Inc()
				s.l1.Set(k, u, exp)
				return u, nil
			}
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultMiss).Inc()
		default:
			lookups.WithLabelValues(metrics.CacheUser, metrics.TierL2, metrics.ResultMiss).Inc()
		}
	}
	u, err := s.o.Client.Fetch(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("fetching user: %w", err)
	}
	if s.o.TTL <= 0 {
		return u, nil
	}
	exp := time.Now().Add(s.o.TTL)
	s.l1.Set(k, u, exp.UnixNano())
	if redisKey != "" {
		wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
		if err == nil {
			v := strconv.AppendInt(make([]byte, 0, 16+len(wire)), exp.UnixMilli(), 10)
			_ = s.o.Store.Set(ctx, redisKey, append(append(v, '\n'), wire...), s.o.TTL)
		}
	}
	return u, nil
}

// decode reads an L2 entry: "<expiry unix ms>\n<User wire bytes>".
func decode(v []byte) (*authzv1.User, int64, error) {
	for i, b := range v {
		if b != '\n' {
			continue
		}
		ms, err := strconv.ParseInt(string(v[:i]), 10, 64)
		if err != nil {
			return nil, 0, err
		}
		u := &authzv1.User{}
		if err := proto.Unmarshal(v[i+1:], u); err != nil {
			return nil, 0, err
		}
		return u, time.UnixMilli(ms).UnixNano(), nil
	}
	return nil, 0, errors.New("no expiry header")
}
