// Package stack starts the services the load tool measures, from the binaries
// `make build` writes to bin/: devauth (with its test API), one or two authz
// replicas, optionally sharing a private redis-server, and the gateway, all on
// free loopback ports. Each process writes its log to a file, and dies with
// the load tool (Linux parent-death signal), so an interrupted run leaves
// nothing behind.
//
// It is internal/testenv's approach without a testing.TB: the load tool is a
// command, not a test.
package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// Process is a started service.
type Process struct {
	Name string
	// Log is the file holding the process's stdout and stderr.
	Log string
	// PprofAddr is where the process serves net/http/pprof, or "" (see
	// [Options.Pprof]).
	PprofAddr string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProcess starts bin with a minimal environment (PATH, HOME) plus env,
// logging to dir/name.log.
func startProcess(name, bin string, env []string, dir string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// waitReady polls url until it answers 200, the process exits, or timeout.
func (p *Process) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s was ready (%v); log: %s", p.Name, url, p.err, p.Log)
		case <-ctx.Done():
			return fmt.Errorf("%s: %s not ready after %v (last: %v); log: %s", p.Name, url, timeout, last, p.Log)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits up to 10s, then kills. Stopping twice is
// harmless.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// RSS returns the resident set size of the process in bytes, from
// /proc/PID/status.
func (p *Process) RSS() (int64, error) { return RSS(p.PID()) }

// RSS returns the resident set size of process pid in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	var kb int64
	for line := range strings.Lines(string(b)) {
		if n, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if _, err := fmt.Sscan(n, &kb); err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", n, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// freePort returns a TCP port free a moment ago on host, from below the
// ephemeral range (see testenv.FreePortOn: a port from :0 can be taken by any
// outgoing connection before the child binds it).
func freePort(host string) (int, error) { return testenv.FreePortOn(host) }

// freePortOn returns a TCP port free a moment ago on every one of hosts.
func freePortOn(hosts ...string) (int, error) {
	for range 50 {
		port, err := freePort(hosts[0])
		if err != nil {
			return 0, err
		}
		ok := true
		for _, h := range hosts[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v", hosts)
}

// CPUTime returns the CPU time (user + system) process pid has used, from
// /proc/PID/stat, with the kernel's clock-tick resolution (10 ms).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick, nil
}
