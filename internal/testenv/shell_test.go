package testenv

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestShellJoin: sh -c gives back every word as it was, whatever it holds.
func TestShellJoin(t *testing.T) {
	words := []string{"plain", "with space", `it's`, `"double"`, "$HOME", "`id`", `back\slash`, "new\nline", "", "*"}
	out, err := exec.Command("sh", "-c", "set -- "+ShellJoin(words...)+`; for a; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, words) {
		t.Errorf("sh read %q, want %q", got, words)
	}
}
