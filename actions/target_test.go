package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"alorules"
)

// keyOf is the gate's key for a test server's URL.
func keyOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return targetKey(u)
}

func TestTargetKey(t *testing.T) {
	tests := []struct{ url, want string }{
		{"https://hooks.slack.com/services/T/B/X", "hooks.slack.com:443"},
		{"http://Example.COM/a", "example.com:80"},
		{"https://example.com:8443/v1", "example.com:8443"},
		{"http://[2001:db8::1]:9000/x", "[2001:db8::1]:9000"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := keyOf(t, tt.url); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTargetGate: slots are counted per target, refused beyond the limit
// only for an attempt's first request, and given back exactly once however
// the attempt ends.
func TestTargetGate(t *testing.T) {
	g := newTargetGate(2, maxWaiting)
	a, b, c := g.newSlots(), g.newSlots(), g.newSlots()
	if !a.take("x:80") || !b.take("x:80") {
		t.Fatal("got a refusal below the limit, want two slots")
	}
	if c.take("x:80") {
		t.Fatal("third attempt on x:80 got a slot, want a refusal at the limit of 2")
	}
	if got := c.deferred(); got != "x:80" {
		t.Errorf("refused attempt: got deferred %q, want x:80", got)
	}
	if !c.take("y:80") {
		t.Error("another target refused, want targets counted apart")
	}
	if got := c.deferred(); got != "" {
		t.Errorf("attempt that sent a request: got deferred %q, want none (it may have been delivered)", got)
	}
	// A later request of an attempt that already sent one (a redirect) is
	// never refused, and counts.
	if !a.take("x:80") {
		t.Error("second request of an attempt refused, want it let through")
	}
	if n := g.inUse("x:80"); n != 3 {
		t.Errorf("x:80 in use: got %d, want 3", n)
	}

	a.give("x:80")
	a.give("x:80")
	a.give("x:80") // one more than a holds: no effect
	if n := g.inUse("x:80"); n != 1 {
		t.Errorf("after a gave back its two: got %d in use, want 1 (b's)", n)
	}
	b.done()
	b.done()
	c.done()
	if n, m := g.inUse("x:80"), g.inUse("y:80"); n != 0 || m != 0 {
		t.Errorf("after every attempt ended: got x:80 %d, y:80 %d in use, want 0 and 0", n, m)
	}
	if len(g.inflight) != 0 {
		t.Errorf("got %d targets remembered, want none once idle", len(g.inflight))
	}
	if d := g.newSlots(); !d.take("x:80") || d.deferred() != "" {
		t.Error("slot refused after all were given back")
	}
}

// TestTargetGateLine: steps refused by a busy target wait in line in due
// order, up to maxWaiting; a slot given back goes to the oldest in line
// and wakes the runner; that step's next attempt uses it without asking
// again, or passes it on if it does not; a step refused while a slot is
// free already gets it at once; drain empties the line and gives back the
// slots handed to steps that had not used them.
func TestTargetGateLine(t *testing.T) {
	g := newTargetGate(1, 3)
	wakes := 0
	g.wake = func() { wakes++ }
	base := time.Now()
	w := func(id string, due int) *waiter {
		return &waiter{key: "x:80", ex: &alorules.Execution{ID: id, NextAttemptAt: base.Add(time.Duration(due) * time.Second)}}
	}
	none := func(*waiter) bool { return false }
	ids := func(ws []*waiter) (out []string) {
		for _, w := range ws {
			out = append(out, w.ex.ID)
		}
		return out
	}

	holder := g.newSlots()
	holder.take("x:80")
	for _, x := range []*waiter{w("b", 2), w("a", 1), w("c", 3)} {
		if !g.wait(x) {
			t.Fatalf("%s refused a place in a line of %d, want it in (max 3)", x.ex.ID, g.waitingCount())
		}
	}
	if g.wait(w("d", 0)) {
		t.Error("a line of 3 took a fourth, want it refused at maxWaiting")
	}
	if got := g.takeReady(5, none); len(got) != 0 || wakes != 0 {
		t.Errorf("with the slot held: got %v ready and %d wakes, want none", ids(got), wakes)
	}

	holder.done()
	if n := g.inUse("x:80"); n != 1 || wakes != 1 {
		t.Errorf("slot given back: got %d in use and %d wakes, want 1 (handed on) and 1", n, wakes)
	}
	if got := g.takeReady(5, func(*waiter) bool { return true }); len(got) != 0 {
		t.Errorf("all skipped: got %v, want none taken", ids(got))
	}
	got := g.takeReady(5, none)
	if !slices.Equal(ids(got), []string{"a"}) {
		t.Fatalf("got %v ready, want [a]: the oldest due", ids(got))
	}
	if newcomer := g.newSlots(); newcomer.take("x:80") {
		t.Error("a newcomer got the slot handed to a, want it refused")
	}
	s := g.handedSlots("x:80")
	if !s.take("x:80") || g.inUse("x:80") != 1 {
		t.Errorf("a's attempt: got %d in use, want its handed slot used (1)", g.inUse("x:80"))
	}
	s.done()
	if got := g.takeReady(5, none); !slices.Equal(ids(got), []string{"b"}) || wakes != 2 {
		t.Fatalf("after a: got %v ready, %d wakes, want [b], 2", ids(got), wakes)
	}
	g.handedSlots("x:80").done() // b's attempt never sent (a render error): c gets the slot
	if got := g.takeReady(5, none); !slices.Equal(ids(got), []string{"c"}) || g.inUse("x:80") != 1 {
		t.Fatalf("after b: got %v ready, %d in use, want [c], 1", ids(got), g.inUse("x:80"))
	}
	c := g.handedSlots("x:80")
	c.take("x:80")

	// Refused while c holds the slot, then c is done: e waits, f too.
	g.wait(w("e", 5))
	g.wait(w("f", 6))
	c.done()
	if n := g.waitingCount(); n != 2 {
		t.Errorf("got %d in line, want 2 (e ready, f waiting)", n)
	}
	if got := g.drain(); !slices.Equal(ids(got), []string{"e", "f"}) {
		t.Errorf("drain: got %v, want [e f]", ids(got))
	}
	if n, m := g.inUse("x:80"), g.waitingCount(); n != 0 || m != 0 || len(g.inflight) != 0 {
		t.Errorf("after drain: got %d in use, %d in line, want 0 and 0", n, m)
	}

	// A step refused just before the slot came back gets it at once.
	wakes = 0
	if !g.wait(w("g", 7)) || wakes != 1 || g.inUse("x:80") != 1 {
		t.Errorf("free slot: got %d wakes, %d in use, want g handed it at once", wakes, g.inUse("x:80"))
	}
}

// TestTargetCapThroughClient sends real requests through the guarded
// client with an attempt's slots in the context, and checks when the slot
// is held and that every way a request can end gives it back.
func TestTargetCapThroughClient(t *testing.T) {
	release := make(chan struct{})
	srv := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/stall":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/redirect":
			http.Redirect(w, r, "/landed", http.StatusFound)
		case "/body":
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	t.Cleanup(func() { close(release) })
	other := newTarget(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()

	client := newOutbound(guard{allowPrivate: true}).Client(true)
	key := keyOf(t, srv.URL)
	get := func(ctx context.Context, rawURL string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		return client.Do(req)
	}

	t.Run("held until the body is closed", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		s := g.newSlots()
		resp, err := get(withSlots(context.Background(), s), srv.URL+"/ok")
		if err != nil {
			t.Fatal(err)
		}
		if n := g.inUse(key); n != 1 {
			t.Errorf("body open: got %d in use, want 1", n)
		}
		resp.Body.Close()
		resp.Body.Close()
		if n := g.inUse(key); n != 0 {
			t.Errorf("body closed: got %d in use, want 0", n)
		}
	})

	t.Run("refused when busy, not sent", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		holder := g.newSlots()
		holder.take(key)
		before := len(srv.requests())
		s := g.newSlots()
		_, err := get(withSlots(context.Background(), s), srv.URL+"/ok")
		if !errors.Is(err, ErrTargetBusy) {
			t.Errorf("got %v, want ErrTargetBusy", err)
		}
		if got := s.deferred(); got != key {
			t.Errorf("got deferred %q, want %q", got, key)
		}
		if n := len(srv.requests()) - before; n != 0 {
			t.Errorf("target got %d requests, want 0", n)
		}
		// Another host is not affected.
		resp, err := get(withSlots(context.Background(), g.newSlots()), other.URL)
		if err != nil {
			t.Fatalf("other target: %v", err)
		}
		resp.Body.Close()
		holder.done()
		if n := g.inUse(key); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
	})

	t.Run("given back on a dial error", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		s := g.newSlots()
		if _, err := get(withSlots(context.Background(), s), down); err == nil {
			t.Fatal("got no error from a closed port")
		}
		if n := g.inUse(keyOf(t, down)); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
	})

	t.Run("given back on a timeout before the answer", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := get(withSlots(ctx, g.newSlots()), srv.URL+"/stall"); err == nil {
			t.Fatal("got no error from a stalled target")
		}
		if n := g.inUse(key); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
	})

	t.Run("given back on a timeout while reading the body", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		resp, err := get(withSlots(ctx, g.newSlots()), srv.URL+"/body")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("read the whole body of a stalled answer, want a timeout")
		}
		resp.Body.Close()
		if n := g.inUse(key); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
	})

	t.Run("an attempt's end gives back a body never closed", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		s := g.newSlots()
		resp, err := get(withSlots(context.Background(), s), srv.URL+"/ok")
		if err != nil {
			t.Fatal(err)
		}
		s.done()
		if n := g.inUse(key); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
		resp.Body.Close() // late: must not give back someone else's slot
		if n := g.inUse(key); n != 0 {
			t.Errorf("after a late close: got %d in use, want 0", n)
		}
	})

	t.Run("a redirect takes a slot per hop", func(t *testing.T) {
		g := newTargetGate(1, maxWaiting)
		s := g.newSlots()
		resp, err := get(withSlots(context.Background(), s), srv.URL+"/redirect")
		if err != nil {
			t.Fatalf("redirect within a cap of 1: %v", err)
		}
		if n := g.inUse(key); n != 1 {
			t.Errorf("landed: got %d in use, want 1 (the first hop's given back)", n)
		}
		resp.Body.Close()
		if n := g.inUse(key); n != 0 {
			t.Errorf("got %d in use, want 0", n)
		}
	})
}

// TestTargetNotCappedOutsideRunner: the cap belongs to the runner, not to
// the guarded clients it shares. With the runner's gate full for a host, a
// step sent through the same Outbound outside the runner (as a one-off
// send would) goes through, and is not counted against the runner's cap;
// the same step inside an attempt of that runner is refused.
func TestTargetNotCappedOutsideRunner(t *testing.T) {
	srv := newTarget(t, nil)
	key := keyOf(t, srv.URL)
	out := newOutbound(guard{allowPrivate: true})
	r := NewRunner(RunnerConfig{MaxPerTarget: 1, Outbound: out}) // never run: only its gate is used
	env := Env{Outbound: out}
	holder := r.targets.newSlots()
	if !holder.take(key) {
		t.Fatal("could not fill the runner's gate")
	}
	defer holder.done()
	req := request(KindHTTP, &HTTP{Connection: "target", Path: "/x"}, httpConn(srv.URL))

	inside := r.targets.newSlots()
	if _, err := Do(withSlots(context.Background(), inside), req, env); !errors.Is(err, ErrTargetBusy) || inside.deferred() != key {
		t.Fatalf("inside the runner: got %v, deferred %q; want ErrTargetBusy for %s", err, inside.deferred(), key)
	}
	if n := len(srv.requests()); n != 0 {
		t.Fatalf("target got %d requests while the runner's gate was full, want 0", n)
	}

	if _, err := Do(context.Background(), req, env); err != nil {
		t.Fatalf("outside the runner, same Outbound: got %v, want it sent", err)
	}
	resp, err := out.Client(true).Get(srv.URL + "/y")
	if err != nil {
		t.Fatalf("outside the runner, the Outbound's client: got %v, want it sent", err)
	}
	resp.Body.Close()
	if n := len(srv.requests()); n != 2 {
		t.Errorf("target got %d requests, want 2", n)
	}
	if n := r.targets.inUse(key); n != 1 {
		t.Errorf("runner's gate: got %d in use, want 1 (the holder's): requests outside the runner do not count", n)
	}
}

// TestTargetCapEveryKind: slack, alo and http steps all pass the gate, so a
// busy target defers each of them before anything is sent.
func TestTargetCapEveryKind(t *testing.T) {
	srv := newTarget(t, nil)
	key := keyOf(t, srv.URL)
	tests := []struct {
		name string
		req  Request
	}{
		{"http", request(KindHTTP, &HTTP{Connection: "target", Path: "/x"}, httpConn(srv.URL))},
		{"slack webhook", request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, slackWebhookConn(srv.URL))},
		{"slack bot", request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, slackBotConn(srv.URL))},
		{"alo", request(KindALO, &ALO{Connection: "alo", PostMessage: &ALOMessage{ChannelID: "c1", Content: "hi"}}, aloConn(srv.URL))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTargetGate(1, maxWaiting)
			holder := g.newSlots()
			holder.take(key)
			defer holder.done()
			s := g.newSlots()
			before := len(srv.requests())
			_, err := Do(withSlots(context.Background(), s), tt.req, Env{})
			if err == nil {
				t.Fatal("got success, want the step refused")
			}
			if got := s.deferred(); got != key {
				t.Errorf("got deferred %q (err %v), want %q", got, err, key)
			}
			if n := len(srv.requests()) - before; n != 0 {
				t.Errorf("target got %d requests, want 0", n)
			}
			if strings.Contains(err.Error(), "XXXXsecretXXXX") {
				t.Errorf("error %q shows the webhook URL", err)
			}
		})
	}
}

// TestTargetGateLineTime: the time a full line takes follows the pace at
// which the target gives slots back: nothing known before two releases,
// then the moving gap times the steps ahead (plus the one asking); the
// pace is forgotten once the target is idle.
func TestTargetGateLineTime(t *testing.T) {
	g := newTargetGate(1, 10)
	clock := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return clock }
	hold := func() *stepSlots {
		s := g.newSlots()
		if !s.take("x:80") {
			t.Fatal("the target refused a slot while idle")
		}
		return s
	}
	if got := g.lineTime("x:80"); got != 0 {
		t.Errorf("unknown target: got %v, want 0", got)
	}
	s := hold()
	for i := range 3 {
		g.wait(&waiter{key: "x:80", ex: &alorules.Execution{ID: fmt.Sprint("w", i)}})
	}
	s.done() // the first release: a start, no gap yet
	if got := g.lineTime("x:80"); got != 0 {
		t.Errorf("after one release: got %v, want 0", got)
	}
	clock = clock.Add(40 * time.Millisecond)
	g.release("x:80") // handed to w1: 40 ms gap
	if got, want := g.lineTime("x:80"), 2*40*time.Millisecond; got != want {
		t.Errorf("one waiting, 40 ms apart: got %v, want %v", got, want)
	}
	clock = clock.Add(120 * time.Millisecond)
	g.release("x:80") // handed to w2: the gap moves an eighth of the way to 120 ms
	if got, want := g.lineTime("x:80"), 1*50*time.Millisecond; got != want {
		t.Errorf("none waiting, gap 40 then 120 ms: got %v, want %v", got, want)
	}
	g.release("x:80") // the last slot: the target is idle
	if got := g.lineTime("x:80"); got != 0 {
		t.Errorf("idle target: got %v, want 0 (pace forgotten)", got)
	}
}
