package scenario

import (
	"strings"
	"testing"
)

func TestSumCounter(t *testing.T) {
	t.Parallel()
	text := `# HELP authz_grpc_requests_total gRPC requests by method and status code.
# TYPE authz_grpc_requests_total counter
authz_grpc_requests_total{code="OK",method="/authz.v1.AuthzService/Authorize"} 1200
authz_grpc_requests_total{code="NotFound",method="/authz.v1.AuthzService/GetUser"} 3
authz_grpc_requests_total{code="OK",method="/grpc.health.v1.Health/Check"} 50
authz_grpc_requests_total_other{method="/authz.v1.AuthzService/Authorize"} 7
authz_grpc_requests_total{code="OK",method="/authz.v1.AuthzService/GetUser"} 2.5e+01 1700000000000
`
	got, err := sumCounter(strings.NewReader(text), "authz_grpc_requests_total", `method="/authz.v1.`)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1228 {
		t.Errorf("sum = %v, want 1228 (Authorize and GetUser, not health, not other metrics)", got)
	}
	if _, err := sumCounter(strings.NewReader(`authz_grpc_requests_total{method="/authz.v1.X"} nope`), "authz_grpc_requests_total", "/authz.v1."); err == nil {
		t.Error("a malformed value was accepted")
	}
}
