package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/go-json-experiment/json/jsontext"
)

// Catalog is what an upstream offers, as it listed it.
type Catalog struct {
	// ProtocolVersion is the version the gateway speaks with the upstream.
	ProtocolVersion string
	// Capabilities is the upstream's capabilities object, raw.
	Capabilities jsontext.Value
	// Tools, Resources, ResourceTemplates and Prompts hold every entry of
	// every page, in the upstream's order. Entries without their key (a tool
	// without a string name, say) are left out, and so are the tools of a
	// 2026-07-28 HTTP upstream whose x-mcp-header annotations are invalid
	// (the spec has clients leave them out; each is logged).
	Tools, Resources, ResourceTemplates, Prompts []Entry
}

// Entry is one listed tool, resource, resource template or prompt.
type Entry struct {
	// Key is what routes to it: the name of a tool or prompt, the uri of a
	// resource, the uriTemplate of a template.
	Key string
	// Raw is the entry's JSON object exactly as the upstream listed it.
	Raw jsontext.Value
}

// Bounds on listing: a server that pages forever, or lists absurdly many
// entries, is answered with an error rather than memory.
const (
	maxPages   = 1000
	maxEntries = 100000
)

func (c *conn) Catalog(ctx context.Context) (*Catalog, error) {
	if c.closed.Load() {
		return nil, c.closedErr()
	}
	info, err := c.server(ctx)
	if err != nil {
		return nil, err
	}
	cat := &Catalog{ProtocolVersion: info.version, Capabilities: info.caps}
	lists := []struct {
		capability, method, member, key string
		dst                             *[]Entry
	}{
		{"tools", "tools/list", "tools", "name", &cat.Tools},
		{"resources", "resources/list", "resources", "uri", &cat.Resources},
		{"resources", "resources/templates/list", "resourceTemplates", "uriTemplate", &cat.ResourceTemplates},
		{"prompts", "prompts/list", "prompts", "name", &cat.Prompts},
	}
	for _, l := range lists {
		if capability, _ := member(info.caps, l.capability); capability == nil || capability.Kind() == 'n' {
			continue
		}
		if *l.dst, err = c.list(ctx, l.method, l.member, l.key); err != nil {
			return nil, err
		}
	}
	if c.opts.URL != "" && info.modern() {
		cat.Tools = c.setBindings(cat.Tools)
	}
	c.t.watch()
	return cat, nil
}

// server negotiates (once) through the conn's limits.
func (c *conn) server(ctx context.Context) (serverInfo, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.Timeout, errCallTimeout)
	defer cancel()
	info, err := c.t.server(ctx)
	if err != nil && ctx.Err() != nil {
		return info, c.ctxErr(ctx)
	}
	return info, err
}

// pageCall sends one list request of the gateway's own. It is outside the
// bound on concurrent calls: listing happens inside calls (to refresh tool
// annotations), and a call waiting for a slot held by itself would never end.
func (c *conn) pageCall(ctx context.Context, method string, params jsontext.Value) (jsontext.Value, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.Timeout, errCallTimeout)
	defer cancel()
	res, err := c.t.call(ctx, Caller{}, method, params, nil)
	if err != nil && ctx.Err() != nil {
		return nil, c.ctxErr(ctx)
	}
	return res, err
}

// refreshBindings lists the tools again for their x-mcp-header annotations.
func (c *conn) refreshBindings(ctx context.Context) error {
	tools, err := c.list(ctx, "tools/list", "tools", "name")
	if err != nil {
		return err
	}
	c.setBindings(tools)
	return nil
}

// list reads every page of one list method.
func (c *conn) list(ctx context.Context, method, arrayMember, key string) ([]Entry, error) {
	var (
		entries []Entry
		cursor  jsontext.Value
		seen    = map[string]bool{}
	)
	for page := 0; ; page++ {
		if page == maxPages {
			return nil, c.protocolErr(fmt.Sprintf("%s has more than %d pages", method, maxPages), nil)
		}
		params := jsontext.Value("{}")
		if cursor != nil {
			params = append(append([]byte(`{"cursor":`), cursor...), '}')
		}
		res, err := c.pageCall(ctx, method, params)
		if err != nil {
			return nil, err
		}
		if res.Kind() != '{' {
			return nil, c.protocolErr(method+" result is not an object", nil)
		}
		arr, err := member(res, arrayMember)
		if err != nil || arr.Kind() != '[' {
			return nil, c.protocolErr(fmt.Sprintf("%s result has no %s array", method, arrayMember), err)
		}
		err = elements(arr, func(v jsontext.Value) error {
			if len(entries) == maxEntries {
				return fmt.Errorf("more than %d entries", maxEntries)
			}
			k, err := stringMember(v, key)
			if err != nil || k == "" {
				c.opts.Logger.Warn("upstream listed an entry without its key; left out", "method", method, "key", key)
				return nil
			}
			entries = append(entries, Entry{Key: k, Raw: v})
			return nil
		})
		if err != nil {
			return nil, c.protocolErr(fmt.Sprintf("%s result: %v", method, err), err)
		}
		next, err := member(res, "nextCursor")
		if err != nil {
			return nil, c.protocolErr(method+" result", err)
		}
		if next == nil || next.Kind() == 'n' || string(next) == `""` {
			return entries, nil
		}
		if next.Kind() != '"' {
			return nil, c.protocolErr(method+" nextCursor is not a string", nil)
		}
		if seen[string(next)] {
			return nil, c.protocolErr(method+" repeats a cursor", nil)
		}
		seen[string(next)] = true
		cursor = bytes.Clone(next)
	}
}

// elements calls f with each element of the JSON array arr.
func elements(arr jsontext.Value, f func(jsontext.Value) error) error {
	r := getReader(arr)
	defer r.Release()
	if _, err := r.ReadToken(); err != nil {
		return err
	}
	for r.PeekKind() != ']' {
		v, err := r.value()
		if err != nil {
			return err
		}
		if err := f(v); err != nil {
			return err
		}
	}
	_, err := r.ReadToken()
	return err
}

// stringMember returns obj's member name, unquoted, or an error when obj is
// not an object or the member is missing or not a string.
func stringMember(obj jsontext.Value, name string) (string, error) {
	if obj.Kind() != '{' {
		return "", errors.New("not an object")
	}
	v, err := member(obj, name)
	if err != nil {
		return "", err
	}
	if v.Kind() != '"' {
		return "", fmt.Errorf("%s is not a string", name)
	}
	u, err := jsontext.AppendUnquote(nil, v)
	return string(u), err
}
