package federation

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
)

// request is what forwarding needs of a client's JSON-RPC request. Its
// values are slices of the body it was read from.
type request struct {
	// id is the request's id, raw.
	id jsontext.Value
	// method is the JSON-RPC method.
	method string
	// params is the params member, raw; nil when absent.
	params jsontext.Value
}

// newDecoder returns a pooled reader of b (package rawjson): the values it
// returns are slices of b. A routed call reads its params twice (and its
// whole body once more when request.check falls back to parseRequest);
// release each reader when done with it.
//
// The readers bound nesting themselves (jsontext refuses more than 10000
// levels, as package mcpreq does), and the body was bounded when read.
// Repeated names are refused (jsontext's default).
func newDecoder(b []byte) *rawjson.Reader { return rawjson.NewReader(b) }

// parseRequest reads the id, method and params of a JSON-RPC request. It
// returns an error for anything but one JSON object with an id (number or
// string) and a string method.
func parseRequest(body []byte) (request, error) {
	var req request
	d := newDecoder(body)
	defer d.Release()
	tok, err := d.ReadToken()
	if err != nil {
		return req, err
	}
	if tok.Kind() != '{' {
		return req, errors.New("not a JSON object")
	}
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return req, err
		}
		name := nt.String()
		v, err := d.ReadValue()
		if err != nil {
			return req, err
		}
		switch name {
		case "id":
			if v.Kind() != '0' && v.Kind() != '"' {
				return req, errors.New("id is neither a number nor a string")
			}
			req.id = v
		case "method":
			if v.Kind() != '"' {
				return req, errors.New("method is not a string")
			}
			u, err := jsontext.AppendUnquote(nil, v)
			if err != nil {
				return req, err
			}
			req.method = string(u)
		case "params":
			req.params = v
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return req, err
	}
	if req.id == nil || req.method == "" {
		return req, errors.New("not a JSON-RPC request (no id or method)")
	}
	return req, nil
}

// ref is the ref of a completion/complete request.
type ref struct {
	typ, name, uri string
}

// parseRef returns params.ref of a completion/complete request's params.
func parseRef(params jsontext.Value) (ref, error) {
	var r ref
	v, err := rawMember(params, "ref")
	if err != nil || v == nil {
		return r, errors.New("no ref")
	}
	if v.Kind() != '{' {
		return r, errors.New("ref is not an object")
	}
	d := newDecoder(v)
	defer d.Release()
	if _, err := d.ReadToken(); err != nil {
		return r, err
	}
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return r, err
		}
		name := nt.String()
		mv, err := d.ReadValue()
		if err != nil {
			return r, err
		}
		if mv.Kind() != '"' {
			continue
		}
		u, err := jsontext.AppendUnquote(nil, mv)
		if err != nil {
			return r, err
		}
		switch name {
		case "type":
			r.typ = string(u)
		case "name":
			r.name = string(u)
		case "uri":
			r.uri = string(u)
		}
	}
	return r, nil
}

// rawMember returns the raw value of obj's member name, nil when absent.
func rawMember(obj jsontext.Value, name string) (jsontext.Value, error) {
	if len(obj) == 0 {
		return nil, nil
	}
	d := newDecoder(obj)
	defer d.Release()
	tok, err := d.ReadToken()
	if err != nil {
		return nil, err
	}
	if tok.Kind() != '{' {
		return nil, errors.New("not an object")
	}
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return nil, err
		}
		n := nt.String()
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		if n == name {
			return bytes.Clone(v), nil
		}
	}
	return nil, nil
}

// keepMeta reports whether a member of the client's params._meta goes to
// the upstream: everything but the protocol's own keys (the gateway speaks
// its own protocol version, client info and capabilities upstream; the log
// level is the client's to choose, so it goes) and the gateway's keys (an
// identity is only ever the gateway's).
func keepMeta(name string) bool {
	switch {
	case strings.HasPrefix(name, "io.mcpauthz/"):
		return false
	case name == "io.modelcontextprotocol/logLevel":
		return true
	case strings.HasPrefix(name, "io.modelcontextprotocol/"):
		return false
	}
	return true
}

// rewriteParams returns params as the upstream gets them: the name of a
// tools/call or prompts/get, or the ref name of a completion/complete about
// a prompt, replaced by the upstream's own (key); params._meta without the
// members [keepMeta] refuses. With trace (the gateway's trace context as
// encoded members, see [traceMembers]; nil when tracing is off), _meta also
// loses the client's trace context and baggage and carries trace instead,
// and is added when params has none. Every other member is copied as sent.
// It returns an error when params is not a JSON object (null or absent:
// {}).
func rewriteParams(params jsontext.Value, method, key string, trace []byte) ([]byte, error) {
	if p := bytes.TrimSpace(params); len(p) == 0 || string(p) == "null" {
		params = jsontext.Value("{}")
	}
	d := newDecoder(params)
	defer d.Release()
	tok, err := d.ReadToken()
	if err != nil {
		return nil, err
	}
	if tok.Kind() != '{' {
		return nil, errors.New("params is not a JSON object")
	}
	out := make([]byte, 0, len(params)+len(key)+len(trace))
	out = append(out, '{')
	n, sawMeta := 0, false
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return nil, err
		}
		name := nt.String()
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out, _ = jsontext.AppendQuote(out, name)
		out = append(out, ':')
		switch {
		case name == "name" && (method == "tools/call" || method == "prompts/get"):
			out = appendQuote(out, key)
		case name == "ref" && method == "completion/complete":
			if v, err = rewriteRef(v, key); err != nil {
				return nil, err
			}
			out = append(out, v...)
		case name == "_meta":
			sawMeta = true
			if out, err = appendFilteredMeta(out, v, trace); err != nil {
				return nil, err
			}
		default:
			out = append(out, v...)
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	if trace != nil && !sawMeta {
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, `"_meta":{`...)
		out = append(out, trace...)
		out = append(out, '}')
	}
	return append(out, '}'), nil
}

// rewriteRef replaces the name of a ref/prompt with key.
func rewriteRef(v jsontext.Value, key string) (jsontext.Value, error) {
	if v.Kind() != '{' {
		return nil, errors.New("ref is not an object")
	}
	r, err := parseRef(append(append([]byte(`{"ref":`), v...), '}'))
	if err != nil {
		return nil, err
	}
	if r.typ != "ref/prompt" {
		return bytes.Clone(v), nil
	}
	return replaceMember(v, "name", quote(key))
}

// appendFilteredMeta appends _meta without the members keepMeta refuses.
// With trace, the client's trace context and baggage go too and trace comes
// first; a null _meta becomes an object of trace. Without, null stays null.
func appendFilteredMeta(out []byte, v jsontext.Value, trace []byte) ([]byte, error) {
	if v.Kind() == 'n' {
		if trace != nil {
			return append(append(append(out, '{'), trace...), '}'), nil
		}
		return append(out, v...), nil
	}
	if v.Kind() != '{' {
		return nil, errors.New("_meta is not an object")
	}
	d := newDecoder(v)
	defer d.Release()
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	out = append(append(out, '{'), trace...)
	n := 0
	if len(trace) > 0 {
		n = 1
	}
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return nil, err
		}
		name := nt.String()
		mv, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		if !keepMeta(name) || (trace != nil && slices.Contains(traceMeta, name)) {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out, _ = jsontext.AppendQuote(out, name)
		out = append(out, ':')
		out = append(out, mv...)
	}
	return append(out, '}'), nil
}

// replaceMember returns obj with the value of its member name replaced.
func replaceMember(obj jsontext.Value, name string, value []byte) (jsontext.Value, error) {
	d := newDecoder(obj)
	defer d.Release()
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	out := []byte{'{'}
	n := 0
	for d.PeekKind() != '}' {
		nt, err := d.ReadToken()
		if err != nil {
			return nil, err
		}
		key := nt.String()
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		if key == name {
			v = value
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out, _ = jsontext.AppendQuote(out, key)
		out = append(out, ':')
		out = append(out, v...)
	}
	return append(out, '}'), nil
}

func quote(s string) []byte { return appendQuote(nil, s) }

// appendQuote appends s as a JSON string.
func appendQuote(dst []byte, s string) []byte {
	b, err := jsontext.AppendQuote(dst, s)
	if err != nil {
		// Invalid UTF-8 in an upstream's name: quoted with replacement
		// characters rather than not at all.
		b, _ = jsontext.AppendQuote(dst, strings.ToValidUTF8(s, "\uFFFD"))
	}
	return b
}
