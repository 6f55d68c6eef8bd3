package federation

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/yosida95/uritemplate/v3"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
)

// Kinds of catalog entries, as the metrics name them.
const (
	kindTool     = "tool"
	kindResource = "resource"
	kindTemplate = "resource_template"
	kindPrompt   = "prompt"
)

// entry is one upstream entry the gateway serves.
type entry struct {
	up *member
	// key is the upstream's own name (tool, prompt), uri (resource) or
	// uriTemplate (template).
	key string
	// exposed is the name or URI the gateway shows.
	exposed string
	// scopes are what a request for it needs besides SCOPES: the
	// upstream's, then the tool's own.
	scopes []string
	// raw is the entry as the upstream listed it.
	raw jsontext.Value
	// match matches the URIs of a template.
	match *regexp.Regexp
}

// table is the routing table: immutable, swapped whole on a refresh.
type table struct {
	tools     map[string]*entry
	prompts   map[string]*entry
	resources map[string]*entry
	// templates are in the order of the upstreams, then as listed.
	templates []*entry
	// counts are the entries each upstream contributes, by kind.
	counts map[string]map[string]int
}

func emptyTable() *table {
	return &table{tools: map[string]*entry{}, prompts: map[string]*entry{}, resources: map[string]*entry{}, counts: map[string]map[string]int{}}
}

// CollisionError is two upstreams (or an upstream and a built-in tool)
// offering the same name, URI or URI template at start.
type CollisionError struct {
	Kind, Name string
	// First and Second name the upstreams, "built-in" for the gateway's own
	// tools.
	First, Second string
	// FirstKey and SecondKey are the upstreams' own names of the entries.
	FirstKey, SecondKey string
}

func (e *CollisionError) Error() string {
	what := map[string]string{kindTool: "tool", kindPrompt: "prompt", kindResource: "resource URI", kindTemplate: "resource template"}[e.Kind]
	first := fmt.Sprintf("upstream %q (%s)", e.First, e.FirstKey)
	if e.First == builtinOwner {
		first = "a built-in tool"
	}
	second := fmt.Sprintf("upstream %q (%s)", e.Second, e.SecondKey)
	return fmt.Sprintf("%s %q is offered by both %s and %s; set a prefix, or exclude one", what, e.Name, first, second)
}

const builtinOwner = "built-in"

// building is the state of one table build.
type building struct {
	t *table
	// builtin are the names of the gateway's own tools.
	builtin map[string]bool
	// prev is the table in use (nil at start): its entries keep their
	// names against newcomers.
	prev *table
	// strict makes a clash an error (at start); otherwise the newcomer is
	// left out and counted in conflicts.
	strict    bool
	conflicts map[string]int
	logf      func(up, kind, name, holder string)
}

// build makes the routing table of the catalogs (nil for an upstream that is
// down: it contributes nothing). Entries of prev keep their names; clashes
// are errors when strict, else the newcomer is left out.
func build(members []*member, cats map[*member]*upstream.Catalog, builtin []string, prev *table, strict bool, logf func(up, kind, name, holder string)) (*table, map[string]int, error) {
	b := &building{t: emptyTable(), builtin: map[string]bool{}, prev: prev, strict: strict, conflicts: map[string]int{}, logf: logf}
	for _, n := range builtin {
		b.builtin[n] = true
	}
	type pending struct {
		kind string
		e    *entry
	}
	var all []pending
	for _, m := range members {
		cat := cats[m]
		b.t.counts[m.conf.Name] = map[string]int{kindTool: 0, kindResource: 0, kindTemplate: 0, kindPrompt: 0}
		if cat == nil {
			continue
		}
		for _, e := range cat.Tools {
			if !m.conf.Serves(e.Key) {
				continue
			}
			exposed := ExposedName(m.conf.Prefix, e.Key)
			if exposed == "" {
				continue
			}
			all = append(all, pending{kindTool, &entry{up: m, key: e.Key, exposed: exposed, scopes: m.conf.ToolScopes(e.Key), raw: e.Raw}})
		}
		for _, e := range cat.Prompts {
			exposed := ExposedName(m.conf.Prefix, e.Key)
			if exposed == "" {
				continue
			}
			all = append(all, pending{kindPrompt, &entry{up: m, key: e.Key, exposed: exposed, scopes: slices.Clone(m.conf.Scopes), raw: e.Raw}})
		}
		for _, e := range cat.Resources {
			all = append(all, pending{kindResource, &entry{up: m, key: e.Key, exposed: e.Key, scopes: slices.Clone(m.conf.Scopes), raw: e.Raw}})
		}
		for _, e := range cat.ResourceTemplates {
			tmpl, err := uritemplate.New(e.Key)
			if err != nil {
				m.log.Warn("upstream listed an invalid URI template; left out", "uri_template", e.Key, "error", err)
				continue
			}
			all = append(all, pending{kindTemplate, &entry{up: m, key: e.Key, exposed: e.Key, scopes: slices.Clone(m.conf.Scopes), raw: e.Raw, match: tmpl.Regexp()}})
		}
	}
	// Entries the table in use holds keep their place: a newcomer that
	// clashes with them after start is the one left out.
	placed := make([]bool, len(all))
	if prev != nil {
		for i, p := range all {
			if holder := prev.lookup(p.kind, p.e.exposed); holder != nil && holder.up == p.e.up {
				if err := b.add(p.kind, p.e); err != nil {
					return nil, nil, err
				}
				placed[i] = true
			}
		}
	}
	for i, p := range all {
		if placed[i] {
			continue
		}
		if err := b.add(p.kind, p.e); err != nil {
			return nil, nil, err
		}
	}
	return b.t, b.conflicts, nil
}

// lookup returns t's entry of kind named name, or nil.
func (t *table) lookup(kind, name string) *entry {
	switch kind {
	case kindTool:
		return t.tools[name]
	case kindPrompt:
		return t.prompts[name]
	case kindResource:
		return t.resources[name]
	case kindTemplate:
		for _, e := range t.templates {
			if e.exposed == name {
				return e
			}
		}
	}
	return nil
}

func (b *building) add(kind string, e *entry) error {
	var holder *entry
	if kind == kindTool && b.builtin[e.exposed] {
		holder = &entry{key: e.exposed}
	} else {
		holder = b.t.lookup(kind, e.exposed)
	}
	if holder != nil {
		owner := builtinOwner
		if holder.up != nil {
			owner = holder.up.conf.Name
		}
		if b.strict {
			return &CollisionError{Kind: kind, Name: e.exposed, First: owner, FirstKey: holder.key, Second: e.up.conf.Name, SecondKey: e.key}
		}
		b.conflicts[e.up.conf.Name]++
		if b.logf != nil {
			b.logf(e.up.conf.Name, kind, e.exposed, owner)
		}
		return nil
	}
	switch kind {
	case kindTool:
		b.t.tools[e.exposed] = e
	case kindPrompt:
		b.t.prompts[e.exposed] = e
	case kindResource:
		b.t.resources[e.exposed] = e
	case kindTemplate:
		b.t.templates = append(b.t.templates, e)
	}
	b.t.counts[e.up.conf.Name][kind]++
	return nil
}

// template returns the first template whose URIs include uri, or nil.
func (t *table) template(uri string) *entry {
	for _, e := range t.templates {
		if e.match.MatchString(uri) {
			return e
		}
	}
	return nil
}

// describe is a short summary for the start log line.
func (t *table) describe(name string) string {
	c := t.counts[name]
	return strings.TrimSpace(fmt.Sprintf("%d tools, %d prompts, %d resources, %d resource templates", c[kindTool], c[kindPrompt], c[kindResource], c[kindTemplate]))
}
