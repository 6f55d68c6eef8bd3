package upstream

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// Protocol 2026-07-28 lets a tool mark input parameters with "x-mcp-header":
// the client then repeats their values as Mcp-Param-<Name> headers, and the
// server refuses a tools/call whose headers disagree with its body (or lack
// one). The gateway, a client toward the upstream, does this for the tools of
// the last catalog, and leaves out tools whose annotations break the rules,
// as the spec asks of clients (basic/transports/streamable-http, "Custom
// Headers from Tool Parameters").

// paramBinding maps a parameter (a path of properties) to its header.
type paramBinding struct {
	path   []string
	header string // the part after "Mcp-Param-"
}

// setBindings keeps the bindings of tools and returns tools without those
// whose annotations are invalid.
func (c *conn) setBindings(tools []Entry) []Entry {
	m := map[string][]paramBinding{}
	kept := tools[:0]
	for _, t := range tools {
		b, err := toolBindings(t.Raw)
		if err != nil {
			c.opts.Logger.Warn("upstream tool left out: invalid x-mcp-header annotation", "tool", t.Key, "err", err)
			continue
		}
		if len(b) > 0 {
			m[t.Key] = b
		}
		kept = append(kept, t)
	}
	c.bindings.Store(&m)
	return kept
}

// toolBindings reads the x-mcp-header annotations of a tool's inputSchema.
func toolBindings(tool jsontext.Value) ([]paramBinding, error) {
	schema, err := member(tool, "inputSchema")
	if err != nil || schema.Kind() != '{' {
		return nil, err
	}
	w := bindingWalker{seen: map[string]bool{}}
	if err := w.schema(schema, nil, true); err != nil {
		return nil, err
	}
	return w.out, nil
}

type bindingWalker struct {
	out  []paramBinding
	seen map[string]bool
}

// schema walks a schema object. reachable says whether the path to it is a
// chain of "properties" keys from the root (the root itself is not a
// parameter: an annotation there is invalid).
func (w *bindingWalker) schema(v jsontext.Value, path []string, reachable bool) error {
	switch v.Kind() {
	case '[':
		return elements(v, func(e jsontext.Value) error { return w.schema(e, path, false) })
	case '{':
	default:
		return nil
	}
	r := getReader(v)
	defer r.Release()
	if err := r.beginObject(); err != nil {
		return err
	}
	for {
		name, end, err := r.name()
		if err != nil {
			return err
		}
		if end {
			return nil
		}
		val, err := r.value()
		if err != nil {
			return err
		}
		switch {
		case nameIs(name, "x-mcp-header"):
			if !reachable || len(path) == 0 {
				return errors.New("x-mcp-header on a value not reachable through properties alone")
			}
			if err := w.annotation(v, val, path); err != nil {
				return err
			}
		case nameIs(name, "properties") && reachable && val.Kind() == '{':
			if err := w.properties(val, path); err != nil {
				return err
			}
		default:
			if err := w.schema(val, path, false); err != nil {
				return err
			}
		}
	}
}

func (w *bindingWalker) properties(props jsontext.Value, path []string) error {
	r := getReader(props)
	defer r.Release()
	if err := r.beginObject(); err != nil {
		return err
	}
	for {
		name, end, err := r.name()
		if err != nil {
			return err
		}
		if end {
			return nil
		}
		val, err := r.value()
		if err != nil {
			return err
		}
		u, err := jsontext.AppendUnquote(nil, name)
		if err != nil {
			return err
		}
		if err := w.schema(val, append(path[:len(path):len(path)], string(u)), true); err != nil {
			return err
		}
	}
}

func (w *bindingWalker) annotation(prop, header jsontext.Value, path []string) error {
	if header.Kind() != '"' {
		return errors.New("x-mcp-header is not a string")
	}
	u, err := jsontext.AppendUnquote(nil, header)
	if err != nil {
		return err
	}
	h := string(u)
	if h == "" || !isToken(h) {
		return fmt.Errorf("x-mcp-header %q is not an HTTP field-name token", h)
	}
	if w.seen[strings.ToLower(h)] {
		return fmt.Errorf("x-mcp-header %q used twice", h)
	}
	w.seen[strings.ToLower(h)] = true
	typ, _ := stringMember(prop, "type")
	switch typ {
	case "string", "integer", "boolean":
	default:
		return fmt.Errorf("x-mcp-header %q on a parameter of type %q (want string, integer or boolean)", h, typ)
	}
	w.out = append(w.out, paramBinding{path: path, header: h})
	return nil
}

// isToken reports whether s is an RFC 9110 token (1*tchar).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return len(s) > 0
}

// setParamHeaders sets the Mcp-Param-* headers of a tools/call to the tool
// named name, whose arguments are args.
func (c *conn) setParamHeaders(h http.Header, name string, args jsontext.Value) {
	m := c.bindings.Load()
	if m == nil || args.Kind() != '{' {
		return
	}
	for _, b := range (*m)[name] {
		v, err := memberPath(args, b.path...)
		if err != nil || v == nil {
			continue
		}
		s, ok := primitiveHeaderValue(v)
		if !ok {
			continue
		}
		h["Mcp-Param-"+b.header] = []string{encodeHeaderValue(s)}
	}
}

// primitiveHeaderValue is a parameter's header form: a string as it is, a
// boolean as true or false, an integer within JavaScript's safe range in
// decimal. Anything else (null, other numbers, objects) has no header.
func primitiveHeaderValue(v jsontext.Value) (string, bool) {
	switch v.Kind() {
	case '"':
		u, err := jsontext.AppendUnquote(nil, v)
		return string(u), err == nil
	case 't':
		return "true", true
	case 'f':
		return "false", true
	case '0':
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53-1 {
			return "", false
		}
		return strconv.FormatInt(int64(f), 10), true
	}
	return "", false
}

const (
	base64Prefix = "=?base64?"
	base64Suffix = "?="
)

// encodeHeaderValue returns s as a header value: as it is when it is plain
// visible ASCII without leading or trailing blanks, else in the
// =?base64?...?= form (also used for a plain value that looks like that form).
func encodeHeaderValue(s string) string {
	plain := len(s) == 0 || (s[0] != ' ' && s[0] != '\t' && s[len(s)-1] != ' ' && s[len(s)-1] != '\t')
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= 0x20 && s[i] <= 0x7e
	}
	if plain && !(strings.HasPrefix(s, base64Prefix) && strings.HasSuffix(s, base64Suffix)) {
		return s
	}
	return base64Prefix + base64.StdEncoding.EncodeToString([]byte(s)) + base64Suffix
}
