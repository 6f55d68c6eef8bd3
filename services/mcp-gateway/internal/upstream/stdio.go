package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// stdio: one child process per Conn (so per gateway replica), newline-delimited
// JSON-RPC on its stdin and stdout, shared by every caller:
//
//   - Request ids are the gateway's own, so calls of different callers never
//     clash; a progressToken in a request's _meta is replaced by a
//     gateway-unique one and mapped back in the notifications/progress the
//     child sends, which are passed to the call they belong to.
//   - notifications/message cannot be attributed to a request on stdio (the
//     protocol carries no request id in it) and is dropped: a log line of one
//     caller's call must never reach another caller.
//   - The caller's identity goes in params._meta["io.mcpauthz/identity"], as
//     the session is everyone's.
//   - At start: server/discover (2026-07-28; then every request carries the
//     protocol _meta), else initialize and notifications/initialized.
//   - When the child exits, calls in flight fail at once and it is started
//     again with exponential backoff; calls made while it is down fail at once
//     too (ErrUnavailable), calls made while it starts wait for it.
//   - Its stderr goes to the log, one line per line, rate-limited.
//   - Close closes its stdin, then signals its process group (SIGTERM, then
//     SIGKILL), so what it started goes too.

const (
	stdioProbeTimeout = 5 * time.Second // server/discover unanswered: legacy
	// handshakeTimeout bounds initialize at least this long: a child may
	// take a while to start (npx, say), and calls wait for it anyway.
	handshakeTimeout = 30 * time.Second
	stderrLineMax    = 4 << 10
	noteQueueMax     = 1024 // notifications queued for one call before dropping
)

type procState int

const (
	stateStarting procState = iota
	stateReady
	stateDown
	stateClosed
)

type stdioTransport struct {
	c    *conn
	path string
	argv []string
	env  []string

	mu      sync.Mutex
	state   procState
	proc    *process
	readyCh chan struct{} // closed when a start attempt ends
	watched bool

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	stderrBucket tokenBucket
}

func newStdioTransport(c *conn) (*stdioTransport, error) {
	path, err := exec.LookPath(c.opts.Command[0])
	if err != nil {
		return nil, fmt.Errorf("upstream %q: command %q: %w", c.opts.Name, c.opts.Command[0], err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	t := &stdioTransport{
		c:       c,
		path:    path,
		argv:    c.opts.Command,
		env:     append(env, c.opts.Env...),
		readyCh: make(chan struct{}),
		done:    make(chan struct{}),
		// Bursts (a start banner) pass; a flood is cut to 10 lines a second.
		stderrBucket: tokenBucket{burst: 50, rate: 10},
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	go t.supervise()
	return t, nil
}

// process is one run of the child.
type process struct {
	t      *stdioTransport
	cmd    *exec.Cmd
	stdin  *os.File
	wmu    sync.Mutex
	pid    int
	info   serverInfo
	modern bool
	meta   []byte // _meta members every request carries (modern: the protocol's)

	mu       sync.Mutex
	pending  map[int64]*stdioCall
	progress map[string]*stdioCall // gateway progress token (quoted) -> call

	dead    chan struct{} // closed when stdout ends: no answer can come
	exited  chan struct{} // closed when the child has been waited for
	exitErr error
	killed  atomic.Bool
}

// stdioCall is one request in flight.
type stdioCall struct {
	id       int64
	progress []byte         // gateway progress token, quoted; nil when none
	orig     jsontext.Value // the caller's progress token

	mu      sync.Mutex
	notes   []Message
	dropped int
	noted   chan struct{} // signalled when notes grows
	done    chan struct{} // closed when the answer is in
	answer  []byte        // the whole response line
	failErr error
}

func (t *stdioTransport) supervise() {
	defer close(t.done)
	delay := t.c.opts.RestartDelay
	for starts := 0; ; starts++ {
		if starts > 0 {
			t.c.opts.Metrics.Restarted()
		}
		p, err := t.start()
		if err != nil {
			t.c.opts.Logger.Warn("starting the upstream process failed", "err", err)
			t.setState(stateDown, nil)
		} else {
			started := time.Now()
			t.setState(stateReady, p)
			t.c.opts.Metrics.Up(true)
			if starts > 0 {
				// Back after an exit, whose signal found it down: its
				// catalog is listed now, not at the next retry.
				t.c.signal()
			}
			t.watchOn(p)
			<-p.exited
			t.c.opts.Metrics.Up(false)
			if t.ctx.Err() != nil {
				return
			}
			t.c.opts.Logger.Warn("the upstream process exited; restarting it", "status", exitStatus(p.exitErr), "after", time.Since(started).Round(time.Millisecond))
			t.setState(stateDown, nil)
			// Its entries go while it is down, and may differ after the
			// restart.
			t.c.signal()
			if time.Since(started) > t.c.opts.MaxRestartDelay {
				delay = t.c.opts.RestartDelay
			}
		}
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, t.c.opts.MaxRestartDelay)
		t.mu.Lock()
		if t.state == stateClosed {
			t.mu.Unlock()
			return
		}
		t.state = stateStarting
		t.readyCh = make(chan struct{})
		t.mu.Unlock()
	}
}

func (t *stdioTransport) setState(s procState, p *process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateClosed {
		if p != nil {
			go p.stop()
		}
		return
	}
	prev := t.state
	t.state, t.proc = s, p
	if prev == stateStarting {
		close(t.readyCh)
	}
}

// process returns the running child, waiting while it starts.
func (t *stdioTransport) process(ctx context.Context) (*process, error) {
	for {
		t.mu.Lock()
		state, p, ch := t.state, t.proc, t.readyCh
		t.mu.Unlock()
		switch state {
		case stateReady:
			return p, nil
		case stateClosed:
			return nil, t.c.closedErr()
		case stateDown:
			return nil, t.c.unavailable("the process is down, restarting", nil)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// start runs the child and its handshake.
func (t *stdioTransport) start() (*process, error) {
	cmd := exec.Command(t.path, t.argv[1:]...)
	cmd.Args[0] = t.argv[0]
	cmd.Env = t.env
	cmd.Dir = t.c.opts.Dir
	// A group of its own, so that Close reaches what it starts (npx starts
	// node, say).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("starting %s: %w", t.argv[0], err)
	}
	p := &process{
		t: t, cmd: cmd, stdin: inW, pid: cmd.Process.Pid,
		pending:  map[int64]*stdioCall{},
		progress: map[string]*stdioCall{},
		dead:     make(chan struct{}),
		exited:   make(chan struct{}),
	}
	go p.readStdout(outR)
	go t.readStderr(errR)
	go func() {
		p.exitErr = cmd.Wait()
		// What it started may still hold stdout open.
		p.killGroup(syscall.SIGKILL)
		<-p.dead
		close(p.exited)
	}()
	if err := p.handshake(); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// handshake finds the era and, for legacy servers, initializes the session.
func (p *process) handshake() error {
	t := p.t
	modernMeta := appendMember(nil, modernMetaNames[0], []byte(`"`+versionModern+`"`))
	modernMeta = append(modernMeta, ',')
	modernMeta = appendMember(modernMeta, modernMetaNames[1], clientInfo(t.c.opts))
	modernMeta = append(modernMeta, ',')
	modernMeta = appendMember(modernMeta, modernMetaNames[2], []byte(`{}`))

	ctx, cancel := context.WithTimeout(t.ctx, stdioProbeTimeout)
	res, err := p.roundTrip(ctx, "server/discover", append(append([]byte(`{"_meta":{`), modernMeta...), "}}"...))
	cancel()
	var rpc *RPCError
	switch {
	case err == nil:
		if versions, _ := stringArray(res, "supportedVersions"); contains(versions, versionModern) {
			caps, _ := member(res, "capabilities")
			if caps.Kind() != '{' {
				caps = jsontext.Value("{}")
			}
			p.modern, p.meta = true, modernMeta
			p.info = serverInfo{version: versionModern, caps: bytes.Clone(caps)}
			return nil
		}
	case errors.As(err, &rpc) && rpc.Code == codeUnsupportedProtocolVersion:
		versions, _ := stringArray(rpc.Data, "supported")
		if _, err := t.legacyFallback(versions); err != nil {
			return err
		}
	case errors.Is(err, ErrUnavailable):
		select {
		case <-p.dead:
			return err
		default:
		}
	}
	// Legacy: any other answer, or none within the probe timeout.
	ctx, cancel = context.WithTimeout(t.ctx, max(t.c.opts.Timeout, handshakeTimeout))
	defer cancel()
	params := []byte(`{"protocolVersion":"` + versionLegacy + `","capabilities":{},"clientInfo":`)
	params = append(append(params, clientInfo(t.c.opts)...), '}')
	res, err = p.roundTrip(ctx, "initialize", params)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	version, err := stringMember(res, "protocolVersion")
	if err != nil || !contains(legacyVersions, version) {
		return fmt.Errorf("initialize answered protocol version %q", version)
	}
	caps, _ := member(res, "capabilities")
	if caps.Kind() != '{' {
		caps = jsontext.Value("{}")
	}
	p.info = serverInfo{version: version, caps: bytes.Clone(caps)}
	return p.write(ctx, appendRequest(nil, -1, "notifications/initialized", nil))
}

func (t *stdioTransport) legacyFallback(versions []string) (string, error) {
	for _, v := range legacyVersions {
		if contains(versions, v) {
			return v, nil
		}
	}
	return "", t.c.protocolErr(fmt.Sprintf("no protocol version in common (the upstream supports %q)", versions), nil)
}

// roundTrip sends a request of the gateway's own and waits for its answer.
func (p *process) roundTrip(ctx context.Context, method string, params []byte) (jsontext.Value, error) {
	id := p.t.c.nextID.Add(1)
	sc := newStdioCall(id)
	p.register(sc)
	defer p.unregister(sc)
	if err := p.write(ctx, appendRequest(nil, id, method, params)); err != nil {
		return nil, err
	}
	return p.wait(ctx, sc, nil)
}

func newStdioCall(id int64) *stdioCall {
	return &stdioCall{id: id, noted: make(chan struct{}, 1), done: make(chan struct{})}
}

func (t *stdioTransport) server(ctx context.Context) (serverInfo, error) {
	p, err := t.process(ctx)
	if err != nil {
		return serverInfo{}, err
	}
	return p.info, nil
}

func (t *stdioTransport) call(ctx context.Context, caller Caller, method string, params jsontext.Value, notify func(Message)) (jsontext.Value, error) {
	p, err := t.process(ctx)
	if err != nil {
		return nil, err
	}
	id := t.c.nextID.Add(1)
	sc := newStdioCall(id)
	edit := metaEdit{members: p.meta, names: modernMetaNames}
	if caller.Identity != "" {
		m := make([]byte, 0, len(p.meta)+len(caller.Identity)+32)
		m = appendMember(m, IdentityMetaKey, quote(caller.Identity))
		if len(p.meta) > 0 {
			m = append(append(m, ','), p.meta...)
		}
		edit.members = m
	}
	// Params must not carry an identity of the client's own choosing.
	edit.names = metaNamesWithIdentity
	edit.progress = func(old jsontext.Value) []byte {
		sc.orig = bytes.Clone(old)
		sc.progress = quote("mcpauthz-" + strconv.FormatInt(id, 10))
		return sc.progress
	}
	line := appendRequestHead(make([]byte, 0, len(params)+len(edit.members)+96), id, method)
	line, err = appendParams(line, params, &edit)
	if err != nil {
		return nil, err
	}
	line = append(line, '}')
	p.register(sc)
	defer p.unregister(sc)
	if err := p.write(ctx, line); err != nil {
		return nil, err
	}
	res, err := p.wait(ctx, sc, notify)
	if err != nil && ctx.Err() != nil {
		p.cancel(id, ctx)
	}
	return res, err
}

func (p *process) register(sc *stdioCall) {
	p.mu.Lock()
	p.pending[sc.id] = sc
	if sc.progress != nil {
		p.progress[string(sc.progress)] = sc
	}
	p.mu.Unlock()
}

func (p *process) unregister(sc *stdioCall) {
	p.mu.Lock()
	delete(p.pending, sc.id)
	if sc.progress != nil {
		delete(p.progress, string(sc.progress))
	}
	p.mu.Unlock()
}

// wait waits for sc's answer, passing its notifications to notify meanwhile.
func (p *process) wait(ctx context.Context, sc *stdioCall, notify func(Message)) (jsontext.Value, error) {
	for {
		select {
		case <-sc.noted:
			sc.deliver(notify)
		case <-sc.done:
			sc.deliver(notify)
			return p.result(sc)
		case <-p.dead:
			select {
			case <-sc.done:
				sc.deliver(notify)
				return p.result(sc)
			default:
			}
			return nil, p.t.c.unavailable("the process exited", nil)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (sc *stdioCall) deliver(notify func(Message)) {
	sc.mu.Lock()
	notes := sc.notes
	sc.notes = nil
	sc.mu.Unlock()
	if notify != nil {
		for _, n := range notes {
			notify(n)
		}
	}
}

func (p *process) result(sc *stdioCall) (jsontext.Value, error) {
	if sc.failErr != nil {
		return nil, sc.failErr
	}
	m, err := parseMessage(sc.answer)
	if err != nil {
		return nil, p.t.c.protocolErr("the answer is not JSON-RPC", err)
	}
	return p.t.c.resultFrom(&m)
}

// cancel tells the child the caller gave up on request id.
func (p *process) cancel(id int64, ctx context.Context) {
	reason := "the client cancelled the request"
	if context.Cause(ctx) == errCallTimeout {
		reason = "timeout"
	}
	params := fmt.Appendf(nil, `{"requestId":%d,"reason":`, id)
	params, _ = jsontext.AppendQuote(params, reason)
	params = append(params, '}')
	line := appendRequest(nil, -1, "notifications/cancelled", params)
	go func() {
		wctx, cancel := context.WithTimeout(p.t.ctx, auxTimeout)
		defer cancel()
		_ = p.write(wctx, line)
	}()
}

// write sends one message line. Lines must not hold newlines: a message
// holding any (as whitespace: JSON strings cannot) is compacted first.
func (p *process) write(ctx context.Context, line []byte) error {
	if bytes.ContainsAny(line, "\r\n") {
		v := jsontext.Value(bytes.Clone(line))
		if err := v.Compact(jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true)); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidParams, err)
		}
		line = v
	}
	line = append(line, '\n')
	p.wmu.Lock()
	defer p.wmu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(auxTimeout)
	}
	_ = p.stdin.SetWriteDeadline(deadline)
	if _, err := p.stdin.Write(line); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			return ctx.Err()
		}
		return p.t.c.unavailable("writing to the process failed", err)
	}
	return nil
}

// readStdout reads the child's messages until its stdout ends.
func (p *process) readStdout(r *os.File) {
	defer func() {
		r.Close()
		p.killGroup(syscall.SIGKILL)
		close(p.dead)
	}()
	br := bufio.NewReaderSize(r, 64<<10)
	max := int(p.t.c.opts.MaxResponseBytes)
	var buf []byte
	for {
		line, long, err := readBoundedLine(br, buf[:0], max)
		buf = line[:0]
		if long != nil {
			p.tooLong(long)
		} else if len(bytes.TrimSpace(line)) > 0 {
			p.handle(line)
		}
		if err != nil {
			return
		}
	}
}

// readBoundedLine reads one line (without its newline) into buf. A line longer
// than max is not kept: it is fed to an idScanner, returned as long.
func readBoundedLine(br *bufio.Reader, buf []byte, max int) (line []byte, long *idScanner, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if long == nil && len(buf)+len(chunk) > max+1 {
			long = &idScanner{}
			long.write(buf)
		}
		if long != nil {
			long.write(chunk)
		} else {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		if err == nil {
			return buf, long, nil
		}
		return buf, long, err
	}
}

// tooLong fails the call a too long line answered, if it can tell which.
func (p *process) tooLong(s *idScanner) {
	id, ok := s.result()
	p.t.c.opts.Logger.Warn("the upstream process wrote a message larger than the limit; dropped", "limit", p.t.c.opts.MaxResponseBytes)
	if ok {
		p.fail(id, p.t.c.tooLarge("the answer"))
	}
}

func (p *process) fail(id int64, err error) {
	p.mu.Lock()
	sc := p.pending[id]
	p.mu.Unlock()
	if sc != nil {
		sc.mu.Lock()
		select {
		case <-sc.done:
		default:
			sc.failErr = err
			close(sc.done)
		}
		sc.mu.Unlock()
	}
}

// handle routes one message from the child.
func (p *process) handle(line []byte) {
	m, err := parseMessage(line)
	if err != nil {
		var s idScanner
		s.write(line)
		if id, ok := s.result(); ok {
			p.fail(id, p.t.c.protocolErr("the answer is not JSON-RPC", err))
			return
		}
		p.t.c.opts.Logger.Warn("the upstream process wrote a line that is not JSON-RPC; dropped", "err", err)
		return
	}
	switch {
	case m.isResponse():
		id, err := strconv.ParseInt(string(m.id), 10, 64)
		if err != nil {
			return // not one of ours
		}
		p.mu.Lock()
		sc := p.pending[id]
		p.mu.Unlock()
		if sc == nil {
			return // late: the call was cancelled or timed out
		}
		sc.mu.Lock()
		select {
		case <-sc.done:
		default:
			sc.answer = bytes.Clone(line)
			close(sc.done)
		}
		sc.mu.Unlock()
	case m.methodIs("notifications/progress"):
		p.progressNote(&m)
	case m.isNotification():
		p.t.c.notification(&m, line, nil)
	default:
		p.refuse(&m)
	}
}

// progressNote passes a progress notification to its call, with the caller's
// token back in place of the gateway's.
func (p *process) progressNote(m *message) {
	if m.params.Kind() != '{' {
		return
	}
	tok, err := member(m.params, "progressToken")
	if err != nil || tok == nil {
		return
	}
	p.mu.Lock()
	sc := p.progress[string(tok)]
	p.mu.Unlock()
	if sc == nil {
		return
	}
	params, err := appendReplacing(nil, m.params, "progressToken", sc.orig)
	if err != nil {
		return
	}
	note := appendRequest(make([]byte, 0, len(params)+64), -1, "notifications/progress", params)
	sc.mu.Lock()
	if len(sc.notes) < noteQueueMax {
		sc.notes = append(sc.notes, note)
	} else {
		sc.dropped++
	}
	sc.mu.Unlock()
	select {
	case sc.noted <- struct{}{}:
	default:
	}
}

// refuse answers a request the child sent: ping, or a refusal.
func (p *process) refuse(m *message) {
	var line []byte
	if m.methodIs("ping") {
		line = appendResultResponse(nil, m.id, "{}")
	} else {
		p.t.c.opts.Logger.Info("refused a request of the upstream", "method", m.methodString())
		line = appendErrorResponse(nil, m.id, codeMethodNotFound, refusedMessage)
	}
	go func() {
		ctx, cancel := context.WithTimeout(p.t.ctx, auxTimeout)
		defer cancel()
		_ = p.write(ctx, line)
	}()
}

func (p *process) killGroup(sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		p.killed.Store(true)
	}
	_ = syscall.Kill(-p.pid, sig)
}

// stop ends the child: EOF on stdin, then SIGTERM, then SIGKILL, to its group.
func (p *process) stop() {
	p.wmu.Lock()
	p.stdin.Close()
	p.wmu.Unlock()
	for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
		if sig != 0 {
			p.killGroup(sig)
		}
		select {
		case <-p.exited:
			return
		case <-time.After(time.Second):
		}
	}
	<-p.exited
}

func (t *stdioTransport) watch() {
	t.mu.Lock()
	first := !t.watched
	t.watched = true
	p := t.proc
	t.mu.Unlock()
	if first && p != nil {
		t.watchOn(p)
	}
}

// watchOn opens a subscriptions/listen of a modern child, when watching. A
// legacy child sends list changes unasked.
func (t *stdioTransport) watchOn(p *process) {
	t.mu.Lock()
	watched := t.watched
	t.mu.Unlock()
	if !watched || !p.modern {
		return
	}
	filter := []byte(`{`)
	for _, k := range []struct{ capability, field string }{
		{"tools", "toolsListChanged"}, {"resources", "resourcesListChanged"}, {"prompts", "promptsListChanged"},
	} {
		if v, _ := memberPath(p.info.caps, k.capability, "listChanged"); v.Kind() == 't' {
			if len(filter) > 1 {
				filter = append(filter, ',')
			}
			filter = appendMember(filter, k.field, []byte("true"))
		}
	}
	if len(filter) == 1 {
		return
	}
	params := append(append([]byte(`{"_meta":{`), p.meta...), `},"notifications":`...)
	params = append(append(append(params, filter...), '}'), '}')
	id := t.c.nextID.Add(1)
	// Registered for as long as the child runs: the answer only comes when
	// the server ends the subscription.
	p.register(newStdioCall(id))
	ctx, cancel := context.WithTimeout(t.ctx, auxTimeout)
	defer cancel()
	if err := p.write(ctx, appendRequest(nil, id, "subscriptions/listen", params)); err != nil {
		t.c.opts.Logger.Debug("subscriptions/listen failed", "err", err)
	}
}

// readStderr logs the child's stderr, a line at a time, rate-limited.
func (t *stdioTransport) readStderr(r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, stderrLineMax)
	for {
		line, err := br.ReadSlice('\n')
		truncated := err == bufio.ErrBufferFull
		if text := bytes.TrimRight(line, "\r\n"); len(text) > 0 {
			if ok, dropped := t.stderrBucket.allow(time.Now()); ok {
				if dropped > 0 {
					t.c.opts.Logger.Info("upstream stderr lines dropped (rate limit)", "lines", dropped)
				}
				t.c.opts.Logger.Info("upstream stderr", "line", string(text), "truncated", truncated)
			}
		}
		for truncated {
			_, err = br.ReadSlice('\n')
			truncated = err == bufio.ErrBufferFull
		}
		if err != nil {
			if dropped := t.stderrBucket.flush(); dropped > 0 {
				t.c.opts.Logger.Info("upstream stderr lines dropped (rate limit)", "lines", dropped)
			}
			return
		}
	}
}

func (t *stdioTransport) close() error {
	t.mu.Lock()
	prev := t.state
	t.state = stateClosed
	p := t.proc
	t.proc = nil
	if prev == stateStarting {
		close(t.readyCh)
	}
	t.mu.Unlock()
	t.cancel()
	if p != nil {
		p.stop()
	}
	<-t.done
	return nil
}

func exitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tokenBucket allows burst events at once and rate per second after.
type tokenBucket struct {
	burst, rate float64

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped int
}

func (b *tokenBucket) allow(now time.Time) (ok bool, dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	dropped, b.dropped = b.dropped, 0
	return true, dropped
}

// flush returns the events dropped since the last one allowed, and forgets
// them.
func (b *tokenBucket) flush() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	dropped := b.dropped
	b.dropped = 0
	return dropped
}
