package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"
)

// Watching an HTTP upstream for list changes: on the gateway's own session's
// GET stream (legacy), or on a subscriptions/listen stream (2026-07-28). The
// stream is opened again with exponential backoff whenever it ends; when a
// stream comes back after one was up, Changed is signalled, since a change
// may have been sent while none was open.

func (t *httpTransport) watch() {
	t.watchOnce.Do(func() {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.watchLoop()
		}()
	})
}

// watchResult is how one watch stream ended.
type watchResult int

const (
	watchRetry watchResult = iota // ended or failed: open it again after a delay
	watchUp                       // was up, then ended: open it again soon
	watchStop                     // the upstream offers no such stream
)

func (t *httpTransport) watchLoop() {
	delay := t.c.opts.RestartDelay
	wasUp := false
	for t.ctx.Err() == nil {
		var res watchResult
		e, err := t.eraOf(t.ctx)
		switch {
		case err != nil:
			res = watchRetry
		case e.modern:
			res, err = t.listen(e, &wasUp)
		default:
			res, err = t.getStream(&wasUp)
		}
		if res == watchStop {
			return
		}
		if err != nil && t.ctx.Err() == nil {
			t.c.opts.Logger.Debug("upstream watch stream failed", "err", err)
		}
		if res == watchUp {
			delay = t.c.opts.RestartDelay
		}
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(delay):
		}
		if res != watchUp {
			delay = min(delay*2, t.c.opts.MaxRestartDelay)
		}
	}
}

// up is called when a watch stream is established.
func (t *httpTransport) up(wasUp *bool) {
	if *wasUp {
		t.c.signal()
	}
	*wasUp = true
}

// getStream holds the gateway's own session's GET stream.
func (t *httpTransport) getStream(wasUp *bool) (watchResult, error) {
	s, err := t.acquire(t.ctx, "", Caller{})
	if err != nil {
		return watchRetry, err
	}
	t.pool.release(s)
	req, err := http.NewRequestWithContext(t.ctx, http.MethodGet, t.endpoint, nil)
	if err != nil {
		return watchStop, err
	}
	t.setHeaders(req.Header, s, s.version, "")
	req.Header["Accept"] = []string{"text/event-stream"}
	resp, err := t.client.Do(req)
	if err != nil {
		return watchRetry, err
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		t.c.opts.Logger.Info("the upstream offers no GET stream: list changes are seen at the next refresh")
		return watchStop, nil
	case resp.StatusCode == http.StatusNotFound && s.id != "":
		t.pool.drop(s)
		t.c.signal()
		return watchUp, nil
	case resp.StatusCode != http.StatusOK || mt != "text/event-stream":
		_, err := t.answer(t.ctx, &request{sess: s, id: 0}, resp)
		if errors.Is(err, errSessionGone) {
			t.pool.drop(s)
			t.c.signal()
			return watchUp, nil
		}
		return watchRetry, err
	}
	t.up(wasUp)
	sr := newSSEReader(resp.Body, int(t.c.opts.MaxResponseBytes))
	for {
		ev, err := sr.next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return watchUp, err
		}
		if (len(ev.Name) > 0 && string(ev.Name) != "message") || len(bytes.TrimSpace(ev.Data)) == 0 {
			continue
		}
		m, err := parseMessage(ev.Data)
		if err != nil {
			return watchUp, err
		}
		switch {
		case m.isNotification():
			t.c.notification(&m, ev.Data, nil)
		case m.isRequest():
			t.refuse(t.ctx, s, &m)
		}
	}
}

// listen holds a subscriptions/listen stream for the list changes the server
// can announce.
func (t *httpTransport) listen(e *eraState, wasUp *bool) (watchResult, error) {
	filter := []byte(`{`)
	for _, k := range []struct{ capability, field string }{
		{"tools", "toolsListChanged"}, {"resources", "resourcesListChanged"}, {"prompts", "promptsListChanged"},
	} {
		if v, _ := memberPath(e.info.caps, k.capability, "listChanged"); v.Kind() == 't' {
			if len(filter) > 1 {
				filter = append(filter, ',')
			}
			filter = appendMember(filter, k.field, []byte("true"))
		}
	}
	if len(filter) == 1 {
		return watchStop, nil // nothing the server would announce
	}
	filter = append(filter, '}')
	params := append(append([]byte(`{"_meta":{`), t.modernMeta...), `},"notifications":`...)
	params = append(append(params, filter...), '}')
	id := t.c.nextID.Add(1)
	r := &request{method: "subscriptions/listen", id: id, modern: true, body: appendRequest(nil, id, "subscriptions/listen", params)}
	resp, err := t.send(t.ctx, r)
	if err != nil {
		return watchRetry, err
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		_, err := t.answer(t.ctx, r, resp)
		var rpc *RPCError
		if err == nil || (errors.As(err, &rpc) && rpc.Code == codeMethodNotFound) {
			t.c.opts.Logger.Info("the upstream offers no subscriptions/listen stream: list changes are seen at the next refresh")
			return watchStop, err
		}
		if errors.As(err, &rpc) && rpc.Code == codeUnsupportedProtocolVersion {
			t.forgetEra(e)
		}
		return watchRetry, err
	}
	sr := newSSEReader(resp.Body, int(t.c.opts.MaxResponseBytes))
	for {
		ev, err := sr.next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return watchUp, err
		}
		if (len(ev.Name) > 0 && string(ev.Name) != "message") || len(bytes.TrimSpace(ev.Data)) == 0 {
			continue
		}
		m, err := parseMessage(ev.Data)
		if err != nil {
			return watchUp, err
		}
		switch {
		case m.methodIs("notifications/subscriptions/acknowledged"):
			t.up(wasUp)
		case m.isNotification():
			t.c.notification(&m, ev.Data, nil)
		case m.isResponse():
			// The server ended the subscription (shutting down, say).
			return watchUp, nil
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
