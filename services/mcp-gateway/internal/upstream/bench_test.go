package upstream

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startHTTPServerProcess runs the Go upstream (stateless, 2026-07-28) in a
// process of its own, so that what a benchmark counts (allocations, CPU) is
// the client's alone. It returns the MCP endpoint.
func startHTTPServerProcess(b *testing.B, jsonAnswers bool) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverModeEnv+"=http")
	if jsonAnswers {
		cmd.Env = append(cmd.Env, "UPSTREAM_TEST_JSON=1")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	return "http://" + strings.TrimSpace(addr) + "/mcp"
}

// cpuTime is the CPU time this process used so far. The upstream runs in
// another process, so the difference over a loop is the client's own cost,
// which a busy machine disturbs less than the wall-clock time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkToolCall compares a tools/call through Conn with the same call
// through the go-sdk client, against the same 2026-07-28 upstream in another
// process, answering with SSE or JSON. Compare the two in one run:
//
//	go test -run '^$' -bench BenchmarkToolCall -benchmem ./services/mcp-gateway/internal/upstream/
func BenchmarkToolCall(b *testing.B) {
	for _, answers := range []string{"sse", "json"} {
		url := startHTTPServerProcess(b, answers == "json")
		b.Run("answers="+answers+"/client=conn", func(b *testing.B) {
			c, err := New(Options{Name: "bench", URL: url})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			params := jsontext.Value(`{"name":"add","arguments":{"a":1,"b":2}}`)
			caller := Caller{Key: "k", Identity: "header.payload.signature"}
			if _, err := c.Call(b.Context(), caller, "tools/call", params, nil); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for b.Loop() {
				if _, err := c.Call(b.Context(), caller, "tools/call", params, nil); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
		b.Run("answers="+answers+"/client=go-sdk", func(b *testing.B) {
			client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
			cs, err := client.Connect(b.Context(), &mcp.StreamableClientTransport{Endpoint: url}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			params := &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}}
			if _, err := cs.CallTool(b.Context(), params); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for b.Loop() {
				if _, err := cs.CallTool(b.Context(), params); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}
