package e2e

import (
	"bytes"
	"errors"
	"io/fs"
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

// TestModulesAreTidy: every module of the repository (the workspace's and
// tools/, which is not in it) has the go.mod and go.sum `go mod tidy` would
// write: no requirement missing or left over, none marked direct or indirect
// wrongly, no checksum missing or unused. When this fails, run `make tidy`
// and commit the result.
//
// It runs `go mod tidy -diff`, which changes nothing and fails with the diff
// when a module is untidy. It judges by that diff, not by stderr: with an
// empty module cache (CI's) the go command reports every download there.
func TestModulesAreTidy(t *testing.T) {
	slow(t)
	t.Parallel()
	dirs := moduleDirs(t)
	if len(dirs) < 5 {
		t.Fatalf("found only %d modules under %s: %q", len(dirs), repoRoot, dirs)
	}
	for _, dir := range dirs {
		rel, _ := filepath.Rel(repoRoot, dir)
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command("go", "mod", "tidy", "-diff")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOWORK=off")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			switch {
			case err == nil:
			case errors.As(err, &exit) && stdout.Len() > 0:
				t.Errorf("%s is not tidy (run `make tidy`); go mod tidy would change:\n%s", rel, stdout.String())
			default:
				t.Errorf("go mod tidy -diff in %s: %v\n%s", rel, err, stderr.String())
			}
		})
	}
}

// moduleDirs returns the directory of every go.mod in the repository, outside
// dependencies (node_modules), test data and build output.
func moduleDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != repoRoot {
			switch name := d.Name(); {
			case name == "node_modules", name == "testdata", name == "bin", strings.HasPrefix(name, "."):
				return filepath.SkipDir
			}
		}
		if !d.IsDir() && d.Name() == "go.mod" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}
