package gateway

import (
	"context"
	"log/slog"
)

// sdkLogHandler carries the go-sdk's log records into the gateway's log with
// every INFO record demoted to DEBUG. In stateless mode the SDK connects and
// disconnects a server session for every request and logs each step at INFO
// ("server connecting", "server session connected", "server session
// disconnected"): three lines per tool call at the default level, and a
// measurable share of the gateway's CPU per request (profiled in
// bench/results/2026-11-30-make-bench). Its warnings and errors keep their
// level.
type sdkLogHandler struct{ next slog.Handler }

// newSDKLogger returns the logger the gateway gives the go-sdk.
func newSDKLogger(l *slog.Logger) *slog.Logger {
	return slog.New(sdkLogHandler{l.Handler().WithAttrs([]slog.Attr{slog.String("component", "go-sdk")})})
}

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (h sdkLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, demote(l))
}

func (h sdkLogHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return h.next.Handle(ctx, r)
}

func (h sdkLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sdkLogHandler{h.next.WithAttrs(as)}
}

func (h sdkLogHandler) WithGroup(name string) slog.Handler {
	return sdkLogHandler{h.next.WithGroup(name)}
}
