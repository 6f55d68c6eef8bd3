// Package target holds the requests the load tool sends: an MCP tools/call
// over stateless streamable HTTP (to the gateway, or to the unauthenticated
// floor), authz Authorize over gRPC, and grpc.health.v1 Check (the no-op gRPC
// floor). Each is a [load.Op] that labels its outcome.
//
// # Outcome labels
//
//   - "ok": the expected answer.
//   - "http NNN": an HTTP status other than 200.
//   - "jsonrpc error", "tool error": a 200 whose JSON-RPC message is an error,
//     or a tool result with isError.
//   - "user_error": who_am_i answered but without the user part (authz could
//     not fetch the user).
//   - "denied REASON": authz refused the token (a normal Authorize answer).
//   - "grpc CODE": a gRPC call failed with that status code.
//   - "transport", "timeout": the request got no answer.
package target

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/bench/internal/load"
	"github.com/mcpauthz/mcpauthz/bench/internal/tokens"
	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ProtocolVersion is the MCP protocol version the load speaks by default:
// the latest, which sends every request stand-alone (no initialize) with its
// version in both the Mcp-Protocol-Version header and the request's _meta.
const ProtocolVersion = "2026-07-28"

// Timeout bounds every request; a request that takes longer counts as
// "timeout".
const Timeout = 10 * time.Second

// NewHTTPClient returns a client that keeps one idle keep-alive connection per
// worker (up to conns), so a closed-loop worker never waits for a new TCP
// connection after the warm-up.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: max(conns, 2),
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		Timeout: Timeout,
	}
}

// callBody returns a tools/call of tool as an MCP client of protocol sends it:
// from 2026-07-28 with the version and client in _meta, before it plain (a
// stateless server needs no initialize either way).
func callBody(protocol, tool string) []byte {
	if protocol >= ProtocolVersion {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + strconv.Quote(tool) + `,"arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"` + protocol + `","io.modelcontextprotocol/clientInfo":{"name":"mcpload","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`)
	}
	return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + strconv.Quote(tool) + `,"arguments":{}}}`)
}

// MCPCall calls the who_am_i tool over stateless streamable HTTP.
type MCPCall struct {
	// URL is the MCP endpoint, e.g. http://127.0.0.1:8000/mcp.
	URL string
	// Client sends the requests.
	Client *http.Client
	// Tokens gives each request's bearer token; nil sends none (the floor).
	Tokens tokens.Source
	// Protocol is the MCP protocol version spoken; [ProtocolVersion] when
	// empty. From 2026-07-28 requests carry the Mcp-Method and Mcp-Name
	// headers too.
	Protocol string

	once sync.Once
	body []byte
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Do sends one tools/call and labels the answer. It implements [load.Op].
func (m *MCPCall) Do(ctx context.Context, _ int) string {
	m.once.Do(func() {
		if m.Protocol == "" {
			m.Protocol = ProtocolVersion
		}
		m.body = callBody(m.Protocol, "who_am_i")
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.body))
	if err != nil {
		return "transport"
	}
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	h["Accept"] = []string{"application/json, text/event-stream"}
	h["Mcp-Protocol-Version"] = []string{m.Protocol}
	if m.Protocol >= ProtocolVersion {
		h["Mcp-Method"] = []string{"tools/call"}
		h["Mcp-Name"] = []string{"who_am_i"}
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if label, ok := exchange(ctx, m.Client, req, m.Tokens, buf); !ok {
		return label
	}
	return classifyToolResult(buf.Bytes())
}

// exchange sends req, with a bearer token from tokens when tokens is set, and
// reads the answer's body (at most 1 MiB) into buf. It reports whether a 200
// answer was read whole; if not, label is the outcome: [load.Stop] when the
// tokens ran out, a transport label, or "http N".
func exchange(ctx context.Context, c *http.Client, req *http.Request, tokens tokens.Source, buf *bytes.Buffer) (label string, ok bool) {
	if tokens != nil {
		tok, ok := tokens.Next()
		if !ok {
			return load.Stop, false
		}
		req.Header["Authorization"] = []string{"Bearer " + tok}
	}
	resp, err := c.Do(req)
	if err != nil {
		return transportLabel(ctx, err), false
	}
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return transportLabel(ctx, err), false
	}
	if resp.StatusCode != http.StatusOK {
		return "http " + strconv.Itoa(resp.StatusCode), false
	}
	return "", true
}

// classifyToolResult labels a 200 answer to tools/call who_am_i, JSON or SSE
// framed. It looks for members, not parses, to keep the load generator cheap;
// the members are distinctive enough in who_am_i's answer.
func classifyToolResult(b []byte) string {
	switch {
	case bytes.Contains(b, []byte(`"error":{`)):
		return "jsonrpc error"
	case !bytes.Contains(b, []byte(`"result":`)):
		return "no result"
	case bytes.Contains(b, []byte(`"isError":true`)):
		return "tool error"
	case bytes.Contains(b, []byte(`"user_error":`)):
		return "user_error"
	case !bytes.Contains(b, []byte(`"user":{`)):
		return "no user"
	}
	return load.OK
}

func transportLabel(ctx context.Context, err error) string {
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return "transport"
}

// DialGRPC opens one long-lived client connection to target, as the gateway
// keeps one to authz. A dns:/// target is balanced round-robin over every
// address it resolves to.
func DialGRPC(target string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
	)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", target, err)
	}
	conn.Connect()
	return conn, nil
}

// Authorize calls authz Authorize for the resource with scope
// read:user_data, the claims in the default format (a Struct); with WithUser,
// exactly as the gateway calls it for who_am_i with a read:user_data token: the
// user in the same call (without orgs, which need read:org_data), and the
// claims as JSON.
type Authorize struct {
	Client   authzv1.AuthzServiceClient
	Resource string
	Tokens   tokens.Source
	WithUser bool
}

// Do sends one Authorize and labels the answer. It implements [load.Op].
func (a *Authorize) Do(ctx context.Context, _ int) string {
	tok, ok := a.Tokens.Next()
	if !ok {
		return load.Stop
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	res, err := a.Client.Authorize(ctx, &authzv1.AuthorizeRequest{
		Token:          tok,
		Resource:       a.Resource,
		RequiredScopes: []string{"read:user_data"},
		IncludeUser:    a.WithUser,
		ClaimsFormat:   claimsFormat(a.WithUser),
	})
	if err != nil {
		return "grpc " + status.Code(err).String()
	}
	if !res.GetAllowed() {
		return "denied " + strings.TrimPrefix(res.GetDenial().GetReason().String(), "DENIAL_REASON_")
	}
	if a.WithUser && (res.GetUserError() != "" || res.GetUser() == nil) {
		return "user_error"
	}
	return load.OK
}

func claimsFormat(asTheGateway bool) authzv1.ClaimsFormat {
	if asTheGateway {
		return authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON
	}
	return authzv1.ClaimsFormat_CLAIMS_FORMAT_UNSPECIFIED
}

// HealthCheck calls grpc.health.v1 Health/Check: the no-op unary floor.
type HealthCheck struct {
	Client healthpb.HealthClient
}

// Do sends one Check and labels the answer. It implements [load.Op].
func (h *HealthCheck) Do(ctx context.Context, _ int) string {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	res, err := h.Client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return "grpc " + status.Code(err).String()
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return "not serving"
	}
	return load.OK
}
