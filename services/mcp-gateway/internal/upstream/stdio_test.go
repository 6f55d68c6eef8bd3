package upstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// TestStdioEverything: server-everything over stdio; two callers using the
// same progress token each get their own progress, in order, with their
// token back.
func TestStdioEverything(t *testing.T) {
	t.Parallel()
	c, _ := newTestConn(t, Options{Command: testenv.EverythingCommand(t, "stdio")})
	cat, err := c.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cat.ProtocolVersion != "2025-11-25" || !containsKey(cat.Tools, "get-sum") {
		t.Fatalf("catalog: version %q, %d tools", cat.ProtocolVersion, len(cat.Tools))
	}
	res, err := callTool(t.Context(), c, Caller{Key: "a"}, "get-sum", `{"a":20,"b":22}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(toolText(t, res), "42") {
		t.Errorf("get-sum = %s", res)
	}
	var wg sync.WaitGroup
	got := make([]collect, 2)
	for i := range got {
		wg.Go(func() {
			params := `{"name":"trigger-long-running-operation","arguments":{"duration":0.5,"steps":5},"_meta":{"progressToken":"same"}}`
			if _, err := c.Call(t.Context(), Caller{Key: strconv.Itoa(i)}, "tools/call", jsontext.Value(params), got[i].notify); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := []string{"progress same 1", "progress same 2", "progress same 3", "progress same 4", "progress same 5"}
	for i := range got {
		if diff := cmp.Diff(want, summarize(t, got[i].all())); diff != "" {
			t.Errorf("caller %d notifications (-want +got):\n%s", i, diff)
		}
	}
}

// TestStdioIdentityAndEnv: the identity goes in _meta (replacing one the
// caller put there, or removing it when there is none), and the child's
// environment is PATH, HOME and the configured variables only.
func TestStdioIdentityAndEnv(t *testing.T) {
	t.Parallel()
	c, _ := newTestConn(t, stdioServerOptions())
	tests := []struct {
		identity string
		want     any
	}{
		{"jws.of.alice", "jws.of.alice"},
		{"", nil},
	}
	for _, tt := range tests {
		params := `{"name":"whoami","arguments":{},"_meta":{"io.mcpauthz/identity":"forged"}}`
		res, err := c.Call(t.Context(), Caller{Key: "a", Identity: tt.identity}, "tools/call", jsontext.Value(params), nil)
		if err != nil {
			t.Fatal(err)
		}
		var who struct {
			Meta any      `json:"meta"`
			Env  []string `json:"env"`
		}
		if err := json.Unmarshal([]byte(toolText(t, res)), &who, json.RejectUnknownMembers(false)); err != nil {
			t.Fatal(err)
		}
		if who.Meta != tt.want {
			t.Errorf("identity %q: the upstream saw %v", tt.identity, who.Meta)
		}
		slices.Sort(who.Env)
		if diff := cmp.Diff([]string{"HOME", "PATH", serverModeEnv}, who.Env); diff != "" {
			t.Errorf("child environment (-want +got):\n%s", diff)
		}
	}
}

// TestStdioCrashRestart: the child dying during a call fails that call at
// once; it is started again, and calls work again.
func TestStdioCrashRestart(t *testing.T) {
	t.Parallel()
	m := &metricsRecorder{}
	opts := stdioServerOptions()
	// A delay long enough that the exit's Changed signal is taken before
	// the restart's.
	opts.RestartDelay, opts.Metrics = time.Second, m
	c, logs := newTestConn(t, opts)
	if _, err := callTool(t.Context(), c, Caller{}, "add", `{"a":1,"b":2}`, nil); err != nil {
		t.Fatal(err)
	}
	// Another call is in flight when the child dies: it fails too, at once
	// (long before its tool would end).
	inFlight := make(chan error, 1)
	go func() {
		_, err := callTool(t.Context(), c, Caller{Key: "b"}, "sleep", `{"ms":60000}`, nil)
		inFlight <- err
	}()
	waitFor(t, "the other call to be in flight", func() bool {
		st := c.t.(*stdioTransport)
		st.mu.Lock()
		p := st.proc
		st.mu.Unlock()
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.pending) == 1
	})
	_, err := callTool(t.Context(), c, Caller{}, "crash", `{}`, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call during the crash: err = %v, want ErrUnavailable", err)
	}
	select {
	case err := <-inFlight:
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("call in flight during the crash: err = %v, want ErrUnavailable", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call in flight did not fail when the child died")
	}
	select {
	case <-c.Changed(): // the exit: its entries go
	case <-time.After(30 * time.Second):
		t.Fatal("Changed not signalled when the child exited")
	}
	waitFor(t, "a call to work again", func() bool {
		res, err := callTool(t.Context(), c, Caller{}, "add", `{"a":1,"b":2}`, nil)
		return err == nil && toolText(t, res) == "3"
	})
	if len(m.restartTimes()) == 0 {
		t.Error("no restart counted")
	}
	if !strings.Contains(logs.String(), "the upstream process exited; restarting it") || !strings.Contains(logs.String(), "exit status 3") {
		t.Errorf("the exit was not logged:\n%s", logs.String())
	}
	// The restart signals again, so the catalog is listed as soon as the
	// child is back.
	select {
	case <-c.Changed():
	default:
		t.Error("Changed not signalled after the restart")
	}
}

// TestStdioBackoff: a child that keeps failing is started again after delays
// that double up to the maximum; calls meanwhile fail at once.
func TestStdioBackoff(t *testing.T) {
	t.Parallel()
	m := &metricsRecorder{}
	c, _ := newTestConn(t, Options{
		Command:      []string{"sh", "-c", "echo starting >&2; exit 1"},
		RestartDelay: 50 * time.Millisecond, MaxRestartDelay: 400 * time.Millisecond, Metrics: m,
	})
	waitFor(t, "six restarts", func() bool { return len(m.restartTimes()) >= 6 })
	times := m.restartTimes()
	for i := 1; i < 6; i++ {
		want := min(50*time.Millisecond<<i, 400*time.Millisecond)
		if gap := times[i].Sub(times[i-1]); gap < want {
			t.Errorf("restart %d came %v after the previous one, want at least %v", i, gap, want)
		}
	}
	_, err := callTool(t.Context(), c, Caller{}, "add", `{}`, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("call to a failing child: %v", err)
	}
}

// TestStdioCancellation: cancelling a call, or its timeout, sends
// notifications/cancelled: the tool sees its context end (and says so on
// stderr, which reaches the log).
func TestStdioCancellation(t *testing.T) {
	t.Parallel()
	for _, timeout := range []bool{true, false} {
		t.Run(fmt.Sprint("timeout=", timeout), func(t *testing.T) {
			t.Parallel()
			opts := stdioServerOptions()
			if timeout {
				opts.Timeout = 300 * time.Millisecond
			}
			c, logs := newTestConn(t, opts)
			st := c.t.(*stdioTransport)
			waitFor(t, "the child to start", func() bool {
				st.mu.Lock()
				defer st.mu.Unlock()
				return st.state == stateReady
			})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if !timeout {
				time.AfterFunc(300*time.Millisecond, cancel)
			}
			_, err := callTool(ctx, c, Caller{}, "sleep", `{"ms":20000}`, nil)
			if timeout && !errors.Is(err, ErrTimeout) || !timeout && !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v", err)
			}
			waitFor(t, "the tool to see the cancellation", func() bool {
				return strings.Contains(logs.String(), `line="cancelled: sleep"`)
			})
		})
	}
}

// TestStdioBadAnswers: an answer beyond the bound fails its call at once
// (not at the timeout); a line that is not JSON-RPC is logged and dropped; a
// tool added upstream signals Changed (on the subscriptions/listen of a
// 2026-07-28 child).
func TestStdioBadAnswers(t *testing.T) {
	t.Parallel()
	opts := stdioServerOptions()
	opts.MaxResponseBytes = 2000
	opts.Timeout = time.Minute
	c, logs := newTestConn(t, opts)
	if _, err := c.Catalog(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := callTool(t.Context(), c, Caller{}, "big", `{"n":100000}`, nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big answer: err = %v, want ErrTooLarge", err)
	}
	if time.Since(start) > opts.Timeout/2 {
		t.Error("the big answer failed its call only at the timeout")
	}
	res, err := callTool(t.Context(), c, Caller{}, "garbage", `{}`, nil)
	if err != nil || toolText(t, res) != "after garbage" {
		t.Fatalf("garbage: %s, %v", res, err)
	}
	if !strings.Contains(logs.String(), "the upstream process wrote a line that is not JSON-RPC") {
		t.Errorf("the garbage line was not logged")
	}
	if _, err := callTool(t.Context(), c, Caller{}, "add-tool", `{"n":2}`, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("Changed not signalled")
	}
}

// TestStdioLegacy: a child that does not answer server/discover is
// initialized; its requests during a call are answered (ping) or refused
// (sampling); it announces list changes unasked.
func TestStdioLegacy(t *testing.T) {
	t.Parallel()
	opts := stdioServerOptions()
	opts.Env = append(opts.Env, legacyEnv+"=1")
	c, _ := newTestConn(t, opts)
	cat, err := c.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cat.ProtocolVersion != "2025-11-25" {
		t.Errorf("protocol version %q", cat.ProtocolVersion)
	}
	res, err := callTool(t.Context(), c, Caller{}, "ask-client", `{}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := toolText(t, res); !strings.HasPrefix(got, "ping: <nil>; sampling: ") || !strings.Contains(got, refusedMessage) {
		t.Errorf("the tool saw %q", got)
	}
	if _, err := callTool(t.Context(), c, Caller{}, "add-tool", `{"n":3}`, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("Changed not signalled")
	}
}

// TestStdioCloseKillsGroup: Close ends the child and what it started.
func TestStdioCloseKillsGroup(t *testing.T) {
	t.Parallel()
	opts := stdioServerOptions()
	opts.Command = []string{"sh", "-c", `sleep 300 & exec "$0"`, os.Args[0]}
	c, _ := newTestConn(t, opts)
	if _, err := callTool(t.Context(), c, Caller{}, "add", `{}`, nil); err != nil {
		t.Fatal(err)
	}
	st := c.t.(*stdioTransport)
	st.mu.Lock()
	pgid := st.proc.pid
	st.mu.Unlock()
	if n := len(groupMembers(t, pgid)); n != 2 {
		t.Fatalf("%d processes in the child's group, want 2 (the server and sleep)", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if m := groupMembers(t, pgid); len(m) != 0 {
		t.Errorf("processes left in the child's group after Close: %v", m)
	}
	if _, err := callTool(t.Context(), c, Caller{}, "add", `{}`, nil); !isClosed(err) {
		t.Errorf("call after Close: %v", err)
	}
}

// groupMembers lists the live processes of a process group, from /proc.
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			if syscall.Kill(pid, 0) == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// TestStdioStderrRateLimited: a flood on stderr is logged up to the burst, and
// the rest counted.
func TestStdioStderrRateLimited(t *testing.T) {
	t.Parallel()
	_, logs := newTestConn(t, Options{
		Command:      []string{"sh", "-c", `i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done`},
		RestartDelay: time.Hour,
	})
	waitFor(t, "the dropped lines to be counted", func() bool {
		return strings.Contains(logs.String(), "upstream stderr lines dropped")
	})
	logged := strings.Count(logs.String(), `msg="upstream stderr"`)
	if logged < 50 || logged > 100 {
		t.Errorf("%d of 500 lines logged, want the burst of 50 and what the rate allowed meanwhile", logged)
	}
	if !strings.Contains(logs.String(), `line="line 0"`) {
		t.Error("the first line was not logged")
	}
}

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	b := tokenBucket{burst: 3, rate: 1}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var got []bool
	for i := range 5 {
		ok, _ := b.allow(t0.Add(time.Duration(i) * time.Millisecond))
		got = append(got, ok)
	}
	if diff := cmp.Diff([]bool{true, true, true, false, false}, got); diff != "" {
		t.Errorf("burst (-want +got):\n%s", diff)
	}
	ok, dropped := b.allow(t0.Add(1100 * time.Millisecond))
	if !ok || dropped != 2 {
		t.Errorf("a second later: %v, %d dropped; want true, 2", ok, dropped)
	}
	if ok, _ := b.allow(t0.Add(1101 * time.Millisecond)); ok {
		t.Error("allowed beyond the rate")
	}
	if n := b.flush(); n != 1 {
		t.Errorf("flush = %d, want 1", n)
	}
}
