// Package floor starts the two baselines the load tool measures the services
// against, in the same run and on the same machine: the mcp-floor binary of
// the gateway's module (services/mcp-gateway/cmd/mcp-floor), which serves
//
//   - the MCP floor: the gateway's own tools (who_am_i, its definition and
//     handler) on a go-sdk server with the gateway's options, every request
//     served as one authz allowed for alice, without authentication, so the
//     gateway's figures divided by its figures are the price of
//     authentication;
//   - the gRPC floor: grpc.health.v1 Health/Check, the cheapest unary call,
//     to compare authz Authorize with.
//
// The floor is a binary of the gateway's module, not code of the load tool,
// so that it runs the gateway's tool code rather than a copy (Go's internal/
// rule keeps the load tool from importing it), and a process of its own, as
// the services are, so that it does not share a Go runtime, heap or garbage
// collector with the load generator.
package floor

import (
	"context"
	"fmt"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Options configures [Start].
type Options struct {
	// Bin is the mcp-floor binary; empty, [testenv.BuildBinary] finds or
	// builds it ($MCPAUTHZ_BIN_DIR, or go build).
	Bin string
	// GOGC, if set, is the floor's garbage-collection target (the
	// gateway's, so that the ratios measure authentication, not a GC
	// setting); otherwise Go's default.
	GOGC string
	// Pprof sets PPROF_LISTEN=127.0.0.1:0: a binary built by
	// bench/profiling/build.sh serves net/http/pprof there ([Floors.PprofAddr]).
	Pprof bool
	// LogFile, if set, receives the floor's output.
	LogFile string
	// ReadyTimeout bounds the start; 20s when zero.
	ReadyTimeout time.Duration
}

// Floors is a running mcp-floor process.
type Floors struct {
	// MCPURL is the MCP floor's endpoint, http://127.0.0.1:<port>/mcp.
	MCPURL string
	// GRPCAddr is the gRPC floor's address.
	GRPCAddr string
	// PprofAddr is where the floor serves net/http/pprof, if it does.
	PprofAddr string

	p *testenv.Process
}

// Start starts mcp-floor on free loopback ports and waits until both floors
// listen and the MCP floor answers /healthz. The error says which step failed,
// with the floor's output.
func Start(ctx context.Context, opts Options) (*Floors, error) {
	bin := opts.Bin
	if bin == "" {
		var err error
		if bin, err = testenv.BuildBinary("mcp-floor"); err != nil {
			return nil, err
		}
	}
	var env []string
	if opts.GOGC != "" {
		env = append(env, "GOGC="+opts.GOGC)
	}
	if opts.Pprof {
		env = append(env, "PPROF_LISTEN=127.0.0.1:0")
	}
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	p, err := testenv.NewProcess("floors", bin, testenv.ProcessOptions{
		Args:          []string{"-mcp-listen", "127.0.0.1:0", "-grpc-listen", "127.0.0.1:0"},
		Env:           env,
		LogFile:       opts.LogFile,
		ReadyListener: "mcp-listen", ReadyPath: "/healthz",
		ReadyTimeout: timeout,
	})
	if err != nil {
		if p != nil {
			p.Stop()
		}
		return nil, fmt.Errorf("starting the floors: %w", err)
	}
	f := &Floors{p: p}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	mcpAddr, err := p.Listening(ctx, "mcp-listen")
	if err == nil {
		f.GRPCAddr, err = p.Listening(ctx, "grpc-listen")
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("starting the floors: %w", err)
	}
	f.MCPURL = "http://" + mcpAddr + "/mcp"
	if opts.Pprof {
		// A build without the profiling overlay never logs one: don't wait.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		f.PprofAddr, _ = p.Listening(pctx, "PPROF_LISTEN")
		cancel()
	}
	return f, nil
}

// Pid returns the floor's process ID, for CPU accounting.
func (f *Floors) Pid() int { return f.p.Pid() }

// Stop stops the floor (SIGTERM, then SIGKILL if it lingers) and waits for it.
func (f *Floors) Stop() { f.p.Stop() }

// Output returns what the floor has written so far.
func (f *Floors) Output() string { return f.p.Output() }
