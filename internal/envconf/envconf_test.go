package envconf

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

type sample struct {
	Listen   string        `env:"T_LISTEN" envDefault:":8000" check:"listen" desc:"listen address"`
	URL      string        `env:"T_URL" check:"baseurl" desc:"base URL"`
	Secret   string        `env:"T_SECRET,required" secret:"true" desc:"a secret"`
	TTL      time.Duration `env:"T_TTL" envDefault:"1m" min:"1ms" max:"1h" desc:"a duration"`
	Count    int           `env:"T_COUNT" envDefault:"5" min:"1" max:"10" desc:"an integer"`
	Optional int           `env:"T_OPTIONAL" min:"1" max:"10" desc:"an integer without default"`
	On       bool          `env:"T_ON" desc:"a switch"`
	Level    slog.Level    `env:"T_LEVEL" envDefault:"info" desc:"a level"`
	Scopes   []string      `env:"T_SCOPES" envDefault:"read" check:"scopes" desc:"scopes"`
	Origins  []string      `env:"T_ORIGINS" check:"origin" desc:"origins"`
	Redis    string        `env:"T_REDIS" check:"redisurl" desc:"a Redis URL"`
	Derived  string        `env:"T_DERIVED" defaultText:"{T_URL}/x" desc:"derived from T_URL"`
	Ignored  string        // not a variable
	Embedded
}

type Embedded struct {
	Inner string `env:"T_INNER" envDefault:"in" desc:"declared in an embedded struct"`
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	var got sample
	if err := Load(&got, envOf(map[string]string{"T_SECRET": "s"})); err != nil {
		t.Fatal(err)
	}
	want := sample{Listen: ":8000", Secret: "s", TTL: time.Minute, Count: 5, Level: slog.LevelInfo, Scopes: []string{"read"}, Embedded: Embedded{"in"}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(sample{})); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadValues(t *testing.T) {
	t.Parallel()
	var got sample
	err := Load(&got, envOf(map[string]string{
		"T_LISTEN":  " 127.0.0.1:0 ",
		"T_URL":     "https://auth.example.com/base",
		"T_SECRET":  "s",
		"T_TTL":     "250ms",
		"T_COUNT":   "10",
		"T_ON":      "true",
		"T_LEVEL":   "DEBUG",
		"T_SCOPES":  "a, b a\tc",
		"T_ORIGINS": "HTTP://Example.com:80, http://example.com https://x.example.com:8443/",
		"T_REDIS":   "redis://u:p@localhost:6379/1",
		"T_DERIVED": "   ", // white space only: unset
		"T_INNER":   "x",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := sample{
		Listen: "127.0.0.1:0", URL: "https://auth.example.com/base", Secret: "s", TTL: 250 * time.Millisecond, Count: 10,
		On: true, Level: slog.LevelDebug, Scopes: []string{"a", "b", "c"},
		Origins: []string{"http://example.com", "https://x.example.com:8443"}, Redis: "redis://u:p@localhost:6379/1",
		Embedded: Embedded{"x"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(sample{})); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, key, value string
		want             string // in the message
	}{
		{"required", "T_SECRET", "", "required"},
		{"listen without port", "T_LISTEN", "localhost", "not host:port"},
		{"listen port too high", "T_LISTEN", ":65536", "outside 0 to 65535"},
		{"listen port not a number", "T_LISTEN", ":http", "outside 0 to 65535"},
		{"url relative", "T_URL", "/auth", "not an absolute http(s) URL"},
		{"url ftp", "T_URL", "ftp://x.example.com", "not an absolute http(s) URL"},
		{"url with credentials", "T_URL", "https://u:hunter2@x.example.com", "credentials"},
		{"url with query", "T_URL", "https://x.example.com?a=b", "query"},
		{"url with fragment", "T_URL", "https://x.example.com#f", "fragment"},
		{"duration without unit", "T_TTL", "60", "not a duration"},
		{"duration too short", "T_TTL", "0s", "out of range [1ms, 1h]"},
		{"duration too long", "T_TTL", "2h", "out of range"},
		{"integer garbage", "T_COUNT", "many", "not a whole number"},
		{"integer fraction", "T_COUNT", "1.5", "not a whole number"},
		{"integer too large", "T_COUNT", "11", "11 is out of range [1, 10]"},
		{"optional integer set out of range", "T_OPTIONAL", "0", "out of range"},
		{"bool", "T_ON", "yes please", "not true or false"},
		{"level", "T_LEVEL", "chatty", "not debug, info, warn or error"},
		{"scope with quote", "T_SCOPES", `read"x`, "invalid scope"},
		{"scopes only separators", "T_SCOPES", " , ", "at least one scope"},
		{"scope too long", "T_SCOPES", strings.Repeat("s", 257), "at most 256"},
		{"origin wildcard", "T_ORIGINS", "*", "http or https"},
		{"origin with path", "T_ORIGINS", "http://a.example.com/x", "path"},
		{"redis scheme", "T_REDIS", "http://x", "redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := map[string]string{"T_SECRET": "s"}
			m[tt.key] = tt.value
			var s sample
			err := Load(&s, envOf(m))
			var e *Error
			if !errors.As(err, &e) || e.Var != tt.key {
				t.Fatalf("Load: %v, want an *Error naming %s", err, tt.key)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.key+": ") || strings.Contains(msg, "\n") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q: want one line starting %q and saying %q", msg, tt.key+": ", tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestLoadNamesTheFirstBadVariable: with several bad values, the error names
// the first one declared, whatever kind of error each is.
func TestLoadNamesTheFirstBadVariable(t *testing.T) {
	t.Parallel()
	var s sample
	err := Load(&s, envOf(map[string]string{"T_LISTEN": "x", "T_TTL": "x", "T_COUNT": "99"}))
	var e *Error
	if !errors.As(err, &e) || e.Var != "T_LISTEN" {
		t.Errorf("Load: %v, want the error about T_LISTEN", err)
	}
	err = Load(&s, envOf(map[string]string{"T_SECRET": "s", "T_TTL": "1", "T_COUNT": "x"}))
	if !errors.As(err, &e) || e.Var != "T_TTL" {
		t.Errorf("Load: %v, want the error about T_TTL", err)
	}
}

// TestLoadReadsOnlyGetenv: nothing comes from the process environment.
func TestLoadReadsOnlyGetenv(t *testing.T) {
	t.Setenv("T_SECRET", "from-process")
	t.Setenv("T_LISTEN", "bad")
	var s sample
	err := Load(&s, envOf(nil))
	var e *Error
	if !errors.As(err, &e) || e.Var != "T_SECRET" {
		t.Errorf("Load with an empty getenv: %v, want T_SECRET required", err)
	}
}

func TestRedisURLErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"redis://user:hunter2@localhost:notaport/x", "redis://:hunter2@localhost:6379/x", "http://:hunter2@x"} {
		err := RedisURL(v)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("RedisURL(%q) = %v; want an error without the password", v, err)
		}
	}
	if err := RedisURL("rediss://user:pw@redis.example.com:6380/2"); err != nil {
		t.Errorf("RedisURL of a good URL: %v", err)
	}
}

// TestRedisURLForms: the check accepts every form redisconn opens (single
// node, Cluster, Sentinel; TLS; ACL user) and rejects what it would not,
// without quoting a password, the Sentinel form's password parameter
// included.
func TestRedisURLForms(t *testing.T) {
	t.Parallel()
	for _, v := range []string{
		"redis://localhost:6379/0",
		"rediss://app:pw@redis.example.com:6380/2",
		"redis://h1:7000?addr=h2:7001&addr=h3:7002",
		"rediss://app:pw@h1:7000?addr=h2:7001",
		"redis://s1:26379?master_name=mymaster&addr=s2:26379&addr=s3:26379",
		"redis://sentinel-user:spw@s1:26379/3?master_name=mymaster&username=app&password=pw",
	} {
		if err := RedisURL(v); err != nil {
			t.Errorf("RedisURL(%q) = %v, want nil", v, err)
		}
	}
	for _, v := range []string{
		"redis://h1:7000/3?addr=h2:7001",                      // a Cluster has database 0 only
		"redis://h1:7000?addr=h2",                             // no port
		"redis://s1:26379?master_name=&addr=s2:26379",         // no name
		"redis://s1:26379?master_name=m&password=hunter2&x=1", // unknown parameter
		"redis://:hunter2@h1:7000?addr=h2:7001&bogus=1",
	} {
		err := RedisURL(v)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("RedisURL(%q) = %v; want an error without the password", v, err)
		}
	}
}

func TestVars(t *testing.T) {
	t.Parallel()
	vars := Vars(sample{})
	if len(vars) != 13 {
		t.Fatalf("Vars: %d variables, want 13: %+v", len(vars), vars)
	}
	want := Var{Name: "T_SECRET", Desc: "a secret", Secret: true, Required: true}
	if diff := cmp.Diff(want, vars[2]); diff != "" {
		t.Errorf("Vars()[2] (-want +got):\n%s", diff)
	}
	if got := vars[3]; got.Min != "1ms" || got.Max != "1h" || got.ShownDefault() != "1m" {
		t.Errorf("T_TTL: %+v", got)
	}
	if got := vars[11].ShownDefault(); got != "{T_URL}/x" {
		t.Errorf("T_DERIVED's shown default = %q", got)
	}
	if got, want := Names(&sample{}), []string{"T_COUNT", "T_DERIVED", "T_INNER", "T_LEVEL", "T_LISTEN", "T_ON", "T_OPTIONAL", "T_ORIGINS", "T_REDIS", "T_SCOPES", "T_SECRET", "T_TTL", "T_URL"}; !cmp.Equal(got, want) {
		t.Errorf("Names = %v", got)
	}
}

// TestMalformedDeclarationsPanic: mistakes in a declaration are caught by
// any test that loads it.
func TestMalformedDeclarationsPanic(t *testing.T) {
	t.Parallel()
	tests := map[string]any{
		"no desc": struct {
			A string `env:"A"`
		}{},
		"unknown check": struct {
			A string `env:"A" check:"nope" desc:"a"`
		}{},
		"check on the wrong type": struct {
			A int `env:"A" check:"listen" desc:"a"`
		}{},
		"bounds on a string": struct {
			A string `env:"A" min:"1" desc:"a"`
		}{},
		"bad bound": struct {
			A time.Duration `env:"A" max:"soon" desc:"a"`
		}{},
		"bad default": struct {
			A time.Duration `env:"A" envDefault:"60" desc:"a"`
		}{},
		"twice": struct {
			A string `env:"A" desc:"a"`
			B string `env:"A" desc:"b"`
		}{},
		"unsupported type": struct {
			A float64 `env:"A" desc:"a"`
		}{},
		"backquote in desc": struct {
			A string "env:\"A\" desc:\"`a`\""
		}{},
	}
	for name, spec := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if recover() == nil {
					t.Errorf("Vars(%T) did not panic", spec)
				}
			}()
			Vars(spec)
		})
	}
}

func TestLogValueMasks(t *testing.T) {
	t.Parallel()
	s := sample{
		Listen: ":1", Secret: "hunter2", TTL: 1500 * time.Millisecond, Scopes: []string{"a", "b"}, Origins: []string{"http://a", "http://b"},
		Redis: "redis://user:hunter2@localhost:6379/0", On: true, Count: 3,
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", LogValue(s))
	out := b.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("logged %s", out)
	}
	for _, want := range []string{
		`"T_SECRET":"<set>"`, `"T_REDIS":"redis://user:xxxxx@localhost:6379/0"`, `"T_TTL":"1.5s"`, `"T_SCOPES":"a b"`,
		`"T_ORIGINS":"http://a,http://b"`, `"T_ON":true`, `"T_COUNT":3`, `"T_LEVEL":"INFO"`, `"T_INNER":""`, `"T_URL":""`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logged config lacks %s: %s", want, out)
		}
	}
	if strings.Contains(out, "Ignored") {
		t.Errorf("logged an undeclared field: %s", out)
	}
}

func TestOrigin(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"HTTPS://MCP.Example.com:443/": "https://mcp.example.com",
		"http://localhost:8000":        "http://localhost:8000",
		"http://[::1]:80":              "http://[::1]",
	} {
		if got, err := Origin(in); err != nil || got != want {
			t.Errorf("Origin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/mcp", "https://x.example.com/mcp", "https://x.example.com?a=b", "null", "https://u:p@x.example.com"} {
		if got, err := Origin(in); err == nil {
			t.Errorf("Origin(%q) = %q, want an error", in, got)
		}
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://user:pass@host/0": "redis://user:xxxxx@host/0",
		"redis://:pass@host:1/0":   "redis://:xxxxx@host:1/0",
		"redis://host/0":           "redis://host/0",
		"redis://s1:26379?master_name=m&password=pass&addr=s2:26379": "redis://s1:26379?master_name=m&password=xxxxx&addr=s2:26379",
		"redis://u:spw@s1:26379?password=p%26ss&master_name=m":       "redis://u:xxxxx@s1:26379?password=xxxxx&master_name=m",
		"rediss://h1:7000?addr=h2:7001&addr=h3:7002":                 "rediss://h1:7000?addr=h2:7001&addr=h3:7002",
		"":            "",
		"redis://%zz": "<unparseable>",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
	if Mask("") != "" || Mask("x") != "<set>" {
		t.Errorf("Mask: %q, %q", Mask(""), Mask("x"))
	}
}

func TestPort(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{":8000": 8000, "127.0.0.1:0": 0, "[::1]:9": 9, "x": -1, "x:y": -1} {
		if got := Port(in); got != want {
			t.Errorf("Port(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestTLSFiles(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "envconf-test")
	cert, key := ca.Issue(t, testenv.CertOptions{CommonName: "x"})
	_, otherKey := ca.Issue(t, testenv.CertOptions{CommonName: "y"})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	if _, err := KeyPair("C", cert, "K", key); err != nil {
		t.Errorf("KeyPair: %v", err)
	}
	if _, err := CertPool("CA", ca.CertFile); err != nil {
		t.Errorf("CertPool: %v", err)
	}
	for name, tc := range map[string]struct {
		fn      func() error
		wantVar string
	}{
		"missing certificate": {func() error { _, err := KeyPair("C", missing, "K", key); return err }, "C"},
		"missing key":         {func() error { _, err := KeyPair("C", cert, "K", missing); return err }, "K"},
		"another key":         {func() error { _, err := KeyPair("C", cert, "K", otherKey); return err }, "K"},
		"missing CA":          {func() error { _, err := CertPool("CA", missing); return err }, "CA"},
		"garbage CA":          {func() error { _, err := CertPool("CA", garbage); return err }, "CA"},
	} {
		err := tc.fn()
		var e *Error
		if !errors.As(err, &e) || e.Var != tc.wantVar || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line naming %s", name, err, tc.wantVar)
		}
	}
}
