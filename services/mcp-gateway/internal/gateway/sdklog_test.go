package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

// TestSDKLogger checks that the go-sdk's INFO records reach the gateway's log
// only at LOG_LEVEL=debug, as DEBUG, and that its warnings always do.
func TestSDKLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		level     slog.Level
		log       func(*slog.Logger)
		wantLevel string // "" when nothing may be written
	}{
		{"info at info", slog.LevelInfo, func(l *slog.Logger) { l.Info("server session connected", "session_id", "") }, ""},
		{"info at debug", slog.LevelDebug, func(l *slog.Logger) { l.Info("server session connected", "session_id", "") }, "DEBUG"},
		{"warn at info", slog.LevelInfo, func(l *slog.Logger) { l.Warn("bad request") }, "WARN"},
		{"error at warn", slog.LevelWarn, func(l *slog.Logger) { l.Error("failed") }, "ERROR"},
		{"debug at info", slog.LevelInfo, func(l *slog.Logger) { l.Debug("detail") }, ""},
		{"with attrs and group", slog.LevelDebug, func(l *slog.Logger) { l.With("a", 1).WithGroup("g").Info("grouped", "b", 2) }, "DEBUG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tt.log(newSDKLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tt.level}))))
			if tt.wantLevel == "" {
				if buf.Len() != 0 {
					t.Errorf("logged %q, want nothing", buf.String())
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log %q: %v", buf.String(), err)
			}
			if rec["level"] != tt.wantLevel || rec["component"] != "go-sdk" {
				t.Errorf("record %v: want level %s and component go-sdk", rec, tt.wantLevel)
			}
		})
	}
}
