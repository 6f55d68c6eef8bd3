package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
)

// TestNoSecretsInRedisLogsOrMetrics runs real traffic through authz and a
// gateway sharing one Redis (Authorize with users and orgs, denials of every
// kind, GetUser, InvalidateToken, rate limiting), everything logging at debug
// level, and then checks:
//
//   - Redis: every key and every value (whatever its type) holds no access token
//     and no secret, neither raw nor base64- nor hex-encoded;
//   - the logs and /metrics of authz and the gateway hold none either, nor any
//     personal data beyond the subject (emails, names).
func TestNoSecretsInRedisLogsOrMetrics(t *testing.T) {
	t.Parallel()
	rd := testenv.StartRedis(t)
	az := stacktest.NewAuthz(t, stack.Devauth, rd.URL(), "LOG_LEVEL=debug")
	g := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, map[string]string{
		"REDIS_URL": rd.URL(), "RATE_LIMIT": "5/m", "LOG_LEVEL": "debug",
	})
	mintAs := func(email string, scopes []string, resource string, expiresIn *int64) string {
		return stack.Devauth.Mint(t, stacktest.MintRequest{Email: email, Scopes: scopes, Resource: resource, ExpiresIn: expiresIn})
	}
	expired := int64(-60)
	tokens := map[string]string{
		"alice":          mintAs(stacktest.AliceEmail, []string{scopeUser, scopeOrg}, g.MCP(), nil),
		"alice user":     mintAs(stacktest.AliceEmail, []string{scopeUser}, g.MCP(), nil),
		"bob":            mintAs(stacktest.BobEmail, []string{scopeUser}, g.MCP(), nil),
		"expired":        mintAs(stacktest.AliceEmail, []string{scopeUser}, g.MCP(), &expired),
		"wrong audience": mintAs(stacktest.AliceEmail, []string{scopeUser}, "http://elsewhere.example/mcp", nil),
		"unknown":        "unknown-token-" + strings.Repeat("x", 30),
	}

	// Traffic through the gateway.
	callTool(t, g.MCP(), tokens["alice"], "who_am_i", nil)
	callTool(t, g.MCP(), tokens["alice"], "list_my_orgs", nil)
	callTool(t, g.MCP(), tokens["bob"], "who_am_i", nil)
	for name, want := range map[string]int{"alice user": http.StatusForbidden, "expired": http.StatusUnauthorized, "wrong audience": http.StatusUnauthorized, "unknown": http.StatusUnauthorized} {
		body := callBody("who_am_i")
		if name == "alice user" {
			body = callBody("list_my_orgs")
		}
		res := post(t, g.MCP(), tokens[name], body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s token: %d, want %d", name, res.StatusCode, want)
		}
	}

	// Traffic straight to authz: GetUser and InvalidateToken.
	conn, err := grpc.NewClient(az.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authzv1.NewAuthzServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, id := range []string{stacktest.AliceID, stacktest.BobID} {
		if _, err := client.GetUser(ctx, &authzv1.GetUserRequest{UserId: id, IncludeOrgs: true}); err != nil {
			t.Fatalf("GetUser(%s): %v", id, err)
		}
	}
	if _, err := client.InvalidateToken(ctx, &authzv1.InvalidateTokenRequest{Token: tokens["alice"]}); err != nil {
		t.Fatalf("InvalidateToken: %v", err)
	}
	callTool(t, g.MCP(), tokens["alice"], "who_am_i", nil)

	// Rate limiting: bob spends his budget of 5.
	limited := false
	for range 6 {
		res := post(t, g.MCP(), tokens["bob"], listBody())
		res.Body.Close()
		limited = limited || res.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Error("bob was never rate limited; the scan would miss the limiter's keys")
	}

	secrets := map[string]string{
		"introspection client secret": stacktest.ClientSecret,
		"API key":                     stacktest.APIKey,
		"HTTP Basic credentials":      stacktest.ClientID + ":" + stacktest.ClientSecret,
	}
	for name, tok := range tokens {
		secrets["token "+name] = tok
	}
	forbidden := encodings(secrets)

	// Redis.
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rdb.Close()
	dump, kinds := dumpRedis(t, ctx, rdb)
	if kinds["rate:"] == 0 {
		t.Errorf("Redis has no rate limiter keys after the traffic: %v", kinds)
	}
	if kinds["total"] < 6 {
		t.Errorf("Redis holds only %d keys after the traffic (%v); is the shared tier in use?", kinds["total"], kinds)
	}
	checkAbsent(t, "Redis", dump, forbidden)

	// Logs and metrics, which must not hold personal data beyond the subject
	// either.
	personal := map[string]string{
		"alice's email": stacktest.AliceEmail, "bob's email": stacktest.BobEmail,
		"alice's last name": "Liddell", "bob's last name": "Builder",
	}
	for k, v := range personal {
		forbidden[k] = v
	}
	authzMetrics := fetch(t, az.MetricsURL+"/metrics")
	gwMetrics := fetch(t, g.MetricsURL+"/metrics")
	for what, text := range map[string]string{
		"authz log": az.Proc.Output(), "gateway log": g.Logs(),
		"authz /metrics": authzMetrics, "gateway /metrics": gwMetrics,
	} {
		checkAbsent(t, what, text, forbidden)
	}
	// The go-sdk logs three lines per stateless request at INFO; the gateway
	// demotes them to DEBUG, out of a log at the default level.
	if strings.Contains(g.Logs(), `"level":"INFO","msg":"server session connected"`) {
		t.Error(`gateway log holds the go-sdk's per-request "server session connected" at INFO`)
	}
	// The checks above are only as good as what was captured.
	for what, want := range map[string][2]string{
		"authz log":        {az.Proc.Output(), `"msg":"authorize"`},
		"gateway log":      {g.Logs(), `"token_ref"`},
		"authz /metrics":   {authzMetrics, `authz_user_fetches_total{result="ok"}`},
		"gateway /metrics": {gwMetrics, `mcp_gateway_rate_limit_decisions_total{decision="limited",store="redis"}`},
	} {
		if !strings.Contains(want[0], want[1]) {
			t.Errorf("%s lacks %s: the capture is incomplete", what, want[1])
		}
	}
}

// encodings returns every secret raw, hex-encoded and base64-encoded (standard
// and URL alphabets, padded or not, and at each of the three alignments a
// secret can have inside a longer encoded value).
func encodings(secrets map[string]string) map[string]string {
	out := map[string]string{}
	for name, s := range secrets {
		out[name] = s
		out[name+" (hex)"] = hex.EncodeToString([]byte(s))
		out[name+" (HEX)"] = strings.ToUpper(hex.EncodeToString([]byte(s)))
		for _, enc := range []struct {
			name string
			e    *base64.Encoding
		}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
			out[fmt.Sprintf("%s (%s)", name, enc.name)] = strings.TrimRight(enc.e.EncodeToString([]byte(s)), "=")
			for off := 1; off <= 2; off++ {
				// Encoded after off other bytes: the first and last four
				// characters depend on the neighbours; the rest does not.
				e := enc.e.EncodeToString(append(make([]byte, off), s...))
				e = strings.TrimRight(e, "=")
				if len(e) > 16 {
					out[fmt.Sprintf("%s (%s at offset %d)", name, enc.name, off)] = e[4 : len(e)-4]
				}
			}
		}
	}
	return out
}

func checkAbsent(t *testing.T, where, text string, forbidden map[string]string) {
	t.Helper()
	for name, s := range forbidden {
		if strings.Contains(text, s) {
			t.Errorf("%s contains %s (%.10s...)", where, name, s)
		}
	}
}

// dumpRedis renders every key and value of the database as text, and counts
// the keys by prefix (up to the first ':') and in total.
func dumpRedis(t *testing.T, ctx context.Context, rdb *redis.Client) (string, map[string]int) {
	t.Helper()
	var b strings.Builder
	kinds := map[string]int{}
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		kinds["total"]++
		if i := strings.IndexByte(key, ':'); i >= 0 {
			kinds[key[:i+1]]++
		}
		typ, err := rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var val any
		switch typ {
		case "string":
			val, err = rdb.Get(ctx, key).Result()
		case "hash":
			val, err = rdb.HGetAll(ctx, key).Result()
		case "list":
			val, err = rdb.LRange(ctx, key, 0, -1).Result()
		case "set":
			val, err = rdb.SMembers(ctx, key).Result()
		case "zset":
			val, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "stream":
			val, err = rdb.XRange(ctx, key, "-", "+").Result()
		case "none":
			continue // expired since the scan
		default:
			t.Errorf("key %q has type %s, which this scan cannot read", key, typ)
			continue
		}
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %v\n", key, typ, val)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String(), kinds
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, res.StatusCode, err)
	}
	return string(b)
}
