package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"go.yaml.in/yaml/v3"
)

// everythingImageProblems checks the image of the example upstream (and of the
// identity-key one-shot, which runs the same image): built from the
// repository with deploy/compose/everything.Dockerfile, which installs
// server-everything from e2e/ts's lockfile (the version the tests run) and
// runs it unprivileged.
func everythingImageProblems(name string, s, ev types.ServiceConfig) []string {
	var probs []string
	bad := func(format string, args ...any) {
		probs = append(probs, name+": "+fmt.Sprintf(format, args...))
	}
	if s.Build == nil {
		return []string{name + ": no build section"}
	}
	if filepath.Clean(s.Build.Context) != repoRoot {
		bad("build context %q, want the repository root", s.Build.Context)
	}
	df := s.Build.Dockerfile
	if !filepath.IsAbs(df) {
		df = filepath.Join(s.Build.Context, df)
	}
	if want := filepath.Join(repoRoot, everythingDockerfile); df != want {
		return append(probs, fmt.Sprintf("%s: dockerfile %s, want %s", name, df, want))
	}
	if name == identityKey {
		// Same image, built once: the key generator needs only Node.
		if s.Image == "" || s.Image != ev.Image {
			bad("image %q, want everything's %q", s.Image, ev.Image)
		}
		return probs
	}

	d, err := parseDockerfile(df)
	if err != nil {
		return append(probs, err.Error())
	}
	final := d.final()
	// e2e/ts/package.json says node >= 20, which is what the tests run on.
	if !regexp.MustCompile(`^node:20[.-]`).MatchString(final.from) {
		bad("%s: base image %q, want node:20-*", everythingDockerfile, final.from)
	}
	copies := strings.Join(final.all("COPY"), "\n")
	for _, f := range []string{"e2e/ts/package.json", "e2e/ts/package-lock.json"} {
		if !strings.Contains(copies, f) {
			bad("%s does not COPY %s", everythingDockerfile, f)
		}
	}
	if runs := strings.Join(final.all("RUN"), "\n"); !strings.Contains(runs, "npm ci") {
		bad("%s does not install with npm ci (exactly the lockfile)", everythingDockerfile)
	}
	users := final.all("USER")
	if len(users) == 0 || users[len(users)-1] == "root" || strings.HasPrefix(users[len(users)-1], "0") {
		bad("%s runs as root (USER %v)", everythingDockerfile, users)
	}
	if entry := final.all("ENTRYPOINT"); len(entry) != 1 || !strings.Contains(entry[0], "@modelcontextprotocol/server-everything/dist/index.js") {
		bad("%s: ENTRYPOINT %v does not run server-everything", everythingDockerfile, entry)
	}
	if cmds := final.all("CMD"); len(cmds) != 1 || !strings.Contains(cmds[0], `"streamableHttp"`) {
		bad("%s: CMD %v, want streamableHttp", everythingDockerfile, cmds)
	}
	if port := env(s, "PORT"); !slices.Contains(strings.Fields(strings.Join(final.all("EXPOSE"), " ")), port) {
		bad("%s: EXPOSE %v lacks PORT %q", everythingDockerfile, final.all("EXPOSE"), port)
	}

	// BuildKit reads <Dockerfile>.dockerignore instead of the repository's:
	// the lockfile in, node_modules, .env and everything else out.
	f, err := os.Open(df + ".dockerignore")
	if err != nil {
		return append(probs, err.Error())
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return append(probs, err.Error())
	}
	m, err := patternmatcher.New(patterns)
	if err != nil {
		return append(probs, err.Error())
	}
	for p, wantIgnored := range map[string]bool{
		"e2e/ts/package.json":      false,
		"e2e/ts/package-lock.json": false,
		"e2e/ts/node_modules/@modelcontextprotocol/sdk/package.json": true,
		".env":                        true,
		"devauth.example.yaml":        true,
		"services/mcp-gateway/go.mod": true,
	} {
		if ign, _ := m.MatchesOrParentMatches(p); ign != wantIgnored {
			bad("%s.dockerignore: %s ignored = %v, want %v", everythingDockerfile, p, ign, wantIgnored)
		}
	}
	return probs
}

// upstreamsFile is what checkUpstreams reads of an upstreams file; package
// upstreamconf (which the gateway runs) validates all of it.
type upstreamsFile struct {
	Identity struct {
		SigningKeyFile string `yaml:"signing_key_file"`
	} `yaml:"identity"`
	Upstreams []struct {
		Name string `yaml:"name"`
		URL  string `yaml:"url"`
	} `yaml:"upstreams"`
}

// mountFor returns the service's volume whose target is path or a directory
// above it.
func mountFor(s types.ServiceConfig, path string) (types.ServiceVolumeConfig, bool) {
	for _, v := range s.Volumes {
		if v.Target == path || strings.HasPrefix(path, strings.TrimSuffix(v.Target, "/")+"/") {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

// checkUpstreams: the gateway fronts the example upstream. UPSTREAMS_FILE
// names a file mounted read-only from the repository; each upstream it lists
// is a service the gateway can reach (a shared network, the port exposed); the
// identity signing key is in a volume the gateway mounts read-only and the
// identity-key one-shot writes with the script from the repository.
func checkUpstreams(c *checkCtx) []string {
	g, ok := c.svc(gateway)
	if !ok {
		return []string{"no gateway service"}
	}
	file := env(g, "UPSTREAMS_FILE")
	if file == "" {
		return []string{"mcp-gateway: UPSTREAMS_FILE is not set: the demo fronts no upstream"}
	}
	v, ok := mountFor(g, file)
	if !ok || v.Target != file || v.Type != types.VolumeTypeBind {
		return []string{fmt.Sprintf("mcp-gateway: UPSTREAMS_FILE=%s is not a file bind-mounted into it", file)}
	}
	var probs []string
	if !v.ReadOnly {
		probs = append(probs, fmt.Sprintf("mcp-gateway: %s is mounted read-write", file))
	}
	if rel, err := filepath.Rel(repoRoot, v.Source); err != nil || strings.HasPrefix(rel, "..") {
		probs = append(probs, fmt.Sprintf("mcp-gateway: UPSTREAMS_FILE comes from %s, outside the repository", v.Source))
	}
	raw, err := os.ReadFile(v.Source)
	if err != nil {
		return append(probs, "mcp-gateway: UPSTREAMS_FILE: "+err.Error())
	}
	var uf upstreamsFile
	if err := yaml.Unmarshal(raw, &uf); err != nil {
		return append(probs, fmt.Sprintf("%s: %v", v.Source, err))
	}

	gwNets := g.Networks
	fronts := false
	for _, u := range uf.Upstreams {
		if u.URL == "" {
			continue // stdio
		}
		pu, err := url.Parse(u.URL)
		if err != nil {
			probs = append(probs, fmt.Sprintf("upstream %s: url %q: %v", u.Name, u.URL, err))
			continue
		}
		host, port, _ := net.SplitHostPort(pu.Host)
		up, ok := c.svc(host)
		if !ok {
			probs = append(probs, fmt.Sprintf("upstream %s: url %s names no service of the stack", u.Name, u.URL))
			continue
		}
		fronts = fronts || host == everything
		shared := false
		for n := range up.Networks {
			_, on := gwNets[n]
			shared = shared || on
		}
		if !shared {
			probs = append(probs, fmt.Sprintf("upstream %s: %s shares no network with the gateway", u.Name, host))
		}
		if !slices.Contains(up.Expose, port) {
			probs = append(probs, fmt.Sprintf("upstream %s: %s does not expose port %s of %s", u.Name, host, port, u.URL))
		}
		if p := env(up, "PORT"); p != "" && p != port {
			probs = append(probs, fmt.Sprintf("upstream %s: %s listens on PORT=%s, but the url says %s", u.Name, host, p, port))
		}
		if dep, ok := g.DependsOn[host]; !ok || dep.Condition != types.ServiceConditionHealthy {
			probs = append(probs, fmt.Sprintf("mcp-gateway: does not wait for %s to be healthy", host))
		}
	}
	if !fronts {
		probs = append(probs, "mcp-gateway: the upstreams file does not front the everything service")
	}

	key := uf.Identity.SigningKeyFile
	if key == "" {
		// Generated at start: fine for one replica, but the demo shows the
		// production setting.
		return append(probs, "the upstreams file sets no identity.signing_key_file")
	}
	kv, ok := mountFor(g, key)
	if !ok || kv.Type != types.VolumeTypeVolume || !kv.ReadOnly {
		return append(probs, fmt.Sprintf("mcp-gateway: signing_key_file %s is not in a named volume mounted read-only (%+v)", key, kv))
	}
	ik, ok := c.svc(identityKey)
	if !ok {
		return append(probs, "no identity-key service writes the signing key")
	}
	var keyDir string
	for _, iv := range ik.Volumes {
		if iv.Type == types.VolumeTypeVolume && iv.Source == kv.Source && !iv.ReadOnly {
			keyDir = iv.Target
		}
	}
	wantKey := filepath.Join(keyDir, strings.TrimPrefix(key, kv.Target))
	if keyDir == "" || len(ik.Entrypoint) == 0 || ik.Entrypoint[len(ik.Entrypoint)-1] != wantKey {
		probs = append(probs, fmt.Sprintf("identity-key: entrypoint %q does not write %s into volume %s (the gateway's %s)", ik.Entrypoint, wantKey, kv.Source, key))
	}
	if len(ik.Command) != 0 {
		probs = append(probs, fmt.Sprintf("identity-key: command %q: want [] (the image's streamableHttp would be one more argument)", ik.Command))
	}
	script := ""
	if len(ik.Entrypoint) >= 2 {
		script = ik.Entrypoint[1]
	}
	if sv, ok := mountFor(ik, script); !ok || sv.Target != script || sv.Source != filepath.Join(repoRoot, identityKeyScript) {
		probs = append(probs, fmt.Sprintf("identity-key: runs %q, want %s mounted from the repository", script, identityKeyScript))
	}
	return probs
}

// identityKeyCommand returns the argv the identity-key service runs, for the
// host: node, the repository's script and file instead of the container's
// key path.
func identityKeyCommand(p *types.Project, file string) ([]string, error) {
	ik, ok := p.Services[identityKey]
	if !ok || len(ik.Entrypoint) != 3 || ik.Entrypoint[0] != "node" {
		return nil, fmt.Errorf("identity-key: entrypoint %q, want [node SCRIPT FILE]", ik.Entrypoint)
	}
	return []string{"node", filepath.Join(repoRoot, identityKeyScript), file}, nil
}

// composeUpstreamsFile returns the gateway's upstreams file with the
// container's names replaced as rewrite replaces them and the key path moved
// to keyFile.
func composeUpstreamsFile(p *types.Project, addr map[string]string, keyFile string) ([]byte, error) {
	g := p.Services[gateway]
	v, ok := mountFor(g, env(g, "UPSTREAMS_FILE"))
	if !ok {
		return nil, fmt.Errorf("mcp-gateway: UPSTREAMS_FILE is not mounted")
	}
	raw, err := os.ReadFile(v.Source)
	if err != nil {
		return nil, err
	}
	var uf upstreamsFile
	if err := yaml.Unmarshal(raw, &uf); err != nil {
		return nil, err
	}
	if uf.Identity.SigningKeyFile != "" {
		raw = bytes.ReplaceAll(raw, []byte(uf.Identity.SigningKeyFile), []byte(keyFile))
	}
	return []byte(rewrite(string(raw), addr)), nil
}

// everythingPort is the port the everything service listens on in the stack.
func everythingPort(p *types.Project) (int, error) {
	return strconv.Atoi(env(p.Services[everything], "PORT"))
}
