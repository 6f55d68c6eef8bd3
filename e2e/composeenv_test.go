package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// TestComposeEnvironmentServes runs the three binaries with exactly the
// environment docker-compose.yml gives their containers (empty pass-through values
// included), with only the addresses moved to free loopback ports: compose service
// names become 127.0.0.1 and published ports keep their localhost form. A token
// then travels the whole path: it is introspected by authz at devauth's internal
// URL while the issuer it expects is devauth's public one (the split that solves
// the issuer-URL problem in containers), and who_am_i fetches the user through the
// same internal URL. A variable naming a file the service mounts (devauth's
// DEVAUTH_CONFIG_FILE) is given the mounted file's path on the host; the
// gateway's upstreams file is rewritten the same way, with server-everything
// and the identity key made as the everything and identity-key services make
// them.
func TestComposeEnvironmentServes(t *testing.T) {
	slow(t)
	t.Parallel()
	p, err := loadProject(t, "", "")
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t)

	// addr maps "host:port" as compose writes it to where the process listens.
	addr := map[string]string{redis + ":6379": rdb.Addr}
	listen := map[string]map[string]string{} // service -> listen variable -> address
	for name := range ours {
		s := p.Services[name]
		listen[name] = map[string]string{}
		for k := range ours[name].listens {
			port, err := listenPort(s, k)
			if err != nil {
				t.Fatal(err)
			}
			a := testenv.FreeAddr(t)
			listen[name][k] = a
			addr[fmt.Sprintf("%s:%d", name, port)] = a
			for _, pub := range s.Ports {
				if int(pub.Target) == port {
					_, newPort, _ := net.SplitHostPort(a)
					addr["localhost:"+pub.Published] = "localhost:" + newPort
				}
			}
		}
	}
	environ := func(name string, extra ...string) []string {
		var out []string
		for k, v := range p.Services[name].Environment {
			val := ""
			if v != nil {
				val = *v
			}
			if a, ok := listen[name][k]; ok {
				val = a
			}
			for _, vol := range p.Services[name].Volumes {
				if vol.Type == "bind" && vol.Target == val {
					val = vol.Source
				}
			}
			out = append(out, k+"="+rewrite(val, addr))
		}
		return append(out, extra...)
	}
	dev := p.Services[devauth]
	devAddr := listen[devauth]["DEVAUTH_LISTEN"]
	// The test API (to mint a token) is off unless .env turns it on, as here.
	testenv.StartProcess(t, devauth, testenv.Binary(t, devauth), testenv.ProcessOptions{
		Env: environ(devauth, "DEVAUTH_TEST_API=true"), ReadyURL: "http://" + devAddr + "/healthz",
	})
	testenv.StartProcess(t, authz, testenv.Binary(t, authz), testenv.ProcessOptions{
		Env: environ(authz), ReadyURL: "http://" + listen[authz]["AUTHZ_METRICS_LISTEN"] + "/healthz",
	})
	// The example upstream: server-everything from e2e/ts's lockfile, as its
	// image runs it, and the identity key made by the identity-key service's
	// script; the gateway gets the mounted upstreams file with the stack's
	// names rewritten.
	ev := testenv.StartEverything(t)
	evPort, err := everythingPort(p)
	if err != nil {
		t.Fatal(err)
	}
	evURL, _ := url.Parse(ev.URL)
	addr[fmt.Sprintf("%s:%d", everything, evPort)] = evURL.Host
	keyFile := filepath.Join(t.TempDir(), "identity.pem")
	argv, err := identityKeyCommand(p, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("identity-key: %v\n%s", err, out)
	}
	upstreams, err := composeUpstreamsFile(p, addr, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	upstreamsFile := filepath.Join(t.TempDir(), "upstreams.yaml")
	if err := os.WriteFile(upstreamsFile, upstreams, 0o600); err != nil {
		t.Fatal(err)
	}

	gwAddr := listen[gateway]["MCP_LISTEN"]
	testenv.StartProcess(t, gateway, testenv.Binary(t, gateway), testenv.ProcessOptions{
		Env: environ(gateway, "UPSTREAMS_FILE="+upstreamsFile), ReadyURL: "http://" + gwAddr + "/healthz",
	})

	mcpServerURL := rewrite(env(p.Services[gateway], "MCP_SERVER_URL"), addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	mint, _ := json.Marshal(map[string]any{
		"email": seedusers.AliceEmail, "scopes": []string{"read:user_data"}, "resource": mcpServerURL + "/mcp",
	})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	post(ctx, t, "http://"+devAddr+"/dev/tokens", env(dev, "PROPELAUTH_API_KEY"), nil, mint, &tok)
	if tok.AccessToken == "" {
		t.Fatal("devauth minted no token")
	}

	call := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"who_am_i","arguments":{}}}`)
	hdr := http.Header{
		"Accept":               {"application/json, text/event-stream"},
		"Mcp-Protocol-Version": {"2025-11-25"},
	}
	raw := post(ctx, t, "http://"+gwAddr+"/mcp", tok.AccessToken, hdr, call, nil)
	if !bytes.Contains(raw, []byte(`"email":"alice@example.com"`)) {
		t.Errorf("who_am_i does not return alice's profile (user API through the internal URL):\n%s", raw)
	}
	if want := `"issuer":"` + rewrite(env(p.Services[authz], "AUTHORIZATION_SERVER"), addr) + `"`; !bytes.Contains(raw, []byte(want)) {
		t.Errorf("who_am_i does not report the public issuer (%s):\n%s", want, raw)
	}

	// The example upstream answers through the gateway, under its prefix,
	// signed with the key identity-key made.
	echo := mcpRequest(ctx, t, "http://"+gwAddr+"/mcp", tok.AccessToken, "tools/call", `{"name":"everything_echo","arguments":{"message":"from compose"}}`)
	if !bytes.Contains(echo, []byte("Echo: from compose")) {
		t.Errorf("everything_echo through the gateway: %s", echo)
	}
	code, jwks := get(t, "http://"+gwAddr+"/.well-known/jwks.json")
	if x := publicX(t, keyFile); code != http.StatusOK || !bytes.Contains(jwks, []byte(`"x":"`+x+`"`)) {
		t.Errorf("JWKS: %d %s, want the key identity-key made (x %s)", code, jwks, x)
	}
}

func rewrite(s string, addr map[string]string) string {
	for from, to := range addr {
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

// post sends body with a bearer token and fails the test unless the answer is 200;
// it decodes JSON into out when out is not nil and returns the raw body.
func post(ctx context.Context, t *testing.T, url, bearer string, hdr http.Header, body []byte, out any) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s (WWW-Authenticate %q)\n%s", url, resp.Status, resp.Header.Get("WWW-Authenticate"), raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: decoding %q: %v", url, raw, err)
		}
	}
	return raw
}

// publicX returns the base64url x coordinate of the EC P-256 private key in
// the PKCS #8 PEM file, as a JWK writes it.
func publicX(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("%s: not a PKCS #8 PEM key", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("%s: %T, want an EC P-256 key", file, k)
	}
	pub, err := ec.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	// Uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
	return base64.RawURLEncoding.EncodeToString(pub.Bytes()[1:33])
}
