package floor

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestStart: the floor process runs with the GOGC it is given, serves
// /healthz where MCPURL says, and is gone after Stop.
func TestStart(t *testing.T) {
	t.Parallel()
	fl, err := Start(t.Context(), Options{GOGC: "400", LogFile: filepath.Join(t.TempDir(), "floors.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.Stop)
	env, err := os.ReadFile("/proc/" + strconv.Itoa(fl.Pid()) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(append([]byte{0}, env...), []byte("\x00GOGC=400\x00")) {
		t.Errorf("the floor's environment lacks GOGC=400: %q", env)
	}
	res, err := http.Get(strings.TrimSuffix(fl.MCPURL, "/mcp") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", res.Status)
	}
	if fl.GRPCAddr == "" || fl.PprofAddr != "" {
		t.Errorf("GRPCAddr %q, PprofAddr %q; want an address and none", fl.GRPCAddr, fl.PprofAddr)
	}
	fl.Stop()
	if _, err := http.Get(strings.TrimSuffix(fl.MCPURL, "/mcp") + "/healthz"); err == nil {
		t.Error("the floor still answers after Stop")
	}
}

// TestStartMissingBinary: a binary that is not there fails at once, naming it.
func TestStartMissingBinary(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "mcp-floor")
	_, err := Start(t.Context(), Options{Bin: bin})
	if err == nil || !strings.Contains(err.Error(), bin) {
		t.Errorf("Start with a missing binary: %v, want an error naming %s", err, bin)
	}
}
