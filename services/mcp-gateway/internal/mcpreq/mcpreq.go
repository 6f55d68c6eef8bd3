// Package mcpreq works out which MCP operation an HTTP request asks for — the
// JSON-RPC method and, for tools/call, the tool name — before the go-sdk sees
// it, so the gateway can decide which scopes the request needs.
//
// # Trust
//
// The body is always read (with a size bound) and parsed, even when the client
// sent the Mcp-Method and Mcp-Name headers of protocol 2026-07-28: the body is
// what the SDK executes, so a header that disagrees with it is refused (400)
// rather than trusted. Keys are matched case-sensitively and a repeated key is
// refused, because the SDK's JSON decoder (segmentio, case-sensitive) and Go's
// encoding/json (case-insensitive, last wins) could otherwise read different
// methods or tool names from the same bytes.
//
// # Parsing
//
// The body is read with the streaming token decoder of
// github.com/go-json-experiment/json/jsontext (the encoding/json/v2
// prototype), which reads tokens without allocating and itself refuses
// repeated object names. A repeated key is therefore refused anywhere in the
// message (in arguments and _meta too), not only where the gateway reads: no
// reader can then pick a different member than another. Invalid UTF-8 is let
// through and read as one U+FFFD per bad byte, as encoding/json and the SDK's
// decoder read it, so that the SDK answers such a body with its own JSON-RPC
// error. Nesting deeper than 10000 levels is refused; numbers are checked for
// syntax only.
//
// # Batches
//
// A JSON array (a JSON-RPC batch) is refused with 400. Batching was removed from
// MCP in 2025-06-18, the go-sdk refuses it for 2025-06-18 and later anyway, and
// authorizing a batch would mean one decision for several operations.
package mcpreq

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
)

// Header names of the MCP standard request headers (protocol 2026-07-28).
const (
	HeaderMethod = "Mcp-Method"
	HeaderName   = "Mcp-Name"
)

// DefaultMaxBody is the default bound on a request body. MCP requests are small;
// a megabyte leaves ample room for large tool arguments.
const DefaultMaxBody = 1 << 20

// Info is what the gateway needs to know about one MCP request.
type Info struct {
	// Method is the JSON-RPC method, e.g. "tools/call".
	Method string
	// Name is params.name for tools/call and prompts/get and params.uri for
	// resources/read; empty otherwise or when absent.
	Name string
	// IsCall reports whether the message has an id (a request, not a
	// notification).
	IsCall bool
	// Trace is the W3C trace context the client sent in params._meta.
	Trace TraceContext
	// ID and Params are the message's id and params as sent, slices of the
	// body (nil when absent), for a request the gateway forwards itself.
	ID, Params jsontext.Value
}

// TraceContext is the W3C trace context of a message: the string values of
// params._meta's traceparent and tracestate keys, which MCP reserves for it
// (2026-07-28, "_meta"), as sent, unvalidated (an invalid one is ignored
// where it is used, as W3C Trace Context asks). A value that is not a string,
// or longer than [MaxTraceValue], is left empty.
type TraceContext struct {
	Parent string
	State  string
}

// MaxTraceValue bounds the trace context values kept: a traceparent is 55
// bytes and W3C asks that at least 512 of a tracestate be propagated.
const MaxTraceValue = 4 << 10

// Tool returns the tool name when the request is a tools/call, else "".
func (i Info) Tool() string {
	if i.Method == "tools/call" {
		return i.Name
	}
	return ""
}

// Error is a request the gateway refuses before authorization. Status is 400,
// 408, 413 or 415.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// Read reads r's body (at most maxBody bytes), parses it with [Parse] and
// replaces r.Body with a reader over the same bytes for the handler that runs
// next. It returns an *[Error] for a Content-Type other than application/json
// (415), for anything [ReadBody] refuses (408, 413, 400) or for anything
// [Parse] refuses (400).
func Read(r *http.Request, maxBody int64) (Info, error) {
	info, _, err := ReadWithBody(r, maxBody)
	return info, err
}

// ReadWithBody is [Read] that also returns the body it read, for a request
// the gateway forwards itself and for the audit log's argument hash. r.Body
// reads the same bytes: the caller must not change them.
func ReadWithBody(r *http.Request, maxBody int64) (Info, []byte, error) {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		return Info{}, nil, &Error{Status: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf("Content-Type must be application/json, got %q", ct)}
	}
	body, err := ReadBody(r, maxBody)
	if err != nil {
		return Info{}, nil, err
	}
	info, err := Parse(body, r.Header)
	return info, body, err
}

// initialBodyBuffer bounds the buffer a body with a declared length is first
// read into. It then grows (doubling, up to the size bound) only as bytes
// arrive, so the memory a request holds follows the bytes actually received,
// not the Content-Length it declares: a client that declares a megabyte and
// sends one byte costs at most this much. 4 KiB holds every request the MCP
// clients send, but calls with large arguments, in one allocation.
const initialBodyBuffer = 4 << 10

// ReadBody reads r's body (at most maxBody bytes) and replaces r.Body with a
// reader over the same bytes. It returns an *[Error] with status 413 when the
// body is larger, 408 when reading it ran into the connection's read deadline
// (the client sent it too slowly), or 400 when it cannot be read otherwise.
// On error the body is left as it is, possibly unread: the caller should close
// the connection after answering.
func ReadBody(r *http.Request, maxBody int64) ([]byte, error) {
	// Built only when needed: a body within the bound is the rule.
	tooLarge := func() error {
		return &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body exceeds %d bytes", maxBody)}
	}
	if r.ContentLength > maxBody {
		return nil, tooLarge()
	}
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = http.NoBody
		return nil, nil
	}
	// One byte more than a declared length, so that the read which sees EOF
	// needs no larger buffer; without one (chunked), as io.ReadAll starts.
	size := int64(512)
	if r.ContentLength >= 0 {
		size = min(r.ContentLength+1, initialBodyBuffer)
	}
	// Grow by doubling, so that a buffer is never more than twice what
	// arrived, but never past the declared length (plus the byte for EOF) nor
	// past maxBody+1: one byte beyond the bound is all it takes to know the
	// body is too large.
	limit := maxBody + 1
	if r.ContentLength >= 0 {
		limit = r.ContentLength + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > maxBody {
				return nil, tooLarge()
			}
			if int64(len(buf)) >= limit {
				// More than the declared length: net/http ends the body
				// there, so only another reader gets here.
				limit = maxBody + 1
			}
			// An exact allocation, not slices.Grow: append's growth rounds
			// up to a size class after growing by 1.25x steps, which can
			// land past twice what arrived.
			grown := make([]byte, len(buf), int64(len(buf))+min(int64(cap(buf)), limit-int64(len(buf))))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, &Error{Status: http.StatusRequestTimeout, Msg: "the request body did not arrive in time; send it at once, right after the headers"}
			}
			return nil, &Error{Status: http.StatusBadRequest, Msg: "reading request body: " + err.Error()}
		}
	}
	if int64(len(buf)) > maxBody {
		return nil, tooLarge()
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.ContentLength = int64(len(buf))
	return buf, nil
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// Parse extracts the method and name from a JSON-RPC message and checks them
// against the Mcp-Method and Mcp-Name headers when those are present. It returns
// an *[Error] with status 400 for an empty body, invalid JSON, a batch, a
// message without a method, a key repeated in any object of the message, or a
// header that disagrees with the body (or is sent twice).
func Parse(body []byte, h http.Header) (Info, error) {
	info, err := parseBody(body)
	if err != nil {
		return Info{}, err
	}
	if vs := h.Values(HeaderMethod); len(vs) > 0 {
		if len(vs) > 1 {
			return Info{}, badRequest("%s header sent %d times", HeaderMethod, len(vs))
		}
		if vs[0] != info.Method {
			return Info{}, badRequest("%s header %q does not match the body's method %q", HeaderMethod, vs[0], info.Method)
		}
	}
	if vs := h.Values(HeaderName); len(vs) > 0 && hasName(info.Method) {
		if len(vs) > 1 {
			return Info{}, badRequest("%s header sent %d times", HeaderName, len(vs))
		}
		name, ok := decodeHeaderValue(vs[0])
		if !ok {
			return Info{}, badRequest("%s header has invalid base64", HeaderName)
		}
		if name != info.Name {
			return Info{}, badRequest("%s header %q does not match the body's %q", HeaderName, vs[0], info.Name)
		}
	}
	return info, nil
}

func hasName(method string) bool {
	return method == "tools/call" || method == "prompts/get" || method == "resources/read"
}

// decodeHeaderValue undoes the =?base64?...?= wrapping MCP (SEP-2243) uses for
// header values that are not plain ASCII.
func decodeHeaderValue(v string) (string, bool) {
	if enc, ok := strings.CutPrefix(v, "=?base64?"); ok {
		if enc, ok = strings.CutSuffix(enc, "?="); ok {
			b, err := base64.StdEncoding.DecodeString(enc)
			return string(b), err == nil
		}
	}
	return v, true
}

// decodeOptions keep jsontext's refusal of repeated names and let invalid
// UTF-8 through, for the reasons the package doc gives under Parsing.
var decodeOptions = []jsontext.Options{jsontext.AllowInvalidUTF8(true)}

// parser reads the body in place with a pooled reader (package rawjson),
// which keeps the stacks it grew for the next request.
type parser struct{ dec *rawjson.Reader }

func parseBody(body []byte) (Info, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return Info{}, badRequest("request body is empty; send one JSON-RPC message")
	}
	p := parser{rawjson.NewReader(body, decodeOptions...)}
	info, err := p.message()
	p.dec.Release()
	return info, err
}

// member is what was found under one key of params.
type member struct {
	kind  jsontext.Kind // 0 when absent
	value string        // when kind is '"'
}

func (p parser) message() (Info, error) {
	dec := p.dec
	tok, err := dec.ReadToken()
	if err != nil {
		return Info{}, badRequest("request body is not JSON: %v", err)
	}
	switch tok.Kind() {
	case '{':
	case '[':
		return Info{}, badRequest("JSON-RPC batches are not supported (removed from MCP in 2025-06-18); send one message per request")
	default:
		return Info{}, badRequest("request body must be a JSON-RPC message object")
	}
	var (
		info       Info
		hasMethod  bool
		version2   bool
		paramsKind jsontext.Kind // 0 when absent
		name, uri  member
		trace      TraceContext
	)
	for {
		// The decoder itself refuses a repeated name and a name that is not
		// a string.
		tok, err := dec.ReadToken()
		if err != nil {
			return Info{}, invalidJSON(err)
		}
		if tok.Kind() == '}' {
			break
		}
		switch tok.String() {
		case "jsonrpc":
			if tok, err = p.stringToken("jsonrpc"); err != nil {
				return Info{}, err
			}
			version2 = tok.String() == "2.0"
		case "method":
			if tok, err = p.stringToken("method"); err != nil {
				return Info{}, err
			}
			info.Method = method(tok)
			hasMethod = true
		case "id":
			if info.ID, err = dec.ReadValue(); err != nil {
				return Info{}, invalidJSON(err)
			}
			info.IsCall = info.ID.Kind() != 'n'
		case "params":
			paramsKind = dec.PeekKind()
			if paramsKind == '{' {
				// Read token by token; the raw value is the span read, after
				// the name's colon.
				start := dec.InputOffset()
				if err = p.params(&name, &uri, &trace); err == nil {
					info.Params = bytes.TrimLeft(p.dec.Source()[start:dec.InputOffset()], " \t\r\n:")
				}
			} else {
				info.Params, err = dec.ReadValue()
			}
			if err != nil {
				return Info{}, invalidJSON(err)
			}
		default:
			if err := dec.SkipValue(); err != nil {
				return Info{}, invalidJSON(err)
			}
		}
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return Info{}, badRequest("unexpected data after the JSON-RPC message")
	}
	if !version2 {
		return Info{}, badRequest(`"jsonrpc" must be "2.0"`)
	}
	if !hasMethod || info.Method == "" {
		return Info{}, badRequest("message has no method; only JSON-RPC requests and notifications are accepted")
	}
	info.Trace = trace
	if !hasName(info.Method) {
		return info, nil
	}
	// A missing or null params, or a missing name, leaves Name empty, so that
	// the SDK can answer with its own JSON-RPC error.
	switch paramsKind {
	case 0, 'n':
		return info, nil
	case '{':
	default:
		return Info{}, badRequest(`"params" must be an object`)
	}
	key, m := "name", name
	if info.Method == "resources/read" {
		key, m = "uri", uri
	}
	switch m.kind {
	case 0:
	case '"':
		info.Name = m.value
	default:
		return Info{}, badRequest("%q must be a string", "params."+key)
	}
	return info, nil
}

// params reads the params object, keeping its name and uri members (the
// method, which says which one counts, may come after params) and the trace
// context in its _meta.
func (p parser) params(name, uri *member, trace *TraceContext) error {
	dec := p.dec
	if _, err := dec.ReadToken(); err != nil { // opening brace
		return err
	}
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if tok.Kind() == '}' {
			return nil
		}
		var m *member
		switch tok.String() {
		case "name":
			m = name
		case "uri":
			m = uri
		case "_meta":
			// Read here, while the body is parsed anyway, rather than
			// decoded again later: a request without _meta costs nothing
			// more, and one with it only the reading of its keys.
			if dec.PeekKind() == '{' {
				err = p.meta(trace)
			} else {
				err = dec.SkipValue()
			}
			if err != nil {
				return err
			}
			continue
		default:
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		if m.kind = dec.PeekKind(); m.kind != '"' {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		if tok, err = dec.ReadToken(); err != nil {
			return err
		}
		m.value = tok.String()
	}
}

// meta reads params._meta, keeping its traceparent and tracestate strings.
func (p parser) meta(trace *TraceContext) error {
	dec := p.dec
	if _, err := dec.ReadToken(); err != nil { // opening brace
		return err
	}
	for {
		if dec.PeekKind() == '}' {
			_, err := dec.ReadToken()
			return err
		}
		// The name as raw bytes: the other keys of _meta (the client's
		// protocol version and info) are longer than the conversion to a
		// string can make without allocating.
		name, err := dec.ReadValue()
		if err != nil {
			return err
		}
		var v *string
		switch {
		case isKey(name, "traceparent"):
			v = &trace.Parent
		case isKey(name, "tracestate"):
			v = &trace.State
		}
		if v == nil || dec.PeekKind() != '"' {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if s := tok.String(); len(s) <= MaxTraceValue {
			*v = s
		}
	}
}

// isKey reports whether raw, an object name as read, is name: byte for
// byte (which allocates nothing), or once unescaped.
func isKey(raw jsontext.Value, name string) bool {
	if len(raw) == len(name)+2 && string(raw[1:len(raw)-1]) == name {
		return true
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return false
	}
	s, err := jsontext.AppendUnquote(nil, raw)
	return err == nil && string(s) == name
}

// stringToken reads the value of key, which must be a string.
func (p parser) stringToken(key string) (jsontext.Token, error) {
	tok, err := p.dec.ReadToken()
	if err != nil {
		return jsontext.Token{}, invalidJSON(err)
	}
	if tok.Kind() != '"' {
		return jsontext.Token{}, badRequest("%q must be a string", key)
	}
	return tok, nil
}

// method returns tok's string, without allocating for the methods clients
// send on every session.
func method(tok jsontext.Token) string {
	switch tok.String() {
	case "tools/call":
		return "tools/call"
	case "tools/list":
		return "tools/list"
	case "initialize":
		return "initialize"
	case "notifications/initialized":
		return "notifications/initialized"
	case "ping":
		return "ping"
	}
	return tok.String()
}

// invalidJSON turns a decoder error into a 400 *Error, naming a repeated key
// and the object that repeats it.
func invalidJSON(err error) error {
	var serr *jsontext.SyntacticError
	if errors.As(err, &serr) && errors.Is(serr.Err, jsontext.ErrDuplicateName) {
		if parent := serr.JSONPointer.Parent(); parent != "" {
			return badRequest("key %q repeated in %q of the JSON-RPC message", serr.JSONPointer.LastToken(), parent)
		}
		return badRequest("key %q repeated in the JSON-RPC message", serr.JSONPointer.LastToken())
	}
	return badRequest("invalid JSON: %v", err)
}
