// Package healthprobe is the client side of the services' `-healthcheck URL` flag.
// The container images have no shell, curl or wget, so a container healthcheck runs
// the service binary itself in probe mode.
package healthprobe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Timeout bounds one probe, well under a compose healthcheck's default timeout.
const Timeout = 3 * time.Second

// Probe GETs url and returns nil if it answers 200 within [Timeout]. Any other
// status, a transport error or a timeout is returned as an error saying which.
func Probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, res.Status)
	}
	return nil
}
