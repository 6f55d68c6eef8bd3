package tokenref

import "testing"

func TestShort(t *testing.T) {
	t.Parallel()
	full := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for in, want := range map[string]string{full: "0123456789ab", "abc": "abc", "": ""} {
		if got := Short(in); got != want {
			t.Errorf("Short(%q) = %q, want %q", in, got, want)
		}
	}
	if a := Attr(full); a.Key != Key || a.Value.String() != "0123456789ab" {
		t.Errorf("Attr = %v", a)
	}
}
