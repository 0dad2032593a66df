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
	"strconv"
	"strings"
	"sync"
	"time"

	"alorules"
)

// ErrTargetBusy is the error of a request that was not sent because its
// target (host and port) already had as many requests in flight from the
// runner as the runner allows. The step was not delivered; the runner
// has it wait for a slot of that target without counting an attempt.
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
// answer. Instead the refused step waits in the gate's line for that
// target, holding no worker (see wait): a slot given back goes to the
// oldest step in line, never to whoever asks next.
type targetGate struct {
	limit int
	// maxWaiting bounds the steps in line, all targets together.
	maxWaiting int
	// wake, if set, is called (outside the lock) when a step in line was
	// handed a slot and needs a worker.
	wake func()

	// now is the clock for drain rates; time.Now unless a test sets it.
	now func() time.Time

	mu       sync.Mutex
	inflight map[string]int       // slots taken, handed ones included
	waiting  map[string][]*waiter // per target, oldest due first
	ready    []*waiter            // handed a slot, in the order they got it
	nwait    int                  // in waiting and ready
	pace     map[string]*pace     // how fast each busy target gives slots back
}

// pace follows how often a busy target gives a slot back: a moving average
// of the time between two releases, so that a step that finds the line
// full can come back about when the line ahead of it has gone.
type pace struct {
	last time.Time
	gap  time.Duration
}

// waiter is an execution whose step was refused because its target was at
// its limit. Its claim is written (the store lists it as running, so
// nothing else runs it, and a crash queues it again); it holds no worker.
type waiter struct {
	key    string // the target it waits for
	ex     *alorules.Execution
	step   int
	before alorules.StepResult // the step as it was before its claim
}

// dueBefore orders waiters as the store's queue orders executions: by due
// time, then id.
func dueBefore(a, b *waiter) bool {
	if !a.ex.NextAttemptAt.Equal(b.ex.NextAttemptAt) {
		return a.ex.NextAttemptAt.Before(b.ex.NextAttemptAt)
	}
	return a.ex.ID < b.ex.ID
}

func newTargetGate(limit, maxWaiting int) *targetGate {
	return &targetGate{limit: max(limit, 1), maxWaiting: maxWaiting, now: time.Now,
		inflight: map[string]int{}, waiting: map[string][]*waiter{}, pace: map[string]*pace{}}
}

// tryAcquire takes a slot for key if one is free and no step is in line
// for it: a step in line was refused first.
func (g *targetGate) tryAcquire(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight[key] >= g.limit || len(g.waiting[key]) > 0 {
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

// release gives back a slot taken for key. If that frees one below the
// limit and a step is in line for key, the slot is handed to the oldest
// one instead, and wake is called.
func (g *targetGate) release(key string) {
	g.mu.Lock()
	handed := false
	if g.inflight[key] > 0 {
		g.paced(key)
	}
	switch n := g.inflight[key]; {
	case n == 0:
	case n <= g.limit && len(g.waiting[key]) > 0:
		q := g.waiting[key]
		g.ready = append(g.ready, q[0])
		q[0] = nil
		if len(q) == 1 {
			delete(g.waiting, key)
		} else {
			g.waiting[key] = q[1:]
		}
		handed = true
	case n > 1:
		g.inflight[key] = n - 1
	default:
		// Keep the maps as small as the set of busy targets.
		delete(g.inflight, key)
		delete(g.pace, key)
	}
	g.mu.Unlock()
	if handed && g.wake != nil {
		g.wake()
	}
}

// paced notes that key gave a slot back now. Called with g.mu held.
func (g *targetGate) paced(key string) {
	now := g.now()
	p := g.pace[key]
	if p == nil {
		g.pace[key] = &pace{last: now}
		return
	}
	gap := now.Sub(p.last)
	if p.gap == 0 {
		p.gap = gap
	} else {
		p.gap += (gap - p.gap) / 8
	}
	p.last = now
}

// lineTime estimates how long the steps in line for key take to be
// handed their slots, at the pace key has been giving them back; 0 if
// nothing is known yet.
func (g *targetGate) lineTime(key string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.pace[key]
	if p == nil {
		return 0
	}
	return time.Duration(len(g.waiting[key])+1) * p.gap
}

// wait puts w in line for a slot of its target, in due order, and reports
// false if maxWaiting steps are in line already. If a slot was given back
// since w was refused, w is handed it at once.
func (g *targetGate) wait(w *waiter) bool {
	g.mu.Lock()
	if g.nwait >= g.maxWaiting {
		g.mu.Unlock()
		return false
	}
	g.nwait++
	q := g.waiting[w.key]
	if len(q) == 0 && g.inflight[w.key] < g.limit {
		g.inflight[w.key]++
		g.ready = append(g.ready, w)
		g.mu.Unlock()
		if g.wake != nil {
			g.wake()
		}
		return true
	}
	// Most arrive last: look from the end.
	i := len(q)
	for i > 0 && dueBefore(w, q[i-1]) {
		i--
	}
	g.waiting[w.key] = slices.Insert(q, i, w)
	g.mu.Unlock()
	return true
}

// takeReady takes up to n steps that were handed a slot, in the order they
// got it, passing over those for which skip is true (they stay ready).
func (g *targetGate) takeReady(n int, skip func(*waiter) bool) []*waiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*waiter
	rest := g.ready[:0]
	for _, w := range g.ready {
		if len(out) < n && !skip(w) {
			out = append(out, w)
		} else {
			rest = append(rest, w)
		}
	}
	clear(g.ready[len(rest):])
	g.ready = rest
	g.nwait -= len(out)
	return out
}

// drain empties the line, giving back the slots handed to steps that had
// no worker yet, and returns every step that was in it.
func (g *targetGate) drain() []*waiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.ready
	for _, w := range g.ready {
		if g.inflight[w.key]--; g.inflight[w.key] <= 0 {
			delete(g.inflight, w.key)
		}
	}
	for _, q := range g.waiting {
		out = append(out, q...)
	}
	g.ready, g.waiting, g.nwait = nil, map[string][]*waiter{}, 0
	return out
}

// waitingCount returns how many steps are in line, all targets together.
func (g *targetGate) waitingCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nwait
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
	handed  string // a slot the gate handed this step while it waited, not yet used
	sent    bool   // a request of this attempt got past the gate
	refused string // the target that was busy, if the attempt was refused
}

func (g *targetGate) newSlots() *stepSlots {
	return &stepSlots{gate: g, held: map[string]int{}}
}

// handedSlots are the slots of an attempt of a step that the gate handed a
// slot of key while it waited: its first request to key uses it.
func (g *targetGate) handedSlots(key string) *stepSlots {
	s := g.newSlots()
	s.handed = key
	return s
}

// take takes a slot for key: the one the gate handed this step, if it was
// for key, else a free one. Only the attempt's first request can be
// refused: once one request is out (a redirect follows, for instance), the
// target may have acted, and refusing the next one would make the runner
// send the step again for nothing but a busy hop.
func (s *stepSlots) take(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.sent:
		s.gate.acquire(key)
	case s.handed == key:
		s.handed = ""
	case !s.gate.tryAcquire(key):
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

// done gives back every slot the attempt still holds, a handed one it
// did not use included.
func (s *stepSlots) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handed != "" {
		s.gate.release(s.handed)
		s.handed = ""
	}
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
