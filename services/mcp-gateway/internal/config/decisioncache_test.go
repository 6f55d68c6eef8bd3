package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDecisionCacheTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value string
		want  time.Duration
		err   bool
	}{
		{value: "", want: time.Minute}, // on by default
		{value: "0", want: 0},
		{value: "0s", want: 0},
		{value: "1s", want: time.Second},
		{value: " 250ms ", want: 250 * time.Millisecond},
		{value: "1m", want: time.Minute},
		{value: "60s", want: time.Minute},
		{value: "1m0.001s", err: true},
		{value: "2m", err: true},
		{value: "1h", err: true},
		{value: "-1s", err: true},
		{value: "1", err: true}, // no unit: seconds or milliseconds?
		{value: "soon", err: true},
		{value: "1s;", err: true},
		{value: "off", err: true},
		{value: "9223372036854775807s", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(withBase(map[string]string{"DECISION_CACHE_TTL": tt.value})))
			if tt.err {
				var cerr *Error
				if !errors.As(err, &cerr) || cerr.Var != "DECISION_CACHE_TTL" {
					t.Fatalf("Load(%s=%q) error = %v, want a *config.Error naming %s", "DECISION_CACHE_TTL", tt.value, err, "DECISION_CACHE_TTL")
				}
				if !strings.HasPrefix(err.Error(), "DECISION_CACHE_TTL"+": ") || strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q is not one line starting with the variable", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%s=%q): %v", "DECISION_CACHE_TTL", tt.value, err)
			}
			if c.DecisionCacheTTL != tt.want {
				t.Errorf("DecisionCacheTTL = %v, want %v", c.DecisionCacheTTL, tt.want)
			}
		})
	}
}

func TestDecisionCacheTTLListedAndPrinted(t *testing.T) {
	t.Parallel()
	if !slices.Contains(EnvNames(), "DECISION_CACHE_TTL") {
		t.Errorf("EnvNames() lacks %s", "DECISION_CACHE_TTL")
	}
	c, err := Load(env(withBase(map[string]string{"DECISION_CACHE_TTL": "1500ms"})))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.LogValue().String(); !strings.Contains(got, "DECISION_CACHE_TTL"+"=1.5s") {
		t.Errorf("printed config %s lacks %s=1.5s", got, "DECISION_CACHE_TTL")
	}
}
