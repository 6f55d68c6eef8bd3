// Package devauth is a client of devauth's test API (/dev/*, enabled with
// DEVAUTH_TEST_API=true): it mints access tokens without a browser, reads the
// counters of introspections and user fetches the load causes, and makes the
// authorization server slow, as a remote PropelAuth is.
//
// The endpoints are those of services/devauth/internal/testapi.
package devauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Client calls one devauth's test API.
type Client struct {
	// BaseURL is devauth's base URL, e.g. http://127.0.0.1:9000.
	BaseURL string
	// APIKey is devauth's PROPELAUTH_API_KEY.
	APIKey string
	// HTTP is the client used; a client with a 10s timeout when nil.
	HTTP *http.Client
}

// Stats are devauth's counters since start or the last reset.
type Stats struct {
	Introspections int64 `json:"introspections"`
	UserFetches    int64 `json:"user_fetches"`
	TokensIssued   int64 `json:"tokens_issued"`
}

// Sub returns s - o, the counts between two snapshots.
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		Introspections: s.Introspections - o.Introspections,
		UserFetches:    s.UserFetches - o.UserFetches,
		TokensIssued:   s.TokensIssued - o.TokensIssued,
	}
}

// TokenRequest is the body of POST /dev/tokens.
type TokenRequest struct {
	UserID    string   `json:"user_id,omitempty"`
	Email     string   `json:"email,omitempty"`
	Scopes    []string `json:"scopes"`
	Resource  string   `json:"resource"`
	ClientID  string   `json:"client_id,omitempty"`
	ExpiresIn *int64   `json:"expires_in,omitempty"`
}

var defaultHTTP = &http.Client{Timeout: 10 * time.Second}

func (c *Client) do(ctx context.Context, method, path string, body any, out any, want int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// Stats reads the counters. It returns an error if devauth does not answer 200
// with the documented JSON.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	if err := c.do(ctx, http.MethodGet, "/dev/stats", nil, &s, http.StatusOK); err != nil {
		return Stats{}, fmt.Errorf("reading devauth stats: %w", err)
	}
	return s, nil
}

// ResetStats zeroes the counters. It returns an error unless devauth answers 204.
func (c *Client) ResetStats(ctx context.Context) error {
	if err := c.do(ctx, http.MethodPost, "/dev/stats/reset", nil, nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("resetting devauth stats: %w", err)
	}
	return nil
}

// SetLatency makes devauth answer introspection and user fetches normally
// after delay (mode "ok"). It returns an error unless devauth answers 204.
func (c *Client) SetLatency(ctx context.Context, delay time.Duration) error {
	body := map[string]any{"mode": "ok", "latency_ms": delay.Milliseconds()}
	if err := c.do(ctx, http.MethodPost, "/dev/faults", body, nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("setting devauth latency: %w", err)
	}
	return nil
}

// Mint mints one access token. It returns an error unless devauth answers 200
// with a token.
func (c *Client) Mint(ctx context.Context, tr TokenRequest) (string, error) {
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.do(ctx, http.MethodPost, "/dev/tokens", tr, &out, http.StatusOK); err != nil {
		return "", fmt.Errorf("minting token: %w", err)
	}
	if out.AccessToken == "" {
		return "", errors.New("minting token: empty access_token")
	}
	return out.AccessToken, nil
}

// MintMany mints n tokens with parallel requests, the i-th from req(i). It
// returns the first error any mint returned.
func (c *Client) MintMany(ctx context.Context, n, parallel int, req func(i int) TokenRequest) ([]string, error) {
	out := make([]string, n)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(parallel, 1) {
		wg.Go(func() {
			for i := range next {
				tok, err := c.Mint(ctx, req(i))
				if err != nil {
					cancel(err)
					continue
				}
				out[i] = tok
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}
