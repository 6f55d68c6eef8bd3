// Package envdoc generates the configuration reference, docs/configuration.md,
// and .env.example from the variables the binaries declare (package
// envconf), as each prints them with -list-env=json: the documents cannot
// drift from the code, and a test fails when the committed ones are stale.
//
// The prose around the generated parts lives in the templates beside this
// file: configuration.md.tmpl, and env.example.tmpl, which places each
// variable in its group (see [EnvExample]).
//
// Run `make docs` (or `go generate ./internal/envdoc`) after changing a
// declaration or a template.
package envdoc

//go:generate go run ./cmd/envdoc -root ../..

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/mcpauthz/mcpauthz/internal/envconf"
)

// Binaries are the binaries whose variables are documented, in the order the
// reference presents them.
var Binaries = []string{"authz", "mcp-gateway", "devauth"}

// Files are the generated files, relative to the repository root.
const (
	ReferenceFile  = "docs/configuration.md"
	EnvExampleFile = ".env.example"
)

// Service is one binary and the variables it declares, in declaration order.
type Service struct {
	Name string
	Vars []envconf.Var
}

// Read runs each binary of bins (name to path, for every name in
// [Binaries]) with -list-env=json and returns their declarations in the
// order of [Binaries].
func Read(bins map[string]string) ([]Service, error) {
	var out []Service
	for _, name := range Binaries {
		path, ok := bins[name]
		if !ok {
			return nil, fmt.Errorf("no binary for %s", name)
		}
		cmd := exec.Command(path, "-list-env=json")
		cmd.Env = []string{} // the declarations do not depend on it
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s -list-env=json: %w", name, err)
		}
		var vars []envconf.Var
		if err := json.Unmarshal(b, &vars); err != nil {
			return nil, fmt.Errorf("%s -list-env=json: %w", name, err)
		}
		out = append(out, Service{Name: name, Vars: vars})
	}
	return out, nil
}

var (
	//go:embed configuration.md.tmpl
	referenceTmpl string
	//go:embed env.example.tmpl
	envExampleTmpl string
)

// Reference renders docs/configuration.md.
func Reference(services []Service) ([]byte, error) {
	names := allNames(services)
	code := func(s string) string { return codeNames(s, names) }
	funcs := template.FuncMap{
		"table": func(s Service) string { return table(s, code) },
		"code":  code,
	}
	t, err := template.New("configuration.md").Funcs(funcs).Parse(referenceTmpl)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, struct{ Services []Service }{services}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// table renders one service's variables as a Markdown table.
func table(s Service, code func(string) string) string {
	var b strings.Builder
	b.WriteString("| variable | default | description |\n|---|---|---|\n")
	for _, v := range s.Vars {
		def := "—"
		switch {
		case v.Required:
			def = "required"
		case strings.ContainsAny(v.DefaultText, "<{/"):
			def = "`" + v.DefaultText + "`" // a value, or a template of one
		case v.DefaultText != "":
			def = code(v.DefaultText)
		case v.Default != "":
			def = "`" + v.Default + "`"
		}
		desc := code(v.Desc)
		var notes []string
		if v.Min != "" || v.Max != "" {
			notes = append(notes, fmt.Sprintf("`%s` to `%s`", orDash(v.Min), orDash(v.Max)))
		}
		if v.Secret {
			notes = append(notes, "secret: never logged")
		}
		if len(notes) > 0 {
			desc += " (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", v.Name, cell(def), cell(desc))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// codeNames sets every variable name in s, and every {VARIABLE}/path
// template such as {PROPELAUTH_AUTH_URL}/oauth/2.1, in code type.
func codeNames(s string, names []string) string {
	return wordRE.ReplaceAllStringFunc(s, func(w string) string {
		bare := strings.Trim(w, "{}")
		if i := strings.IndexAny(bare, "}/"); i >= 0 {
			bare = bare[:i]
		}
		if slices.Contains(names, bare) || strings.HasPrefix(w, "{}") {
			return "`" + w + "`"
		}
		return w
	})
}

// wordRE matches a variable name, possibly as a {VARIABLE} template
// followed by a path, or a {} template of the variable itself.
var wordRE = regexp.MustCompile(`\{[A-Z][A-Z0-9_]*\}[^\s,;)]*|\{\}[^\s,;)]*|\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b`)

func allNames(services []Service) []string {
	var names []string
	for _, s := range services {
		for _, v := range s.Vars {
			if !slices.Contains(names, v.Name) {
				names = append(names, v.Name)
			}
		}
	}
	return names
}

// EnvExample renders .env.example. Its template places each variable with
// {{var "NAME"}}, {{var "NAME" "value shown"}} or {{var "NAME" "value shown"
// "a note after the description"}}, and the variables of a binary not placed
// yet with {{rest "binary"}}. Every variable is placed exactly once, with
// its description (each binary's when they differ) as a comment and a
// commented NAME=value line.
func EnvExample(services []Service) ([]byte, error) { return envExample(envExampleTmpl, services) }

func envExample(tmpl string, services []Service) ([]byte, error) {
	placed := map[string]bool{}
	lookup := func(name string) ([]Service, []envconf.Var) {
		var ss []Service
		var vs []envconf.Var
		for _, s := range services {
			if i := slices.IndexFunc(s.Vars, func(v envconf.Var) bool { return v.Name == name }); i >= 0 {
				ss, vs = append(ss, s), append(vs, s.Vars[i])
			}
		}
		return ss, vs
	}
	render := func(name string, value *string, note string) (string, error) {
		ss, vs := lookup(name)
		if len(vs) == 0 {
			return "", fmt.Errorf("%s: no binary declares it", name)
		}
		if placed[name] {
			return "", fmt.Errorf("%s: placed twice", name)
		}
		placed[name] = true
		var lines []string
		var descs []string
		for _, v := range vs {
			if !slices.Contains(descs, v.Desc) {
				descs = append(descs, v.Desc)
			}
		}
		for i, v := range vs {
			d := sentence(v.Desc)
			if len(descs) > 1 {
				d = ss[i].Name + ": " + d
			} else if i > 0 {
				break
			}
			if v.Min != "" || v.Max != "" {
				d += fmt.Sprintf(" Range: %s to %s.", orDash(v.Min), orDash(v.Max))
			}
			lines = append(lines, d)
		}
		shown := vs[0].Default
		if value != nil {
			shown = *value
		} else if vs[0].Default == "" && vs[0].DefaultText != "" {
			lines[len(lines)-1] += " Default: " + sentence(vs[0].DefaultText)
		}
		if note != "" {
			lines[len(lines)-1] += " " + note
		}
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(wrap(l, 88, "# ") + "\n")
		}
		if strings.ContainsAny(shown, " \t#") {
			shown = `"` + shown + `"`
		}
		fmt.Fprintf(&b, "# %s=%s", name, shown)
		return b.String(), nil
	}
	funcs := template.FuncMap{
		// var NAME [VALUE [NOTE]]: VALUE replaces the default shown, NOTE
		// follows the description.
		"var": func(name string, args ...string) (string, error) {
			switch len(args) {
			case 0:
				return render(name, nil, "")
			case 1:
				return render(name, &args[0], "")
			case 2:
				return render(name, &args[0], args[1])
			}
			return "", fmt.Errorf("var %s: more than a value and a note", name)
		},
		"rest": func(binary string) (string, error) {
			i := slices.IndexFunc(services, func(s Service) bool { return s.Name == binary })
			if i < 0 {
				return "", fmt.Errorf("rest %q: no such binary", binary)
			}
			var parts []string
			for _, v := range services[i].Vars {
				if placed[v.Name] {
					continue
				}
				p, err := render(v.Name, nil, "")
				if err != nil {
					return "", err
				}
				parts = append(parts, p)
			}
			return strings.Join(parts, "\n"), nil
		},
	}
	t, err := template.New(".env.example").Funcs(funcs).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, nil); err != nil {
		return nil, err
	}
	var missing []string
	for _, name := range allNames(services) {
		if !placed[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("env.example.tmpl places no line for %s: add {{var \"NAME\"}} to its group, or a {{rest \"binary\"}}", strings.Join(missing, ", "))
	}
	return b.Bytes(), nil
}

// Generate renders every generated file, by its path relative to the
// repository root.
func Generate(services []Service) (map[string][]byte, error) {
	ref, err := Reference(services)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ReferenceFile, err)
	}
	env, err := EnvExample(services)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvExampleFile, err)
	}
	return map[string][]byte{ReferenceFile: ref, EnvExampleFile: env}, nil
}

// sentence ends a description with a period. (It keeps the first letter:
// descriptions start with names such as devauth and gRPC.)
func sentence(s string) string {
	if s != "" && !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// wrap breaks text into lines of at most width columns (a longer word keeps
// its own line), each starting with prefix.
func wrap(text string, width int, prefix string) string {
	var lines []string
	line := prefix
	for _, w := range strings.Fields(text) {
		if line != prefix && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = prefix
		}
		if line != prefix {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
