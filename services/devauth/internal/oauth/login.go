package oauth

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/throttle"
)

// LoginLimits throttle sign-in. After Account failed attempts for one
// account, or Address failed attempts from one client address, within
// Window, further attempts for that account or from that address are
// refused until the window ends, whatever the password. The seeded accounts'
// passwords are public, so this is less about guessing them than about
// devauth not being a free password-guessing oracle for a users file.
type LoginLimits struct {
	Account, Address int
	Window           time.Duration
}

// DefaultLoginLimits leave room for typing mistakes.
var DefaultLoginLimits = LoginLimits{Account: 10, Address: 30, Window: 10 * time.Minute}

// maxThrottledAddresses bounds the per-address failure table; accounts are
// bounded by the user directory.
const maxThrottledAddresses = 10_000

func (l LoginLimits) withDefaults() LoginLimits {
	if l.Account <= 0 {
		l.Account = DefaultLoginLimits.Account
	}
	if l.Address <= 0 {
		l.Address = DefaultLoginLimits.Address
	}
	if l.Window <= 0 {
		l.Window = DefaultLoginLimits.Window
	}
	return l
}

// loginThrottle holds the failure counts of sign-in attempts.
type loginThrottle struct {
	byAccount *throttle.Limiter
	byAddress *throttle.Limiter
}

func newLoginThrottle(l LoginLimits, accounts int, now func() time.Time) *loginThrottle {
	l = l.withDefaults()
	return &loginThrottle{
		byAccount: throttle.New(l.Account, l.Window, accounts+1, now),
		byAddress: throttle.New(l.Address, l.Window, maxThrottledAddresses, now),
	}
}

// blocked reports whether an attempt for account (a user id, "" when the
// email is unknown) from addr must be refused, and the message that says why.
func (t *loginThrottle) blocked(account, addr string) (time.Duration, string, bool) {
	if account != "" {
		if wait, ok := t.byAccount.Blocked(account); ok {
			return wait, "Too many failed sign-in attempts for this account. Try again in " + minutes(wait) + ".", true
		}
	}
	if wait, ok := t.byAddress.Blocked(addr); ok {
		return wait, "Too many failed sign-in attempts from your network address. Try again in " + minutes(wait) + ".", true
	}
	return 0, "", false
}

func (t *loginThrottle) failed(account, addr string) {
	if account != "" {
		t.byAccount.Fail(account)
	}
	t.byAddress.Fail(addr)
}

// succeeded clears the account's failures. The address's stay: a valid
// (public, seeded) login interleaved with guesses must not reset them.
func (t *loginThrottle) succeeded(account string) { t.byAccount.Reset(account) }

func minutes(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	if m <= 1 {
		return "a minute"
	}
	return fmt.Sprintf("%d minutes", m)
}

// retryAfter is d in whole seconds, rounded up, for a Retry-After header.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// clientAddress names the client for throttling: its IP address, or for
// IPv6 its /64, which one host or network typically holds whole. devauth
// does not sit behind a proxy it could trust for X-Forwarded-For.
func clientAddress(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.String()
	}
	return a.String()
}
