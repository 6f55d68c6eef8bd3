package scopes

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxLength)
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"", nil, ""},
		{"read:user_data", []string{"read:user_data"}, ""},
		{" a,b\tc\nd  a ", []string{"a", "b", "c", "d"}, ""},
		{long, []string{long}, ""},
		{long + "a", nil, "at most 256"},
		{`a"b`, nil, "invalid scope"},
		{`a\b`, nil, "invalid scope"},
		{"é", nil, "invalid scope"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%.20q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%.20q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Parse(%.20q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseNonEmpty(t *testing.T) {
	t.Parallel()
	if _, err := ParseNonEmpty(" , "); err == nil {
		t.Error("an empty list was accepted")
	}
	many := make([]string, MaxCount+1)
	for i := range many {
		many[i] = "s" + strings.Repeat("x", i)
	}
	if _, err := ParseNonEmpty(strings.Join(many[:MaxCount], " ")); err != nil {
		t.Errorf("%d scopes: %v", MaxCount, err)
	}
	if _, err := ParseNonEmpty(strings.Join(many, " ")); err == nil {
		t.Errorf("%d scopes were accepted", MaxCount+1)
	}
}

func TestUnion(t *testing.T) {
	t.Parallel()
	if diff := cmp.Diff([]string{"a", "b", "c"}, Union([]string{"a", "b"}, []string{"b", "c", "a"})); diff != "" {
		t.Error(diff)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a b", "read:user_data,read:org_data", `a"`, "\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Parse(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, sc := range out {
			if !Valid(sc) || seen[sc] {
				t.Fatalf("Parse(%q) returned %q", s, out)
			}
			seen[sc] = true
		}
	})
}
