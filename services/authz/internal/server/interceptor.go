package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

// methodMetrics holds one method's pre-resolved metric children, so the hot path
// does no label hashing.
type methodMetrics struct {
	codes    [17]prometheus.Counter
	duration prometheus.Observer
}

// byMethod resolves and keeps each method's metric children.
type byMethod struct {
	m  *metrics.Metrics
	mu sync.RWMutex
	mm map[string]*methodMetrics
}

func (b *byMethod) get(method string) *methodMetrics {
	b.mu.RLock()
	mm := b.mm[method]
	b.mu.RUnlock()
	if mm != nil {
		return mm
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if mm = b.mm[method]; mm == nil {
		mm = &methodMetrics{duration: b.m.GRPCDuration.WithLabelValues(method)}
		for c := range mm.codes {
			mm.codes[c] = b.m.GRPCRequests.WithLabelValues(method, codes.Code(c).String())
		}
		b.mm[method] = mm
	}
	return mm
}

func (mm *methodMetrics) count(err error) {
	if code := status.Code(err); int(code) < len(mm.codes) {
		mm.codes[code].Inc()
	}
}

// UnaryInterceptor counts and times every unary call by method and code, and turns
// a panic in a handler into codes.Internal (logged with its stack) instead of a
// crashed process.
func UnaryInterceptor(m *metrics.Metrics, logger *slog.Logger) grpc.UnaryServerInterceptor {
	b := &byMethod{m: m, mm: map[string]*methodMetrics{}}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				logger.ErrorContext(ctx, "handler panicked", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, msgInternal)
			}
			mm := b.get(info.FullMethod)
			mm.count(err)
			mm.duration.Observe(time.Since(start).Seconds())
		}()
		return handler(ctx, req)
	}
}

// StreamInterceptor is [UnaryInterceptor] for streaming calls (WatchInvalidations,
// health Watch, reflection): it counts each stream by method and the code it
// ended with, and recovers panics the same way. It does not time streams: they
// live as long as their callers, and their lifetimes in the request latency
// histogram would say nothing.
func StreamInterceptor(m *metrics.Metrics, logger *slog.Logger) grpc.StreamServerInterceptor {
	b := &byMethod{m: m, mm: map[string]*methodMetrics{}}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				logger.ErrorContext(ss.Context(), "handler panicked", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, msgInternal)
			}
			b.get(info.FullMethod).count(err)
		}()
		return handler(srv, ss)
	}
}
