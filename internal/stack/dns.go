package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a tiny authoritative DNS server on a loopback UDP port that answers
// every A query with a fixed list of addresses. It lets the gateway reach two
// authz replicas through one gRPC target, the way it reaches replicas in
// production: "dns://127.0.0.1:PORT/authz.mcpload.test:50051" makes gRPC's DNS
// resolver ask this server, get both replicas' addresses and balance
// round-robin over them. (gRPC targets carry no list of ports, so the
// replicas listen on the same port on 127.0.0.1 and 127.0.0.2.)
//
// AAAA, TXT (gRPC's service-config lookup) and every other type get an empty
// NOERROR answer, which resolvers treat as "no such record".
type DNS struct {
	// Addr is the server's host:port.
	Addr string

	conn  net.PacketConn
	addrs []netip.Addr
	done  chan struct{}
}

// StartDNS serves A records for addrs (IPv4) until Close.
func StartDNS(addrs ...netip.Addr) (*DNS, error) {
	for _, a := range addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("stack.StartDNS: %v is not IPv4", a)
		}
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for DNS: %w", err)
	}
	d := &DNS{Addr: conn.LocalAddr().String(), conn: conn, addrs: addrs, done: make(chan struct{})}
	go d.serve()
	return d, nil
}

// Target returns a gRPC target naming host:port through this server.
func (d *DNS) Target(host string, port int) string {
	return fmt.Sprintf("dns://%s/%s:%d", d.Addr, host, port)
}

// Close stops the server.
func (d *DNS) Close() error {
	err := d.conn.Close()
	<-d.done
	return err
}

func (d *DNS) serve() {
	defer close(d.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if out, err := d.answer(buf[:n]); err == nil {
			_, _ = d.conn.WriteTo(out, from)
		}
	}
}

// answer builds the reply to one query message.
func (d *DNS) answer(q []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired,
		RCode: dnsmessage.RCodeSuccess,
	})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, qu := range questions {
		if err := b.Question(qu); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, qu := range questions {
		if qu.Type != dnsmessage.TypeA || qu.Class != dnsmessage.ClassINET {
			continue
		}
		for _, a := range d.addrs {
			rh := dnsmessage.ResourceHeader{Name: qu.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 30}
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// lookup resolves host through the server, for tests and for checking the
// server before handing its target to the gateway.
func (d *DNS) lookup(ctx context.Context, host string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, d.Addr)
	}}
	return r.LookupHost(ctx, host)
}
