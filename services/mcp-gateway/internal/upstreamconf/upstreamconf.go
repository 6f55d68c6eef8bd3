// Package upstreamconf reads the gateway's upstreams file (UPSTREAMS_FILE):
// the upstream MCP servers the gateway fronts, how each is reached, which
// scopes its tools need, and how callers are named to it.
//
// # The file
//
// YAML, read strictly: a key the package does not know is an error, as is a
// key given twice, an anchor or alias, or a value of the wrong kind. Every
// error is one line naming the key path, such as
//
//	upstreams[1].name: "Docs" must be 1 to 32 of a-z, 0-9 and '-'
//
// and the gateway prefixes it with the variable and the file:
// `UPSTREAMS_FILE: upstreams.yaml: upstreams[1].name: ...`.
//
//	builtin_tools: true            # serve who_am_i and list_my_orgs too (default true)
//	start_timeout: 10s             # how long start waits for each upstream's catalog
//	identity:                      # how callers are named to upstreams
//	  signing_key_file: /secrets/identity.pem   # PEM EC P-256 or RSA >= 2048; unset: generated (one replica only)
//	  previous_key_files: [/secrets/identity-old.pem]   # published in the JWKS, never used to sign
//	  ttl: 5m                      # lifetime of an identity assertion, 10s to 10m
//	upstreams:
//	  - name: everything           # [a-z0-9-]{1,32}: logs, metrics, default prefix
//	    url: http://everything:3001/mcp         # streamable HTTP ...
//	    # command: [npx, -y, "@modelcontextprotocol/server-everything", stdio]   # ... or stdio
//	    # env: {KEY: "${FROM_GATEWAY_ENV}"}     # stdio child's environment (besides PATH and HOME)
//	    # dir: /srv/everything                  # stdio child's working directory
//	    prefix: everything_        # default: "<name>_" with several upstreams, "" for a lone one
//	    scopes: [read:user_data]   # needed for every request to this upstream, besides SCOPES
//	    tools:                     # per-tool settings, by the upstream's own tool name
//	      trigger-long-running-operation: {scopes: [write:jobs]}
//	    include: ["*"]             # globs (path.Match) of the upstream's tool names to serve
//	    exclude: []                # globs of tool names to leave out (wins over include)
//	    timeout: 30s               # a whole routed call, 1ms to 10m
//	    identity: jwt              # jwt (default): a signed identity assertion; none
//	    headers: {X-Api-Key: "${EVERYTHING_API_KEY}"}   # static headers (HTTP only)
//	    refresh: 5m                # catalog refresh interval; 0: only on list_changed
//	    max_response_bytes: 4194304   # bound of an answer, each SSE event, each stdio line
//	    sessions: per_caller       # per_caller (default) | shared (HTTP upstreams that keep sessions)
//	    max_sessions: 1000         # per-caller sessions kept per replica (least recently used out)
//	    session_idle: 10m          # a per-caller session unused this long is ended
//	    max_concurrent: 64         # calls in flight to this upstream per replica
//
// # Values
//
// A string value may name variables of the gateway's environment as
// ${NAME}; an unset or empty one is an error naming it. $$ is a literal $.
// References are resolved after the YAML is parsed, so a value can never
// add keys. Relative paths (signing_key_file, previous_key_files, dir) are
// relative to the directory of the file. Durations are Go durations (30s,
// 5m). Include and exclude apply to tools only; resources, resource
// templates and prompts of an upstream are all served, under its scopes.
package upstreamconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/identity"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
)

// File is a validated upstreams file, defaults applied.
type File struct {
	// BuiltinTools serves the gateway's own tools besides the upstreams'.
	BuiltinTools bool
	// StartTimeout bounds how long the gateway waits at start for each
	// upstream's catalog; an upstream that has not answered by then is
	// served once it does.
	StartTimeout time.Duration
	// Identity configures the identity assertions.
	Identity Identity
	// Upstreams are in the file's order; their names are unique.
	Upstreams []Upstream
}

// Identity is the identity block.
type Identity struct {
	// SigningKeyFile is the PEM signing key; empty: one is generated.
	SigningKeyFile string
	// PreviousKeyFiles are published in the JWKS, never used to sign.
	PreviousKeyFiles []string
	// TTL is the lifetime of an assertion.
	TTL time.Duration
}

// Identity modes of an upstream.
const (
	IdentityJWT  = "jwt"
	IdentityNone = "none"
)

// Session modes of an HTTP upstream.
const (
	SessionsPerCaller = "per_caller"
	SessionsShared    = "shared"
)

// Upstream is one upstream MCP server. Exactly one of URL and Command is set.
type Upstream struct {
	Name string
	// URL is the streamable HTTP endpoint.
	URL string
	// Command is a stdio server's argv; Env its environment ("KEY=value",
	// sorted by key) and Dir its working directory.
	Command []string
	Env     []string
	Dir     string
	// Prefix is put before the upstream's tool and prompt names (resolved:
	// the default applied).
	Prefix string
	// Scopes are needed for every request to this upstream, besides SCOPES.
	Scopes []string
	// Tools are per-tool settings by the upstream's own tool name.
	Tools map[string]Tool
	// Include and Exclude are globs of the upstream's tool names.
	Include, Exclude []string
	// Timeout bounds a whole routed call.
	Timeout time.Duration
	// Identity is IdentityJWT or IdentityNone.
	Identity string
	// Headers are static headers sent to an HTTP upstream, canonical keys.
	Headers map[string]string
	// Refresh is the catalog refresh interval; zero: only on list_changed.
	Refresh time.Duration
	// MaxResponseBytes bounds an answer.
	MaxResponseBytes int64
	// Sessions is SessionsPerCaller or SessionsShared.
	Sessions string
	// MaxSessions, SessionIdle: the per-caller session pool's bounds.
	MaxSessions int
	SessionIdle time.Duration
	// MaxConcurrent bounds the calls in flight.
	MaxConcurrent int
}

// Tool is the settings of one upstream tool.
type Tool struct {
	// Scopes are needed to call the tool, besides SCOPES and the
	// upstream's scopes.
	Scopes []string
}

// Serves reports whether the upstream's tool called name is served: it
// matches an Include glob and no Exclude glob.
func (u *Upstream) Serves(name string) bool {
	match := func(globs []string) bool {
		for _, g := range globs {
			if ok, _ := path.Match(g, name); ok {
				return true
			}
		}
		return false
	}
	return match(u.Include) && !match(u.Exclude)
}

// ToolScopes returns the scopes a call of the upstream's tool name needs
// besides SCOPES: the upstream's, then the tool's own.
func (u *Upstream) ToolScopes(name string) []string {
	return scopes.Union(u.Scopes, u.Tools[name].Scopes)
}

// HTTP reports whether the upstream is reached over streamable HTTP.
func (u *Upstream) HTTP() bool { return u.URL != "" }

// Defaults.
const (
	DefaultStartTimeout     = 10 * time.Second
	DefaultRefresh          = 5 * time.Minute
	DefaultTimeout          = upstream.DefaultTimeout
	DefaultMaxResponseBytes = upstream.DefaultMaxResponseBytes
	DefaultMaxSessions      = upstream.DefaultMaxSessions
	DefaultSessionIdle      = upstream.DefaultSessionIdle
	DefaultMaxConcurrent    = upstream.DefaultMaxConcurrent
)

// Bounds.
const (
	// MaxFileBytes bounds the file read.
	MaxFileBytes = 1 << 20
	// MaxUpstreams bounds the upstreams one gateway fronts.
	MaxUpstreams = 100
	// MaxPrefixLen bounds a prefix, leaving room in the 64 characters of a
	// name.
	MaxPrefixLen = 32
	maxListItems = 10000
	maxValueLen  = 64 << 10
)

// Error is an error about one key of the file (Path, such as
// "upstreams[1].name"), or about the whole file (Path empty).
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func errorf(path, format string, args ...any) error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and validates the file at name; getenv resolves ${VAR}
// references. The error is one line, starting with name, then what
// [Parse] returns.
func Load(name string, getenv func(string) string) (*File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxFileBytes)
	}
	file, err := Parse(data, filepath.Dir(name), getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return file, nil
}

// Parse validates the YAML document data; dir is the directory relative
// paths are resolved against, and getenv resolves ${VAR} references. It
// returns an *[Error]: with the key path for an unknown or repeated key, a
// value of the wrong kind, an invalid value or an unset variable; without
// one for YAML that does not parse.
func Parse(data []byte, dir string, getenv func(string) string) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, errorf("", "larger than %d bytes", MaxFileBytes)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errorf("", "the file is empty; it needs an upstreams list")
		}
		return nil, errorf("", "not YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errorf("", "more than one YAML document; the file holds one")
	}
	if len(doc.Content) != 1 {
		return nil, errorf("", "the file is empty; it needs an upstreams list")
	}
	p := &parser{getenv: getenv, dir: dir}
	f, err := p.file(doc.Content[0])
	if err != nil {
		return nil, err
	}
	return f, nil
}

type parser struct {
	getenv func(string) string
	dir    string
}

// keys walks a mapping node: each key must be one of fields; fields not
// present are left alone. Keys are visited in the file's order.
func (p *parser) keys(n *yaml.Node, at string, fields map[string]func(v *yaml.Node, at string) error) error {
	if err := p.kind(n, at, yaml.MappingNode, "a mapping"); err != nil {
		return err
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return errorf(at, "a key must be a plain string")
		}
		kat := join(at, k.Value)
		if seen[k.Value] {
			return errorf(kat, "given twice")
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			slices.Sort(known)
			return errorf(kat, "unknown key (known here: %s)", strings.Join(known, ", "))
		}
		if err := f(v, kat); err != nil {
			return err
		}
	}
	return nil
}

// pairs walks a mapping node of free keys (env, headers, tools), calling f
// with each key, value and path.
func (p *parser) pairs(n *yaml.Node, at string, f func(k string, v *yaml.Node, at string) error) error {
	if err := p.kind(n, at, yaml.MappingNode, "a mapping"); err != nil {
		return err
	}
	if len(n.Content)/2 > maxListItems {
		return errorf(at, "more than %d entries", maxListItems)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
			return errorf(at, "a key must be a plain string")
		}
		kat := join(at, k.Value)
		if seen[k.Value] {
			return errorf(kat, "given twice")
		}
		seen[k.Value] = true
		if err := f(k.Value, v, kat); err != nil {
			return err
		}
	}
	return nil
}

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

func (p *parser) kind(n *yaml.Node, at string, want yaml.Kind, what string) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return errorf(at, "anchors and aliases are not supported; write the value out")
	}
	if n.Kind != want || (want == yaml.ScalarNode && n.Tag == "!!null") {
		return errorf(at, "must be %s", what)
	}
	return nil
}

// str reads a string scalar and resolves its ${VAR} references.
func (p *parser) str(n *yaml.Node, at string) (string, error) {
	if err := p.kind(n, at, yaml.ScalarNode, "a string"); err != nil {
		return "", err
	}
	if len(n.Value) > maxValueLen {
		return "", errorf(at, "longer than %d bytes", maxValueLen)
	}
	v, err := expand(n.Value, p.getenv)
	if err != nil {
		return "", errorf(at, "%v", err)
	}
	return v, nil
}

func (p *parser) strs(n *yaml.Node, at string) ([]string, error) {
	if err := p.kind(n, at, yaml.SequenceNode, "a list"); err != nil {
		return nil, err
	}
	if len(n.Content) > maxListItems {
		return nil, errorf(at, "more than %d items", maxListItems)
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		s, err := p.str(c, fmt.Sprintf("%s[%d]", at, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) boolean(n *yaml.Node, at string) (bool, error) {
	if err := p.kind(n, at, yaml.ScalarNode, "true or false"); err != nil {
		return false, err
	}
	if n.Tag != "!!bool" {
		return false, errorf(at, "must be true or false, got %q", n.Value)
	}
	b, err := strconv.ParseBool(strings.ToLower(n.Value))
	if err != nil {
		return false, errorf(at, "must be true or false, got %q", n.Value)
	}
	return b, nil
}

func (p *parser) duration(n *yaml.Node, at string, lo, hi time.Duration, zeroOK bool) (time.Duration, error) {
	s, err := p.str(n, at)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errorf(at, "%q is not a duration such as 30s or 5m", s)
	}
	if d == 0 && zeroOK {
		return 0, nil
	}
	if d < lo || d > hi {
		bounds := fmt.Sprintf("from %v to %v", lo, hi)
		if zeroOK {
			bounds += ", or 0"
		}
		return 0, errorf(at, "%v is out of range: must be %s", d, bounds)
	}
	return d, nil
}

func (p *parser) integer(n *yaml.Node, at string, lo, hi int64) (int64, error) {
	if err := p.kind(n, at, yaml.ScalarNode, "a whole number"); err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil || n.Tag != "!!int" {
		return 0, errorf(at, "%q is not a whole number", n.Value)
	}
	if v < lo || v > hi {
		return 0, errorf(at, "%d is out of range: must be from %d to %d", v, lo, hi)
	}
	return v, nil
}

// path resolves a file path relative to the file's directory.
func (p *parser) path(n *yaml.Node, at string) (string, error) {
	s, err := p.str(n, at)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", errorf(at, "must not be empty")
	}
	if !filepath.IsAbs(s) && p.dir != "" {
		s = filepath.Join(p.dir, s)
	}
	return s, nil
}

func (p *parser) file(root *yaml.Node) (*File, error) {
	f := &File{
		BuiltinTools: true,
		StartTimeout: DefaultStartTimeout,
		Identity:     Identity{TTL: identity.DefaultTTL},
	}
	var nodes []*yaml.Node
	var upstreamsAt string
	err := p.keys(root, "", map[string]func(*yaml.Node, string) error{
		"builtin_tools": func(v *yaml.Node, at string) (err error) {
			f.BuiltinTools, err = p.boolean(v, at)
			return err
		},
		"start_timeout": func(v *yaml.Node, at string) (err error) {
			f.StartTimeout, err = p.duration(v, at, time.Millisecond, 5*time.Minute, false)
			return err
		},
		"identity": func(v *yaml.Node, at string) error { return p.identity(v, at, &f.Identity) },
		"upstreams": func(v *yaml.Node, at string) error {
			if err := p.kind(v, at, yaml.SequenceNode, "a list of upstreams"); err != nil {
				return err
			}
			nodes, upstreamsAt = v.Content, at
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	switch {
	case upstreamsAt == "":
		return nil, errorf("upstreams", "missing: list at least one upstream")
	case len(nodes) == 0:
		return nil, errorf("upstreams", "empty: list at least one upstream")
	case len(nodes) > MaxUpstreams:
		return nil, errorf("upstreams", "%d upstreams; at most %d", len(nodes), MaxUpstreams)
	}
	names := map[string]int{}
	for i, n := range nodes {
		at := fmt.Sprintf("upstreams[%d]", i)
		u, err := p.upstream(n, at)
		if err != nil {
			return nil, err
		}
		if j, dup := names[u.Name]; dup {
			return nil, errorf(at+".name", "%q is also the name of upstreams[%d]", u.Name, j)
		}
		names[u.Name] = i
		f.Upstreams = append(f.Upstreams, u)
	}
	for i := range f.Upstreams {
		u := &f.Upstreams[i]
		if u.Prefix == unsetPrefix {
			u.Prefix = ""
			if len(f.Upstreams) > 1 {
				u.Prefix = u.Name + "_"
			}
		}
	}
	return f, nil
}

func (p *parser) identity(n *yaml.Node, at string, id *Identity) error {
	return p.keys(n, at, map[string]func(*yaml.Node, string) error{
		"signing_key_file": func(v *yaml.Node, at string) (err error) {
			id.SigningKeyFile, err = p.path(v, at)
			return err
		},
		"previous_key_files": func(v *yaml.Node, at string) error {
			if err := p.kind(v, at, yaml.SequenceNode, "a list of files"); err != nil {
				return err
			}
			for i, c := range v.Content {
				s, err := p.path(c, fmt.Sprintf("%s[%d]", at, i))
				if err != nil {
					return err
				}
				id.PreviousKeyFiles = append(id.PreviousKeyFiles, s)
			}
			return nil
		},
		"ttl": func(v *yaml.Node, at string) (err error) {
			if id.TTL, err = p.duration(v, at, identity.MinTTL, identity.MaxTTL, false); err != nil {
				return err
			}
			if id.TTL%time.Second != 0 {
				return errorf(at, "%v must be a whole number of seconds", id.TTL)
			}
			return nil
		},
	})
}

// unsetPrefix marks a prefix the file does not give, until the default is
// known (it depends on how many upstreams there are).
const unsetPrefix = "\x00unset"

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func (p *parser) upstream(n *yaml.Node, at string) (Upstream, error) {
	u := Upstream{
		Prefix:           unsetPrefix,
		Include:          []string{"*"},
		Timeout:          DefaultTimeout,
		Identity:         IdentityJWT,
		Refresh:          DefaultRefresh,
		MaxResponseBytes: DefaultMaxResponseBytes,
		Sessions:         SessionsPerCaller,
		MaxSessions:      DefaultMaxSessions,
		SessionIdle:      DefaultSessionIdle,
		MaxConcurrent:    DefaultMaxConcurrent,
	}
	// Keys that only apply to one transport, checked once the transport is
	// known.
	var httpOnly, stdioOnly []string
	err := p.keys(n, at, map[string]func(*yaml.Node, string) error{
		"name": func(v *yaml.Node, at string) (err error) {
			if u.Name, err = p.str(v, at); err != nil {
				return err
			}
			if !nameRE.MatchString(u.Name) {
				return errorf(at, "%q must be 1 to 32 of a-z, 0-9 and '-'", u.Name)
			}
			return nil
		},
		"url": func(v *yaml.Node, at string) (err error) {
			if u.URL, err = p.str(v, at); err != nil {
				return err
			}
			if err := envconf.HTTPURL(u.URL); err != nil {
				return errorf(at, "%v", err)
			}
			return nil
		},
		"command": func(v *yaml.Node, at string) (err error) {
			if u.Command, err = p.strs(v, at); err != nil {
				return err
			}
			if len(u.Command) == 0 || u.Command[0] == "" {
				return errorf(at, "must name the program to run, then its arguments")
			}
			return nil
		},
		"env": func(v *yaml.Node, at string) error {
			stdioOnly = append(stdioOnly, at)
			return p.pairs(v, at, func(k string, v *yaml.Node, at string) error {
				if !envKeyRE.MatchString(k) {
					return errorf(at, "%q is not an environment variable name", k)
				}
				s, err := p.str(v, at)
				if err != nil {
					return err
				}
				if strings.ContainsRune(s, 0) {
					return errorf(at, "has a NUL byte")
				}
				u.Env = append(u.Env, k+"="+s)
				return nil
			})
		},
		"dir": func(v *yaml.Node, at string) (err error) {
			stdioOnly = append(stdioOnly, at)
			u.Dir, err = p.path(v, at)
			return err
		},
		"prefix": func(v *yaml.Node, at string) (err error) {
			if u.Prefix, err = p.str(v, at); err != nil {
				return err
			}
			if len(u.Prefix) > MaxPrefixLen || !prefixRE.MatchString(u.Prefix) {
				return errorf(at, "%q must be at most %d of A-Z, a-z, 0-9, '_', '.' and '-'", u.Prefix, MaxPrefixLen)
			}
			return nil
		},
		"scopes": func(v *yaml.Node, at string) (err error) {
			u.Scopes, err = p.scopes(v, at)
			return err
		},
		"tools": func(v *yaml.Node, at string) error {
			u.Tools = map[string]Tool{}
			return p.pairs(v, at, func(name string, v *yaml.Node, at string) error {
				var t Tool
				err := p.keys(v, at, map[string]func(*yaml.Node, string) error{
					"scopes": func(v *yaml.Node, at string) (err error) {
						t.Scopes, err = p.scopes(v, at)
						return err
					},
				})
				u.Tools[name] = t
				return err
			})
		},
		"include": func(v *yaml.Node, at string) (err error) {
			u.Include, err = p.globs(v, at)
			return err
		},
		"exclude": func(v *yaml.Node, at string) (err error) {
			u.Exclude, err = p.globs(v, at)
			return err
		},
		"timeout": func(v *yaml.Node, at string) (err error) {
			u.Timeout, err = p.duration(v, at, time.Millisecond, 10*time.Minute, false)
			return err
		},
		"identity": func(v *yaml.Node, at string) (err error) {
			if u.Identity, err = p.str(v, at); err != nil {
				return err
			}
			if u.Identity != IdentityJWT && u.Identity != IdentityNone {
				return errorf(at, "%q must be %s or %s", u.Identity, IdentityJWT, IdentityNone)
			}
			return nil
		},
		"headers": func(v *yaml.Node, at string) error {
			httpOnly = append(httpOnly, at)
			u.Headers = map[string]string{}
			return p.pairs(v, at, func(k string, v *yaml.Node, at string) error {
				s, err := p.str(v, at)
				if err != nil {
					return err
				}
				if err := upstream.CheckHeader(k, s); err != nil {
					return errorf(at, "%v", err)
				}
				canon := canonicalHeader(k)
				if _, dup := u.Headers[canon]; dup {
					return errorf(at, "the same header as another key (header names ignore case)")
				}
				u.Headers[canon] = s
				return nil
			})
		},
		"refresh": func(v *yaml.Node, at string) (err error) {
			u.Refresh, err = p.duration(v, at, time.Second, 24*time.Hour, true)
			return err
		},
		"max_response_bytes": func(v *yaml.Node, at string) (err error) {
			u.MaxResponseBytes, err = p.integer(v, at, 1<<10, 1<<30)
			return err
		},
		"sessions": func(v *yaml.Node, at string) (err error) {
			httpOnly = append(httpOnly, at)
			if u.Sessions, err = p.str(v, at); err != nil {
				return err
			}
			if u.Sessions != SessionsPerCaller && u.Sessions != SessionsShared {
				return errorf(at, "%q must be %s or %s", u.Sessions, SessionsPerCaller, SessionsShared)
			}
			return nil
		},
		"max_sessions": func(v *yaml.Node, at string) error {
			httpOnly = append(httpOnly, at)
			n, err := p.integer(v, at, 1, 1_000_000)
			u.MaxSessions = int(n)
			return err
		},
		"session_idle": func(v *yaml.Node, at string) (err error) {
			httpOnly = append(httpOnly, at)
			u.SessionIdle, err = p.duration(v, at, time.Second, 24*time.Hour, false)
			return err
		},
		"max_concurrent": func(v *yaml.Node, at string) error {
			n, err := p.integer(v, at, 1, 100_000)
			u.MaxConcurrent = int(n)
			return err
		},
	})
	if err != nil {
		return Upstream{}, err
	}
	switch {
	case u.Name == "":
		return Upstream{}, errorf(at+".name", "missing: every upstream needs a name")
	case u.URL != "" && u.Command != nil:
		return Upstream{}, errorf(at, "sets both url and command; set one")
	case u.URL == "" && u.Command == nil:
		return Upstream{}, errorf(at, "sets neither url (streamable HTTP) nor command (stdio); set one")
	case u.URL != "" && len(stdioOnly) > 0:
		return Upstream{}, errorf(stdioOnly[0], "applies to stdio upstreams (command) only")
	case u.Command != nil && len(httpOnly) > 0:
		return Upstream{}, errorf(httpOnly[0], "applies to HTTP upstreams (url) only")
	}
	slices.Sort(u.Env)
	return u, nil
}

func (p *parser) scopes(n *yaml.Node, at string) ([]string, error) {
	list, err := p.strs(n, at)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, s := range list {
		if err := scopes.Check(s); err != nil {
			return nil, errorf(fmt.Sprintf("%s[%d]", at, i), "%v", err)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if err := scopes.CheckCount(out); err != nil {
		return nil, errorf(at, "%v", err)
	}
	return out, nil
}

func (p *parser) globs(n *yaml.Node, at string) ([]string, error) {
	list, err := p.strs(n, at)
	if err != nil {
		return nil, err
	}
	for i, g := range list {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			return nil, errorf(fmt.Sprintf("%s[%d]", at, i), "%q is not a glob (path.Match syntax: *, ?, [a-z], \\ escapes)", g)
		}
	}
	return list, nil
}

// canonicalHeader is textproto's canonical form for a valid header name.
func canonicalHeader(k string) string {
	b := []byte(k)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}

// maxVarLen bounds a variable name in a reference.
const maxVarLen = 256

// expand resolves ${NAME} references in s with getenv; $$ is a literal $,
// and a $ followed by anything else is kept as it is. An unset (or empty)
// variable, an unterminated reference or an invalid name is an error.
func expand(s string, getenv func(string) string) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${ (write $$ for a literal $)")
			}
			name := s[i+2 : i+2+end]
			if len(name) > maxVarLen || !envKeyRE.MatchString(name) {
				return "", fmt.Errorf("${%.40s} does not name an environment variable", name)
			}
			v := ""
			if getenv != nil {
				v = getenv(name)
			}
			if v == "" {
				return "", fmt.Errorf("${%s}: the environment variable %s is not set", name, name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
