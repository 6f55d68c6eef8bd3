package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// tlsChildEnv names the variable that makes the test binary, started by
// TestOpenTLSWithACLUser, act as a client of the URL it holds instead of
// running tests (see TestMain).
const tlsChildEnv = "REDISCONN_TEST_TLS_URL"

// TestOpenTLSWithACLUser: rediss:// with an ACL user and password reaches a
// server that speaks only TLS and refuses the default user, and verifies the
// server's certificate: against the system's roots alone (this process) it is
// refused, with the private CA added through SSL_CERT_FILE (a child process,
// since Go reads the system roots once per process) it works, and a wrong
// password is refused.
func TestOpenTLSWithACLUser(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "redis-test-ca")
	cert, key := ca.Issue(t, testenv.CertOptions{CommonName: "redis", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	const password = "pw with spaces & symbols"
	r := testenv.StartRedisWith(t, testenv.RedisOptions{
		TLS:  &testenv.RedisTLS{CertFile: cert, KeyFile: key, CAFile: ca.CertFile},
		User: "app", Password: password,
	})
	if !strings.HasPrefix(r.URL(), "rediss://app:") {
		t.Fatalf("URL %s: want rediss:// with the ACL user", r.URL())
	}

	c, err := Open(r.URL(), Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("PING trusting only the system's roots = %v; want a certificate error", err)
	}

	u, _ := url.Parse(r.URL())
	wrong := *u
	wrong.User = url.UserPassword("app", "not-the-password")
	for _, tc := range []struct {
		url, want string
	}{
		{r.URL(), "ok"},
		{wrong.String(), "WRONGPASS"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca.CertFile, tlsChildEnv+"="+tc.url)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("child with %s: %q; want %q", maskForTest(tc.url), out, tc.want)
		}
		if strings.Contains(string(out), password) {
			t.Errorf("child's output holds the password: %q", out)
		}
	}
}

// maskForTest hides a URL's password in test messages.
func maskForTest(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable>"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// tlsChild opens rawURL, sets and reads back a key and prints "ok", or the
// error.
func tlsChild(rawURL string) {
	c, err := Open(rawURL, Options{Timeout: 2 * time.Second})
	if err == nil {
		defer c.Close()
		ctx := context.Background()
		err = c.Set(ctx, "k", "v", time.Minute).Err()
		if err == nil {
			var v string
			if v, err = c.Get(ctx, "k").Result(); err == nil && v != "v" {
				err = errors.New("GET k = " + v)
			}
		}
	}
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("ok")
}

// TestTLSServerNamePerServer: with rediss:// on a Cluster or with Sentinel,
// no fixed name is set to verify certificates against, so crypto/tls checks
// each server under the host it dials (go-redis alone would check every
// node, and a Sentinel-named primary, against the URL's first host); a
// single node keeps its own host.
func TestTLSServerNamePerServer(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"rediss://app:pw@redis.example.com:6380/0":              "redis.example.com",
		"rediss://h1.example.com:7000?addr=h2.example.com:7001": "",
		"rediss://s1.example.com:26379?master_name=m":           "",
	} {
		c, err := Open(url, Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var cfg *tls.Config
		switch c := c.(type) {
		case *redis.Client:
			cfg = c.Options().TLSConfig
		case *redis.ClusterClient:
			cfg = c.Options().TLSConfig
		}
		c.Close()
		if cfg == nil {
			t.Errorf("%s: no TLS", url)
			continue
		}
		if cfg.ServerName != want {
			t.Errorf("%s: ServerName %q, want %q", url, cfg.ServerName, want)
		}
	}
}
