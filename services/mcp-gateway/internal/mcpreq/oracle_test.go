package mcpreq

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

// This file keeps the encoding/json implementation of parseBody that the
// jsontext one replaced, unchanged but for the names (oldParseBody and what it
// calls, below the tests), as the oracle of FuzzParseMatchesOracle and the
// "old" side of BenchmarkParseWhoAmI.

// whoAmIBody is a who_am_i tools/call as the go-sdk client of protocol
// 2026-07-28 sends it: protocol version and client in params._meta.
const whoAmIBody = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"who_am_i","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcpload","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`

// FuzzParseMatchesOracle checks that the jsontext parser reads every body as
// the encoding/json one it replaced did: both accept it with the same Info, or
// both refuse it (always with 400). It allows only the differences chosen on
// purpose, each checked for what it is:
//
//   - A repeated key inside a nested object (params' other members,
//     arguments, _meta, ...) is refused; the oracle refused repeated keys only
//     at the top level and params.name/params.uri of the methods it reads.
//   - Nesting deeper than 10000 levels, counted from the top, is refused; the
//     oracle counted from params or id and did not bound other members.
//   - A number out of float64's range (1e400) is accepted, as JSON allows;
//     the oracle refused it wherever encoding/json's Token API decoded it
//     into a float64 (skipped members), and accepted it elsewhere.
func FuzzParseMatchesOracle(f *testing.F) {
	// Long seeds (the deep nesting ones) are left out: minimizing an input
	// found from one of them takes the fuzzer minutes.
	const maxSeed = 1 << 10
	for _, c := range parseCases {
		if len(c.body) <= maxSeed {
			f.Add([]byte(c.body))
		}
	}
	for _, c := range refuseCases {
		if len(c.body) <= maxSeed {
			f.Add([]byte(c.body))
		}
	}
	for _, s := range []string{
		whoAmIBody,
		`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"c","version":"1"}}}`,
		`{"jsonrpc":"2.0","id":"x","method":"prompts/get","params":{"name":"greet","arguments":{"who":"\u00e9t\u00e9"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a","name":"ignored"}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"a","cursor":"b"}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"who_am_i","arguments":{"n":1,"n":2}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"who_am_i","arguments":{"n":1e400}}}`,
		`{"params":{"name":"who_am_i"},"id":-1.5e3,"method":"tools/call","jsonrpc":"2.0"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who\ud800_am_i` + "\xff" + `"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"na\xffme\":\"a\",\"na\xfeme\":\"b\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseBody(body)
		want, oldErr := oldParseBody(body)
		var perr, oldPerr *Error
		if err != nil && !errors.As(err, &perr) || oldErr != nil && !errors.As(oldErr, &oldPerr) {
			t.Fatalf("not an *Error: new %v, old %v", err, oldErr)
		}
		switch {
		case err == nil && oldErr == nil:
			checkRaw(t, body, got)
			// The oracle predates the trace context and the raw id and
			// params; TestParse and checkRaw check them.
			got.Trace, got.ID, got.Params = TraceContext{}, nil, nil
			if !cmp.Equal(got, want) {
				t.Fatalf("parseBody(%q) = %+v, the oracle read %+v", body, got, want)
			}
		case err != nil && oldErr != nil:
			if perr.Status != oldPerr.Status {
				t.Fatalf("parseBody(%q) refused with %d (%v), the oracle with %d (%v)", body, perr.Status, err, oldPerr.Status, oldErr)
			}
		case err != nil: // only the new parser refuses
			if !repeatsNestedKey(body, perr) && !tooDeep(perr) {
				t.Fatalf("parseBody(%q) refused it (%v); the oracle accepted it as %+v", body, err, want)
			}
		default: // only the oracle refuses
			if !strings.Contains(oldPerr.Msg, "cannot unmarshal number") {
				t.Fatalf("parseBody(%q) accepted it as %+v; the oracle refused it (%v)", body, got, oldErr)
			}
		}
	})
}

// repeatsNestedKey reports whether perr refuses body for a repeated key, and
// body is valid JSON but for repeated keys.
func repeatsNestedKey(body []byte, perr *Error) bool {
	v := jsontext.Value(body)
	return strings.Contains(perr.Msg, "repeated") &&
		v.IsValid(jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true)) &&
		!v.IsValid(jsontext.AllowInvalidUTF8(true))
}

func tooDeep(perr *Error) bool {
	return strings.Contains(perr.Msg, "exceeded max depth")
}

// BenchmarkParseWhoAmI compares the jsontext parser with the encoding/json one
// it replaced on the body every who_am_i call of a 2026-07-28 client carries.
func BenchmarkParseWhoAmI(b *testing.B) {
	body := []byte(whoAmIBody)
	for _, bc := range []struct {
		name  string
		parse func([]byte) (Info, error)
	}{
		{"old", oldParseBody},
		{"new", parseBody},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				info, err := bc.parse(body)
				if err != nil || info.Tool() != "who_am_i" {
					b.Fatalf("parse = %+v, %v", info, err)
				}
			}
		})
	}
}

func oldParseBody(body []byte) (Info, error) {
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
		key, err := oldObjectKey(dec)
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
			if version, err = oldStringValue(dec, key); err != nil {
				return Info{}, err
			}
		case "method":
			if info.Method, err = oldStringValue(dec, key); err != nil {
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
			if err := oldSkipValue(dec); err != nil {
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
		if info.Name, err = oldParamString(params, key); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

func oldObjectKey(dec *json.Decoder) (string, error) {
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

func oldStringValue(dec *json.Decoder, key string) (string, error) {
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

// oldSkipValue consumes one JSON value, however nested.
func oldSkipValue(dec *json.Decoder) error {
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

// oldParamString returns params[key] when params is an object holding a string
// there; "" when the key is absent or params is null, so that the SDK can answer
// with its own JSON-RPC error.
func oldParamString(params json.RawMessage, key string) (string, error) {
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
		k, err := oldObjectKey(dec)
		if err != nil {
			return "", err
		}
		if k != key {
			if err := oldSkipValue(dec); err != nil {
				return "", err
			}
			continue
		}
		if found {
			return "", badRequest("key %q repeated in params", key)
		}
		found = true
		if val, err = oldStringValue(dec, "params."+key); err != nil {
			return "", err
		}
	}
	return val, nil
}
