package envdoc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
)

var services = []Service{
	{Name: "a", Vars: []envconf.Var{
		{Name: "A_LISTEN", Default: ":1", Desc: "listen address of a"},
		{Name: "SHARED", Desc: "what a does with it", Secret: true},
		{Name: "A_TTL", Default: "1m", Min: "1s", Max: "1h", Desc: "a duration"},
		{Name: "A_URL", DefaultText: "{SHARED}/x", Desc: "derived"},
	}},
	{Name: "b", Vars: []envconf.Var{
		{Name: "B_KEY", Required: true, Desc: "required | with a pipe"},
		{Name: "SHARED", Desc: "what b does with it"},
		{Name: "LOG_LEVEL", Default: "info", Desc: "level"},
	}},
}

func TestEnvExample(t *testing.T) {
	t.Parallel()
	got, err := envExample(`# header
{{var "SHARED" "x y" "A note."}}
# ---- a
{{var "A_LISTEN" "127.0.0.1:1"}}
{{rest "a"}}
# ---- b
{{rest "b"}}
`, services)
	if err != nil {
		t.Fatal(err)
	}
	want := `# header
# a: what a does with it.
# b: what b does with it. A note.
# SHARED="x y"
# ---- a
# listen address of a.
# A_LISTEN=127.0.0.1:1
# a duration. Range: 1s to 1h.
# A_TTL=1m
# derived. Default: {SHARED}/x.
# A_URL=
# ---- b
# required | with a pipe.
# B_KEY=
# level.
# LOG_LEVEL=info
`
	if diff := cmp.Diff(strings.Split(want, "\n"), strings.Split(string(got), "\n")); diff != "" {
		t.Errorf("envExample (-want +got):\n%s", diff)
	}
}

func TestEnvExampleErrors(t *testing.T) {
	t.Parallel()
	for tmpl, want := range map[string]string{
		`{{rest "a"}}`:                         "places no line for B_KEY, LOG_LEVEL",
		`{{var "A_LISTEN"}}{{var "A_LISTEN"}}`: "A_LISTEN: placed twice",
		`{{var "NOPE"}}`:                       "NOPE: no binary declares it",
		`{{rest "c"}}`:                         `rest "c": no such binary`,
	} {
		if _, err := envExample(tmpl, services); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("envExample(%q) = %v, want an error saying %q", tmpl, err, want)
		}
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	code := func(s string) string { return codeNames(s, allNames(services)) }
	want := "| variable | default | description |\n|---|---|---|\n" +
		"| `A_LISTEN` | `:1` | listen address of a |\n" +
		"| `SHARED` | — | what a does with it (secret: never logged) |\n" +
		"| `A_TTL` | `1m` | a duration (`1s` to `1h`) |\n" +
		"| `A_URL` | `{SHARED}/x` | derived |\n"
	if diff := cmp.Diff(want, table(services[0], code)); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	if got := table(services[1], code); !strings.Contains(got, "| `B_KEY` | required | required \\| with a pipe |") {
		t.Errorf("table of b:\n%s", got)
	}
}

func TestCodeNames(t *testing.T) {
	t.Parallel()
	names := []string{"PROPELAUTH_AUTH_URL", "MCP_LISTEN"}
	for in, want := range map[string]string{
		"required unless MCP_LISTEN is set":      "required unless `MCP_LISTEN` is set",
		"issuer {PROPELAUTH_AUTH_URL}/oauth/2.1": "issuer `{PROPELAUTH_AUTH_URL}/oauth/2.1`",
		"users at {}/api/backend/v1/user/{id};":  "users at `{}/api/backend/v1/user/{id}`;",
		"UNAVAILABLE and NOT_A_VAR stay as is":   "UNAVAILABLE and NOT_A_VAR stay as is",
	} {
		if got := codeNames(in, names); got != want {
			t.Errorf("codeNames(%q) = %q, want %q", in, got, want)
		}
	}
}
