package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
)

func TestCAIssue(t *testing.T) {
	t.Parallel()
	ca := NewCA(t, "test-ca")
	other := NewCA(t, "other-ca")
	certFile, keyFile := ca.Issue(t, CertOptions{CommonName: "authz", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	clientCert, clientKey := ca.Issue(t, CertOptions{CommonName: "gateway", URIs: []string{"spiffe://mcpauthz/gateway"}, Client: true})

	pool := func(c *CA) *x509.CertPool {
		b, err := os.ReadFile(c.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			t.Fatal("CA file holds no certificate")
		}
		return p
	}
	leaf := func(certFile, keyFile string) *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Leaf
	}
	srv := leaf(certFile, keyFile)
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(ca), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("server certificate does not verify for 127.0.0.1: %v", err)
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(other), DNSName: "localhost"}); err == nil {
		t.Error("server certificate verifies against another CA")
	}
	cl := leaf(clientCert, clientKey)
	if _, err := cl.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify for client auth: %v", err)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client-only certificate verifies for server auth")
	}
	if len(cl.URIs) != 1 || cl.URIs[0].String() != "spiffe://mcpauthz/gateway" || cl.Subject.CommonName != "gateway" {
		t.Errorf("client certificate names: CN %q, URIs %v", cl.Subject.CommonName, cl.URIs)
	}
}
