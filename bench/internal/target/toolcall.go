package target

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
)

// ToolCall calls one named tool over stateless streamable HTTP, as a client of
// Protocol does: through the gateway (with a bearer token) or
// directly to an upstream MCP server (with the headers it needs, if any). An
// answer is "ok" when it is a 200 tool result without isError that contains
// Expect. A JSON-RPC error is labelled with its code ("jsonrpc error -32010"),
// so the outcomes of a run say which errors the gateway answered.
type ToolCall struct {
	// URL is the MCP endpoint.
	URL string
	// Client sends the requests.
	Client *http.Client
	// Tool is the tool's name as this endpoint lists it.
	Tool string
	// Tokens gives each request's bearer token; nil sends none.
	Tokens tokens.Source
	// Header holds extra request headers (e.g. X-Mcpauthz-Identity for a
	// direct call to an upstream that checks the gateway's assertion).
	Header http.Header
	// Expect must occur in a good answer.
	Expect []byte
	// Errors, if set, records the message of every JSON-RPC error and tool
	// error answered.
	Errors *ErrorLog
	// Protocol is the MCP protocol version spoken; [ProtocolVersion] when
	// empty. From 2026-07-28 requests carry the Mcp-Method and Mcp-Name
	// headers too.
	Protocol string

	once sync.Once
	body []byte
}

// Do sends one tools/call and labels the answer. It implements [load.Op].
func (m *ToolCall) Do(ctx context.Context, _ int) string {
	m.once.Do(func() {
		if m.Protocol == "" {
			m.Protocol = ProtocolVersion
		}
		m.body = callBody(m.Protocol, m.Tool)
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.body))
	if err != nil {
		return "transport"
	}
	h := req.Header
	for k, v := range m.Header {
		h[k] = v
	}
	h["Content-Type"] = []string{"application/json"}
	h["Accept"] = []string{"application/json, text/event-stream"}
	h["Mcp-Protocol-Version"] = []string{m.Protocol}
	if m.Protocol >= ProtocolVersion {
		h["Mcp-Method"] = []string{"tools/call"}
		h["Mcp-Name"] = []string{m.Tool}
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if label, ok := exchange(ctx, m.Client, req, m.Tokens, buf); !ok {
		return label
	}
	b := buf.Bytes()
	switch {
	case bytes.Contains(b, []byte(`"error":{`)):
		code, msg := rpcError(b)
		m.Errors.add("jsonrpc error " + code + ": " + msg)
		return "jsonrpc error " + code
	case !bytes.Contains(b, []byte(`"result":`)):
		return "no result"
	case bytes.Contains(b, []byte(`"isError":true`)):
		m.Errors.add("tool error: " + string(b))
		return "tool error"
	case !bytes.Contains(b, m.Expect):
		return "unexpected result"
	}
	return load.OK
}

// rpcError returns the code and message of the JSON-RPC error in b, JSON or
// the last SSE data line.
func rpcError(b []byte) (code, msg string) {
	if i := bytes.LastIndex(b, []byte("data: ")); i >= 0 {
		b = b[i+len("data: "):]
		if j := bytes.IndexByte(b, '\n'); j >= 0 {
			b = b[:j]
		}
	}
	var m struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return "?", "undecodable: " + err.Error()
	}
	return strconv.Itoa(m.Error.Code), m.Error.Message
}

// maxErrorKinds bounds the distinct messages an [ErrorLog] keeps.
const maxErrorKinds = 64

// ErrorLog counts distinct error messages, up to 64 of them (later new
// messages are counted as "(other)"). A nil ErrorLog records nothing. Safe for
// concurrent use.
type ErrorLog struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (l *ErrorLog) add(msg string) {
	if l == nil {
		return
	}
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]uint64{}
	}
	if _, ok := l.m[msg]; !ok && len(l.m) >= maxErrorKinds {
		msg = "(other)"
	}
	l.m[msg]++
}

// Counts returns a copy of the counts by message.
func (l *ErrorLog) Counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.m))
	for k, v := range l.m {
		out[k] = v
	}
	return out
}
