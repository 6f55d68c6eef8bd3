package faults

import (
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Mode{"": OK, "ok": OK, "error500": Error500, "garbage": Garbage, "hang": Hang, "down": Down} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"OK", "error", "500", " hang"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
}

func TestSet(t *testing.T) {
	t.Parallel()
	in := New()
	if m, d := in.Current(); m != OK || d != 0 {
		t.Errorf("initial = %q %v", m, d)
	}
	if err := in.Set(Hang, time.Second); err != nil {
		t.Fatal(err)
	}
	if m, d := in.Current(); m != Hang || d != time.Second {
		t.Errorf("after Set = %q %v", m, d)
	}
	for _, d := range []time.Duration{-1, MaxLatency + 1} {
		if err := in.Set(OK, d); err == nil {
			t.Errorf("Set latency %v accepted", d)
		}
	}
	in.Close()
	in.Close() // idempotent
}
