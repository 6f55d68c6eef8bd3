// Package server implements the authz.v1.AuthzService gRPC handlers. It validates
// input, calls the caches and the decision rules, and is the only place where
// domain errors become gRPC status codes, each with a constant message that is safe
// to return (details go to the log, never to the caller).
//
// # INVALID_ARGUMENT
//
// Every INVALID_ARGUMENT carries one google.rpc.BadRequest detail with one field
// violation whose field is the request field at fault: token, resource,
// required_scopes, claims_format or user_id. Callers act on the field, not on the
// message: the gateway answers 401 only when it is token (the client's token is
// unusable) and treats the others as its own bug.
//
// # UNAVAILABLE for a token
//
// When Authorize cannot judge a token because the authorization server gave no
// usable answer and nothing is cached, or because too many introspections are
// already waiting for it, the UNAVAILABLE status carries one
// google.rpc.ErrorInfo detail: domain [ErrorDomain], reason
// [ReasonAuthorizationServerUnavailable] or [ReasonIntrospectionBusy], and
// metadata {"token_ref": the token's full token_ref}, the value an
// AuthorizeResponse for the token would carry. The caller can log the same
// reference for its own answer (see the tokenref package), and authz's logs
// about the failure name the token by it too.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/ratelog"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/internal/tokenref"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/admission"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/decision"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/resource"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/structjson"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokencache"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/users"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/watch"
)

// Attributes authz adds to an Authorize span (tracing on): where the token's
// introspection came from and what was decided, never the token.
const (
	attrCacheTier = attribute.Key("mcpauthz.cache_tier")
	attrDecision  = attribute.Key("mcpauthz.decision")
)

// Input limits.
const (
	MaxTokenLength  = 8 << 10
	MaxUserIDLength = 256
)

// Options configures a [Server].
type Options struct {
	Tokens  *tokencache.Cache
	Users   *users.Service
	Policy  *decision.Policy
	Metrics *metrics.Metrics
	// Watch relays invalidations to WatchInvalidations streams; it must be the
	// hub Tokens reports invalidations to.
	Watch  *watch.Hub
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Server implements authzv1.AuthzServiceServer.
type Server struct {
	authzv1.UnimplementedAuthzServiceServer

	tokens    *tokencache.Cache
	users     *users.Service
	policy    *decision.Policy
	watch     *watch.Hub
	logger    *slog.Logger
	now       func() time.Time
	decisions [8]prometheus.Counter
	// invalLogs limits "invalidation incomplete" warnings: during a Redis outage
	// every InvalidateToken would log one.
	invalLogs ratelog.Limiter

	// canon memoises canonical resources: callers ask about a handful of resources
	// (usually one), and canonicalising allocates.
	canonMu sync.RWMutex
	canon   map[string]string
}

const maxMemoisedResources = 256

// New returns a server. Tokens, Users, Policy, Metrics and Watch are required.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{tokens: o.Tokens, users: o.Users, policy: o.Policy, watch: o.Watch, logger: o.Logger, now: o.Now, canon: map[string]string{},
		invalLogs: ratelog.Limiter{Every: 5 * time.Second}}
	for _, r := range decision.Reasons() {
		s.decisions[r] = o.Metrics.Decisions.WithLabelValues(r.String())
	}
	return s
}

// The messages returned with error codes. Constant, so nothing internal leaks.
const (
	msgBadToken        = "token must be 1 to 8192 printable ASCII characters without spaces"
	msgBadResource     = "resource must be an absolute URI without a fragment (RFC 8707)"
	msgBadScopes       = "required_scopes must be at most 64 valid OAuth scope tokens"
	msgBadClaimsFormat = "claims_format must be CLAIMS_FORMAT_UNSPECIFIED, _STRUCT, _JSON or _NONE"
	msgBadUserID       = "user_id must be 1 to 256 characters from [A-Za-z0-9._~:@|+-]"
	msgUnavailable     = "authorization server unavailable; retry later"
	msgBusy            = "too many token checks waiting for the authorization server; retry later"
	msgUserBusy        = "too many user lookups waiting for the authorization server; retry later"
	msgInternal        = "internal error"
	msgUserNotFound    = "user not found"
	msgUserRateLimited = "user lookup rate limited by the authorization server; retry later"
	msgUserMisconfig   = "user lookup is misconfigured on the server"
	msgUserUnavailable = "user lookup unavailable; retry later"
	msgInvalidateLocal = "token dropped from this replica only: the shared cache is unreachable; retry"
	msgWatchClosed     = "server shutting down; watch another replica"
)

// The request fields an INVALID_ARGUMENT can name (see the package
// documentation).
const (
	FieldToken          = "token"
	FieldResource       = "resource"
	FieldRequiredScopes = "required_scopes"
	FieldClaimsFormat   = "claims_format"
	FieldUserID         = "user_id"
)

// The google.rpc.ErrorInfo of an UNAVAILABLE Authorize (see the package
// documentation).
const (
	ErrorDomain                          = "mcpauthz"
	ReasonAuthorizationServerUnavailable = "AUTHORIZATION_SERVER_UNAVAILABLE"
	ReasonIntrospectionBusy              = "INTROSPECTION_BUSY"
)

// The INVALID_ARGUMENT answers, built once: they are constant.
var (
	errBadToken        = badRequest(FieldToken, msgBadToken)
	errBadResource     = badRequest(FieldResource, msgBadResource)
	errBadScopes       = badRequest(FieldRequiredScopes, msgBadScopes)
	errBadClaimsFormat = badRequest(FieldClaimsFormat, msgBadClaimsFormat)
	errBadUserID       = badRequest(FieldUserID, msgBadUserID)
)

// badRequest returns the INVALID_ARGUMENT status for field with msg, carrying a
// google.rpc.BadRequest detail that names field.
func badRequest(field, msg string) *status.Status {
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}},
	})
	if err != nil {
		panic("server: building the " + field + " INVALID_ARGUMENT: " + err.Error()) // a constant message always marshals
	}
	return st
}

// Authorize implements authzv1.AuthzServiceServer.
func (s *Server) Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	if !validToken(req.GetToken()) {
		return nil, errBadToken.Err()
	}
	res, ok := s.canonical(req.GetResource())
	if !ok {
		return nil, errBadResource.Err()
	}
	required := req.GetRequiredScopes()
	if len(required) > scopes.MaxCount {
		return nil, errBadScopes.Err()
	}
	for _, sc := range required {
		if !scopes.Valid(sc) {
			return nil, errBadScopes.Err()
		}
	}
	format := req.GetClaimsFormat()
	if _, known := authzv1.ClaimsFormat_name[int32(format)]; !known {
		return nil, errBadClaimsFormat.Err()
	}
	k := s.tokens.Key(req.GetToken())
	found, err := s.tokens.LookupKeyed(ctx, k, req.GetToken())
	if err != nil {
		return nil, s.lookupError(ctx, err, tokencache.FullRef(k))
	}
	r, tier := found.Result, found.Tier
	out := s.policy.Decide(r, res, required, s.now())
	s.decisions[out.Reason].Inc()
	// The RPC's span (tracing on) says where the answer came from: a miss is
	// the one with an introspection span below it.
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attrCacheTier.String(tier.String()), attrDecision.String(out.Reason.String()))
	}
	resp := &authzv1.AuthorizeResponse{Allowed: out.Allowed(), TokenRef: tokencache.FullRef(k)}
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.DebugContext(ctx, "authorize", tokenref.Attr(resp.TokenRef),
			"tier", tier.String(), "decision", out.Reason.String(), "resource", res)
	}
	if out.Allowed() || out.Reason == decision.DenialInsufficientScope {
		if resp.Principal, err = principal(r, format); err != nil {
			s.logger.ErrorContext(ctx, "encoding claims", tokenref.Attr(resp.TokenRef), "err", err.Error())
			return nil, status.Error(codes.Internal, msgInternal)
		}
	}
	if !out.Allowed() {
		resp.Denial = &authzv1.Denial{
			Reason:        denialReason(out.Reason),
			MissingScopes: out.Missing,
			Description:   out.Description,
		}
		return resp, nil
	}
	until := found.Until
	if req.GetIncludeUser() {
		until = s.attachUser(ctx, resp, req.GetIncludeOrgs(), until)
	}
	if !until.IsZero() {
		// Callers that keep decisions keep them no longer than these caches
		// would give the same answer (AuthorizeResponse.reusable_until).
		resp.ReusableUntil = timestamppb.New(until)
	}
	return resp, nil
}

// attachUser adds the principal's user to resp, or says why it cannot, and
// returns until (the end of the token's cached answer) bounded by the end of
// the user's: zero when the user was not cached or could not be returned.
func (s *Server) attachUser(ctx context.Context, resp *authzv1.AuthorizeResponse, includeOrgs bool, until time.Time) time.Time {
	sub := resp.GetPrincipal().GetSubject()
	if !validUserID(sub) {
		resp.UserError = "the token has no usable subject"
		return time.Time{}
	}
	u, userUntil, err := s.users.GetUntil(ctx, sub, includeOrgs)
	if err != nil {
		st := s.userError(ctx, err)
		resp.UserError = st.Message()
		return time.Time{}
	}
	resp.User = u
	if userUntil.IsZero() || until.IsZero() {
		return time.Time{}
	}
	if userUntil.Before(until) {
		return userUntil
	}
	return until
}

// canonical returns the canonical form of a requested resource, memoised.
func (s *Server) canonical(r string) (string, bool) {
	s.canonMu.RLock()
	c, ok := s.canon[r]
	s.canonMu.RUnlock()
	if ok {
		return c, true
	}
	c, err := resource.Canonicalize(r)
	if err != nil {
		return "", false
	}
	s.canonMu.Lock()
	if len(s.canon) < maxMemoisedResources {
		s.canon[r] = c
	}
	s.canonMu.Unlock()
	return c, true
}

// principal builds the Principal of r for a response, with the claims in format.
// Struct claims are attached already encoded, as an unknown field carrying
// Principal.claims' number: on the wire this is exactly a set claims field, so
// clients decode it as usual, while the server skips decoding and re-encoding a
// Struct on every cache hit (the largest cost of a hit after gRPC itself).
// Handlers must therefore not read p.Claims. JSON claims are written straight from
// the same encoding. The error is non-nil only if the cached encoding is corrupt.
func principal(r *tokeninfo.Result, format authzv1.ClaimsFormat) (*authzv1.Principal, error) {
	p := &authzv1.Principal{
		Subject:  r.Subject,
		ClientId: r.ClientID,
		// Shared with the cache entry: the response is only marshalled, never
		// modified.
		Scopes:   r.Scopes,
		Audience: r.Audience,
		Issuer:   r.Issuer,
	}
	if r.Has&tokeninfo.HasExp != 0 {
		p.ExpiresAt = &timestamppb.Timestamp{Seconds: r.Exp}
	}
	if r.Has&tokeninfo.HasIat != 0 {
		p.IssuedAt = &timestamppb.Timestamp{Seconds: r.Iat}
	}
	if len(r.ClaimsWire) == 0 {
		return p, nil
	}
	switch format {
	case authzv1.ClaimsFormat_CLAIMS_FORMAT_NONE:
	case authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON:
		// The JSON form is about the size of the wire form it comes from.
		j, err := structjson.Append(make([]byte, 0, len(r.ClaimsWire)), r.ClaimsWire)
		if err != nil {
			return nil, err
		}
		p.ClaimsJson = j
	default:
		f := make([]byte, 0, 1+binary.MaxVarintLen64+len(r.ClaimsWire))
		f = protowire.AppendTag(f, claimsField, protowire.BytesType)
		f = protowire.AppendBytes(f, r.ClaimsWire)
		p.ProtoReflect().SetUnknown(protoreflect.RawFields(f))
	}
	return p, nil
}

var claimsField = (&authzv1.Principal{}).ProtoReflect().Descriptor().Fields().ByName("claims").Number()

func denialReason(r decision.Reason) authzv1.DenialReason {
	switch r {
	case decision.DenialInactive:
		return authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE
	case decision.DenialExpired:
		return authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED
	case decision.DenialAudienceMismatch:
		return authzv1.DenialReason_DENIAL_REASON_AUDIENCE_MISMATCH
	case decision.DenialInsufficientScope:
		return authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE
	case decision.DenialIssuerMismatch:
		return authzv1.DenialReason_DENIAL_REASON_ISSUER_MISMATCH
	case decision.DenialNotYetValid:
		return authzv1.DenialReason_DENIAL_REASON_TOKEN_NOT_YET_VALID
	}
	return authzv1.DenialReason_DENIAL_REASON_UNSPECIFIED
}

// lookupError maps a failed lookup of the token whose token_ref is ref.
func (s *Server) lookupError(ctx context.Context, err error, ref string) error {
	switch {
	case errors.Is(err, introspect.ErrUnavailable):
		// Logged (rate-limited) by the cache, with the failure kind.
		noRetry(ctx)
		return unavailable(msgUnavailable, ReasonAuthorizationServerUnavailable, ref)
	case errors.Is(err, admission.ErrBusy):
		// Logged (rate-limited) by the cache. Another replica's authorization
		// server is the same one: do not send the flood there too.
		noRetry(ctx)
		return unavailable(msgBusy, ReasonIntrospectionBusy, ref)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	s.logger.ErrorContext(ctx, "token lookup failed", "err", err.Error())
	return status.Error(codes.Internal, msgInternal)
}

// unavailable returns the UNAVAILABLE status with msg for the token whose
// token_ref is ref, with the ErrorInfo detail the package documentation
// describes.
func unavailable(msg, reason, ref string) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{
		Reason:   reason,
		Domain:   ErrorDomain,
		Metadata: map[string]string{tokenref.Key: ref},
	})
	if err != nil {
		// An ErrorInfo of constant strings and a hex string always marshals.
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}

// GetUser implements authzv1.AuthzServiceServer.
func (s *Server) GetUser(ctx context.Context, req *authzv1.GetUserRequest) (*authzv1.GetUserResponse, error) {
	if !validUserID(req.GetUserId()) {
		return nil, errBadUserID.Err()
	}
	u, err := s.users.Get(ctx, req.GetUserId(), req.GetIncludeOrgs())
	if err != nil {
		st := s.userError(ctx, err)
		if st.Code() == codes.Unavailable {
			noRetry(ctx)
		}
		return nil, st.Err()
	}
	return &authzv1.GetUserResponse{User: u}, nil
}

// noRetry asks the caller's gRPC client not to retry this UNAVAILABLE answer
// (gRFC A6 server pushback: a negative grpc-retry-pushback-ms trailer). The
// gateway retries UNAVAILABLE on another replica, which is right when a
// replica dies but wrong when the authorization server is down: every replica
// would ask it again, multiplying its load during the outage and the caller's
// wait. A replica that is gone sends no trailer, so that retry still happens.
func noRetry(ctx context.Context) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", "-1"))
}

func (s *Server) userError(ctx context.Context, err error) *status.Status {
	switch {
	case errors.Is(err, users.ErrNotFound):
		return status.New(codes.NotFound, msgUserNotFound)
	case errors.Is(err, users.ErrRateLimited):
		return status.New(codes.ResourceExhausted, msgUserRateLimited)
	case errors.Is(err, users.ErrNotConfigured):
		return status.New(codes.FailedPrecondition, users.ErrNotConfigured.Error())
	case errors.Is(err, users.ErrInvalidID):
		return errBadUserID
	case errors.Is(err, admission.ErrBusy):
		return status.New(codes.Unavailable, msgUserBusy)
	case errors.Is(err, users.ErrUpstreamAuth):
		// Logged by the client as a misconfigured key.
		return status.New(codes.Internal, msgUserMisconfig)
	case errors.Is(err, users.ErrUnavailable):
		s.logger.WarnContext(ctx, "user lookup failed", "err", err.Error())
		return status.New(codes.Unavailable, msgUserUnavailable)
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	s.logger.ErrorContext(ctx, "user lookup failed", "err", err.Error())
	return status.New(codes.Internal, msgInternal)
}

// InvalidateToken implements authzv1.AuthzServiceServer.
func (s *Server) InvalidateToken(ctx context.Context, req *authzv1.InvalidateTokenRequest) (*authzv1.InvalidateTokenResponse, error) {
	if !validToken(req.GetToken()) {
		return nil, errBadToken.Err()
	}
	if err := s.tokens.Invalidate(ctx, req.GetToken()); err != nil {
		if ok, suppressed := s.invalLogs.Allow(); ok {
			s.logger.WarnContext(ctx, "invalidation incomplete", "err", err.Error(), "suppressed_since_last", suppressed)
		}
		return nil, status.Error(codes.Unavailable, msgInvalidateLocal)
	}
	return &authzv1.InvalidateTokenResponse{}, nil
}

// WatchInvalidations implements authzv1.AuthzServiceServer. The stream starts
// with a reset, then carries every invalidation this replica hears of (its own,
// and every replica's through Redis) and a reset whenever it may have missed
// some. It ends with UNAVAILABLE when the server shuts down, so the caller
// watches another replica, or when the caller goes away.
func (s *Server) WatchInvalidations(_ *authzv1.WatchInvalidationsRequest, stream grpc.ServerStreamingServer[authzv1.WatchInvalidationsResponse]) error {
	ctx := stream.Context()
	w := s.watch.Subscribe()
	defer w.Close()
	s.logger.DebugContext(ctx, "invalidation watch opened", "peer", peerAddr(ctx))
	for {
		ev, err := w.Next(ctx)
		switch {
		case errors.Is(err, watch.ErrClosed):
			return status.Error(codes.Unavailable, msgWatchClosed)
		case err != nil:
			s.logger.DebugContext(ctx, "invalidation watch closed by the caller", "peer", peerAddr(ctx))
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&authzv1.WatchInvalidationsResponse{TokenRef: ev.TokenRef, Reset_: ev.Reset}); err != nil {
			return err
		}
	}
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// validToken accepts 1 to MaxTokenLength visible ASCII characters: every bearer
// token syntax (RFC 6750 b64token, JWTs, opaque strings) fits, and anything else
// (spaces, control bytes, UTF-8) is a client bug or an attack.
func validToken(t string) bool {
	if t == "" || len(t) > MaxTokenLength {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x21 || t[i] > 0x7e {
			return false
		}
	}
	return true
}

func validUserID(id string) bool {
	if id == "" || len(id) > MaxUserIDLength || strings.Trim(id, ".") == "" {
		// "." and ".." would walk the user API's path.
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == '~' || c == ':' || c == '@' || c == '|' || c == '+' || c == '-':
		default:
			return false
		}
	}
	return true
}
