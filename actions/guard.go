package actions

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxRedirects is how many redirects a step follows; every hop is dialled
// through the guard again.
const maxRedirects = 5

// RefusedError is returned when a step would connect to an address the
// outbound guard forbids. It is never retried: the address will not change
// its nature by waiting.
type RefusedError struct {
	Host   string     // the host as written, when it differs from Addr
	Addr   netip.Addr // the address that would have been dialled
	Reason string     // "loopback address", "private address", ...
}

func (e *RefusedError) Error() string {
	addr := e.Addr.String()
	if e.Host != "" && e.Host != addr {
		addr = e.Host + " (" + addr + ")"
	}
	return fmt.Sprintf("refused to connect to %s: %s (set allow_private on the connection to allow)", addr, e.Reason)
}

var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	broadcast  = netip.MustParseAddr("255.255.255.255")
	metadataV4 = netip.MustParseAddr("169.254.169.254")
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
	// Not routed on the public internet: IETF protocol assignments,
	// benchmarking networks, and the old class E (reserved) range.
	reservedV4 = []netip.Prefix{
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("240.0.0.0/4"),
	}
	// IPv6 prefixes that carry an IPv4 address a gateway may deliver to:
	// NAT64 (the last 32 bits), 6to4 (bits 16-48), and the deprecated
	// IPv4-compatible form (::a.b.c.d).
	nat64    = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4   = netip.MustParsePrefix("2002::/16")
	v4Compat = netip.MustParsePrefix("::/96")
)

// forbidden returns why a is not a public unicast address, or "" if it is.
// IPv4-mapped IPv6 addresses are judged by the IPv4 address they carry,
// since that is where the kernel sends them.
func forbidden(a netip.Addr) string {
	a = a.Unmap()
	if inner, ok := embeddedV4(a); ok {
		if why := forbidden(inner); why != "" {
			return why + " inside " + a.String()
		}
	}
	switch {
	case !a.IsValid():
		return "invalid address"
	case a == metadataV4 || a == metadataV6:
		return "cloud metadata address"
	case a.IsLoopback():
		return "loopback address"
	case a.IsUnspecified() || thisNet.Contains(a):
		return "unspecified address"
	case a.IsPrivate():
		return "private address"
	case a.IsLinkLocalUnicast():
		return "link-local address"
	case a.IsMulticast() || a == broadcast:
		return "multicast or broadcast address"
	case cgnat.Contains(a):
		return "shared (CGNAT) address"
	}
	for _, p := range reservedV4 {
		if p.Contains(a) {
			return "reserved address"
		}
	}
	return ""
}

// embeddedV4 returns the IPv4 address that a NAT64, 6to4 or
// IPv4-compatible IPv6 address carries.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64.Contains(a), v4Compat.Contains(a) && !a.IsUnspecified() && !a.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// guard decides which addresses a client may dial.
type guard struct {
	allowPrivate bool
	// allow is one address the guard lets through whatever it is. Tests
	// use it to reach one httptest server while every other local
	// address stays forbidden (a redirect from it to elsewhere is still
	// refused).
	allow netip.AddrPort
}

// check returns a *RefusedError if ap may not be dialled.
func (g guard) check(host string, ap netip.AddrPort) error {
	if g.allowPrivate || (g.allow.IsValid() && ap == g.allow) {
		return nil
	}
	if reason := forbidden(ap.Addr()); reason != "" {
		return &RefusedError{Host: host, Addr: ap.Addr().Unmap(), Reason: reason}
	}
	return nil
}

// control runs after name resolution and before connect, for every address
// the dialer tries, so it judges the address really used: after redirects,
// after DNS (including rebinding between checks), whatever the URL said.
func (g guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("guard: unexpected dial address %q", address)
	}
	return g.check("", ap)
}

// checkHost refuses, before any lookup, a URL host that is a forbidden
// address in an unusual spelling (decimal 2130706433, octal 0177.0.0.1,
// hex 0x7f.1). Some resolvers turn these into addresses and some fail; the
// dial-time check is what protects, this gives the same answer everywhere
// with a message that names what was written.
func (g guard) checkHost(host string, port uint16) error {
	if g.allowPrivate {
		return nil
	}
	a, ok := parseLooseIPv4(host)
	if !ok {
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			a, ok = ip, true
		}
	}
	if !ok || (g.allow.IsValid() && a.Unmap() == g.allow.Addr().Unmap() && port == g.allow.Port()) {
		return nil
	}
	if reason := forbidden(a); reason != "" {
		return &RefusedError{Host: host, Addr: a.Unmap(), Reason: reason}
	}
	return nil
}

// parseLooseIPv4 parses the forms inet_aton accepts: one to four parts,
// each decimal, octal (leading 0) or hex (0x), the last part filling the
// remaining bytes. It reports false for anything else, including names.
func parseLooseIPv4(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base, digits := 10, p
		switch {
		case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
			base, digits = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		v, err := strconv.ParseUint(digits, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i, v := range vals[:last] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*i)
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// Outbound holds the HTTP clients every step uses: one that refuses
// private and local addresses and one for connections that set
// allow_private. They have separate connection pools so that a connection
// dialled for a permissive connection is never reused for a strict one.
// Neither reads proxy settings from the environment: a proxy would dial on
// our behalf and defeat the address check.
type Outbound struct {
	strict, private *http.Client
}

// NewOutbound returns guarded clients with their own connection pools.
func NewOutbound() *Outbound { return newOutbound(guard{}) }

func newOutbound(strict guard) *Outbound {
	p := strict
	p.allowPrivate = true
	return &Outbound{strict: newGuardedClient(strict), private: newGuardedClient(p)}
}

var defaultOutbound = sync.OnceValue(NewOutbound)

// Client returns the client for a connection with the given allow_private.
func (o *Outbound) Client(allowPrivate bool) *http.Client {
	if o == nil {
		o = defaultOutbound()
	}
	if allowPrivate {
		return o.private
	}
	return o.strict
}

// CloseIdleConnections closes kept-alive connections of both clients.
func (o *Outbound) CloseIdleConnections() {
	if o == nil {
		return
	}
	o.strict.CloseIdleConnections()
	o.private.CloseIdleConnections()
}

func newGuardedClient(g guard) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: &hostCheck{guard: g, next: tr},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return errTooManyRedirects
			}
			stripAcrossOrigins(req, via[0].URL)
			return nil
		},
	}
}

// carriedAcrossOrigins are the headers a redirect to another origin keeps.
// Go itself drops Authorization and Cookie there, but a connection's
// headers may hold a secret under any name (X-Api-Key, a custom ALO auth
// scheme), and a redirect must not hand it to a host nobody configured.
var carriedAcrossOrigins = map[string]bool{
	"Accept":          true,
	"Content-Type":    true,
	"Idempotency-Key": true,
	"User-Agent":      true,
}

// stripAcrossOrigins removes every other header from a redirected request
// whose scheme, host or port differs from the first request's.
func stripAcrossOrigins(req *http.Request, first *url.URL) {
	if req.URL.Scheme == first.Scheme && req.URL.Host == first.Host {
		return
	}
	for name := range req.Header {
		if !carriedAcrossOrigins[name] {
			req.Header.Del(name)
		}
	}
}

// hostCheck applies guard.checkHost to every request, redirects included,
// then the runner's per-target cap (capTarget): every request of every step
// passes here.
type hostCheck struct {
	guard guard
	next  http.RoundTripper
}

func (h *hostCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := h.guard.checkHost(req.URL.Hostname(), urlPort(req.URL)); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return capTarget(h.next, req)
}

// urlPort is the port a request to u connects to.
func urlPort(u *url.URL) uint16 {
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		return uint16(p)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (h *hostCheck) CloseIdleConnections() {
	if c, ok := h.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// refused reports whether err is (or wraps) a guard refusal.
func refused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

// withTransport returns a copy of c whose transport also goes through wrap.
// The copy shares c's connection pool.
func withTransport(c *http.Client, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	cc := *c
	cc.Transport = wrap(c.Transport)
	return &cc
}
