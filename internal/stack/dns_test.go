package stack

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDNSAnswersA(t *testing.T) {
	t.Parallel()
	d, err := StartDNS(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	got, err := d.lookup(t.Context(), "authz.stack.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"127.0.0.1", "127.0.0.2"}, got); diff != "" {
		t.Errorf("LookupHost (-want +got):\n%s", diff)
	}
	if _, err := d.lookup(t.Context(), "\x00bad"); err == nil {
		t.Error("lookup of an invalid name succeeded")
	}
	if _, err := StartDNS(netip.MustParseAddr("::1")); err == nil {
		t.Error("StartDNS accepted an IPv6 address")
	}
}
