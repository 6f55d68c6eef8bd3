package oauth

import "testing"

// TestDialControl: a metadata fetch connects only to public unicast
// addresses; loopback only when allowed.
func TestDialControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr         string
		ok, loopback bool // allowed without, and with, allowLoopback
	}{
		{"93.184.215.14:443", true, true},
		{"[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:443", true, true},
		{"8.8.8.8:443", true, true},
		{"127.0.0.1:443", false, true},
		{"127.9.9.9:80", false, true},
		{"[::1]:443", false, true},
		{"[::ffff:127.0.0.1]:443", false, true},
		{"10.0.0.1:443", false, false},
		{"172.16.0.1:443", false, false},
		{"172.31.255.255:443", false, false},
		{"192.168.1.1:443", false, false},
		{"[::ffff:192.168.1.1]:443", false, false},
		{"100.64.0.1:443", false, false},
		{"100.127.255.254:443", false, false},
		{"169.254.169.254:80", false, false},
		{"0.0.0.0:443", false, false},
		{"0.1.2.3:443", false, false},
		{"224.0.0.1:443", false, false},
		{"255.255.255.255:443", false, false},
		{"240.0.0.1:443", false, false},
		{"192.0.0.8:443", false, false},
		{"198.18.0.1:443", false, false},
		{"[::]:443", false, false},
		{"[fc00::1]:443", false, false},
		{"[fd12:3456::1]:443", false, false},
		{"[fe80::1]:443", false, false},
		{"[fe80::1%eth0]:443", false, false},
		{"[ff02::1]:443", false, false},
		{"[64:ff9b::a00:1]:443", false, false}, // NAT64 of 10.0.0.1
		{"[2002:a00:1::1]:443", false, false},  // 6to4 of 10.0.0.1
		{"[2001:db8::1]:443", false, false},
		{"example.com:443", false, false},
	}
	for _, tt := range tests {
		for _, allowLoopback := range []bool{false, true} {
			want := tt.ok
			if allowLoopback {
				want = tt.loopback
			}
			err := dialControl(allowLoopback)("tcp", tt.addr, nil)
			if (err == nil) != want {
				t.Errorf("dial %s (allowLoopback %v): err %v, want allowed=%v", tt.addr, allowLoopback, err, want)
			}
		}
	}
}
