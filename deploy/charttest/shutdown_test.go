package charttest

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// shutdownSeconds is how long each service may take after SIGTERM, read from
// its source so that the chart's grace periods are checked against the
// service as it is: the gateway drains requests for drainTimeout, then its
// operational listener for opsDrainTimeout; authz gives in-flight RPCs
// ShutdownTimeout (its default), then its HTTP server a second.
func shutdownSeconds(t *testing.T) map[string]int64 {
	t.Helper()
	gateway := readSource(t, "../../services/mcp-gateway/cmd/mcp-gateway/main.go")
	authz := readSource(t, "../../services/authz/internal/app/app.go")
	return map[string]int64{
		"gateway": seconds(t, gateway, `(?m)^const drainTimeout = (.+)$`) +
			seconds(t, gateway, `(?m)^const opsDrainTimeout = (.+)$`),
		"authz": seconds(t, authz, `(?m)^\t\to\.ShutdownTimeout = (.+)$`) +
			seconds(t, authz, `ctx, cancel := context\.WithTimeout\(context\.Background\(\), (.+)\)\n\tdefer cancel\(\)\n\t_ = a\.http\.Shutdown`),
	}
}

func readSource(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seconds reads the duration pattern's group captures, written as
// "time.Second" or "N * time.Second".
func seconds(t *testing.T, src, pattern string) int64 {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(src)
	if m == nil {
		t.Fatalf("the service's shutdown no longer matches %q: teach shutdownSeconds where its timeout is", pattern)
	}
	n, ok := strings.CutSuffix(strings.TrimSpace(m[1]), "time.Second")
	if !ok {
		t.Fatalf("shutdown timeout %q is not N * time.Second: teach shutdownSeconds to read it", m[1])
	}
	n = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(n), "*"))
	if n == "" {
		return 1
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		t.Fatalf("shutdown timeout %q: %v", m[1], err)
	}
	return v
}
