package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// ErrTargetBusy is the error of a request that was not sent because its
// target (host and port) already had as many requests in flight from the
// runner as the runner allows. The step was not delivered; the runner
// puts its execution back in the queue without counting an attempt.
var ErrTargetBusy = errors.New("target busy")

// targetKey names the target of a request: its host, in lower case, and
// the port it connects to. A Slack webhook, an ALO API and an http base URL
// on the same host and port are one target.
func targetKey(u *url.URL) string {
	return net.JoinHostPort(strings.ToLower(u.Hostname()), strconv.Itoa(int(urlPort(u))))
}

// targetGate counts the requests in flight per target and refuses a new
// one beyond the limit. It never blocks: a worker that waited here for a
// stalled target would be as lost to the others as one waiting for its
// answer.
type targetGate struct {
	limit int

	mu       sync.Mutex
	inflight map[string]int
}

func newTargetGate(limit int) *targetGate {
	return &targetGate{limit: max(limit, 1), inflight: map[string]int{}}
}

// tryAcquire takes a slot for key if one is free.
func (g *targetGate) tryAcquire(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight[key] >= g.limit {
		return false
	}
	g.inflight[key]++
	return true
}

// acquire takes a slot for key even beyond the limit. It is for requests
// that must not be refused (see stepSlots.take); they still count, so that
// new steps see the target as busy as it is.
func (g *targetGate) acquire(key string) {
	g.mu.Lock()
	g.inflight[key]++
	g.mu.Unlock()
}

// release gives back a slot taken for key.
func (g *targetGate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch n := g.inflight[key]; {
	case n > 1:
		g.inflight[key] = n - 1
	case n == 1:
		delete(g.inflight, key) // keep the map as small as the set of busy targets
	}
}

// inUse returns how many slots key holds.
func (g *targetGate) inUse(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight[key]
}

// stepSlots are the slots one attempt of a step holds. The runner makes
// one per attempt and puts it in the attempt's context; the guarded
// transport takes and gives back slots through it (see capTarget), and
// the runner gives back whatever is left when the attempt ends, so that no
// path (an error, a timeout, a body nobody closed, a panic) keeps a slot.
type stepSlots struct {
	gate *targetGate

	mu      sync.Mutex
	held    map[string]int
	sent    bool   // a request of this attempt got past the gate
	refused string // the target that was busy, if the attempt was refused
}

func (g *targetGate) newSlots() *stepSlots {
	return &stepSlots{gate: g, held: map[string]int{}}
}

// take takes a slot for key. Only the attempt's first request can be
// refused: once one request is out (a redirect follows, for instance), the
// target may have acted, and refusing the next one would make the runner
// send the step again for nothing but a busy hop.
func (s *stepSlots) take(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent {
		s.gate.acquire(key)
	} else if !s.gate.tryAcquire(key) {
		s.refused = key
		return false
	}
	s.sent = true
	s.held[key]++
	return true
}

// give gives back one slot for key, if this attempt still holds one.
func (s *stepSlots) give(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[key] == 0 {
		return
	}
	s.held[key]--
	s.gate.release(key)
}

// done gives back every slot the attempt still holds.
func (s *stepSlots) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, n := range s.held {
		for range n {
			s.gate.release(key)
		}
		delete(s.held, key)
	}
}

// deferred returns the target that refused the attempt before it sent
// anything, or "".
func (s *stepSlots) deferred() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent {
		return ""
	}
	return s.refused
}

type slotsKey struct{}

func withSlots(ctx context.Context, s *stepSlots) context.Context {
	return context.WithValue(ctx, slotsKey{}, s)
}

// capTarget sends req through next under the per-target cap of the
// attempt that req's context carries; a request without one (sent outside
// the runner: `alorules send`, the playground) is not capped. The slot is
// held until the response body is closed, or given back at once if there
// is no response. A refused request is not sent and fails with
// ErrTargetBusy.
func capTarget(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	slots, _ := req.Context().Value(slotsKey{}).(*stepSlots)
	if slots == nil {
		return next.RoundTrip(req)
	}
	key := targetKey(req.URL)
	if !slots.take(key) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%s: %w", key, ErrTargetBusy)
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		slots.give(key)
		return nil, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, give: func() { slots.give(key) }}
	return resp, nil
}

// slotBody gives back its request's slot when it is closed.
type slotBody struct {
	io.ReadCloser
	once sync.Once
	give func()
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.give)
	return err
}
