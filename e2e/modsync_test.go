package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestModulesBuildWhatTheWorkspaceTests: each module on its own (GOWORK=off, as
// the Dockerfiles build the services) compiles its packages from exactly the
// module versions the workspace compiles them from, so an image never ships a
// version no test ran. When this fails, run `go work sync` and then
// `GOWORK=off go mod tidy` in the module, and commit its go.mod and go.sum.
func TestModulesBuildWhatTheWorkspaceTests(t *testing.T) {
	slow(t)
	t.Parallel()
	workspace := moduleVersions(t, repoRoot, "", "all")
	dirs, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	n := 0
	for dir := range strings.FieldsSeq(string(dirs)) {
		n++
		rel, _ := filepath.Rel(repoRoot, dir)
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			for mod, v := range moduleVersions(t, dir, "off", "./...") {
				if w, ok := workspace[mod]; ok && w != v {
					t.Errorf("%s on its own selects %s %s; the workspace tests %s (run `go work sync`)", rel, mod, v, w)
				}
			}
		})
	}
	if n < 5 {
		t.Fatalf("the workspace lists only %d modules", n)
	}
}

// moduleVersions maps each module that provides a package of pattern, or of
// the packages and tests it imports, to its selected version, as the go
// command lists them in dir (modules replaced by a directory have no version
// and are left out).
func moduleVersions(t *testing.T, dir, gowork, pattern string) map[string]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", pattern)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	if gowork != "" {
		cmd.Env = append(cmd.Env, "GOWORK="+gowork)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s in %s: %v\n%s", pattern, dir, err, stderr.String())
	}
	vs := map[string]string{}
	for line := range strings.Lines(string(out)) {
		mod, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if v != "" {
			vs[mod] = v
		}
	}
	return vs
}
