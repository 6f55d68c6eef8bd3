package mcpreq

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/rawjson"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// parseCases are bodies Parse accepts; FuzzParseMatchesOracle starts from them.
var parseCases = []struct {
	name   string
	body   string
	header http.Header
	want   Info
}{
	{"initialize", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, nil, Info{Method: "initialize", IsCall: true}},
	{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil, Info{Method: "notifications/initialized"}},
	{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, nil, Info{Method: "ping"}},
	{"tools/call", `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"arguments":{"name":"x"},"name":"who_am_i"}}`, nil, Info{Method: "tools/call", Name: "who_am_i", IsCall: true}},
	{"tools/call headers", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"who_am_i"}}`, hdr(HeaderMethod, "tools/call", HeaderName, "who_am_i"), Info{Method: "tools/call", Name: "who_am_i", IsCall: true}},
	{"base64 name header", `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///é"}}`, hdr(HeaderMethod, "resources/read", HeaderName, "=?base64?ZmlsZTovLy/DqQ==?="), Info{Method: "resources/read", Name: "file:///é", IsCall: true}},
	{"tools/call no params", `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`, nil, Info{Method: "tools/call", IsCall: true}},
	{"tools/call null params", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":null}`, nil, Info{Method: "tools/call", IsCall: true}},
	{"name header ignored for tools/list", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, hdr(HeaderName, "whatever"), Info{Method: "tools/list", IsCall: true}},
	{"unknown top-level keys", `{"jsonrpc":"2.0","id":2,"method":"tools/list","Method":"tools/call","x":[1,{"a":[]}]}`, nil, Info{Method: "tools/list", IsCall: true}},
	{"escaped key", `{"jsonrpc":"2.0","id":2,"\u006dethod":"ping"}`, nil, Info{Method: "ping", IsCall: true}},
	{"2026-07-28 who_am_i", whoAmIBody, hdr(HeaderMethod, "tools/call", HeaderName, "who_am_i"), Info{Method: "tools/call", Name: "who_am_i", IsCall: true}},
	{"params before method", `{"params":{"uri":"u","name":"n"},"id":0,"method":"prompts/get","jsonrpc":"2.0"}`, nil, Info{Method: "prompts/get", Name: "n", IsCall: true}},
	{"other method's key not a string", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":5,"uri":"u"}}`, nil, Info{Method: "resources/read", Name: "u", IsCall: true}},
	{"params not an object for tools/list", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}`, nil, Info{Method: "tools/list", IsCall: true}},
	{"unusual method", `{"jsonrpc":"2.0","id":1,"method":"x/\u0079"}`, nil, Info{Method: "x/y", IsCall: true}},
	// Invalid UTF-8 is read as U+FFFD per bad byte, as encoding/json and the
	// SDK's decoder read it, so the SDK runs (and refuses) the same name.
	{"invalid UTF-8 in name", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"who_am_i\xff\xfe\"}}", nil, Info{Method: "tools/call", Name: "who_am_i\uFFFD\uFFFD", IsCall: true}},
	{"lone surrogate in name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\ud800b"}}`, nil, Info{Method: "tools/call", Name: "a\uFFFDb", IsCall: true}},
	{"invalid UTF-8 in key", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"na\xffme\":\"who_am_i\"}}", nil, Info{Method: "tools/call", IsCall: true}},
	// W3C trace context in params._meta (MCP 2026-07-28 reserves the keys),
	// kept as sent for any method; anything but a string is ignored.
	{"trace context in _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","_meta":{"progressToken":1,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"congo=t61rcWkgMzE"}}}`, nil, Info{Method: "tools/call", Name: "who_am_i", IsCall: true, Trace: TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", State: "congo=t61rcWkgMzE"}}},
	{"trace context, params before method", `{"params":{"_meta":{"traceparent":"tp"}},"id":0,"method":"tools/list","jsonrpc":"2.0"}`, nil, Info{Method: "tools/list", IsCall: true, Trace: TraceContext{Parent: "tp"}}},
	{"escaped trace key", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"trace\u0070arent":"tp"}}}`, nil, Info{Method: "ping", IsCall: true, Trace: TraceContext{Parent: "tp"}}},
	{"trace values not strings", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":{"traceparent":"x"},"tracestate":["a"]}}}`, nil, Info{Method: "ping", IsCall: true}},
	{"_meta not an object", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":"traceparent"}}`, nil, Info{Method: "ping", IsCall: true}},
	{"trace context outside params._meta", `{"jsonrpc":"2.0","id":1,"method":"ping","_meta":{"traceparent":"tp"},"params":{"traceparent":"tp","arguments":{"_meta":{"traceparent":"tp"}}}}`, nil, Info{Method: "ping", IsCall: true}},
	{"trace value too long", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"tp","tracestate":"` + strings.Repeat("a", MaxTraceValue+1) + `"}}}`, nil, Info{Method: "ping", IsCall: true, Trace: TraceContext{Parent: "tp"}}},
	// Numbers are checked for syntax only (encoding/json's Token API refused
	// 1e400 in members it skipped).
	{"huge number in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"n":1e400}}}`, nil, Info{Method: "tools/call", Name: "who_am_i", IsCall: true}},
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := parseCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.body), tt.header)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Info{}, "ID", "Params")); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			checkRaw(t, []byte(tt.body), got)
		})
	}
}

// checkRaw fails t unless info's ID and Params are the id and params members
// of body, an accepted message, as a decoder of its own reads them.
func checkRaw(t *testing.T, body []byte, info Info) {
	t.Helper()
	var id, params jsontext.Value
	d := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowInvalidUTF8(true))
	if _, err := d.ReadToken(); err != nil {
		t.Fatal(err)
	}
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			t.Fatal(err)
		}
		name := tok.String()
		v, err := d.ReadValue()
		if err != nil {
			t.Fatal(err)
		}
		switch name {
		case "id":
			id = v.Clone()
		case "params":
			params = v.Clone()
		}
	}
	if !bytes.Equal(info.ID, id) || (info.ID == nil) != (id == nil) {
		t.Errorf("ID = %q, want %q", info.ID, id)
	}
	if !bytes.Equal(info.Params, params) || (info.Params == nil) != (params == nil) {
		t.Errorf("Params = %q, want %q", info.Params, params)
	}
}

// refuseCases are bodies Parse refuses with 400; FuzzParseMatchesOracle
// starts from them too.
var refuseCases = []struct {
	name   string
	body   string
	header http.Header
}{
	{"empty", ``, nil},
	{"spaces", "  \n", nil},
	{"not json", `hello`, nil},
	{"truncated", `{"jsonrpc":"2.0","method":"ping"`, nil},
	{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, nil},
	{"string", `"ping"`, nil},
	{"no version", `{"id":1,"method":"ping"}`, nil},
	{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, nil},
	{"no method", `{"jsonrpc":"2.0","id":1,"result":{}}`, nil},
	{"empty method", `{"jsonrpc":"2.0","id":1,"method":""}`, nil},
	{"method not string", `{"jsonrpc":"2.0","id":1,"method":5}`, nil},
	{"repeated method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, nil},
	{"repeated params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`, nil},
	{"repeated name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","name":"list_my_orgs"}}`, nil},
	{"name not string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}`, nil},
	{"params not object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["who_am_i"]}`, nil},
	{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"ping"} {}`, nil},
	{"method header mismatch", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_my_orgs"}}`, hdr(HeaderMethod, "tools/list")},
	{"name header mismatch", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_my_orgs"}}`, hdr(HeaderMethod, "tools/call", HeaderName, "who_am_i")},
	{"name header twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`, hdr(HeaderName, "a", HeaderName, "a")},
	{"method header twice", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, hdr(HeaderMethod, "ping", HeaderMethod, "ping")},
	{"bad base64 name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`, hdr(HeaderName, "=?base64?!!?=")},
	{"repeated escaped key", `{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}`, nil},
	{"repeated traceparent", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"a","trace\u0070arent":"b"}}}`, nil},
	{"repeated uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}`, nil},
	{"repeated key as invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\xff\":1,\"x\xfe\":2}", nil},
	{"jsonrpc not a string", `{"jsonrpc":2.0,"id":1,"method":"ping"}`, nil},
	{"uri not a string", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":{}}}`, nil},
	{"params a string", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":"p"}`, nil},
	{"non-string key", `{"jsonrpc":"2.0","id":1,"method":"ping",1:2}`, nil},
	{"unclosed params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"`, nil},
	{"empty array", `[]`, nil},
	{"null", `null`, nil},
	// Refused anywhere, not only where the gateway reads: a deliberate change
	// from the encoding/json parser, which let these through.
	{"repeated key in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{"a":1,"a":2}}}`, nil},
	{"repeated key in _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","_meta":{"progressToken":1,"progressToken":2}}}`, nil},
	{"repeated key in params of tools/list", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"a","cursor":"b"}}`, nil},
	{"nested too deep", `{"jsonrpc":"2.0","id":1,"method":"ping","x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, nil},
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	tests := refuseCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.body), tt.header)
			var perr *Error
			if !errors.As(err, &perr) || perr.Status != http.StatusBadRequest {
				t.Fatalf("Parse = %+v, %v; want a 400 *Error", got, err)
			}
			if perr.Msg == "" {
				t.Error("empty error message")
			}
		})
	}
}

// TestParseRepeatedKeyMessage checks that a repeated key is named, with the
// object that repeats it when that is not the message itself.
func TestParseRepeatedKeyMessage(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, `key "method" repeated in the JSON-RPC message`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, `key "name" repeated in "/params" of the JSON-RPC message`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"x":[{"k":1,"k":2}]}}}`, `key "k" repeated in "/params/arguments/x/0" of the JSON-RPC message`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.body), nil)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%s) error = %v, want %s", tt.body, err, tt.want)
		}
	}
}

// TestParseAllocs guards the reason for the jsontext parser: once its
// decoder has warmed up, reading a who_am_i call allocates only the tool name.
// It uses one reader rather than the pool, which the race detector empties at
// random.
func TestParseAllocs(t *testing.T) {
	body := []byte(whoAmIBody)
	r := new(rawjson.Reader)
	parse := func() (Info, error) {
		r.Open(body, decodeOptions...)
		defer r.Close()
		return parser{r}.message()
	}
	if _, err := parse(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parse() }); n > 1 {
		t.Errorf("parsing a who_am_i call allocates %v times, want at most 1", n)
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i"}}`
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	info, err := Read(r, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if info.Tool() != "who_am_i" {
		t.Errorf("Tool() = %q", info.Tool())
	}
	again, err := io.ReadAll(r.Body)
	if err != nil || string(again) != body {
		t.Errorf("body not restored: %q, %v", again, err)
	}

	tests := []struct {
		name        string
		contentType string
		body        io.Reader
		length      int64
		wantStatus  int
	}{
		{"too large", "application/json", strings.NewReader(`{"jsonrpc":"2.0","method":"ping","x":"` + strings.Repeat("a", 2000) + `"}`), -1, http.StatusRequestEntityTooLarge},
		{"too large by header", "application/json", strings.NewReader(`{}`), 5000, http.StatusRequestEntityTooLarge},
		{"wrong content type", "text/plain", strings.NewReader(body), -1, http.StatusUnsupportedMediaType},
		{"no content type", "", strings.NewReader(body), -1, http.StatusUnsupportedMediaType},
		{"empty body", "application/json", http.NoBody, 0, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/mcp", tt.body)
			r.ContentLength = tt.length
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			_, err := Read(r, 1024)
			var perr *Error
			if !errors.As(err, &perr) || perr.Status != tt.wantStatus {
				t.Fatalf("Read error = %v, want status %d", err, tt.wantStatus)
			}
		})
	}
}

// sdkView decodes body the way the go-sdk's server does: jsonrpc.DecodeMessage,
// then the params with segmentio's case-sensitive decoder.
func sdkView(body []byte) (method, name string, ok bool) {
	msg, err := jsonrpc.DecodeMessage(body)
	if err != nil {
		return "", "", false
	}
	req, isReq := msg.(*jsonrpc.Request)
	if !isReq {
		return "", "", false
	}
	if hasName(req.Method) && len(req.Params) > 0 {
		var p struct {
			Name string `json:"name"`
			URI  string `json:"uri"`
		}
		dec := segjson.NewDecoder(bytes.NewReader(req.Params))
		dec.DontMatchCaseInsensitiveStructFields()
		if err := dec.Decode(&p); err != nil {
			return "", "", false
		}
		name = p.Name
		if req.Method == "resources/read" {
			name = p.URI
		}
	}
	return req.Method, name, true
}

// FuzzParse checks the property the gateway's authorization rests on: whenever
// Parse accepts a body, the go-sdk executes the same method and the same tool as
// the one whose scopes the gateway required, and headers never override the body.
func FuzzParse(f *testing.F) {
	seeds := []struct{ body, method, name string }{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`, "tools/call", "who_am_i"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","Name":"list_my_orgs"}}`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","method":"ping"}`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "tools/list", ""},
		{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, "", ""},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}`, "resources/read", "=?base64?eA==?="},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who\u005fam_i"}}`, "tools/call", "who_am_i"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.method, s.name)
	}
	f.Fuzz(func(t *testing.T, body []byte, method, name string) {
		h := http.Header{}
		if method != "" {
			h.Set(HeaderMethod, method)
		}
		if name != "" {
			h.Set(HeaderName, name)
		}
		info, err := Parse(body, h)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) || perr.Status != http.StatusBadRequest {
				t.Fatalf("Parse error %v is not a 400 *Error", err)
			}
			return
		}
		if info.Method == "" {
			t.Fatal("accepted a message without a method")
		}
		if method != "" && method != info.Method {
			t.Fatalf("accepted Mcp-Method %q for body method %q", method, info.Method)
		}
		if name != "" && hasName(info.Method) {
			if dec, _ := decodeHeaderValue(name); dec != info.Name {
				t.Fatalf("accepted Mcp-Name %q for body name %q", name, info.Name)
			}
		}
		sdkMethod, sdkName, ok := sdkView(body)
		if !ok {
			return // the SDK refuses it itself
		}
		if sdkMethod != info.Method || sdkName != info.Name {
			t.Fatalf("gateway sees %q/%q but the SDK would run %q/%q for %q", info.Method, info.Name, sdkMethod, sdkName, body)
		}
	})
}
