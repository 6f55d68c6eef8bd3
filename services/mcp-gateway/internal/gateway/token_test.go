package gateway

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		url       string
		auth      []string
		token     string
		hasBearer bool
		wantErr   bool
	}{
		{name: "none", url: "/mcp"},
		{name: "bearer", url: "/mcp", auth: []string{"Bearer abc.DEF-123_~+/="}, token: "abc.DEF-123_~+/=", hasBearer: true},
		{name: "lowercase scheme", url: "/mcp", auth: []string{"bearer abc"}, token: "abc", hasBearer: true},
		{name: "extra spaces", url: "/mcp", auth: []string{"Bearer   abc"}, token: "abc", hasBearer: true},
		{name: "empty bearer", url: "/mcp", auth: []string{"Bearer"}, token: "", hasBearer: true},
		{name: "basic", url: "/mcp", auth: []string{"Basic YTpi"}},
		{name: "dpop", url: "/mcp", auth: []string{"DPoP abc"}},
		{name: "query", url: "/mcp?access_token=abc", wantErr: true},
		{name: "query and header", url: "/mcp?access_token=abc", auth: []string{"Bearer abc"}, wantErr: true},
		{name: "two headers", url: "/mcp", auth: []string{"Bearer a", "Bearer b"}, wantErr: true},
		{name: "other query", url: "/mcp?x=1", auth: []string{"Bearer a"}, token: "a", hasBearer: true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, tt.url, nil)
		for _, a := range tt.auth {
			r.Header.Add("Authorization", a)
		}
		token, has, err := bearerToken(r)
		if token != tt.token || has != tt.hasBearer || (err != nil) != tt.wantErr {
			t.Errorf("%s: bearerToken = %q, %v, %v; want %q, %v, err %v", tt.name, token, has, err, tt.token, tt.hasBearer, tt.wantErr)
		}
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()
	valid := []string{"a", "abc.DEF-123_~+/", "abc==", "x" + strings.Repeat("y", maxTokenLen-1)}
	invalid := []string{"", "=", "=abc", "a=b", "a b", "a\"b", "é", "a\x00", strings.Repeat("y", maxTokenLen+1)}
	for _, s := range valid {
		if !validToken(s) {
			t.Errorf("validToken(%.20q) = false", s)
		}
	}
	for _, s := range invalid {
		if validToken(s) {
			t.Errorf("validToken(%.20q) = true", s)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"127.0.0.1:8000": true, "localhost": true, "LOCALHOST:1": true, "[::1]:8000": true, "::1": true, "127.1.2.3": true,
		"example.com": false, "10.0.0.1:80": false, "[2001:db8::1]:443": false, "": false,
	} {
		if got := isLoopback(in); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestLocalLoopback checks localLoopback against isLoopback of the address
// as a string, what it stands for.
func TestLocalLoopback(t *testing.T) {
	t.Parallel()
	for _, la := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000},
		&net.TCPAddr{IP: net.IP{127, 1, 2, 3}, Port: 1},
		&net.TCPAddr{IP: net.IPv6loopback, Port: 8000},
		&net.TCPAddr{IP: net.IPv6loopback, Port: 8000, Zone: "lo"},
		&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 8000},
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 80},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 443, Zone: "eth0"},
		&net.TCPAddr{Port: 80},
		&net.UnixAddr{Name: "/tmp/gw.sock", Net: "unix"},
	} {
		if got, want := localLoopback(la), isLoopback(la.String()); got != want {
			t.Errorf("localLoopback(%v) = %v, isLoopback(%q) = %v", la, got, la.String(), want)
		}
	}
}

func TestValidHeaderList(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"authorization, content-type": true, "Mcp-Param-Region": true,
		"": false, "a,,b": false, "a b": false, "a\r\nX-Injected: 1": false,
	} {
		if got := validHeaderList(in); got != want {
			t.Errorf("validHeaderList(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestHostname(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"mcp.example.com": "mcp.example.com", "mcp.example.com:443": "mcp.example.com",
		"127.0.0.1:8000": "127.0.0.1", "[::1]:8000": "::1", "[::1]": "::1",
	} {
		if got := hostname(in); got != want {
			t.Errorf("hostname(%q) = %q, want %q", in, got, want)
		}
	}
}
