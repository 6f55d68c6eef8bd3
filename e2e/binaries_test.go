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

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/envdoc"
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

// TestConfigurationDocsAreGenerated: docs/configuration.md and .env.example
// are what `make docs` generates from the variables the binaries declare
// today (so every variable is documented, with its real default), and
// .env.example names no variable that nothing reads.
func TestConfigurationDocsAreGenerated(t *testing.T) {
	t.Parallel()
	bins := map[string]string{}
	for _, name := range envdoc.Binaries {
		bins[name] = testenv.Binary(t, name)
	}
	services, err := envdoc.Read(bins)
	if err != nil {
		t.Fatal(err)
	}
	files, err := envdoc.Generate(services)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		got, err := os.ReadFile(filepath.Join(repoRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(strings.Split(string(files[name]), "\n"), strings.Split(string(got), "\n")); diff != "" {
			t.Errorf("%s is stale: run `make docs` and commit the result (-generated +committed):\n%s", name, diff)
		}
	}

	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(?:# )?([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(files[envdoc.EnvExampleFile]), -1) {
		documented[m[1]] = true
	}
	// Read by docker compose and by scripts/run-stack.sh rather than a binary.
	known := map[string]bool{"COMPOSE_FILE": true, "RUN_LOG_DIR": true, "RUN_TIMEOUT": true, "IDENTITY_UPSTREAM_LISTEN": true}
	for name := range ours {
		for k := range envNames(t, name) {
			known[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !known[k] {
			t.Errorf(".env.example documents %s, which nothing reads", k)
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
