package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// AuthzCalls sums authz_grpc_requests_total over every authz.v1 method (not
// health checks) from one replica's /metrics: the calls that replica has
// served so far.
func AuthzCalls(ctx context.Context, metricsURL string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading authz metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("reading authz metrics: status %d", resp.StatusCode)
	}
	return sumCounter(resp.Body, "authz_grpc_requests_total", `method="/authz.v1.`)
}

// sumCounter adds up the samples of metric, in the Prometheus text format,
// whose labels contain labelPart.
func sumCounter(r io.Reader, metric, labelPart string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, labelPart) {
			continue
		}
		value, _, _ = strings.Cut(value, " ") // drop a timestamp
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
