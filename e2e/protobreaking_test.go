package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProtoBreaking runs scripts/proto-breaking.sh (what `make proto-breaking`
// and CI run) in a scratch Git repository holding this repository's buf.yaml
// and proto/: a compatible change passes; a renamed field fails, uncommitted
// and committed, also when a harmless commit follows it, and the failure names
// that commit and the field; the depth bounds what is checked; and a
// Proto-Breaking line in the commit message lets the break through.
func TestProtoBreaking(t *testing.T) {
	slow(t)
	t.Parallel()
	buf := bufBinary(t)
	script := filepath.Join(repoRoot, "scripts", "proto-breaking.sh")
	repo := t.TempDir()
	env := append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
	)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir, cmd.Env = repo, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// run returns the script's exit code and its stdout and stderr.
	run := func(depth string) (int, string, string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "bash", script)
		cmd.Dir = repo
		cmd.Env = append(env, "BUF="+buf, "PROTO_BREAKING_DEPTH="+depth)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("running %s: %v", script, err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	proto := filepath.Join(repo, "proto", "authz", "v1", "authz.proto")
	edit := func(old, new string) {
		t.Helper()
		b, err := os.ReadFile(proto)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("authz.proto has no %q", old)
		}
		if err := os.WriteFile(proto, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	copyFile(t, filepath.Join(repoRoot, "buf.yaml"), filepath.Join(repo, "buf.yaml"))
	copyFile(t, filepath.Join(repoRoot, "proto", "authz", "v1", "authz.proto"), proto)
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "the API")

	// A new field breaks nothing; the commit that created proto/ is not checked.
	edit("message WatchInvalidationsRequest {}", "message WatchInvalidationsRequest {\n  string since = 1;\n}")
	git("commit", "-q", "-am", "add a field")
	if code, stdout, stderr := run("100"); code != 0 || !strings.Contains(stdout, "no breaking change in 1 change(s)") {
		t.Fatalf("a compatible commit: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	const rename = `changed name from "token" to "access_token"`
	edit("string token = 1;", "string access_token = 1;")
	if code, _, stderr := run("100"); code != 1 || !strings.Contains(stderr, "the uncommitted change to proto/") || !strings.Contains(stderr, rename) {
		t.Errorf("an uncommitted rename: exit %d, want 1 naming the uncommitted change and the field\nstderr: %s", code, stderr)
	}
	git("commit", "-q", "-am", "rename the token field")
	edit("message InvalidateTokenResponse {}", "// Empty.\nmessage InvalidateTokenResponse {}")
	git("commit", "-q", "-am", "a comment")
	code, _, stderr := run("100")
	if code != 1 || !strings.Contains(stderr, "rename the token field breaks the API") || !strings.Contains(stderr, "proto/authz/v1/authz.proto:") || !strings.Contains(stderr, rename) {
		t.Errorf("a rename followed by a harmless commit: exit %d, want 1 naming the commit, the file and the field\nstderr: %s", code, stderr)
	}
	if strings.Contains(stderr, os.TempDir()) {
		t.Errorf("the report names the script's temporary copies, not the repository's files:\n%s", stderr)
	}
	if code, stdout, stderr := run("1"); code != 0 || !strings.Contains(stdout, "among the last 1 commits") {
		t.Errorf("PROTO_BREAKING_DEPTH=1 checks only the last commit: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// The same break, declared deliberate.
	git("reset", "-q", "--hard", "HEAD~2")
	edit("string token = 1;", "string access_token = 1;")
	git("commit", "-q", "-am", "rename the token field\n\nProto-Breaking: allowed, no caller uses it yet")
	if code, stdout, stderr := run("100"); code != 0 || !strings.Contains(stdout, "allowed by its Proto-Breaking line") {
		t.Errorf("a break with a Proto-Breaking line: exit %d, want 0 saying so\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// bufBinary returns a buf built from tools/go.mod: bin/tools/buf when `make
// tools` (which `make lint` runs) built it from the current tools/go.sum, else
// a fresh build.
func bufBinary(t *testing.T) string {
	t.Helper()
	built := filepath.Join(repoRoot, "bin", "tools", "buf")
	if bi, err := os.Stat(built); err == nil {
		fresh := true
		for _, f := range []string{"go.mod", "go.sum"} {
			if si, err := os.Stat(filepath.Join(repoRoot, "tools", f)); err != nil || si.ModTime().After(bi.ModTime()) {
				fresh = false
			}
		}
		if fresh {
			return built
		}
	}
	out := filepath.Join(t.TempDir(), "buf")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", out, "github.com/bufbuild/buf/cmd/buf")
	cmd.Dir = filepath.Join(repoRoot, "tools")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building buf from tools/go.mod: %v\n%s", err, b)
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
