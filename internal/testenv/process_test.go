package testenv

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestNewProcess(t *testing.T) {
	t.Parallel()
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ready.Close)
	p, err := NewProcess("sleep", "sleep", ProcessOptions{Args: []string{"30"}, ReadyURL: ready.URL})
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited at once")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid())); err != nil {
		t.Errorf("Pid() = %d, not a running process: %v", p.Pid(), err)
	}
	p.Stop()
	if !p.Exited() {
		t.Fatal("still running after Stop")
	}

	// A process that exits before it is ready is reported with its output.
	p, err = NewProcess("sh", "sh", ProcessOptions{Args: []string{"-c", "echo boom; exit 3"}, ReadyURL: "http://" + FreeAddr(t) + "/", ReadyTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("NewProcess of a failing command: %v, want an error with its output", err)
	}
	if p != nil {
		p.Stop()
	}
	if _, err := NewProcess("missing", "/nonexistent/binary", ProcessOptions{}); err == nil {
		t.Error("NewProcess of a missing binary succeeded")
	}
}

func TestBuildBinaryUnknown(t *testing.T) {
	t.Parallel()
	if _, err := BuildBinary("nope"); err == nil {
		t.Error("BuildBinary(nope) succeeded")
	}
}

func TestListening(t *testing.T) {
	t.Parallel()
	p := StartProcess(t, "sh", "sh", ProcessOptions{Args: []string{"-c", `
		echo '{"msg":"starting"}'
		sleep 0.2
		echo '{"level":"INFO","msg":"listening","listener":"OTHER_LISTEN","addr":"127.0.0.1:1"}'
		echo '{"level":"INFO","msg":"listening","listener":"T_LISTEN","addr":"127.0.0.1:43125"}'
		exec sleep 30`}})
	addr, err := p.Listening(t.Context(), "T_LISTEN")
	if err != nil || addr != "127.0.0.1:43125" {
		t.Errorf("Listening = %q, %v; want 127.0.0.1:43125", addr, err)
	}

	gone := StartProcess(t, "sh", "sh", ProcessOptions{Args: []string{"-c", "echo boom; exit 3"}})
	if _, err := gone.Listening(t.Context(), "T_LISTEN"); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Listening of a process that exits: %v, want an error with its output", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Listening(ctx, "NEVER_LISTEN"); err == nil {
		t.Error("Listening for a listener never logged succeeded")
	}
}

// TestReadyListener: a process that logs where it listens is waited for at
// that address.
func TestReadyListener(t *testing.T) {
	t.Parallel()
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(ready.Close)
	addr := strings.TrimPrefix(ready.URL, "http://")
	line := `{"msg":"listening","listener":"T_LISTEN","addr":"` + addr + `"}`
	p := StartProcess(t, "sh", "sh", ProcessOptions{
		Args:          []string{"-c", "echo '" + line + "'; exec sleep 30"},
		ReadyListener: "T_LISTEN", ReadyPath: "/healthz", ReadyTimeout: 10 * time.Second,
	})
	if p.Exited() {
		t.Fatal("exited")
	}
	_, err := NewProcess("sh", "sh", ProcessOptions{
		Args:          []string{"-c", "echo '" + line + "'; exec sleep 30"},
		ReadyListener: "T_LISTEN", ReadyPath: "/nothing", ReadyTimeout: 500 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("NewProcess waiting for a 404: %v, want not ready", err)
	}
}

// TestBuildBinaryShared: without MCPAUTHZ_BIN_DIR a binary is built once in
// the go command's build cache, where every test process finds it.
func TestBuildBinaryShared(t *testing.T) {
	t.Setenv("MCPAUTHZ_BIN_DIR", "")
	p, err := BuildBinary("devauth")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "-list-env").Output()
	if err != nil || !strings.Contains(string(out), "DEVAUTH_LISTEN") {
		t.Errorf("%s -list-env: %v, %q", p, err, out)
	}
	cache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p, strings.TrimSpace(string(cache))) {
		t.Errorf("built %s, outside the build cache %s", p, cache)
	}
}
