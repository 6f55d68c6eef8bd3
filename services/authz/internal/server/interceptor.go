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

// UnaryInterceptor counts and times every unary call by method and code, and turns
// a panic in a handler into codes.Internal (logged with its stack) instead of a
// crashed process.
func UnaryInterceptor(m *metrics.Metrics, logger *slog.Logger) grpc.UnaryServerInterceptor {
	var mu sync.RWMutex
	byMethod := map[string]*methodMetrics{}
	get := func(method string) *methodMetrics {
		mu.RLock()
		mm := byMethod[method]
		mu.RUnlock()
		if mm != nil {
			return mm
		}
		mu.Lock()
		defer mu.Unlock()
		if mm = byMethod[method]; mm == nil {
			mm = &methodMetrics{duration: m.GRPCDuration.WithLabelValues(method)}
			for c := range mm.codes {
				mm.codes[c] = m.GRPCRequests.WithLabelValues(method, codes.Code(c).String())
			}
			byMethod[method] = mm
		}
		return mm
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				logger.ErrorContext(ctx, "handler panicked", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, msgInternal)
			}
			mm := get(info.FullMethod)
			code := status.Code(err)
			if int(code) < len(mm.codes) {
				mm.codes[code].Inc()
			}
			mm.duration.Observe(time.Since(start).Seconds())
		}()
		return handler(ctx, req)
	}
}
