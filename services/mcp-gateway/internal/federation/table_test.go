package federation

import (
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstream"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/upstreamconf"
)

func members(t *testing.T, yaml string) []*member {
	t.Helper()
	f, err := upstreamconf.Parse([]byte(yaml), t.TempDir(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var ms []*member
	for i := range f.Upstreams {
		ms = append(ms, &member{conf: &f.Upstreams[i], log: slog.New(slog.DiscardHandler)})
	}
	return ms
}

func catalog(tools ...string) *upstream.Catalog {
	c := &upstream.Catalog{}
	for _, n := range tools {
		c.Tools = append(c.Tools, upstream.Entry{Key: n, Raw: []byte(`{"name":"` + n + `","inputSchema":{"type":"object"}}`)})
	}
	return c
}

func names(t *table) []string {
	var out []string
	for n := range t.tools {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func TestBuild(t *testing.T) {
	t.Parallel()
	ms := members(t, `
upstreams:
  - name: a
    url: http://a/mcp
    scopes: [read:a]
    tools: {secret: {scopes: [admin]}}
    exclude: [hidden*]
  - name: b
    url: http://b/mcp
`)
	a, b := ms[0], ms[1]
	cats := map[*member]*upstream.Catalog{a: catalog("echo", "secret", "hidden-1"), b: catalog("echo")}
	tb, _, err := build(ms, cats, []string{"who_am_i"}, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a_echo", "a_secret", "b_echo"}, names(tb)); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"read:a", "admin"}, tb.tools["a_secret"].scopes); diff != "" {
		t.Errorf("a_secret scopes (-want +got):\n%s", diff)
	}
	if tb.tools["a_secret"].key != "secret" || tb.counts["a"][kindTool] != 2 {
		t.Errorf("a_secret key %q, a's tool count %d", tb.tools["a_secret"].key, tb.counts["a"][kindTool])
	}

	// A lone upstream has no prefix: its tool may take a built-in's name.
	lone := members(t, "upstreams: [{name: solo, url: http://s/mcp}]")
	_, _, err = build(lone, map[*member]*upstream.Catalog{lone[0]: catalog("who_am_i")}, []string{"who_am_i"}, nil, true, nil)
	var ce *CollisionError
	if !errors.As(err, &ce) || ce.First != builtinOwner || ce.Second != "solo" {
		t.Fatalf("tool named as a built-in: %v", err)
	}
	if want := `tool "who_am_i" is offered by both a built-in tool and upstream "solo" (who_am_i); set a prefix, or exclude one`; err.Error() != want {
		t.Errorf("error %q\nwant %q", err, want)
	}

	// Same names without prefixes: refused at start, naming both.
	same := members(t, `
upstreams:
  - {name: one, url: http://1/mcp, prefix: ""}
  - {name: two, url: http://2/mcp, prefix: ""}
`)
	one, two := same[0], same[1]
	_, _, err = build(same, map[*member]*upstream.Catalog{one: catalog("echo"), two: catalog("echo")}, nil, nil, true, nil)
	if !errors.As(err, &ce) || ce.First != "one" || ce.Second != "two" || ce.Name != "echo" {
		t.Fatalf("collision at start: %v", err)
	}

	// After start, the incumbent keeps its name even when it comes later in
	// the file; the newcomer is left out, logged and counted.
	prev, _, err := build(same, map[*member]*upstream.Catalog{two: catalog("echo")}, nil, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	next, conflicts, err := build(same, map[*member]*upstream.Catalog{one: catalog("echo", "new"), two: catalog("echo")}, nil, prev, false, func(up, kind, name, holder string) {
		logged = append(logged, up+" "+kind+" "+name+" taken by "+holder)
	})
	if err != nil {
		t.Fatal(err)
	}
	if next.tools["echo"].up != two || next.tools["new"].up != one {
		t.Errorf("after refresh: echo from %s, new from %v", next.tools["echo"].up.conf.Name, next.tools["new"])
	}
	if diff := cmp.Diff(map[string]int{"one": 1}, conflicts); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"one tool echo taken by two"}, logged); diff != "" {
		t.Errorf("logged (-want +got):\n%s", diff)
	}
}

func TestBuildResources(t *testing.T) {
	t.Parallel()
	ms := members(t, `
upstreams:
  - {name: a, url: http://a/mcp}
  - {name: b, url: http://b/mcp}
`)
	res := func(uris ...string) *upstream.Catalog {
		c := &upstream.Catalog{}
		for _, u := range uris {
			c.Resources = append(c.Resources, upstream.Entry{Key: u, Raw: []byte(`{"uri":"` + u + `","name":"r"}`)})
		}
		c.ResourceTemplates = []upstream.Entry{{Key: "t://" + uris[0] + "/{id}", Raw: []byte(`{"uriTemplate":"t://x/{id}","name":"t"}`)}}
		return c
	}
	_, _, err := build(ms, map[*member]*upstream.Catalog{ms[0]: res("r://1"), ms[1]: res("r://1")}, nil, nil, true, nil)
	var ce *CollisionError
	if !errors.As(err, &ce) || ce.Kind != kindResource || ce.Name != "r://1" {
		t.Fatalf("same resource URI from two upstreams: %v", err)
	}
	tb, _, err := build(ms, map[*member]*upstream.Catalog{ms[0]: res("r://1"), ms[1]: res("r://2")}, nil, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := tb.template("t://r://2/7"); e == nil || e.up != ms[1] {
		t.Errorf("template match: %+v", e)
	}
	if e := tb.template("t://nothing"); e != nil {
		t.Errorf("no template should match, got %s", e.key)
	}
}
