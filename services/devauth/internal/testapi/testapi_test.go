package testapi

import (
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/faults"
)

func TestParseFaultRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body    string
		mode    faults.Mode
		latency time.Duration
		ok      bool
	}{
		{`{"mode":"ok"}`, faults.OK, 0, true},
		{`{}`, faults.OK, 0, true},
		{`{"latency_ms":30}`, faults.OK, 30 * time.Millisecond, true},
		{`{"mode":"hang","latency_ms":5}`, faults.Hang, 5 * time.Millisecond, true},
		{`{"mode":"down"}`, faults.Down, 0, true},
		{`{"mode":"garbage"}`, faults.Garbage, 0, true},
		{`{"mode":"error500"}`, faults.Error500, 0, true},
		{`{"mode":"OK"}`, "", 0, false},
		{`{"mode":"ok","extra":1}`, "", 0, false},
		{`{"mode":"ok","latency_ms":1.5}`, "", 0, false},
		{`{"mode":"ok","latency_ms":-5}`, "", 0, false},
		{``, "", 0, false},
	}
	for _, tt := range tests {
		m, d, err := ParseFaultRequest([]byte(tt.body))
		if (err == nil) != tt.ok || m != tt.mode || d != tt.latency {
			t.Errorf("ParseFaultRequest(%s) = %q %v %v, want %q %v ok=%v", tt.body, m, d, err, tt.mode, tt.latency, tt.ok)
		}
	}
}

func FuzzParseTokenRequest(f *testing.F) {
	f.Add([]byte(`{"user_id":"u","scopes":["read:user_data"],"resource":"http://127.0.0.1:8000/mcp","client_id":"c","expires_in":0}`))
	f.Add([]byte(`{"email":"alice@example.com","expires_in":-1}`))
	f.Add([]byte(`{"scopes":["a b"]}`))
	f.Add([]byte(`{"user_id":"u","resource":"/x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseTokenRequest(body)
		if err != nil {
			return
		}
		if req.UserID == "" && req.Email == "" {
			t.Fatal("accepted a request naming no user")
		}
	})
}

func FuzzParseFaultRequest(f *testing.F) {
	f.Add([]byte(`{"mode":"hang","latency_ms":30}`))
	f.Add([]byte(`{"mode":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, d, err := ParseFaultRequest(body)
		if err != nil {
			return
		}
		if _, perr := faults.ParseMode(string(m)); perr != nil || d < 0 || d > faults.MaxLatency {
			t.Fatalf("accepted mode %q latency %v", m, d)
		}
	})
}
