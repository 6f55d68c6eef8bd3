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
// # Batches
//
// A JSON array (a JSON-RPC batch) is refused with 400. Batching was removed from
// MCP in 2025-06-18, the go-sdk refuses it for 2025-06-18 and later anyway, and
// authorizing a batch would mean one decision for several operations.
package mcpreq

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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
}

// Tool returns the tool name when the request is a tools/call, else "".
func (i Info) Tool() string {
	if i.Method == "tools/call" {
		return i.Name
	}
	return ""
}

// Error is a request the gateway refuses before authorization. Status is 400,
// 413 or 415.
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
// next. It returns an *[Error] for a body that is too large (413), for a
// Content-Type other than application/json (415) or for anything [Parse]
// refuses (400).
func Read(r *http.Request, maxBody int64) (Info, error) {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		return Info{}, &Error{Status: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf("Content-Type must be application/json, got %q", ct)}
	}
	body, err := ReadBody(r, maxBody)
	if err != nil {
		return Info{}, err
	}
	return Parse(body, r.Header)
}

// ReadBody reads r's body (at most maxBody bytes) and replaces r.Body with a
// reader over the same bytes. It returns an *[Error] with status 413 when the
// body is larger, or 400 when it cannot be read.
func ReadBody(r *http.Request, maxBody int64) ([]byte, error) {
	tooLarge := &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body exceeds %d bytes", maxBody)}
	if r.ContentLength > maxBody {
		return nil, tooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = http.NoBody
		return nil, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, maxBody+1))
	_ = r.Body.Close()
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Msg: "reading request body: " + err.Error()}
	}
	if n > maxBody {
		return nil, tooLarge
	}
	body := buf.Bytes()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, nil
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// Parse extracts the method and name from a JSON-RPC message and checks them
// against the Mcp-Method and Mcp-Name headers when those are present. It returns
// an *[Error] with status 400 for an empty body, invalid JSON, a batch, a
// message without a method, a repeated key, or a header that disagrees with the
// body (or is sent twice).
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

func parseBody(body []byte) (Info, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return Info{}, badRequest("request body is empty; send one JSON-RPC message")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return Info{}, badRequest("request body is not JSON: %v", err)
	}
	switch tok {
	case json.Delim('{'):
	case json.Delim('['):
		return Info{}, badRequest("JSON-RPC batches are not supported (removed from MCP in 2025-06-18); send one message per request")
	default:
		return Info{}, badRequest("request body must be a JSON-RPC message object")
	}
	var (
		info      Info
		params    json.RawMessage
		seen      = make([]string, 0, 4)
		hasMethod bool
		version   string
	)
	for dec.More() {
		key, err := objectKey(dec)
		if err != nil {
			return Info{}, err
		}
		for _, k := range seen {
			if k == key {
				return Info{}, badRequest("key %q repeated in the JSON-RPC message", key)
			}
		}
		seen = append(seen, key)
		switch key {
		case "jsonrpc":
			if version, err = stringValue(dec, key); err != nil {
				return Info{}, err
			}
		case "method":
			if info.Method, err = stringValue(dec, key); err != nil {
				return Info{}, err
			}
			hasMethod = true
		case "id":
			var id json.RawMessage
			if err := dec.Decode(&id); err != nil {
				return Info{}, badRequest("invalid JSON: %v", err)
			}
			info.IsCall = !bytes.Equal(bytes.TrimSpace(id), []byte("null"))
		case "params":
			if err := dec.Decode(&params); err != nil {
				return Info{}, badRequest("invalid JSON: %v", err)
			}
		default:
			if err := skipValue(dec); err != nil {
				return Info{}, err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return Info{}, badRequest("invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Info{}, badRequest("unexpected data after the JSON-RPC message")
	}
	if version != "2.0" {
		return Info{}, badRequest(`"jsonrpc" must be "2.0"`)
	}
	if !hasMethod || info.Method == "" {
		return Info{}, badRequest("message has no method; only JSON-RPC requests and notifications are accepted")
	}
	if hasName(info.Method) && len(params) > 0 {
		key := "name"
		if info.Method == "resources/read" {
			key = "uri"
		}
		if info.Name, err = paramString(params, key); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

func objectKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", badRequest("invalid JSON: %v", err)
	}
	key, ok := tok.(string)
	if !ok {
		return "", badRequest("invalid JSON: expected an object key")
	}
	return key, nil
}

func stringValue(dec *json.Decoder, key string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", badRequest("invalid JSON: %v", err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", badRequest("%q must be a string", key)
	}
	return s, nil
}

// skipValue consumes one JSON value, however nested.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("invalid JSON: %v", err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// paramString returns params[key] when params is an object holding a string
// there; "" when the key is absent or params is null, so that the SDK can answer
// with its own JSON-RPC error.
func paramString(params json.RawMessage, key string) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(params))
	tok, err := dec.Token()
	if err != nil {
		return "", badRequest("invalid JSON in params: %v", err)
	}
	if tok == nil {
		return "", nil
	}
	if tok != json.Delim('{') {
		return "", badRequest(`"params" must be an object`)
	}
	var (
		val   string
		found bool
	)
	for dec.More() {
		k, err := objectKey(dec)
		if err != nil {
			return "", err
		}
		if k != key {
			if err := skipValue(dec); err != nil {
				return "", err
			}
			continue
		}
		if found {
			return "", badRequest("key %q repeated in params", key)
		}
		found = true
		if val, err = stringValue(dec, "params."+key); err != nil {
			return "", err
		}
	}
	return val, nil
}
