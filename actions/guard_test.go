package actions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func addrPort(t *testing.T, rawURL string) netip.AddrPort {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestForbidden(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"127.0.0.1", "loopback address"},
		{"127.10.0.1", "loopback address"},
		{"::1", "loopback address"},
		{"::ffff:127.0.0.1", "loopback address"},
		{"10.1.2.3", "private address"},
		{"172.16.0.1", "private address"},
		{"172.31.255.255", "private address"},
		{"192.168.0.1", "private address"},
		{"::ffff:192.168.0.1", "private address"},
		{"fc00::1", "private address"},
		{"fd12:3456::1", "private address"},
		{"169.254.1.1", "link-local address"},
		{"fe80::1", "link-local address"},
		{"169.254.169.254", "cloud metadata address"},
		{"::ffff:169.254.169.254", "cloud metadata address"},
		{"2852039166", "cloud metadata address"},          // decimal
		{"0251.0376.0251.0376", "cloud metadata address"}, // octal
		{"0xa9.0xfe.0xa9.0xfe", "cloud metadata address"}, // hex
		{"fd00:ec2::254", "cloud metadata address"},
		{"0.0.0.0", "unspecified address"},
		{"0.1.2.3", "unspecified address"},
		{"::", "unspecified address"},
		{"224.0.0.1", "multicast or broadcast address"},
		{"ff02::1", "multicast or broadcast address"},
		{"255.255.255.255", "multicast or broadcast address"},
		{"100.64.0.1", "shared (CGNAT) address"},
		{"100.127.255.254", "shared (CGNAT) address"},
		{"192.0.0.8", "reserved address"},
		{"198.18.0.1", "reserved address"},
		{"198.19.255.255", "reserved address"},
		{"240.0.0.1", "reserved address"},
		{"64:ff9b::7f00:1", "loopback address inside 64:ff9b::7f00:1"},
		{"64:ff9b::a9fe:a9fe", "cloud metadata address inside 64:ff9b::a9fe:a9fe"},
		{"2002:c0a8:0101::1", "private address inside 2002:c0a8:101::1"},
		{"::7f00:1", "loopback address inside ::7f00:1"},
		{"::a00:1", "private address inside ::a00:1"},
		{"8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		{"198.20.0.1", ""},
		{"100.128.0.1", ""},
		{"172.32.0.1", ""},
		{"2606:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			// Decimal, octal and hex spellings are read as inet_aton
			// reads them, as the guard does with a URL's host.
			a, ok := parseLooseIPv4(tt.addr)
			if !ok {
				a = netip.MustParseAddr(tt.addr)
			}
			if got := forbidden(a); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseLooseIPv4(t *testing.T) {
	tests := []struct {
		in, want string // want "" for not an address
	}{
		{"2130706433", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"10.0.258", "10.0.1.2"},
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"8.8.8.8", "8.8.8.8"},
		{"256.1.1.1", ""},
		{"1.2.3.4.5", ""},
		{"example.com", ""},
		{"08.1.1.1", ""}, // 8 is not an octal digit
		{"4294967296", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, ok := parseLooseIPv4(tt.in)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestGuardRefuses sends an http step to every forbidden address form with
// allow_private off. The loopback forms point at a live server, which must
// see nothing.
func TestGuardRefuses(t *testing.T) {
	tg := newTarget(t, nil)
	port := addrPort(t, tg.URL).Port()
	tests := []struct {
		host string
		want string
	}{
		{"127.0.0.1", "refused to connect to 127.0.0.1: loopback address (set allow_private on the connection to allow)"},
		{"localhost", "loopback address"}, // resolved, then refused at dial time
		{"[::ffff:127.0.0.1]", "refused to connect to ::ffff:127.0.0.1 (127.0.0.1): loopback address"},
		{"2130706433", "refused to connect to 2130706433 (127.0.0.1): loopback address"},
		{"0177.0.0.1", "refused to connect to 0177.0.0.1 (127.0.0.1): loopback address"},
		{"0x7f.1", "refused to connect to 0x7f.1 (127.0.0.1): loopback address"},
		{"[::1]", "refused to connect to ::1: loopback address"},
		{"10.0.0.1", "private address"},
		{"172.16.5.4", "private address"},
		{"192.168.1.1", "private address"},
		{"[fc00::1]", "private address"},
		{"169.254.169.254", "refused to connect to 169.254.169.254: cloud metadata address"},
		{"0xa9fea9fe", "refused to connect to 0xa9fea9fe (169.254.169.254): cloud metadata address"},
		{"[::ffff:169.254.169.254]", "refused to connect to ::ffff:169.254.169.254 (169.254.169.254): cloud metadata address"},
		{"2852039166", "refused to connect to 2852039166 (169.254.169.254): cloud metadata address"},
		{"0251.0376.0251.0376", "refused to connect to 0251.0376.0251.0376 (169.254.169.254): cloud metadata address"},
		{"[fd00:ec2::254]", "cloud metadata address"},
		{"169.254.10.10", "link-local address"},
		{"[fe80::1]", "link-local address"},
		{"0.0.0.0", "unspecified address"},
		{"[::]", "unspecified address"},
		{"224.0.0.1", "multicast"},
		{"[ff02::1]", "multicast"},
		{"100.64.0.1", "shared (CGNAT) address"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			for _, conn := range []*Connection{
				nil, // a full url
				{Name: "c", HTTP: &HTTPConn{BaseURL: fmt.Sprintf("http://%s:%d", tt.host, port)}},
			} {
				spec := &HTTP{URL: fmt.Sprintf("http://%s:%d/x", tt.host, port)}
				if conn != nil {
					spec = &HTTP{Connection: "c", Path: "/x"}
				}
				_, err := Do(context.Background(), request(KindHTTP, spec, conn), Env{Outbound: NewOutbound()})
				se := stepErr(t, err)
				var re *RefusedError
				if !errors.As(se, &re) || se.Retryable || !strings.Contains(se.Error(), tt.want) {
					t.Errorf("got %q (retryable %v, refusal %v), want a permanent refusal containing %q", se, se.Retryable, re != nil, tt.want)
				}
			}
		})
	}
	if n := len(tg.requests()); n != 0 {
		t.Errorf("target got %d requests, want 0", n)
	}
}

// TestGuardRefusesMetadataEveryKind: the cloud metadata address in its
// plain, IPv4-mapped, decimal, octal and hex spellings is refused through
// every step kind, with the reason, for good.
func TestGuardRefusesMetadataEveryKind(t *testing.T) {
	hosts := []string{"169.254.169.254", "[::ffff:169.254.169.254]", "2852039166", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe"}
	for _, kind := range stepKinds {
		for _, host := range hosts {
			t.Run(kind.name+"/"+host, func(t *testing.T) {
				req := kind.build("http://" + host)
				req.Conn.AllowPrivate = false
				_, err := Do(context.Background(), req, Env{Outbound: NewOutbound()})
				se := stepErr(t, err)
				var re *RefusedError
				if !errors.As(se, &re) || se.Retryable || re.Addr.String() != "169.254.169.254" || !strings.Contains(se.Error(), "cloud metadata address") {
					t.Errorf("got %q (retryable %v, refusal %v), want a permanent refusal of the cloud metadata address", se, se.Retryable, re)
				}
			})
		}
	}
}

func TestGuardAllowPrivate(t *testing.T) {
	tg := newTarget(t, nil)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		conn := &Connection{Name: "c", AllowPrivate: true, HTTP: &HTTPConn{BaseURL: "http://" + host + ":" + fmt.Sprint(addrPort(t, tg.URL).Port())}}
		if _, err := Do(context.Background(), request(KindHTTP, &HTTP{Connection: "c"}, conn), Env{Outbound: NewOutbound()}); err != nil {
			t.Errorf("%s with allow_private: %v", host, err)
		}
	}
	if n := len(tg.requests()); n != 2 {
		t.Errorf("target got %d requests, want 2", n)
	}
}

// TestGuardRedirects follows redirects from one allowed test server: a
// redirect to any other local address is refused at dial time, and at most
// five redirects are followed.
func TestGuardRedirects(t *testing.T) {
	other := newTarget(t, nil)
	otherPort := addrPort(t, other.URL).Port()
	first := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/to-other":
			http.Redirect(w, r, other.URL+"/stolen", http.StatusFound)
		case "/to-localhost":
			http.Redirect(w, r, fmt.Sprintf("http://localhost:%d/stolen", otherPort), http.StatusTemporaryRedirect)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusMovedPermanently)
		case "/to-decimal":
			http.Redirect(w, r, fmt.Sprintf("http://2130706433:%d/stolen", otherPort), http.StatusFound)
		case "/hops":
			left := 0
			fmt.Sscan(r.URL.Query().Get("left"), &left)
			if left > 0 {
				http.Redirect(w, r, fmt.Sprintf("/hops?left=%d", left-1), http.StatusFound)
				return
			}
			w.Write([]byte("arrived"))
		}
	})
	env := Env{Outbound: newOutbound(guard{allow: addrPort(t, first.URL)})}
	send := func(path string) (Result, error) {
		return Do(context.Background(), request(KindHTTP, &HTTP{URL: first.URL + path}, nil), env)
	}

	for path, want := range map[string]string{
		"/to-other":     "refused to connect to 127.0.0.1: loopback address",
		"/to-localhost": "loopback address",
		"/to-metadata":  "refused to connect to 169.254.169.254: cloud metadata address",
		"/to-decimal":   "refused to connect to 2130706433 (127.0.0.1): loopback address",
	} {
		_, err := send(path)
		se := stepErr(t, err)
		if se.Retryable || !strings.Contains(se.Error(), want) {
			t.Errorf("%s: got %q retryable %v, want permanent %q", path, se, se.Retryable, want)
		}
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("redirect target got %d requests, want 0", n)
	}

	if res, err := send("/hops?left=5"); err != nil || string(res.Body) != "arrived" {
		t.Errorf("5 redirects: got %q %v, want arrived", res.Body, err)
	}
	_, err := send("/hops?left=6")
	if se := stepErr(t, err); se.Retryable || !strings.Contains(se.Error(), "stopped after 5 redirects") {
		t.Errorf("6 redirects: got %q retryable %v, want permanent stop", se, se.Retryable)
	}
}

// TestRedirectDropsHeadersAcrossOrigins: a connection's headers may hold a
// secret under any name; a redirect to another origin (here another port)
// must not carry them, while a redirect on the same origin keeps them.
func TestRedirectDropsHeadersAcrossOrigins(t *testing.T) {
	other := newTarget(t, nil)
	first := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/landed", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusTemporaryRedirect)
		default:
			w.Write([]byte("{}"))
		}
	})
	env := Env{Outbound: newOutbound(guard{allowPrivate: true}), UserAgent: "alorules/test"}
	conn := &Connection{Name: "t", AllowPrivate: true, HTTP: &HTTPConn{BaseURL: first.URL,
		Headers: map[string]string{"X-Api-Key": "KEYSECRET", "Authorization": "Bearer TOKSECRET"}}}
	send := func(path string) {
		t.Helper()
		spec := &HTTP{Connection: "t", Path: path, Method: "POST", JSON: map[string]any{"a": 1},
			Headers: map[string]string{"X-Step-Secret": "STEPSECRET"}}
		if _, err := Do(context.Background(), request(KindHTTP, spec, conn), env); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}

	send("/away")
	got := other.requests()
	if len(got) != 1 {
		t.Fatalf("other origin got %d requests, want 1", len(got))
	}
	for _, h := range []string{"X-Api-Key", "Authorization", "X-Step-Secret"} {
		if v := got[0].Header.Get(h); v != "" {
			t.Errorf("other origin got %s: %q, want it dropped", h, v)
		}
	}
	for _, h := range []string{"Idempotency-Key", "Content-Type", "User-Agent"} {
		if got[0].Header.Get(h) == "" {
			t.Errorf("other origin did not get %s, want it kept", h)
		}
	}

	send("/here")
	reqs := first.requests()
	last := reqs[len(reqs)-1]
	if last.Path != "/landed" || last.Header.Get("X-Api-Key") != "KEYSECRET" || last.Header.Get("X-Step-Secret") != "STEPSECRET" {
		t.Errorf("same origin: got %s with X-Api-Key %q, X-Step-Secret %q; want /landed with both kept",
			last.Path, last.Header.Get("X-Api-Key"), last.Header.Get("X-Step-Secret"))
	}
}

func TestOutboundIgnoresProxyEnvironment(t *testing.T) {
	o := NewOutbound()
	for _, allow := range []bool{false, true} {
		tr := o.Client(allow).Transport.(*hostCheck).next.(*http.Transport)
		if tr.Proxy != nil {
			t.Errorf("allow_private %v: got a Proxy function, want nil", allow)
		}
	}
}
