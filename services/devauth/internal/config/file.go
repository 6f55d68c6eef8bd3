package config

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/redirects"
)

// MCP holds the settings of PropelAuth's MCP dashboard page, one field per
// dashboard section. They come from the file named by DEVAUTH_CONFIG_FILE
// (devauth.example.yaml documents it); a section the file leaves out, or no
// file at all, takes the default of [DefaultMCP].
type MCP struct {
	// Enabled is "Enable MCP": false turns every /oauth/2.1 endpoint off, as
	// in a PropelAuth environment where MCP is not enabled.
	Enabled bool
	// AllowedRedirectURIs is "Allowed MCP Clients", templates expanded: every
	// client's redirect URI must be on it, whether pre-registered, registered
	// through DCR or described by a Client ID Metadata Document.
	AllowedRedirectURIs []string
	// ScopeDescriptions is "Scopes": what the consent page says each scope
	// allows. The scope names themselves are [Config.Scopes].
	ScopeDescriptions map[string]string
	// DCR is "How do users create OAuth clients? Dynamic Client
	// Registration": false answers POST /oauth/2.1/register with 403 and
	// leaves registration_endpoint out of the metadata.
	DCR bool
	// TokenAuthMethods are the token endpoint authentication methods devauth
	// advertises and accepts (RFC 8414 token_endpoint_auth_methods_supported).
	// PropelAuth has no such setting; narrowing it tests a client against an
	// authorization server that accepts fewer methods.
	TokenAuthMethods []string
	// Clients is "OAuth Clients": clients created in advance, with a fixed
	// client ID.
	Clients []Client
}

// Client is a pre-registered OAuth client.
type Client struct {
	ID   string
	Name string
	// Confidential clients authenticate at the token endpoint with Secret
	// (client_secret_basic or client_secret_post); public ones send no secret
	// and rely on PKCE alone.
	Confidential bool
	Secret       string
	// RedirectURIs are patterns (templates expanded), each within
	// [MCP.AllowedRedirectURIs].
	RedirectURIs []string
	// Scopes are the scopes the client may request.
	Scopes []string
}

// Token endpoint authentication methods (RFC 7591 section 2).
const (
	AuthNone   = "none"
	AuthBasic  = "client_secret_basic"
	AuthPost   = "client_secret_post"
	typePublic = "public"
	typeConfid = "confidential"
)

// AllTokenAuthMethods are the methods devauth implements, in the order it
// advertises them.
var AllTokenAuthMethods = []string{AuthNone, AuthBasic, AuthPost}

// The demo client that `make run` prints, modelled on the OAuth client of
// PropelAuth's MCP guide (Cursor's redirect URI, a client ID and a secret).
// Its secret is public, like the seeded users' passwords.
const (
	DemoClientID     = "demo-mcp-client"
	DemoClientSecret = "demo-mcp-client-secret"
)

// defaultScopeDescriptions explain the default scopes on the consent page.
var defaultScopeDescriptions = map[string]string{
	"read:user_data": "see your profile (name, email, picture)",
	"read:org_data":  "see your organizations and your roles in them",
	"admin":          "full administrative access",
}

// DefaultMCP returns the settings devauth uses without a configuration file,
// for the given scopes: MCP on, every redirect URI template allowed, DCR on,
// every authentication method, and one confidential demo client for Cursor.
func DefaultMCP(scopes []string) MCP {
	allowed, err := redirects.Expand(redirects.DefaultAllowed)
	if err != nil {
		panic(err) // the templates are constants, checked by tests
	}
	desc := map[string]string{}
	for _, s := range scopes {
		if d, ok := defaultScopeDescriptions[s]; ok {
			desc[s] = d
		}
	}
	return MCP{
		Enabled:             true,
		AllowedRedirectURIs: allowed,
		ScopeDescriptions:   desc,
		DCR:                 true,
		TokenAuthMethods:    slices.Clone(AllTokenAuthMethods),
		Clients: []Client{{
			ID: DemoClientID, Name: "Demo MCP client (PropelAuth guide)", Confidential: true,
			Secret: DemoClientSecret, RedirectURIs: slices.Clone(redirects.Templates["cursor"]),
			Scopes: slices.Clone(scopes),
		}},
	}
}

// Bounds of the configuration file: a dashboard's worth, with room to spare.
const (
	maxConfigFile     = 1 << 20
	maxListEntries    = 100
	maxDescription    = 200
	maxClientName     = 200
	maxClientSecret   = 512
	reservedDCRPrefix = "dcr_"
)

// The file's shape. Every field is optional; nil means "the default".
type fileConfig struct {
	MCP *fileMCP `yaml:"mcp"`
}

type fileMCP struct {
	Enabled             *bool        `yaml:"enabled"`
	AllowedRedirectURIs []string     `yaml:"allowed_redirect_uris"`
	Scopes              []fileScope  `yaml:"scopes"`
	DCR                 *bool        `yaml:"dcr"`
	TokenAuthMethods    []string     `yaml:"token_endpoint_auth_methods"`
	Clients             []fileClient `yaml:"clients"`
}

type fileScope struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

type fileClient struct {
	ClientID     string   `yaml:"client_id"`
	Name         string   `yaml:"name"`
	Type         string   `yaml:"type"`
	ClientSecret string   `yaml:"client_secret"`
	RedirectURIs []string `yaml:"redirect_uris"`
	Scopes       []string `yaml:"scopes"`
}

var (
	clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,128}$`)
	envRefPattern   = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)
	yamlTypeName    = regexp.MustCompile(` in type config\.\w+`)
)

// ReadMCPFile reads the configuration file at path; see [ParseMCP].
func ReadMCPFile(path string, envScopes []string, getenv func(string) string) (MCP, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		if pe, ok := errors.AsType[*os.PathError](err); ok {
			err = pe.Err
		}
		return MCP{}, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return MCP{}, nil, err
	}
	if len(data) > maxConfigFile {
		return MCP{}, nil, fmt.Errorf("larger than %d bytes", maxConfigFile)
	}
	return ParseMCP(data, envScopes, getenv)
}

// ParseMCP decodes a configuration file. envScopes are the scopes from
// DEVAUTH_SCOPES (nil when unset), which the file's mcp.scopes replaces; a
// file may not set both. getenv resolves ${VAR} references in client
// secrets. It returns the settings and the scope names, or an error that
// names the offending key in one line.
func ParseMCP(data []byte, envScopes []string, getenv func(string) string) (MCP, []string, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		msg := yamlTypeName.ReplaceAllString(err.Error(), "")
		return MCP{}, nil, errors.New(strings.Join(strings.Fields(msg), " "))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return MCP{}, nil, errors.New("more than one YAML document")
	}
	fm := fc.MCP
	if fm == nil {
		fm = &fileMCP{}
	}

	list := envScopes
	if list == nil {
		list, _ = scopes.Parse(DefaultScopes)
	}
	var desc map[string]string
	if fm.Scopes != nil {
		if envScopes != nil {
			return MCP{}, nil, errors.New("mcp.scopes: DEVAUTH_SCOPES is set too; keep one of them")
		}
		var err error
		if list, desc, err = parseScopes(fm.Scopes); err != nil {
			return MCP{}, nil, err
		}
	}
	m := DefaultMCP(list)
	if desc != nil {
		m.ScopeDescriptions = desc
	}
	if fm.Enabled != nil {
		m.Enabled = *fm.Enabled
	}
	if fm.DCR != nil {
		m.DCR = *fm.DCR
	}
	if fm.AllowedRedirectURIs != nil {
		if len(fm.AllowedRedirectURIs) > maxListEntries {
			return MCP{}, nil, fmt.Errorf("mcp.allowed_redirect_uris: more than %d entries", maxListEntries)
		}
		allowed, err := redirects.Expand(fm.AllowedRedirectURIs)
		if err != nil {
			return MCP{}, nil, fmt.Errorf("mcp.allowed_redirect_uris: %w", err)
		}
		m.AllowedRedirectURIs = allowed
	}
	if fm.TokenAuthMethods != nil {
		methods, err := parseAuthMethods(fm.TokenAuthMethods)
		if err != nil {
			return MCP{}, nil, err
		}
		m.TokenAuthMethods = methods
	}
	if fm.Clients != nil {
		if len(fm.Clients) > maxListEntries {
			return MCP{}, nil, fmt.Errorf("mcp.clients: more than %d clients", maxListEntries)
		}
		m.Clients = nil
		for i, fcl := range fm.Clients {
			c, err := parseClient(fcl, list, getenv)
			if err != nil {
				return MCP{}, nil, fmt.Errorf("mcp.clients[%d]: %w", i, err)
			}
			if slices.ContainsFunc(m.Clients, func(o Client) bool { return o.ID == c.ID }) {
				return MCP{}, nil, fmt.Errorf("mcp.clients[%d]: client_id %q is used twice", i, c.ID)
			}
			m.Clients = append(m.Clients, c)
		}
	}
	// Checked once everything is known, so the demo client is held to a
	// narrowed allow list or method list as much as a configured one.
	allow, err := redirects.NewAllowList(m.AllowedRedirectURIs)
	if err != nil {
		return MCP{}, nil, fmt.Errorf("mcp.allowed_redirect_uris: %w", err)
	}
	for i, c := range m.Clients {
		where := fmt.Sprintf("mcp.clients[%d]", i)
		if fm.Clients == nil {
			where = "the demo client " + DemoClientID + " (set mcp.clients to replace it)"
		}
		for _, r := range c.RedirectURIs {
			if !allow.Covers(r) {
				return MCP{}, nil, fmt.Errorf("%s: redirect URI %q is not in mcp.allowed_redirect_uris", where, r)
			}
		}
		switch {
		case c.Confidential && !slices.Contains(m.TokenAuthMethods, AuthBasic) && !slices.Contains(m.TokenAuthMethods, AuthPost):
			return MCP{}, nil, fmt.Errorf("%s: a confidential client needs %s or %s in mcp.token_endpoint_auth_methods", where, AuthBasic, AuthPost)
		case !c.Confidential && !slices.Contains(m.TokenAuthMethods, AuthNone):
			return MCP{}, nil, fmt.Errorf("%s: a public client needs %s in mcp.token_endpoint_auth_methods", where, AuthNone)
		}
	}
	return m, list, nil
}

func parseScopes(in []fileScope) ([]string, map[string]string, error) {
	if len(in) == 0 {
		return nil, nil, errors.New("mcp.scopes: must list at least one scope")
	}
	if len(in) > maxListEntries {
		return nil, nil, fmt.Errorf("mcp.scopes: more than %d scopes", maxListEntries)
	}
	var names []string
	desc := map[string]string{}
	for i, s := range in {
		if !scopes.Valid(s.Name) {
			return nil, nil, fmt.Errorf("mcp.scopes[%d].name: %q is not a scope (RFC 6749 section 3.3: no spaces, quotes or backslashes)", i, s.Name)
		}
		if s.Name == "offline_access" {
			return nil, nil, fmt.Errorf("mcp.scopes[%d].name: offline_access is always accepted and needs no entry", i)
		}
		if slices.Contains(names, s.Name) {
			return nil, nil, fmt.Errorf("mcp.scopes[%d].name: %q is listed twice", i, s.Name)
		}
		d := strings.TrimSpace(s.Description)
		if len(d) > maxDescription || strings.ContainsFunc(d, isControl) {
			return nil, nil, fmt.Errorf("mcp.scopes[%d].description: longer than %d bytes or has control characters", i, maxDescription)
		}
		names = append(names, s.Name)
		if d != "" {
			desc[s.Name] = d
		}
	}
	return names, desc, nil
}

func parseAuthMethods(in []string) ([]string, error) {
	var out []string
	for _, m := range in {
		if !slices.Contains(AllTokenAuthMethods, m) {
			return nil, fmt.Errorf("mcp.token_endpoint_auth_methods: %q is not one of %s", m, strings.Join(AllTokenAuthMethods, ", "))
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("mcp.token_endpoint_auth_methods: must list at least one method")
	}
	return out, nil
}

func parseClient(fc fileClient, scopes []string, getenv func(string) string) (Client, error) {
	c := Client{ID: fc.ClientID, Name: strings.TrimSpace(fc.Name)}
	switch {
	case !clientIDPattern.MatchString(c.ID):
		return Client{}, fmt.Errorf("client_id %q must be 1 to 128 letters, digits or . _ ~ -", c.ID)
	case strings.HasPrefix(c.ID, reservedDCRPrefix):
		return Client{}, fmt.Errorf("client_id %q: the prefix %q is reserved for clients registered through DCR", c.ID, reservedDCRPrefix)
	case len(c.Name) > maxClientName || strings.ContainsFunc(c.Name, isControl):
		return Client{}, fmt.Errorf("name: longer than %d bytes or has control characters", maxClientName)
	}
	switch fc.Type {
	case typePublic:
		if fc.ClientSecret != "" {
			return Client{}, errors.New("client_secret: a public client has no secret (use type: confidential)")
		}
	case typeConfid:
		c.Confidential = true
		secret, err := resolveSecret(fc.ClientSecret, getenv)
		if err != nil {
			return Client{}, fmt.Errorf("client_secret: %w", err)
		}
		c.Secret = secret
	default:
		return Client{}, fmt.Errorf("type: %q is not public or confidential", fc.Type)
	}
	if len(fc.RedirectURIs) == 0 {
		return Client{}, errors.New("redirect_uris: must list at least one redirect URI or template")
	}
	if len(fc.RedirectURIs) > maxListEntries {
		return Client{}, fmt.Errorf("redirect_uris: more than %d entries", maxListEntries)
	}
	uris, err := redirects.Expand(fc.RedirectURIs)
	if err != nil {
		return Client{}, fmt.Errorf("redirect_uris: %w", err)
	}
	c.RedirectURIs = uris
	if fc.Scopes == nil {
		c.Scopes = slices.Clone(scopes)
	}
	for _, s := range fc.Scopes {
		if !slices.Contains(scopes, s) {
			return Client{}, fmt.Errorf("scopes: %q is not in mcp.scopes (%s)", s, strings.Join(scopes, " "))
		}
		if !slices.Contains(c.Scopes, s) {
			c.Scopes = append(c.Scopes, s)
		}
	}
	if len(c.Scopes) == 0 {
		return Client{}, errors.New("scopes: must list at least one scope, or be left out for every scope")
	}
	return c, nil
}

// resolveSecret returns a client secret: literal, or the value of the
// environment variable a "${NAME}" value names.
func resolveSecret(v string, getenv func(string) string) (string, error) {
	if m := envRefPattern.FindStringSubmatch(v); m != nil {
		v = getenv(m[1])
		if v == "" {
			return "", fmt.Errorf("${%s} is not set", m[1])
		}
	}
	switch {
	case v == "":
		return "", errors.New("a confidential client needs one (a value, or ${VAR} to read it from the environment)")
	case len(v) > maxClientSecret:
		return "", fmt.Errorf("longer than %d bytes", maxClientSecret)
	case strings.ContainsFunc(v, isControl):
		return "", errors.New("has control characters")
	}
	return v, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// LogValue prints the settings with client secrets masked.
func (m MCP) LogValue() slog.Value {
	clients := make([]string, 0, len(m.Clients))
	for _, c := range m.Clients {
		kind := typePublic
		if c.Confidential {
			kind = typeConfid + ", secret " + Mask(c.Secret)
		}
		clients = append(clients, fmt.Sprintf("%s (%s; %s)", c.ID, kind, strings.Join(c.RedirectURIs, " ")))
	}
	return slog.GroupValue(
		slog.Bool("enabled", m.Enabled),
		slog.Any("allowed_redirect_uris", m.AllowedRedirectURIs),
		slog.Bool("dcr", m.DCR),
		slog.Any("token_endpoint_auth_methods", m.TokenAuthMethods),
		slog.Any("clients", clients),
	)
}
