package upstream

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// TestCallerIdentityReplacesGatewayIdentity: a request on a caller's behalf
// carries the caller's assertion, and the gateway's own is not even asked
// for (it would be thrown away; even a cached assertion costs a lookup). The
// gateway's own requests (the discovery here) still carry the gateway's.
func TestCallerIdentityReplacesGatewayIdentity(t *testing.T) {
	t.Parallel()
	u := startGoUpstream(t, true, true)
	var asked atomic.Int64
	c, _ := newTestConn(t, Options{URL: u.URL, GatewayIdentity: func() string {
		asked.Add(1)
		return "jws.of.the.gateway"
	}})
	caller := Caller{Key: "a", Identity: "jws.of.alice"}
	if _, err := callTool(t.Context(), c, caller, "whoami", `{}`, nil); err != nil {
		t.Fatal(err)
	}
	if got := u.lastHeader("server/discover").Get(IdentityHeader); got != "jws.of.the.gateway" {
		t.Errorf("server/discover carried identity %q, want the gateway's", got)
	}
	before := asked.Load()
	for range 5 {
		res, err := callTool(t.Context(), c, caller, "whoami", `{}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		var who struct {
			Header string `json:"header"`
		}
		if err := json.Unmarshal([]byte(toolText(t, res)), &who, json.RejectUnknownMembers(false)); err != nil {
			t.Fatal(err)
		}
		if who.Header != "jws.of.alice" {
			t.Errorf("the upstream saw identity %q, want the caller's", who.Header)
		}
	}
	if n := asked.Load() - before; n != 0 {
		t.Errorf("the gateway's own identity was asked for %d times for 5 requests on a caller's behalf, want 0", n)
	}
}

// TestAnswersOutliveReadBuffers: answers are read into pooled buffers; every
// result a call returned must stay intact while later and concurrent calls
// reuse them.
func TestAnswersOutliveReadBuffers(t *testing.T) {
	t.Parallel()
	for _, jsonAnswers := range []bool{true, false} {
		t.Run(fmt.Sprint("json=", jsonAnswers), func(t *testing.T) {
			t.Parallel()
			u := startGoUpstream(t, true, jsonAnswers)
			c, _ := newTestConn(t, Options{URL: u.URL})
			const workers, calls = 8, 25
			got := make([][]jsontext.Value, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range calls {
						res, err := callTool(t.Context(), c, Caller{Key: "k"}, "add", fmt.Sprintf(`{"a":%d,"b":%d}`, w*1000, i), nil)
						if err != nil {
							t.Error(err)
							return
						}
						// Kept as returned (not copied), read only once
						// every call is done.
						got[w] = append(got[w], res)
					}
				})
			}
			wg.Wait()
			for w := range workers {
				for i, raw := range got[w] {
					if text, want := toolText(t, raw), fmt.Sprint(w*1000+i); text != want {
						t.Errorf("worker %d call %d: result %s, want text %s", w, i, raw, want)
					}
				}
			}
		})
	}
}
