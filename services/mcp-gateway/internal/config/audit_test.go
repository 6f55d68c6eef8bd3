package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAuditLog(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      map[string]string
		wantLog  string
		wantArgs bool
		wantVar  string // the variable the error names; "" for none
	}{
		{name: "unset: off", env: map[string]string{}},
		{name: "stdout", env: map[string]string{"AUDIT_LOG": "stdout"}, wantLog: "stdout"},
		{name: "absolute path", env: map[string]string{"AUDIT_LOG": "/var/log/mcp/audit.log"}, wantLog: "/var/log/mcp/audit.log"},
		{name: "arguments opted in", env: map[string]string{"AUDIT_LOG": "stdout", "AUDIT_LOG_ARGUMENTS": "true"}, wantLog: "stdout", wantArgs: true},
		{name: "relative path", env: map[string]string{"AUDIT_LOG": "audit.log"}, wantVar: "AUDIT_LOG"},
		{name: "a word that is not stdout", env: map[string]string{"AUDIT_LOG": "off"}, wantVar: "AUDIT_LOG"},
		{name: "arguments without a log", env: map[string]string{"AUDIT_LOG_ARGUMENTS": "true"}, wantVar: "AUDIT_LOG_ARGUMENTS"},
		{name: "arguments not a bool", env: map[string]string{"AUDIT_LOG": "stdout", "AUDIT_LOG_ARGUMENTS": "yes please"}, wantVar: "AUDIT_LOG_ARGUMENTS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(withBase(tt.env)))
			if tt.wantVar != "" {
				var ce *Error
				if !errors.As(err, &ce) || ce.Var != tt.wantVar || strings.Contains(err.Error(), "\n") {
					t.Errorf("Load error = %v, want one line naming %s", err, tt.wantVar)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]any{tt.wantLog, tt.wantArgs}, []any{c.AuditLog, c.AuditLogArguments}); diff != "" {
				t.Errorf("AUDIT_LOG, AUDIT_LOG_ARGUMENTS (-want +got):\n%s", diff)
			}
		})
	}
}
