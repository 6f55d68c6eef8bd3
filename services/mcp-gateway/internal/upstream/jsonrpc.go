package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
)

// This file reads and writes raw JSON-RPC messages without decoding them into
// Go values: the gateway forwards what the client and the upstream wrote, and
// only looks at the few members it needs (id, method, error code, _meta). The
// jsontext decoder reads straight from the message's bytes (a bytes.Buffer is
// not copied), so a value read is a slice of the message itself, and member
// names are compared in their quoted form, unquoted only when they hold an
// escape.

// Repeated names are refused (jsontext's default), so that no two readers of
// the same message can see different members; invalid UTF-8 is let through,
// as the go-sdk and encoding/json read it.
var decodeOptions = []jsontext.Options{jsontext.AllowInvalidUTF8(true)}

// jsonReader reads a message in place (a pooled [rawjson.Reader]) with the
// member-name reading the forwarding code needs.
type jsonReader struct{ *rawjson.Reader }

func getReader(b []byte) jsonReader { return jsonReader{rawjson.NewReader(b, decodeOptions...)} }

// beginObject reads the '{' that must come next.
func (r jsonReader) beginObject() error {
	if k := r.PeekKind(); k != '{' {
		// Reading it tells a syntax error from another kind of value.
		if _, err := r.ReadToken(); err != nil {
			return err
		}
		return fmt.Errorf("want a JSON object, got %v", k)
	}
	_, err := r.ReadToken()
	return err
}

// name reads the next member name of the current object, returning it in its
// quoted form (a slice of the source), or end at the closing brace.
func (r jsonReader) name() (raw []byte, end bool, err error) {
	start := r.InputOffset()
	tok, err := r.ReadToken()
	if err != nil {
		return nil, false, err
	}
	if tok.Kind() == '}' {
		return nil, true, nil
	}
	raw = bytes.TrimLeft(r.Source()[start:r.InputOffset()], " \t\r\n,")
	return raw, false, nil
}

// value reads the next value; the result is a slice of the source.
func (r jsonReader) value() (jsontext.Value, error) { return r.ReadValue() }

// end checks that nothing but whitespace follows the top-level value.
func (r jsonReader) end() error {
	if _, err := r.ReadToken(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// nameIs reports whether raw, a quoted member name, is name.
func nameIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return len(raw) == len(name)+2 && string(raw[1:len(raw)-1]) == name
	}
	u, err := jsontext.AppendUnquote(nil, raw)
	return err == nil && string(u) == name
}

// message is one JSON-RPC message; its values are slices of the source.
type message struct {
	id     jsontext.Value // nil when absent
	method jsontext.Value // quoted; nil when absent
	params jsontext.Value
	result jsontext.Value
	err    jsontext.Value
}

func (m *message) isRequest() bool      { return m.method != nil && m.id != nil }
func (m *message) isNotification() bool { return m.method != nil && m.id == nil }
func (m *message) isResponse() bool     { return m.method == nil }

// methodIs reports whether the message's method is name.
func (m *message) methodIs(name string) bool { return m.method != nil && nameIs(m.method, name) }

// methodString returns the method, unquoted, for logs.
func (m *message) methodString() string {
	u, err := jsontext.AppendUnquote(nil, m.method)
	if err != nil {
		return ""
	}
	return string(u)
}

// parseMessage reads one JSON-RPC 2.0 message: an object with "jsonrpc":
// "2.0", and either a string method (a request when it has an id, else a
// notification) or an id with exactly one of result and error (a response).
// An id is a string, a number, or null (only in an error response).
func parseMessage(b []byte) (message, error) {
	r := getReader(b)
	defer r.Release()
	var (
		m       message
		version bool
	)
	if err := r.beginObject(); err != nil {
		return m, fmt.Errorf("not a JSON-RPC message: %w", err)
	}
	for {
		name, end, err := r.name()
		if err != nil {
			return m, fmt.Errorf("not a JSON-RPC message: %w", err)
		}
		if end {
			break
		}
		v, err := r.value()
		if err != nil {
			return m, fmt.Errorf("not a JSON-RPC message: %w", err)
		}
		switch {
		case nameIs(name, "jsonrpc"):
			version = string(v) == `"2.0"`
		case nameIs(name, "id"):
			m.id = v
		case nameIs(name, "method"):
			m.method = v
		case nameIs(name, "params"):
			m.params = v
		case nameIs(name, "result"):
			m.result = v
		case nameIs(name, "error"):
			m.err = v
		}
	}
	if err := r.end(); err != nil {
		return m, fmt.Errorf("not a JSON-RPC message: %w", err)
	}
	switch {
	case !version:
		return m, errors.New(`not a JSON-RPC message: "jsonrpc" is not "2.0"`)
	case m.method != nil:
		if m.method.Kind() != '"' {
			return m, errors.New("not a JSON-RPC message: method is not a string")
		}
		if m.id != nil && m.id.Kind() != '"' && m.id.Kind() != '0' {
			return m, errors.New("not a JSON-RPC message: request id is not a string or number")
		}
	case m.id == nil:
		return m, errors.New("not a JSON-RPC message: neither a method nor an id")
	case (m.result == nil) == (m.err == nil):
		return m, errors.New("not a JSON-RPC message: a response needs exactly one of result and error")
	case m.id.Kind() == 'n' && m.err == nil:
		return m, errors.New("not a JSON-RPC message: a result with a null id")
	case m.id.Kind() != '"' && m.id.Kind() != '0' && m.id.Kind() != 'n':
		return m, errors.New("not a JSON-RPC message: id is not a string or number")
	}
	return m, nil
}

// parseRPCError reads a JSON-RPC error object: an integer code and a string
// message; data is kept as it is.
func parseRPCError(v jsontext.Value) (*RPCError, error) {
	r := getReader(v)
	defer r.Release()
	e := &RPCError{Raw: bytes.Clone(v)}
	var hasCode, hasMessage bool
	if err := r.beginObject(); err != nil {
		return nil, fmt.Errorf("error is not an object: %w", err)
	}
	for {
		name, end, err := r.name()
		if err != nil {
			return nil, err
		}
		if end {
			break
		}
		val, err := r.value()
		if err != nil {
			return nil, err
		}
		switch {
		case nameIs(name, "code"):
			n, err := strconv.ParseInt(string(val), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("error code %s is not an integer", val)
			}
			e.Code, hasCode = n, true
		case nameIs(name, "message"):
			if val.Kind() != '"' {
				return nil, errors.New("error message is not a string")
			}
			u, err := jsontext.AppendUnquote(nil, val)
			if err != nil {
				return nil, err
			}
			e.Message, hasMessage = string(u), true
		case nameIs(name, "data"):
			e.Data = bytes.Clone(val)
		}
	}
	if !hasCode || !hasMessage {
		return nil, errors.New("error object lacks code or message")
	}
	return e, nil
}

// member returns the value of obj's member name, or nil when obj has none. obj
// must be a JSON object.
func member(obj jsontext.Value, name string) (jsontext.Value, error) {
	r := getReader(obj)
	defer r.Release()
	if err := r.beginObject(); err != nil {
		return nil, err
	}
	for {
		n, end, err := r.name()
		if err != nil || end {
			return nil, err
		}
		if nameIs(n, name) {
			return r.value()
		}
		if err := r.SkipValue(); err != nil {
			return nil, err
		}
	}
}

// memberPath follows names through nested objects; nil when a member is
// missing or a value on the way is not an object.
func memberPath(obj jsontext.Value, names ...string) (jsontext.Value, error) {
	v := obj
	for _, n := range names {
		if v.Kind() != '{' {
			return nil, nil
		}
		var err error
		if v, err = member(v, n); v == nil || err != nil {
			return nil, err
		}
	}
	return v, nil
}

// appendRequest appends a JSON-RPC request (a notification when id < 0).
func appendRequest(dst []byte, id int64, method string, params []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0",`...)
	if id >= 0 {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"method":`...)
	dst, _ = jsontext.AppendQuote(dst, method)
	if len(params) > 0 {
		dst = append(dst, `,"params":`...)
		dst = append(dst, params...)
	}
	return append(dst, '}')
}

// appendRequestHead appends a request up to the value of "params", which the
// caller appends, followed by '}'.
func appendRequestHead(dst []byte, id int64, method string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, `,"method":`...)
	dst, _ = jsontext.AppendQuote(dst, method)
	return append(dst, `,"params":`...)
}

// appendErrorResponse appends a JSON-RPC error response to the request id.
func appendErrorResponse(dst []byte, id jsontext.Value, code int, msg string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"message":`...)
	dst, _ = jsontext.AppendQuote(dst, msg)
	return append(dst, "}}"...)
}

// appendResultResponse appends a JSON-RPC result response to the request id.
func appendResultResponse(dst []byte, id jsontext.Value, result string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"result":`...)
	dst = append(dst, result...)
	return append(dst, '}')
}

// idIs reports whether a response id is the integer id.
func idIs(raw jsontext.Value, id int64) bool {
	var buf [20]byte
	return string(raw) == string(strconv.AppendInt(buf[:0], id, 10))
}

// metaEdit says how appendParams changes params._meta.
type metaEdit struct {
	// members are complete members ("name":value, comma-separated) added to
	// _meta; names are their names, which are removed from what the caller
	// sent so the gateway's win.
	members []byte
	names   []string
	// progress, if set, replaces the value of _meta.progressToken.
	progress func(old jsontext.Value) []byte
	// capture names top-level members of params whose values appendParams
	// keeps in captured (slices of params; nil when absent).
	capture  [2]string
	captured [2]jsontext.Value
}

func (e *metaEdit) replaces(raw []byte) bool {
	for _, n := range e.names {
		if nameIs(raw, n) {
			return true
		}
	}
	return false
}

// appendParams appends params (a JSON object; empty or null mean {}) with the
// edit applied to its _meta member, which is created when needed. Every other
// member is copied byte for byte. It returns an error wrapping
// ErrInvalidParams when params is not a valid JSON object or its _meta is not
// an object.
func appendParams(dst []byte, params jsontext.Value, edit *metaEdit) ([]byte, error) {
	if p := bytes.TrimSpace(params); len(p) == 0 || string(p) == "null" {
		params = jsontext.Value("{}")
	}
	edit.captured = [2]jsontext.Value{}
	r := getReader(params)
	defer r.Release()
	invalid := func(err error) ([]byte, error) { return nil, fmt.Errorf("%w: %v", ErrInvalidParams, err) }
	if err := r.beginObject(); err != nil {
		return invalid(err)
	}
	dst = append(dst, '{')
	n, sawMeta := 0, false
	for {
		name, end, err := r.name()
		if err != nil {
			return invalid(err)
		}
		if end {
			break
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, name...)
		dst = append(dst, ':')
		if !nameIs(name, "_meta") {
			v, err := r.value()
			if err != nil {
				return invalid(err)
			}
			for i, c := range edit.capture {
				if c != "" && nameIs(name, c) {
					edit.captured[i] = v
				}
			}
			dst = append(dst, v...)
			continue
		}
		sawMeta = true
		if r.PeekKind() == 'n' {
			// A null _meta is no _meta.
			if err := r.SkipValue(); err != nil {
				return invalid(err)
			}
			dst = append(append(append(dst, '{'), edit.members...), '}')
			continue
		}
		if r.PeekKind() != '{' {
			return invalid(errors.New("_meta is not an object"))
		}
		if dst, err = appendMeta(dst, r, edit); err != nil {
			return invalid(err)
		}
	}
	if err := r.end(); err != nil {
		return invalid(err)
	}
	if !sawMeta && len(edit.members) > 0 {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"_meta":{`...)
		dst = append(dst, edit.members...)
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
}

func appendMeta(dst []byte, r jsonReader, edit *metaEdit) ([]byte, error) {
	if err := r.beginObject(); err != nil {
		return nil, err
	}
	dst = append(dst, '{')
	n := 0
	for {
		name, end, err := r.name()
		if err != nil {
			return nil, err
		}
		if end {
			break
		}
		if edit.replaces(name) {
			if err := r.SkipValue(); err != nil {
				return nil, err
			}
			continue
		}
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		if edit.progress != nil && nameIs(name, "progressToken") {
			v = edit.progress(v)
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, name...)
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	if len(edit.members) > 0 {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, edit.members...)
	}
	return append(dst, '}'), nil
}

// appendReplacing appends obj (a JSON object) with the value of its member
// name replaced by value; obj must have that member.
func appendReplacing(dst []byte, obj jsontext.Value, name string, value []byte) ([]byte, error) {
	r := getReader(obj)
	defer r.Release()
	if err := r.beginObject(); err != nil {
		return nil, err
	}
	dst = append(dst, '{')
	for n := 0; ; n++ {
		raw, end, err := r.name()
		if err != nil {
			return nil, err
		}
		if end {
			break
		}
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		if nameIs(raw, name) {
			v = value
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, raw...)
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	return append(dst, '}'), nil
}

// appendMember appends a "name":value member, quoting name.
func appendMember(dst []byte, name string, value []byte) []byte {
	dst, _ = jsontext.AppendQuote(dst, name)
	dst = append(dst, ':')
	return append(dst, value...)
}

// idScanner finds the integer value of the top-level "id" member of a JSON
// object that streams through it, in constant memory: a stdio line too long to
// keep is scanned this way so that the call it answers fails at once
// (ErrTooLarge) instead of at its timeout. It assumes nothing about valid
// JSON beyond strings, escapes and brackets; on anything else it finds no id.
type idScanner struct {
	depth   int
	inStr   bool
	esc     bool
	wantKey bool // at depth 1, the next string is a member name
	key     [4]byte
	keyLen  int // -1 once the key is known not to be "id"
	isKey   bool
	inID    int // 0: no; 1: after the "id" key, before the value; 2: in the value
	id      [20]byte
	idLen   int
	found   bool
	value   int64
}

func (s *idScanner) write(p []byte) {
	for _, c := range p {
		s.byte(c)
	}
}

func (s *idScanner) byte(c byte) {
	if s.inStr {
		switch {
		case s.esc:
			s.esc = false
		case c == '\\':
			s.esc = true
		case c == '"':
			s.inStr = false
			if s.isKey {
				s.isKey = false
				if s.keyLen == 2 && s.key[0] == 'i' && s.key[1] == 'd' {
					s.inID = 1
				}
			}
			return
		}
		if s.isKey {
			if s.keyLen >= 0 && s.keyLen < len(s.key) && !s.esc && c != '\\' {
				s.key[s.keyLen] = c
				s.keyLen++
			} else {
				s.keyLen = -1
			}
		}
		return
	}
	if s.inID == 2 {
		if c == '-' || (c >= '0' && c <= '9') {
			if s.idLen < len(s.id) {
				s.id[s.idLen] = c
				s.idLen++
			}
			return
		}
		s.inID = 0
		if n, err := strconv.ParseInt(string(s.id[:s.idLen]), 10, 64); err == nil && !s.found {
			s.found, s.value = true, n
		}
	}
	switch c {
	case '"':
		s.inStr = true
		s.isKey = s.depth == 1 && s.wantKey
		if s.isKey {
			s.keyLen = 0
			s.wantKey = false
		}
		if s.inID == 1 {
			s.inID = 0 // a string id: not one of ours
		}
	case '{', '[':
		s.depth++
		s.wantKey = c == '{' && s.depth == 1
		s.inID = 0
	case '}', ']':
		s.depth--
		s.inID = 0
	case ',':
		if s.depth == 1 {
			s.wantKey = true
		}
	case ':', ' ', '\t', '\r', '\n':
	default:
		if s.inID == 1 && (c == '-' || (c >= '0' && c <= '9')) {
			s.inID = 2
			s.idLen = 0
			s.id[0] = c
			s.idLen = 1
		} else {
			s.inID = 0
		}
	}
}

// result returns the id found, if any.
func (s *idScanner) result() (int64, bool) {
	if s.inID == 2 {
		s.byte(' ')
	}
	return s.value, s.found
}
