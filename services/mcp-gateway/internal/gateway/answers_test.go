package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/config"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/gateway"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/ratelimit"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

var update = flag.Bool("update", false, "rewrite the response sections of testdata/answers/*.txtar with what the gateway answers")

// TestAnswers pins the gateway's full HTTP answers (status line, headers
// without Date, body) to the golden files testdata/answers/*.txtar; run with
// -update to rewrite their response sections.
//
// Each file is a script, run against a gateway of its own (in process, with
// an in-process fake authz: no network but loopback HTTP), in order:
//
//   - env: KEY=VALUE lines of configuration on top of a fixed base
//     (MCP_SERVER_URL=https://mcp.example.com); only before anything else.
//   - authz: the fake authz's AuthorizeResponse from now on (protojson). An
//     allowed answer with a principal is turned into an insufficient_scope
//     denial (no description) for required scopes the principal lacks.
//   - authz error: authz fails from now on (Authorize and Ready), with a JSON
//     {"code": "UNAVAILABLE", "message": "...", "fields": ["token"]}; fields
//     become a google.rpc.BadRequest detail.
//   - as metadata: what the authorization server serves at every metadata
//     URL from now on; before it, the server is unreachable.
//   - hold: a request sent at once whose Authorize call blocks until the
//     script ends, keeping an in-flight slot.
//   - request, ops request: a raw HTTP/1.1 request (LF line ends; a body
//     after a blank line, without its last newline; Content-Length added when
//     absent) sent to the public or the operational listener on a new
//     connection; the next section, response, is the answer expected.
//
// A script whose gateway asks authz before any authz section fails.
func TestAnswers(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "answers", "*.txtar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			t.Parallel()
			runAnswers(t, file)
		})
	}
}

func runAnswers(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ar := txtar.Parse(data)
	env := map[string]string{}
	if len(ar.Files) > 0 && ar.Files[0].Name == "env" {
		for line := range strings.Lines(string(ar.Files[0].Data)) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				t.Fatalf("env: %q is not KEY=VALUE", line)
			}
			env[k] = v
		}
	}
	az := &scriptAuthz{}
	as := &scriptAS{}
	public, ops := startAnswering(t, env, tools.BuiltIn(), az, as)

	var held chan error
	changed := false
	for i := 0; i < len(ar.Files); i++ {
		f := &ar.Files[i]
		switch f.Name {
		case "env":
			if i != 0 {
				t.Fatalf("section %d: env must come first", i)
			}
		case "authz":
			res := &authzv1.AuthorizeResponse{}
			if err := protojson.Unmarshal(f.Data, res); err != nil {
				t.Fatalf("section %d: authz: %v", i, err)
			}
			az.set(res, nil)
		case "authz error":
			az.set(nil, scriptedError(t, f.Data))
		case "as metadata":
			as.set(bytes.TrimSpace(f.Data))
		case "hold":
			if held != nil {
				t.Fatalf("section %d: one hold per script", i)
			}
			in := az.hold()
			held = make(chan error, 1)
			go func() {
				_, err := exchange(public, f.Data)
				held <- err
			}()
			select {
			case <-in:
			case err := <-held:
				t.Fatalf("section %d: the held request ended before reaching authz: %v", i, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("section %d: the held request did not reach authz", i)
			}
		case "request", "ops request":
			if i+1 == len(ar.Files) || ar.Files[i+1].Name != "response" {
				t.Fatalf("section %d: %s without a response section after it", i, f.Name)
			}
			addr := public
			if f.Name == "ops request" {
				addr = ops
			}
			got, err := exchange(addr, f.Data)
			if err != nil {
				t.Fatalf("section %d: %v", i, err)
			}
			i++
			want := &ar.Files[i]
			if *update {
				if string(want.Data) != got {
					want.Data, changed = []byte(got), true
				}
				continue
			}
			if diff := cmp.Diff(string(want.Data), got); diff != "" {
				first, _, _ := strings.Cut(string(f.Data), "\n")
				t.Errorf("section %d (%s): answer (-want +got):\n%s", i, first, diff)
			}
		case "response":
			t.Fatalf("section %d: response without a request before it", i)
		default:
			t.Fatalf("section %d: unknown section %q", i, f.Name)
		}
	}
	if held != nil {
		az.release()
		if err := <-held; err != nil {
			t.Errorf("the held request: %v", err)
		}
	}
	if n := az.unscripted(); n > 0 {
		t.Errorf("the gateway asked authz %d times before the script gave an answer", n)
	}
	if changed {
		if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startAnswering starts a gateway serving set with the base configuration plus
// env, in front of az, fetching the authorization server's metadata through
// as, and returns the addresses of its public and operational listeners.
func startAnswering(t *testing.T, env map[string]string, set *tools.Set, az gateway.Authz, as http.RoundTripper) (public, ops string) {
	t.Helper()
	cfg := loadConfig(t, env)
	var limiter *ratelimit.Limiter
	if cfg.RateLimit.Enabled() {
		var err error
		// A clock that stands still: Retry-After is then the whole period,
		// however long the script takes between two requests.
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if limiter, err = ratelimit.New(ratelimit.Options{Limit: cfg.RateLimit, Now: func() time.Time { return now }}); err != nil {
			t.Fatal(err)
		}
	}
	g, err := gateway.New(gateway.Options{
		Config:      cfg,
		Authz:       az,
		Tools:       set,
		HTTPClient:  &http.Client{Transport: as},
		RateLimiter: limiter,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	serve := func(h http.Handler) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := gateway.Serve(ctx, ln, h, slog.New(slog.DiscardHandler), time.Second); err != nil {
				t.Errorf("serving: %v", err)
			}
		})
		return ln.Addr().String()
	}
	return serve(g), serve(g.OpsHandler())
}

// loadConfig is the configuration of a gateway for https://mcp.example.com
// without a decision cache (these gateways have no invalidation stream),
// plus env.
func loadConfig(t testing.TB, env map[string]string) config.Config {
	t.Helper()
	vars := map[string]string{
		"MCP_SERVER_URL":       "https://mcp.example.com",
		"AUTHORIZATION_SERVER": "https://auth.example.com/oauth/2.1",
		"DECISION_CACHE_TTL":   "0s",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// exchange sends the raw request req (as written in a golden file) to addr on
// a new connection and returns the answer as golden files hold it: status
// line, headers but Date in order, a blank line, and the body, ending in a
// newline (Content-Length tells whether the body has one).
func exchange(addr string, req []byte) (string, error) {
	head, body, _ := strings.Cut(string(req), "\n\n")
	body = strings.TrimSuffix(body, "\n")
	method, _, _ := strings.Cut(head, " ")
	lines := strings.Split(head, "\n")
	if body != "" && !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(strings.ToLower(l), "content-length:") }) {
		lines = append(lines, "Content-Length: "+strconv.Itoa(len(body)))
	}
	wire := strings.Join(lines, "\r\n") + "\r\n\r\n" + body

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, wire); err != nil {
		return "", fmt.Errorf("sending %q: %w", lines[0], err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return "", fmt.Errorf("reading the answer to %q: %w", lines[0], err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		return "", fmt.Errorf("reading the body of the answer to %q: %w", lines[0], err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", res.Proto, res.Status)
	res.Header.Del("Date")
	// ReadResponse moves these out of Header.
	if len(res.TransferEncoding) > 0 {
		res.Header["Transfer-Encoding"] = res.TransferEncoding
	}
	if res.Close {
		res.Header.Set("Connection", "close")
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range res.Header {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		for _, v := range res.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	b.Write(got)
	if len(got) > 0 && got[len(got)-1] != '\n' {
		b.WriteString("\n")
	}
	return b.String(), nil
}

// scriptedError is an "authz error" section's gRPC status error.
func scriptedError(t *testing.T, data []byte) error {
	t.Helper()
	var e struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
		Fields  []string   `json:"fields"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("authz error: %v", err)
	}
	st := status.New(e.Code, e.Message)
	if len(e.Fields) > 0 {
		br := &errdetails.BadRequest{}
		for _, f := range e.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: f + " is malformed"})
		}
		var err error
		if st, err = st.WithDetails(br); err != nil {
			t.Fatal(err)
		}
	}
	return st.Err()
}

// scriptAuthz is the authz a golden script drives (see TestAnswers).
type scriptAuthz struct {
	mu      sync.Mutex
	res     *authzv1.AuthorizeResponse
	err     error
	holding chan struct{} // the next Authorize signals this, then waits
	held    chan struct{} // closed by release
	unset   int           // calls before any answer was scripted
}

func (a *scriptAuthz) set(res *authzv1.AuthorizeResponse, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.res, a.err = res, err
}

// hold makes the next Authorize call wait for release; the channel returned
// is closed when that call has begun.
func (a *scriptAuthz) hold() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holding, a.held = make(chan struct{}), make(chan struct{})
	return a.holding
}

func (a *scriptAuthz) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.held)
}

func (a *scriptAuthz) unscripted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unset
}

func (a *scriptAuthz) Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	a.mu.Lock()
	holding, held := a.holding, a.held
	a.holding = nil
	a.mu.Unlock()
	if holding != nil {
		close(holding)
		select {
		case <-held:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	a.mu.Lock()
	res, err := a.res, a.err
	if res == nil && err == nil {
		a.unset++
		err = status.Error(codes.Unavailable, "the script gave authz no answer")
	}
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	res = proto.CloneOf(res)
	if p := res.GetPrincipal(); res.GetAllowed() && p != nil {
		var missing []string
		for _, s := range req.GetRequiredScopes() {
			if !slices.Contains(p.GetScopes(), s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			res.Allowed, res.User, res.UserError = false, nil, ""
			res.Denial = &authzv1.Denial{Reason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, MissingScopes: missing}
		}
	}
	return res, nil
}

func (a *scriptAuthz) GetUser(context.Context, string, bool) (*authzv1.User, error) {
	return nil, status.Error(codes.NotFound, "no users in golden scripts")
}

func (a *scriptAuthz) Ready(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// scriptAS is the authorization server a golden script drives: unreachable
// until an "as metadata" section, then serving that document.
type scriptAS struct {
	mu  sync.Mutex
	doc []byte
}

func (s *scriptAS) set(doc []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc = doc
}

func (s *scriptAS) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	doc := s.doc
	s.mu.Unlock()
	if doc == nil {
		return nil, errors.New("the authorization server is unreachable in this script")
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Status:        "200 OK",
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(doc)),
		ContentLength: int64(len(doc)),
		Request:       req,
	}, nil
}
