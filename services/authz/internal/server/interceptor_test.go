package server

import (
	"context"
	"log/slog"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

func TestInterceptorRecoversAndCounts(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	ic := UnaryInterceptor(m, slog.New(slog.DiscardHandler))
	info := &grpc.UnaryServerInfo{FullMethod: authzv1.AuthzService_Authorize_FullMethodName}
	_, err := ic(t.Context(), nil, info, func(context.Context, any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != msgInternal {
		t.Fatalf("panicking handler: %v, want Internal with a constant message", err)
	}
	_, _ = ic(t.Context(), nil, info, func(context.Context, any) (any, error) { return nil, nil })
	_, _ = ic(t.Context(), nil, info, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.Unavailable, "x")
	})
	for code, want := range map[string]float64{"Internal": 1, "OK": 1, "Unavailable": 1} {
		got := testutil.ToFloat64(m.GRPCRequests.WithLabelValues(authzv1.AuthzService_Authorize_FullMethodName, code))
		if got != want {
			t.Errorf("requests{code=%s} = %v, want %v", code, got, want)
		}
	}
}

func TestValidators(t *testing.T) {
	t.Parallel()
	for tok, want := range map[string]bool{"abc.DEF-_~+/=": true, "": false, "a b": false, "a\tb": false, "é": false} {
		if got := validToken(tok); got != want {
			t.Errorf("validToken(%q) = %v", tok, got)
		}
	}
	for id, want := range map[string]bool{seedusers.AliceID: true, "auth0|abc": true, "...": false, "a/b": false, "a%2f": false} {
		if got := validUserID(id); got != want {
			t.Errorf("validUserID(%q) = %v", id, got)
		}
	}
}

// fakeStream is the least of a grpc.ServerStream an interceptor touches.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

func TestStreamInterceptorRecoversAndCounts(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	ic := StreamInterceptor(m, slog.New(slog.DiscardHandler))
	info := &grpc.StreamServerInfo{FullMethod: authzv1.AuthzService_WatchInvalidations_FullMethodName, IsServerStream: true}
	ss := fakeStream{ctx: t.Context()}
	err := ic(nil, ss, info, func(any, grpc.ServerStream) error { panic("boom") })
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != msgInternal {
		t.Fatalf("panicking handler: %v, want Internal with a constant message", err)
	}
	_ = ic(nil, ss, info, func(any, grpc.ServerStream) error { return nil })
	_ = ic(nil, ss, info, func(any, grpc.ServerStream) error { return status.Error(codes.Unavailable, "x") })
	for code, want := range map[string]float64{"Internal": 1, "OK": 1, "Unavailable": 1} {
		got := testutil.ToFloat64(m.GRPCRequests.WithLabelValues(authzv1.AuthzService_WatchInvalidations_FullMethodName, code))
		if got != want {
			t.Errorf("streams{code=%s} = %v, want %v", code, got, want)
		}
	}
}
