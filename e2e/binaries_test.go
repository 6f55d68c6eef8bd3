package e2e

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// TestHealthcheckFlag checks what the compose healthchecks and the Dockerfiles'
// HEALTHCHECK rely on, since the distroless images have no curl: each binary run
// as `<bin> -healthcheck URL` GETs URL and exits 0 on 200 and 1 otherwise (1 is
// what Docker reads as unhealthy; 2 is reserved), without needing its service
// configuration.
func TestHealthcheckFlag(t *testing.T) {
	t.Parallel()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(healthy.Close)
	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not serving", http.StatusServiceUnavailable)
	}))
	t.Cleanup(unhealthy.Close)
	cases := []struct {
		name string
		url  string
		want int
	}{
		{"200", healthy.URL + "/healthz", 0},
		{"404", healthy.URL + "/nothing", 1},
		{"503", unhealthy.URL + "/healthz", 1},
		{"nothing listening", "http://" + testenv.FreeAddr(t) + "/healthz", 1},
		{"not a URL", "::", 1},
	}
	for name := range ours {
		bin := testenv.Binary(t, name)
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "-healthcheck", tc.url)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
				out, err := cmd.CombinedOutput()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if code != tc.want {
					t.Errorf("%s -healthcheck %s: exit %d, want %d\n%s", name, tc.url, code, tc.want, out)
				}
			})
		}
	}
}

// TestEnvExampleDocumentsEveryVariable: .env.example lists (commented or not)
// every variable a binary reads, and nothing that no one reads.
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(?:# )?([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	// Read by docker compose and by scripts/run-stack.sh rather than a binary.
	known := map[string]bool{"COMPOSE_FILE": true, "RUN_LOG_DIR": true, "RUN_TIMEOUT": true}
	for name := range ours {
		for k := range envNames(t, name) {
			known[k] = true
			if !documented[k] {
				t.Errorf(".env.example does not document %s (read by %s)", k, name)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !known[k] {
			t.Errorf(".env.example documents %s, which nothing reads", k)
		}
	}
}

// TestReadmeDocumentsEveryVariable: the README's configuration table has a row for
// every variable a binary reads, naming that binary, and no row for a variable
// nothing reads.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // variable -> its "read by" cell
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\| ([^|]*) \\|").FindAllStringSubmatch(string(b), -1) {
		rows[m[1]] = m[2]
	}
	short := map[string]string{authz: "authz", gateway: "gateway", devauth: "devauth"}
	read := map[string]bool{}
	for name := range ours {
		for k := range envNames(t, name) {
			read[k] = true
			cell, ok := rows[k]
			switch {
			case !ok:
				t.Errorf("README configuration table has no row for %s (read by %s)", k, name)
			case cell != "all" && !strings.Contains(cell, short[name]):
				t.Errorf("README row for %s says %q; %s reads it too", k, cell, name)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		if !read[k] {
			t.Errorf("README documents %s, which no binary reads", k)
		}
	}
}

// TestBinariesShareOneCommandLine: the three binaries answer -h, stray
// arguments, unknown flags and bad configuration the same way (package
// internal/service): -h lists every variable -list-env names and exits 0;
// the errors are one line "<binary>: ..." and exit 1.
func TestBinariesShareOneCommandLine(t *testing.T) {
	t.Parallel()
	for name := range ours {
		bin := testenv.Binary(t, name)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			run := func(env []string, args ...string) (stdout, stderr string, code int) {
				cmd := exec.CommandContext(t.Context(), bin, args...)
				cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
				var out, errb strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := cmd.Run()
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				return out.String(), errb.String(), code
			}
			help, errOut, code := run(nil, "-h")
			if code != 0 || errOut != "" || !strings.HasPrefix(help, "Usage: "+name) {
				t.Errorf("-h: exit %d, stderr %q, stdout starting %.40q", code, errOut, help)
			}
			for v := range envNames(t, name) {
				if !regexp.MustCompile(`(?m)^  ` + v + `\b`).MatchString(help) {
					t.Errorf("-h does not list %s", v)
				}
			}
			for _, tc := range []struct {
				args []string
				env  []string
				want string
			}{
				{[]string{"serve"}, nil, name + `: unexpected arguments ["serve"]; configuration comes from the environment (see -list-env)`},
				{[]string{"-nope"}, nil, name + ": flag provided but not defined: -nope (see " + name + " -h)"},
				{nil, []string{"LOG_LEVEL=chatty"}, name + `: invalid configuration: `},
			} {
				out, errOut, code := run(tc.env, tc.args...)
				if line := strings.TrimSpace(errOut); code != 1 || out != "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, tc.want) {
					t.Errorf("%q %q: exit %d, stdout %q, stderr %q; want exit 1 and one line starting %q", tc.env, tc.args, code, out, errOut, tc.want)
				}
			}
		})
	}
}
