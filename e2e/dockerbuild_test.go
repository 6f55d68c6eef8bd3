package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerBuildContext does what each Dockerfile's build step does, short of
// compiling: it lays out the bind-mounted sources as the builder sees them
// (the repository filtered by .dockerignore) and loads the command's packages as
// a standalone module (GOWORK=off, -mod=readonly). That catches a go.mod or
// go.sum that only works inside the workspace, a .dockerignore that drops a file
// the build needs (embedded templates, say), and a Dockerfile naming a wrong path.
func TestDockerBuildContext(t *testing.T) {
	slow(t)
	t.Parallel()
	ignored, err := dockerIgnored()
	if err != nil {
		t.Fatal(err)
	}
	for name := range ours {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			df, err := parseDockerfile(filepath.Join(repoRoot, "services", name, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			build := strings.Join(df.stages[0].all("RUN"), "\n")
			ctx := t.TempDir()
			mounts := regexp.MustCompile(`type=bind,source=([^,\s]+),target=([^,\s]+)`).FindAllStringSubmatch(build, -1)
			if len(mounts) == 0 {
				t.Fatal("the build step bind-mounts no sources")
			}
			for _, m := range mounts {
				if m[1] != m[2] {
					t.Fatalf("bind mount %s -> %s: the layout must mirror the repository for the replace directives", m[1], m[2])
				}
				copyContext(t, ignored, m[1], ctx)
			}
			cmdDir := regexp.MustCompile(`cd (services/\S+)`).FindStringSubmatch(build)
			pkg := regexp.MustCompile(`\s(\./cmd/\S+)`).FindStringSubmatch(build)
			if cmdDir == nil || pkg == nil {
				t.Fatalf("cannot find `cd services/...` and the ./cmd/... package in the build step:\n%s", build)
			}
			cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Error}}{{.ImportPath}}: {{.Error}}{{end}}", pkg[1])
			cmd.Dir = filepath.Join(ctx, cmdDir[1])
			cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
			// Only stdout carries package errors; stderr has the go command's
			// progress ("go: downloading ...") when the module cache is cold,
			// as it is on a fresh machine and in the image build.
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("in the build context, go list %s: %v\n%s%s", pkg[1], err, out, stderr.String())
			}
		})
	}
}

// copyContext copies the repository's dir into dst/dir, leaving out what
// .dockerignore excludes from the build context.
func copyContext(t *testing.T, ignored interface {
	MatchesOrParentMatches(string) (bool, error)
}, dir, dst string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, path)
		if err != nil {
			return err
		}
		if ign, err := ignored.MatchesOrParentMatches(filepath.ToSlash(rel)); err != nil {
			return err
		} else if ign {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", dir, err)
	}
}
