package e2e

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGoModulesPinned: every module's requirements carry checksums in its
// go.sum, so a build fetches exactly what was reviewed (go.mod versions are
// exact by construction; go.sum makes them verifiable).
func TestGoModulesPinned(t *testing.T) {
	t.Parallel()
	var mods []string
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.Name() == "go.mod" {
			mods = append(mods, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 5 {
		t.Fatalf("found only %d go.mod files under %s", len(mods), repoRoot)
	}
	for _, gomod := range mods {
		rel, _ := filepath.Rel(repoRoot, gomod)
		reqs, replaced := requirements(t, gomod)
		sum, err := os.ReadFile(filepath.Join(filepath.Dir(gomod), "go.sum"))
		if err != nil && len(reqs) > len(replaced) {
			t.Errorf("%s requires modules but has no go.sum", rel)
			continue
		}
		for mod, version := range reqs {
			if replaced[mod] {
				continue // a directory of this repository
			}
			if !strings.Contains(string(sum), mod+" "+version+"/go.mod h1:") {
				t.Errorf("%s: go.sum has no checksum for %s %s", rel, mod, version)
			}
		}
	}
}

var requireLine = regexp.MustCompile(`^\s*(?:require\s+)?([^\s()]+)\s+(v[^\s]+)(?:\s+//.*)?$`)

// requirements returns the required modules of a go.mod and the modules it
// replaces with local directories.
func requirements(t *testing.T, gomod string) (reqs map[string]string, replaced map[string]bool) {
	t.Helper()
	f, err := os.Open(gomod)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reqs, replaced = map[string]string{}, map[string]bool{}
	block := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasSuffix(line, "("):
			block = strings.Fields(line)[0]
			continue
		case line == ")":
			block = ""
			continue
		}
		directive := block
		if directive == "" {
			directive, _, _ = strings.Cut(line, " ")
		}
		switch directive {
		case "require":
			if m := requireLine.FindStringSubmatch(line); m != nil {
				reqs[m[1]] = m[2]
			}
		case "replace":
			left, right, ok := strings.Cut(strings.TrimPrefix(line, "replace "), "=>")
			if ok && strings.HasPrefix(strings.TrimSpace(right), ".") {
				replaced[strings.Fields(left)[0]] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return reqs, replaced
}

// goToolRun matches a go command that fetches a remote package: go run, go
// install or go get of something that is not a local path.
var goToolRun = regexp.MustCompile(`\bgo (?:run|install|get(?: -tool)?)\s+((?:-\S+\s+)*)([a-z0-9.-]+\.[a-z]+/\S+)`)

// TestNoUnpinnedFetches: the Makefile, CI, scripts and Dockerfiles never fetch
// "latest" or an unversioned remote Go tool, and the npm packages the tests
// install are exact versions (with package-lock.json).
func TestNoUnpinnedFetches(t *testing.T) {
	t.Parallel()
	files := []string{"Makefile", ".ci/run", "docker-compose.yml"}
	for _, pattern := range []string{"scripts/*", "services/*/Dockerfile", "deploy/compose/*.Dockerfile", "docker-compose.*.yml"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot, p)
			files = append(files, rel)
		}
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(repoRoot, rel))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "@latest") || strings.Contains(line, ":latest") {
				t.Errorf("%s:%d fetches latest: %s", rel, i+1, strings.TrimSpace(line))
			}
			for _, m := range goToolRun.FindAllStringSubmatch(line, -1) {
				if !strings.Contains(m[2], "@v") {
					t.Errorf("%s:%d runs a remote Go tool without a version: %s", rel, i+1, strings.TrimSpace(line))
				}
			}
		}
	}

	b, err := os.ReadFile(filepath.Join(repoRoot, "e2e/ts/package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Dependencies    map[string]string `json:"dependencies"`
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	exact := regexp.MustCompile(`^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$`)
	for _, deps := range []map[string]string{pkg.Dependencies, pkg.DevDependencies} {
		for name, v := range deps {
			if !exact.MatchString(v) {
				t.Errorf("e2e/ts/package.json: %s %q is not an exact version", name, v)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "e2e/ts/package-lock.json")); err != nil {
		t.Errorf("e2e/ts has no package-lock.json (npm ci needs it): %v", err)
	}
}
