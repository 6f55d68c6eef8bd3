package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-cmp/cmp"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// repoRoot is the repository's root: the e2e module is one level below it.
var repoRoot = func() string {
	abs, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return abs
}()

// Compose service names; devauth, authz and mcp-gateway are also the binaries'
// names.
const (
	redis       = "redis"
	devauth     = "devauth"
	authz       = "authz"
	gateway     = "mcp-gateway"
	everything  = "everything"   // the example upstream MCP server
	identityKey = "identity-key" // one-shot: generates the identity signing key
)

// Files of the example upstream, relative to the repository root.
const (
	everythingDockerfile = "deploy/compose/everything.Dockerfile"
	identityKeyScript    = "deploy/compose/identity-key.mjs"
)

// ourService describes a compose service built from this repository.
type ourService struct {
	// healthVar names the variable holding the HTTP address that serves /healthz.
	healthVar string
	// listens maps each listen-address variable of the binary to its default.
	listens map[string]string
}

var ours = map[string]ourService{
	authz:   {healthVar: "AUTHZ_METRICS_LISTEN", listens: map[string]string{"AUTHZ_LISTEN": ":50051", "AUTHZ_METRICS_LISTEN": ":9091"}},
	gateway: {healthVar: "MCP_LISTEN", listens: map[string]string{"MCP_LISTEN": ":8000", "MCP_METRICS_LISTEN": ":9092"}},
	devauth: {healthVar: "DEVAUTH_LISTEN", listens: map[string]string{"DEVAUTH_LISTEN": ":9000"}},
}

// mode is how the stack authenticates users.
type mode string

const (
	demo       mode = "demo"       // against devauth, inside the stack
	propelAuth mode = "PropelAuth" // against a PropelAuth project, devauth left out
)

// The PropelAuth settings the PropelAuth scenario fills into .env.example's block.
const (
	testAuthURL      = "https://1234567890.propelauthtest.com"
	testClientID     = "rv-client-id"
	testClientSecret = "rv-client-secret"
	testAPIKey       = "backend-api-key"
)

// envNames returns the variables a binary reads, from its -list-env output, which
// must be sorted names, one per line.
func envNames(t *testing.T, name string) map[string]bool {
	t.Helper()
	envNamesMu.Lock()
	defer envNamesMu.Unlock()
	if m, ok := envNamesCache[name]; ok {
		return m
	}
	out, err := exec.Command(testenv.Binary(t, name), "-list-env").Output()
	if err != nil {
		t.Fatalf("%s -list-env: %v", name, err)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 || !slices.IsSorted(lines) {
		t.Fatalf("%s -list-env: want sorted names, one per line; got %q", name, out)
	}
	m := map[string]bool{}
	for _, l := range lines {
		if !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(l) {
			t.Fatalf("%s -list-env: %q is not a variable name", name, l)
		}
		m[l] = true
	}
	envNamesCache[name] = m
	return m
}

var (
	envNamesMu    sync.Mutex
	envNamesCache = map[string]map[string]bool{}
)

// loadProject loads the project as `docker compose` does when run in the
// repository root, with dotEnv as the content of .env ("" for none: a fresh
// clone) and nothing from the shell, then the compose files named by COMPOSE_FILE
// or else docker-compose.yml, plus override (if not "") as one more file, as
// `docker compose -f` would add it.
func loadProject(t *testing.T, dotEnv, override string) (*types.Project, error) {
	t.Helper()
	dir := t.TempDir()
	var fns []cli.ProjectOptionsFn
	fns = append(fns, cli.WithWorkingDirectory(repoRoot))
	if dotEnv != "" {
		p := filepath.Join(dir, ".env")
		if err := os.WriteFile(p, []byte(dotEnv), 0o600); err != nil {
			t.Fatal(err)
		}
		fns = append(fns, cli.WithEnvFiles(p))
	}
	fns = append(fns, cli.WithDotEnv, cli.WithConfigFileEnv,
		func(o *cli.ProjectOptions) error {
			if len(o.ConfigPaths) == 0 {
				o.ConfigPaths = []string{filepath.Join(repoRoot, "docker-compose.yml")}
			}
			return nil
		},
		cli.WithDefaultProfiles())
	opts, err := cli.NewProjectOptions(nil, fns...)
	if err != nil {
		return nil, err
	}
	if override != "" {
		p := filepath.Join(dir, "override.yml")
		if err := os.WriteFile(p, []byte(override), 0o600); err != nil {
			t.Fatal(err)
		}
		opts.ConfigPaths = append(opts.ConfigPaths, p)
	}
	return opts.LoadProject(t.Context())
}

// propelAuthEnv returns .env.example with its "PropelAuth mode" block uncommented
// and filled in, as docs/propelauth.md tells a PropelAuth user to do.
func propelAuthEnv(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	in, seen := false, false
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# ---- PropelAuth mode"):
			in, seen = true, true
		case strings.HasPrefix(line, "# ---- end of PropelAuth mode"):
			in = false
		case in && regexp.MustCompile(`^# [A-Z_]+=`).MatchString(line):
			line = strings.TrimPrefix(line, "# ")
			k, _, _ := strings.Cut(line, "=")
			switch k {
			case "PROPELAUTH_AUTH_URL":
				line = k + "=" + testAuthURL
			case "REQUEST_VALIDATION_CLIENT_ID":
				line = k + "=" + testClientID
			case "REQUEST_VALIDATION_CLIENT_SECRET":
				line = k + "=" + testClientSecret
			case "PROPELAUTH_API_KEY":
				line = k + "=" + testAPIKey
			}
		}
		out.WriteString(line + "\n")
	}
	if !seen || in {
		t.Fatal(`.env.example: no "# ---- PropelAuth mode" ... "# ---- end of PropelAuth mode" block`)
	}
	return out.String()
}

// checkCtx is what a check looks at.
type checkCtx struct {
	t    *testing.T
	p    *types.Project
	mode mode
}

func (c *checkCtx) svc(name string) (types.ServiceConfig, bool) {
	s, ok := c.p.Services[name]
	return s, ok
}

// env returns a service's variable; unset and empty are the same to the binaries.
func env(s types.ServiceConfig, k string) string {
	if v, ok := s.Environment[k]; ok && v != nil {
		return *v
	}
	return ""
}

// listenPort returns the port of the service's listen-address variable k,
// falling back to the binary's default.
func listenPort(s types.ServiceConfig, k string) (int, error) {
	addr := env(s, k)
	if addr == "" {
		addr = ours[s.Name].listens[k]
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%s: %s=%q: %v", s.Name, k, addr, err)
	}
	return strconv.Atoi(p)
}

// A check returns the problems it finds, each naming the service and what is wrong.
type check struct {
	name string
	fn   func(c *checkCtx) []string
}

var checks = []check{
	{"services", checkServices},
	{"images", checkImages},
	{"healthchecks", checkHealthchecks},
	{"depends_on", checkDependsOn},
	{"networks", checkNetworks},
	{"ports", checkPorts},
	{"scalable", checkScalable},
	{"authz_addr", checkAuthzAddr},
	{"issuer", checkIssuer},
	{"env", checkEnv},
	{"passthrough", checkPassThrough},
	{"upstreams", checkUpstreams},
}

func checkServices(c *checkCtx) []string {
	want := []string{authz, gateway, redis, everything, identityKey}
	if c.mode == demo {
		want = append(want, devauth)
	}
	slices.Sort(want)
	got := c.p.ServiceNames()
	slices.Sort(got)
	var probs []string
	if d := cmp.Diff(want, got); d != "" {
		probs = append(probs, "services (-want +got):\n"+d)
	}
	if c.mode == propelAuth {
		if _, ok := c.p.DisabledServices[devauth]; !ok {
			probs = append(probs, "devauth should be defined but left out by a profile")
		}
	}
	return probs
}

func checkImages(c *checkCtx) []string {
	var probs []string
	for name, s := range c.p.Services {
		if name == redis {
			if s.Image != "redis:7-alpine" || s.Build != nil {
				probs = append(probs, fmt.Sprintf("redis: image %q, build %v: want redis:7-alpine, no build", s.Image, s.Build))
			}
			continue
		}
		if name == everything || name == identityKey {
			probs = append(probs, everythingImageProblems(name, s, c.p.Services[everything])...)
			continue
		}
		if s.Build == nil {
			probs = append(probs, name+": no build section")
			continue
		}
		if filepath.Clean(s.Build.Context) != repoRoot {
			probs = append(probs, fmt.Sprintf("%s: build context %q, want the repository root (go.work, gen/ and internal/testenv are needed)", name, s.Build.Context))
		}
		df := s.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(s.Build.Context, df)
		}
		if want := filepath.Join(repoRoot, "services", name, "Dockerfile"); df != want {
			probs = append(probs, fmt.Sprintf("%s: dockerfile %s, want %s", name, df, want))
			continue
		}
		probs = append(probs, dockerfileProblems(name, df, s)...)
	}
	return probs
}

// dockerfileProblems checks a service's Dockerfile against the compose service
// that runs it and against the build it must perform.
func dockerfileProblems(name, path string, s types.ServiceConfig) []string {
	df, err := parseDockerfile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var probs []string
	bad := func(format string, args ...any) {
		probs = append(probs, fmt.Sprintf("%s: %s: ", name, filepath.Base(filepath.Dir(path))+"/Dockerfile")+fmt.Sprintf(format, args...))
	}

	build := df.stages[0]
	if len(df.stages) < 2 {
		bad("want a multi-stage build")
	}
	goVersion := goWorkVersion()
	if !strings.HasPrefix(build.from, "golang:"+goVersion) {
		bad("builder %q, want golang:%s (go.work's Go)", build.from, goVersion)
	}
	runs := strings.Join(append(build.all("RUN"), build.all("ENV")...), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "cd services/" + name, "./cmd/" + name, "type=cache,target=/go/pkg/mod"} {
		if !strings.Contains(runs, want) {
			bad("the build does not use %s", want)
		}
	}
	ignored, err := dockerIgnored()
	if err != nil {
		return append(probs, err.Error())
	}
	for _, m := range regexp.MustCompile(`type=bind,source=([^,\s]+)`).FindAllStringSubmatch(runs, -1) {
		src := m[1]
		if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
			bad("bind mount source %s: %v", src, err)
		} else if ign, _ := ignored.MatchesOrParentMatches(src); ign {
			bad("bind mount source %s is excluded by .dockerignore", src)
		}
	}

	final := df.final()
	if final.from != "scratch" && !(strings.HasPrefix(final.from, "gcr.io/distroless/static") && strings.HasSuffix(final.from, ":nonroot")) {
		bad("final image %q, want gcr.io/distroless/static*:nonroot or scratch", final.from)
	}
	users := final.all("USER")
	if len(users) == 0 {
		bad("final stage has no USER")
	} else if u, _, _ := strings.Cut(users[len(users)-1], ":"); u == "root" || u == "0" {
		bad("final stage runs as root")
	}
	entry := final.all("ENTRYPOINT")
	if len(entry) != 1 {
		bad("want one ENTRYPOINT, got %d", len(entry))
	} else if argv, err := execForm(entry[0]); err != nil {
		bad("ENTRYPOINT: %v", err)
	} else if d := cmp.Diff([]string{"/app/" + name}, argv); d != "" {
		bad("ENTRYPOINT (-want +got):\n%s", d)
	}
	exposed := strings.Fields(strings.Join(final.all("EXPOSE"), " "))
	for k := range ours[name].listens {
		port, err := listenPort(s, k)
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		if !slices.Contains(exposed, strconv.Itoa(port)) {
			bad("EXPOSE %v lacks %d (%s)", exposed, port, k)
		}
	}
	hcs := final.all("HEALTHCHECK")
	if len(hcs) != 1 {
		bad("want one HEALTHCHECK, got %d", len(hcs))
	} else if _, cmd, ok := strings.Cut(hcs[0], "CMD "); !ok {
		bad("HEALTHCHECK %q has no CMD", hcs[0])
	} else if argv, err := execForm(cmd); err != nil {
		bad("HEALTHCHECK: %v", err)
	} else if s.HealthCheck != nil && len(s.HealthCheck.Test) > 1 {
		if d := cmp.Diff([]string(s.HealthCheck.Test[1:]), argv); d != "" {
			bad("HEALTHCHECK differs from the compose healthcheck (-compose +Dockerfile):\n%s", d)
		}
	}
	return probs
}

// goWorkVersion returns go.work's Go version as major.minor, e.g. "1.26".
func goWorkVersion() string {
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.work"))
	if err != nil {
		return "(go.work: " + err.Error() + ")"
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		return "(go.work has no go line)"
	}
	return string(m[1])
}

// dockerIgnored returns .dockerignore as the matcher BuildKit uses.
func dockerIgnored() (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return patternmatcher.New(patterns)
}

func checkHealthchecks(c *checkCtx) []string {
	var probs []string
	for name, s := range c.p.Services {
		hc := s.HealthCheck
		has := hc != nil && !hc.Disable && len(hc.Test) > 0
		var want []string
		switch {
		case name == identityKey:
			if has {
				probs = append(probs, name+": a one-shot needs no healthcheck")
			}
			continue
		case !has:
			probs = append(probs, name+": no healthcheck")
			continue
		case name == everything:
			// Any HTTP answer from its port; node is the only tool in the image.
			if len(hc.Test) != 4 || hc.Test[0] != "CMD" || hc.Test[1] != "node" || !strings.Contains(hc.Test[3], fmt.Sprintf("'http://127.0.0.1:%s/mcp'", env(s, "PORT"))) {
				probs = append(probs, fmt.Sprintf("%s: healthcheck %q: want [CMD node -e <fetch of http://127.0.0.1:$PORT/mcp>]", name, hc.Test))
			}
			continue
		}
		if name == redis {
			want = []string{"CMD", "redis-cli", "ping"}
		} else {
			port, err := listenPort(s, ours[name].healthVar)
			if err != nil {
				probs = append(probs, err.Error())
				continue
			}
			// Exec form: the distroless images have no shell for CMD-SHELL.
			want = []string{"CMD", "/app/" + name, "-healthcheck", fmt.Sprintf("http://127.0.0.1:%d/healthz", port)}
		}
		if d := cmp.Diff(want, []string(hc.Test)); d != "" {
			probs = append(probs, fmt.Sprintf("%s: healthcheck test (-want +got):\n%s", name, d))
		}
	}
	return probs
}

func checkDependsOn(c *checkCtx) []string {
	want := map[string][]string{authz: {redis}, gateway: {authz, everything, identityKey}}
	if c.mode == demo {
		want[authz] = append(want[authz], devauth)
		want[gateway] = append(want[gateway], devauth)
	}
	var probs []string
	for name, s := range c.p.Services {
		for dep, d := range s.DependsOn {
			if dep == identityKey {
				// A one-shot: done once it exited 0.
				if d.Condition != types.ServiceConditionCompletedSuccessfully || !d.Required {
					probs = append(probs, fmt.Sprintf("%s: depends_on %s: condition %q (required %v), want %s, required", name, dep, d.Condition, d.Required, types.ServiceConditionCompletedSuccessfully))
				}
			} else if d.Condition != types.ServiceConditionHealthy {
				probs = append(probs, fmt.Sprintf("%s: depends_on %s: condition %q, want %s", name, dep, d.Condition, types.ServiceConditionHealthy))
			}
			if dep == devauth && d.Required {
				probs = append(probs, name+": depends_on devauth must be required: false (PropelAuth mode leaves devauth out)")
			}
			if _, ok := c.p.Services[dep]; !ok && d.Required {
				// docker compose refuses to start; an optional one it skips.
				probs = append(probs, fmt.Sprintf("%s: depends_on %s, which does not run", name, dep))
			}
		}
		for _, dep := range want[name] {
			if _, ok := s.DependsOn[dep]; !ok {
				probs = append(probs, fmt.Sprintf("%s: does not depend on %s", name, dep))
			}
		}
	}
	return probs
}

func checkNetworks(c *checkCtx) []string {
	var probs []string
	nets := func(s types.ServiceConfig) []string { return slices.Sorted(maps.Keys(s.Networks)) }
	if n, ok := c.p.Networks["internal"]; !ok || !n.Internal {
		probs = append(probs, `network "internal" missing or not internal: true`)
	}
	// The upstream is reachable from the gateway only; the key generator
	// needs no network at all.
	wantOnly := map[string][]string{redis: {"internal"}, authz: {"internal"}, everything: {"internal"}, identityKey: nil}
	if c.mode == propelAuth {
		// authz must reach PropelAuth: "egress" is an ordinary network carrying
		// nothing but authz's outbound calls.
		wantOnly[authz] = []string{"egress", "internal"}
		if n, ok := c.p.Networks["egress"]; !ok || n.Internal {
			probs = append(probs, `network "egress" missing or internal`)
		}
	}
	for name, s := range c.p.Services {
		if name == identityKey {
			if s.NetworkMode != "none" || len(s.Networks) > 0 {
				probs = append(probs, fmt.Sprintf("%s: network_mode %q, networks %v: want network_mode none", name, s.NetworkMode, nets(s)))
			}
			continue
		}
		if s.NetworkMode != "" {
			probs = append(probs, fmt.Sprintf("%s: network_mode %q", name, s.NetworkMode))
		}
		got := nets(s)
		if w, ok := wantOnly[name]; ok {
			if d := cmp.Diff(w, got); d != "" {
				probs = append(probs, fmt.Sprintf("%s: networks (-want +got):\n%s", name, d))
			}
			continue
		}
		if !slices.Contains(got, "internal") || !slices.Contains(got, "public") {
			probs = append(probs, fmt.Sprintf("%s: networks %v, want internal and public", name, got))
		}
		if slices.Contains(got, "egress") {
			probs = append(probs, name+": on authz's egress network")
		}
	}
	if n, ok := c.p.Networks["public"]; !ok || n.Internal {
		probs = append(probs, `network "public" missing or internal`)
	}
	return probs
}

func checkPorts(c *checkCtx) []string {
	var probs []string
	for name, s := range c.p.Services {
		switch name {
		case redis, authz, everything, identityKey:
			if len(s.Ports) > 0 {
				probs = append(probs, fmt.Sprintf("%s: publishes %v; it must be reachable only inside the stack", name, s.Ports))
			}
		case gateway, devauth:
			urlVar, listenVar := "MCP_SERVER_URL", "MCP_LISTEN"
			if name == devauth {
				urlVar, listenVar = "PROPELAUTH_AUTH_URL", "DEVAUTH_LISTEN"
			}
			if len(s.Ports) != 1 {
				probs = append(probs, fmt.Sprintf("%s: publishes %d ports, want 1", name, len(s.Ports)))
				continue
			}
			p := s.Ports[0]
			target, err := listenPort(s, listenVar)
			if err != nil {
				probs = append(probs, err.Error())
				continue
			}
			if int(p.Target) != target {
				probs = append(probs, fmt.Sprintf("%s: publishes container port %d, but it listens on %d (%s)", name, p.Target, target, listenVar))
			}
			// The public URL the browser and MCP clients use must be the published port.
			u, err := url.Parse(env(s, urlVar))
			if err != nil || u.Port() == "" {
				probs = append(probs, fmt.Sprintf("%s: %s=%q has no port", name, urlVar, env(s, urlVar)))
			} else if p.Published != u.Port() {
				probs = append(probs, fmt.Sprintf("%s: publishes host port %q, but %s=%s", name, p.Published, urlVar, u))
			}
			if p.HostIP != "127.0.0.1" {
				probs = append(probs, fmt.Sprintf("%s: published on %q, want 127.0.0.1 (the demo's credentials are public)", name, p.HostIP))
			}
		}
	}
	return probs
}

func checkScalable(c *checkCtx) []string {
	s, ok := c.svc(authz)
	if !ok {
		return []string{"no authz service"}
	}
	var probs []string
	if s.ContainerName != "" {
		probs = append(probs, "authz: container_name is set, so --scale authz=N cannot work")
	}
	for _, p := range s.Ports {
		if p.Published != "" {
			probs = append(probs, fmt.Sprintf("authz: host port %s would clash between replicas", p.Published))
		}
	}
	return probs
}

func checkAuthzAddr(c *checkCtx) []string {
	g, ok1 := c.svc(gateway)
	a, ok2 := c.svc(authz)
	if !ok1 || !ok2 {
		return []string{"no gateway or authz service"}
	}
	addr := env(g, "AUTHZ_ADDR")
	target, ok := strings.CutPrefix(addr, "dns:///")
	if !ok {
		return []string{fmt.Sprintf("mcp-gateway: AUTHZ_ADDR=%q: want dns:///authz:PORT so gRPC balances over every replica", addr)}
	}
	host, port, err := net.SplitHostPort(target)
	want, perr := listenPort(a, "AUTHZ_LISTEN")
	if err != nil || perr != nil || host != authz || port != strconv.Itoa(want) {
		return []string{fmt.Sprintf("mcp-gateway: AUTHZ_ADDR=%q: want dns:///authz:%d", addr, want)}
	}
	return nil
}

func checkIssuer(c *checkCtx) []string {
	var probs []string
	a, _ := c.svc(authz)
	g, _ := c.svc(gateway)
	want := func(s types.ServiceConfig, k, v string) {
		if got := env(s, k); got != v {
			probs = append(probs, fmt.Sprintf("%s: %s=%q, want %q", s.Name, k, got, v))
		}
	}
	switch c.mode {
	case demo:
		d, ok := c.svc(devauth)
		if !ok {
			return []string{"no devauth service"}
		}
		public := env(d, "PROPELAUTH_AUTH_URL")
		if !strings.HasPrefix(public, "http://localhost:") {
			probs = append(probs, fmt.Sprintf("devauth: PROPELAUTH_AUTH_URL=%q: want http://localhost:PORT, the URL the browser uses", public))
		}
		issuer := public + "/oauth/2.1"
		want(a, "AUTHORIZATION_SERVER", issuer)
		want(g, "AUTHORIZATION_SERVER", issuer)
		if port, err := listenPort(d, "DEVAUTH_LISTEN"); err == nil {
			// authz cannot reach the host's localhost: it calls devauth by name.
			want(a, "PROPELAUTH_AUTH_URL", fmt.Sprintf("http://devauth:%d", port))
		}
		for _, k := range []string{"REQUEST_VALIDATION_CLIENT_ID", "REQUEST_VALIDATION_CLIENT_SECRET", "PROPELAUTH_API_KEY"} {
			if env(d, k) == "" {
				probs = append(probs, "devauth: "+k+" is empty")
			}
			want(a, k, env(d, k))
		}
	case propelAuth:
		want(a, "PROPELAUTH_AUTH_URL", testAuthURL)
		want(a, "AUTHORIZATION_SERVER", testAuthURL+"/oauth/2.1")
		want(g, "AUTHORIZATION_SERVER", testAuthURL+"/oauth/2.1")
		want(a, "REQUEST_VALIDATION_CLIENT_ID", testClientID)
		want(a, "REQUEST_VALIDATION_CLIENT_SECRET", testClientSecret)
		want(a, "PROPELAUTH_API_KEY", testAPIKey)
		for _, s := range []types.ServiceConfig{a, g} {
			for k, v := range s.Environment {
				if v != nil && strings.Contains(*v, "devauth") {
					probs = append(probs, fmt.Sprintf("%s: %s=%q refers to devauth, which does not run", s.Name, k, *v))
				}
			}
		}
	}
	return probs
}

func checkEnv(c *checkCtx) []string {
	var probs []string
	for name, s := range c.p.Services {
		if _, ok := ours[name]; !ok {
			continue
		}
		reads := envNames(c.t, name)
		for k := range s.Environment {
			if !reads[k] {
				probs = append(probs, fmt.Sprintf("%s: sets %s, which %s does not read (-list-env)", name, k, name))
			}
		}
	}
	slices.Sort(probs)
	return probs
}

// notPassedThrough lists, per service, the variables its binary reads that
// docker-compose.yml deliberately leaves unset, and why. .env.example and
// docs/configuration.md promise that every other variable passes through from
// .env (or is fixed by compose).
var notPassedThrough = map[string]map[string]string{
	authz: {
		"AUTHZ_TLS_CERT":           "a file in the container: the mutual-TLS overlay in docs/security.md mounts and sets it",
		"AUTHZ_TLS_KEY":            "a file in the container: the mutual-TLS overlay sets it",
		"AUTHZ_TLS_CLIENT_CA":      "a file in the container: the mutual-TLS overlay sets it",
		"AUTHZ_GETUSER_CALLERS":    "meaningful with mutual TLS only: the overlay sets it",
		"AUTHZ_INVALIDATE_CALLERS": "meaningful with mutual TLS only: the overlay sets it",
		"INTROSPECTION_URL":        "the demo introspects devauth; docker-compose.propelauth.yml passes it",
	},
	gateway: {
		"AUTHZ_TLS_CA":          "a file in the container: the mutual-TLS overlay sets it",
		"AUTHZ_TLS_CERT":        "a file in the container: the mutual-TLS overlay sets it",
		"AUTHZ_TLS_KEY":         "a file in the container: the mutual-TLS overlay sets it",
		"AUTHZ_TLS_SERVER_NAME": "meaningful with mutual TLS only: the overlay sets it",
		"PROPELAUTH_AUTH_URL":   "the gateway only derives AUTHORIZATION_SERVER from it, which compose sets",
	},
	devauth: {
		"DEVAUTH_USERS_FILE": "a file on the host: make run only, as .env.example says",
	},
}

// checkPassThrough: every variable a binary reads (-list-env) is set in its
// service's environment, fixed or passed through from .env, unless
// notPassedThrough says why not.
func checkPassThrough(c *checkCtx) []string {
	var probs []string
	for name, s := range c.p.Services {
		if _, ok := ours[name]; !ok {
			continue
		}
		for k := range envNames(c.t, name) {
			if _, set := s.Environment[k]; !set && notPassedThrough[name][k] == "" {
				probs = append(probs, fmt.Sprintf("%s: %s is not passed through from .env (add %s: ${%s:-} to its environment)", name, k, k, k))
			}
		}
	}
	slices.Sort(probs)
	return probs
}

// TestCompose loads the compose files the ways a user runs them and applies every
// check to each.
func TestCompose(t *testing.T) {
	slow(t)
	// COMPOSE_FILE paths are relative to the directory docker compose runs in.
	t.Chdir(repoRoot)
	example, err := os.ReadFile(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	scenarios := []struct {
		name     string
		mode     mode
		dotEnv   string
		override string
	}{
		{name: "fresh clone, no .env", mode: demo},
		{name: ".env.example copied unchanged", mode: demo, dotEnv: string(example)},
		{name: "PropelAuth block of .env.example filled in", mode: propelAuth, dotEnv: propelAuthEnv(t)},
		{name: "--scale authz=3", mode: demo, override: "services:\n  authz:\n    scale: 3\n"},
		{name: "PropelAuth with --scale authz=3", mode: propelAuth, dotEnv: propelAuthEnv(t), override: "services:\n  authz:\n    scale: 3\n"},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			p, err := loadProject(t, sc.dotEnv, sc.override)
			if err != nil {
				t.Fatalf("loading: %v", err)
			}
			if sc.override != "" {
				if a := p.Services[authz]; a.GetScale() != 3 {
					t.Errorf("authz scale = %d, want 3", a.GetScale())
				}
			}
			c := &checkCtx{t: t, p: p, mode: sc.mode}
			for _, ch := range checks {
				for _, prob := range ch.fn(c) {
					t.Errorf("%s: %s", ch.name, prob)
				}
			}
		})
	}

	t.Run("copying .env.example changes nothing", func(t *testing.T) {
		fresh, err1 := loadProject(t, "", "")
		copied, err2 := loadProject(t, string(example), "")
		if err1 != nil || err2 != nil {
			t.Fatalf("loading: %v, %v", err1, err2)
		}
		for name, s := range fresh.Services {
			if d := cmp.Diff(s.Environment, copied.Services[name].Environment); d != "" {
				t.Errorf("%s environment (-fresh +copied):\n%s", name, d)
			}
		}
	})

	// PropelAuth mode without its settings must stop docker compose with a message
	// naming what to set, not start a stack that fails later.
	for _, k := range []string{"PROPELAUTH_AUTH_URL", "REQUEST_VALIDATION_CLIENT_ID", "REQUEST_VALIDATION_CLIENT_SECRET", "PROPELAUTH_API_KEY"} {
		t.Run("PropelAuth mode without "+k, func(t *testing.T) {
			dotEnv := regexp.MustCompile(`(?m)^`+k+`=.*$`).ReplaceAllString(propelAuthEnv(t), "")
			_, err := loadProject(t, dotEnv, "")
			if err == nil || !strings.Contains(err.Error(), "set "+k+" in .env") {
				t.Errorf("loading: %v; want an error telling to set %s in .env", err, k)
			}
		})
	}
}

// TestComposeChecksCatchRegressions breaks the demo project in one way per check
// and expects that check, which passes on the real project, to report it.
func TestComposeChecksCatchRegressions(t *testing.T) {
	slow(t)
	t.Chdir(repoRoot)
	edit := func(p *types.Project, name string, f func(s *types.ServiceConfig)) {
		s := p.Services[name]
		f(&s)
		p.Services[name] = s
	}
	setEnv := func(p *types.Project, name, k, v string) {
		edit(p, name, func(s *types.ServiceConfig) {
			env := types.MappingWithEquals{}
			maps.Copy(env, s.Environment)
			env[k] = &v
			s.Environment = env
		})
	}
	breaks := map[string][]func(p *types.Project){
		"services": {func(p *types.Project) { delete(p.Services, redis) }},
		"images": {
			func(p *types.Project) {
				edit(p, authz, func(s *types.ServiceConfig) {
					b := *s.Build
					b.Dockerfile = filepath.Join(repoRoot, "services", gateway, "Dockerfile")
					s.Build = &b
				})
			},
			func(p *types.Project) { setEnv(p, gateway, "MCP_LISTEN", ":8080") },         // not EXPOSEd
			func(p *types.Project) { setEnv(p, gateway, "MCP_METRICS_LISTEN", ":9093") }, // not EXPOSEd
			func(p *types.Project) { edit(p, redis, func(s *types.ServiceConfig) { s.Image = "redis:latest" }) },
		},
		"healthchecks": {
			func(p *types.Project) { edit(p, devauth, func(s *types.ServiceConfig) { s.HealthCheck = nil }) },
			func(p *types.Project) { setEnv(p, gateway, "MCP_LISTEN", ":8001") },
			func(p *types.Project) {
				edit(p, authz, func(s *types.ServiceConfig) {
					hc := *s.HealthCheck
					hc.Test = types.HealthCheckTest{"CMD-SHELL", "wget -qO- http://127.0.0.1:9091/healthz"}
					s.HealthCheck = &hc
				})
			},
		},
		"depends_on": {
			func(p *types.Project) {
				edit(p, gateway, func(s *types.ServiceConfig) {
					d := types.DependsOnConfig{}
					maps.Copy(d, s.DependsOn)
					d[authz] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Required: true}
					s.DependsOn = d
				})
			},
			func(p *types.Project) {
				edit(p, authz, func(s *types.ServiceConfig) {
					d := types.DependsOnConfig{}
					maps.Copy(d, s.DependsOn)
					delete(d, redis)
					dep := d[devauth]
					dep.Required = true
					d[devauth] = dep
					s.DependsOn = d
				})
			},
		},
		"networks": {
			func(p *types.Project) {
				edit(p, authz, func(s *types.ServiceConfig) {
					n := maps.Clone(s.Networks)
					n["public"] = nil
					s.Networks = n
				})
			},
			// The upstream reachable from outside the stack.
			func(p *types.Project) {
				edit(p, everything, func(s *types.ServiceConfig) {
					n := maps.Clone(s.Networks)
					n["public"] = nil
					s.Networks = n
				})
			},
			func(p *types.Project) {
				n := maps.Clone(p.Networks)
				in := n["internal"]
				in.Internal = false
				n["internal"] = in
				p.Networks = n
			},
		},
		"ports": {
			func(p *types.Project) {
				edit(p, everything, func(s *types.ServiceConfig) {
					s.Ports = []types.ServicePortConfig{{Target: 3001, Published: "3001", HostIP: "127.0.0.1"}}
				})
			},
			func(p *types.Project) {
				edit(p, redis, func(s *types.ServiceConfig) { s.Ports = []types.ServicePortConfig{{Target: 6379, Published: "6379"}} })
			},
			func(p *types.Project) { setEnv(p, gateway, "MCP_SERVER_URL", "http://localhost:8080") },
			// The gateway's metrics published on the host.
			func(p *types.Project) {
				edit(p, gateway, func(s *types.ServiceConfig) {
					s.Ports = append(slices.Clone(s.Ports), types.ServicePortConfig{Target: 9092, Published: "9092", HostIP: "127.0.0.1"})
				})
			},
			func(p *types.Project) {
				edit(p, devauth, func(s *types.ServiceConfig) {
					s.Ports = []types.ServicePortConfig{{Target: 9000, Published: "9000", HostIP: ""}}
				})
			},
		},
		"scalable": {func(p *types.Project) { edit(p, authz, func(s *types.ServiceConfig) { s.ContainerName = "authz" }) }},
		"authz_addr": {
			func(p *types.Project) { setEnv(p, gateway, "AUTHZ_ADDR", "authz:50051") },
			func(p *types.Project) { setEnv(p, gateway, "AUTHZ_ADDR", "dns:///authz:50052") },
		},
		"issuer": {
			func(p *types.Project) { setEnv(p, authz, "AUTHORIZATION_SERVER", "http://devauth:9000/oauth/2.1") },
			func(p *types.Project) { setEnv(p, authz, "PROPELAUTH_AUTH_URL", "http://localhost:9000") },
			func(p *types.Project) { setEnv(p, devauth, "PROPELAUTH_API_KEY", "another-key") },
		},
		"env": {func(p *types.Project) { setEnv(p, authz, "AUTHZ_CACHE_TTL", "60s") }},
		"upstreams": {
			func(p *types.Project) {
				edit(p, gateway, func(s *types.ServiceConfig) {
					env := maps.Clone(s.Environment)
					delete(env, "UPSTREAMS_FILE")
					s.Environment = env
				})
			},
			// The upstreams file mounted read-write.
			func(p *types.Project) {
				edit(p, gateway, func(s *types.ServiceConfig) {
					vols := slices.Clone(s.Volumes)
					for i := range vols {
						vols[i].ReadOnly = false
					}
					s.Volumes = vols
				})
			},
			// The upstream's port not exposed.
			func(p *types.Project) {
				edit(p, everything, func(s *types.ServiceConfig) { s.Expose = types.StringOrNumberList{"3002"} })
			},
			// The key generated where the gateway does not look.
			func(p *types.Project) {
				edit(p, identityKey, func(s *types.ServiceConfig) {
					e := slices.Clone(s.Entrypoint)
					e[len(e)-1] = "/keys/other.pem"
					s.Entrypoint = e
				})
			},
		},
		"passthrough": {func(p *types.Project) {
			edit(p, devauth, func(s *types.ServiceConfig) {
				env := maps.Clone(s.Environment)
				delete(env, "DEVAUTH_TEST_API")
				s.Environment = env
			})
		}},
	}
	for _, ch := range checks {
		fns := breaks[ch.name]
		if len(fns) == 0 {
			t.Errorf("check %q has no regression to catch here", ch.name)
		}
		for i, brk := range fns {
			t.Run(fmt.Sprintf("%s/%d", ch.name, i), func(t *testing.T) {
				p, err := loadProject(t, "", "")
				if err != nil {
					t.Fatal(err)
				}
				c := &checkCtx{t: t, p: p, mode: demo}
				if probs := ch.fn(c); len(probs) > 0 {
					t.Fatalf("fails before the change: %v", probs)
				}
				brk(p)
				if probs := ch.fn(c); len(probs) == 0 {
					t.Error("the check did not notice the change")
				} else {
					t.Logf("caught: %s", strings.Join(probs, "; "))
				}
			})
		}
	}
}
