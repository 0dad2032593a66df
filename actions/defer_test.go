package actions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// stalledTarget is a target that holds every request until release is
// called, counting the requests it holds at once.
type stalledTarget struct {
	*target
	release func()
	holding chan struct{} // one value per request held, taken back when it ends
	peak    chan int      // the most held at once, updated as it grows
}

func newStalledTarget(t *testing.T) *stalledTarget {
	st := &stalledTarget{holding: make(chan struct{}, 100), peak: make(chan int, 1)}
	st.peak <- 0
	released := make(chan struct{})
	var once sync.Once
	st.release = func() { once.Do(func() { close(released) }) }
	st.target = newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		st.holding <- struct{}{}
		p := <-st.peak
		st.peak <- max(p, len(st.holding))
		defer func() { <-st.holding }()
		select {
		case <-released:
		case <-r.Context().Done():
		}
	})
	// Cleanups run last first: the handlers return before the server
	// waits for them to.
	t.Cleanup(st.release)
	return st
}

func (st *stalledTarget) held() int { return len(st.holding) }

func (st *stalledTarget) maxHeld() int {
	p := <-st.peak
	st.peak <- p
	return p
}

// countingStore is the real store, counting the execution writes the
// runner makes.
type countingStore struct {
	*store.Store
	writes atomic.Int64
}

func (c *countingStore) UpdateExecution(ctx context.Context, ex *alorules.Execution) error {
	c.writes.Add(1)
	return c.Store.UpdateExecution(ctx, ex)
}

// stall is a runner with 4 workers and a cap of 2 per target, n executions
// to a stalled target (due one millisecond apart, in the order of exs) and
// a step timeout of 30 s. healthy is a rule to a target that answers at
// once.
type stall struct {
	s         *store.Store
	counted   *countingStore
	r         *Runner
	stalled   *stalledTarget
	healthy   *target
	exs       []*alorules.Execution
	attempts  atomic.Int32 // reported to OnStep
	deferrals atomic.Int32 // reported to OnDefer
}

// stallRunner starts a stall and waits until the stalled target holds 2
// requests and the other n-2 executions wait in line.
func stallRunner(t *testing.T, n int) *stall {
	st := &stall{stalled: newStalledTarget(t), healthy: newTarget(t, nil)}
	st.s, _ = newStore(t)
	st.counted = &countingStore{Store: st.s}
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"stalled": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "s", Path: "/hook", Timeout: "30s"}, Conn: httpConn(st.stalled.URL)})},
		"healthy": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "h", Path: "/hook", Timeout: "30s"}, Conn: httpConn(st.healthy.URL)})},
	}}
	due := time.Now().Add(-time.Minute)
	for i := range n {
		st.exs = append(st.exs, newExecution("stalled", fmt.Sprint("ev-stalled-", i), []string{KindHTTP}, nil,
			alorules.RetryPolicy{Attempts: 3}, due.Add(time.Duration(i)*time.Millisecond)))
	}
	addExecutions(t, st.s, st.exs...)
	st.r, _ = startRunner(t, RunnerConfig{Store: st.counted, Renderer: rnd, Workers: 4, MaxPerTarget: 2, Grace: 100 * time.Millisecond,
		OnStep: func(*alorules.Execution, alorules.StepResult) { st.attempts.Add(1) },
		OnDefer: func(_ *alorules.Execution, _ alorules.StepResult, reason string) {
			if reason != DeferTargetBusy {
				t.Errorf("got reason %q, want %q", reason, DeferTargetBusy)
			}
			st.deferrals.Add(1)
		}})
	deadline := time.Now().Add(15 * time.Second)
	for st.stalled.held() < 2 || st.r.targets.waitingCount() < n-2 {
		if time.Now().After(deadline) {
			t.Fatalf("stalled target holds %d requests and %d wait, want 2 and %d", st.stalled.held(), st.r.targets.waitingCount(), n-2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return st
}

// TestRunnerStalledTargetDoesNotBlockOthers is the proof that one stalled
// target cannot take every worker: with 4 workers and a cap of 2, 6
// executions to a target that holds its requests leave room for an
// execution to a healthy target, which succeeds while the stalled target
// still holds its requests. Without the cap, the 4 workers wait for the
// stalled target up to the 30 s step timeout and waitExecution gives up
// after 15 s.
func TestRunnerStalledTargetDoesNotBlockOthers(t *testing.T) {
	st := stallRunner(t, 6)
	ex := newExecution("healthy", "ev-healthy", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	addExecutions(t, st.s, ex)
	st.r.Notify() // as the engine does after adding executions
	got := waitExecution(t, st.s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if n := st.stalled.held(); n != 2 {
		t.Errorf("stalled target holds %d requests when the healthy one succeeded, want 2", n)
	}
	if n := len(st.healthy.requests()); n != 1 || got.Steps[0].Attempts != 1 {
		t.Errorf("healthy target: got %d requests, %d attempts, want 1 and 1", n, got.Steps[0].Attempts)
	}
	if p := st.stalled.maxHeld(); p > 2 {
		t.Errorf("stalled target held %d requests at once, want at most 2", p)
	}
}

// TestRunnerDeferredStepsDeliveredOnce: the executions whose target is at
// its cap wait in line, claimed (running in the store), with no attempt
// made or reported, each refused once; once the target answers, each is
// delivered exactly once and succeeds after one attempt.
func TestRunnerDeferredStepsDeliveredOnce(t *testing.T) {
	st := stallRunner(t, 6)
	for _, ex := range st.exs {
		got, err := st.s.Execution(context.Background(), ex.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s := got.Steps[0]; got.Status != alorules.StatusRunning || s.Status != alorules.StatusRunning || s.Attempts != 1 {
			t.Errorf("%s while its target is busy: got %s with step %s after %d attempts, want running (claimed) with its attempt begun",
				ex.EventID, got.Status, s.Status, s.Attempts)
		}
	}
	if n := st.attempts.Load(); n != 0 {
		t.Errorf("got %d attempts recorded before the target answered, want 0", n)
	}
	if n := st.deferrals.Load(); n != 4 {
		t.Errorf("got %d deferrals reported, want 4: each execution beyond the cap refused once", n)
	}

	st.stalled.release()
	for _, ex := range st.exs {
		got := waitExecution(t, st.s, ex.ID, hasStatus(alorules.StatusSucceeded))
		if a := got.Steps[0].Attempts; a != 1 {
			t.Errorf("%s: got %d attempts, want 1: deferrals do not count", ex.EventID, a)
		}
	}
	keys := map[string]int{}
	for _, r := range st.stalled.requests() {
		keys[r.Header.Get("Idempotency-Key")]++
	}
	for _, ex := range st.exs {
		if n := keys[ex.EventID+":stalled:0"]; n != 1 {
			t.Errorf("%s: delivered %d times, want exactly once", ex.EventID, n)
		}
	}
	if n := len(st.stalled.requests()); n != len(st.exs) {
		t.Errorf("stalled target got %d requests, want %d", n, len(st.exs))
	}
	// OnStep is called after a result is stored: the last calls may come
	// a moment after the executions read as succeeded.
	deadline := time.Now().Add(5 * time.Second)
	for st.attempts.Load() < int32(len(st.exs)) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := st.attempts.Load(); n != int32(len(st.exs)) {
		t.Errorf("got %d attempts reported to OnStep, want %d: a deferral is not an attempt", n, len(st.exs))
	}
	if n := st.deferrals.Load(); n != 4 {
		t.Errorf("got %d deferrals reported in all, want 4: a step handed a slot is not refused again", n)
	}
	if p := st.stalled.maxHeld(); p > 2 {
		t.Errorf("stalled target held %d requests at once, want at most 2", p)
	}
}

// TestRunnerDeferralCostsNoWrites: 200 executions to a target that stalls
// for 2 s cost one write each (the claim every execution makes) while they
// wait, none more however long it stalls, and one more each for their
// result: as if they had never been refused. Once the target answers,
// each is delivered exactly once, in the order they were due (give or take
// neighbours that were in flight at once). The previous design, which put a
// refused step back in the queue for 200-500 ms, made about 1,160 writes a
// second here and delivered in no particular order.
func TestRunnerDeferralCostsNoWrites(t *testing.T) {
	const n = 200
	st := stallRunner(t, n)
	claimed := st.counted.writes.Load()
	if claimed > n {
		t.Errorf("got %d writes by the time every execution waited, want at most %d (one claim each)", claimed, n)
	}
	time.Sleep(2 * time.Second)
	if w := st.counted.writes.Load() - claimed; w != 0 {
		t.Errorf("got %d writes while %d executions waited 2 s for a stalled target, want 0", w, n-2)
	}
	if d := st.deferrals.Load(); d != n-2 {
		t.Errorf("got %d deferrals, want %d: each waiting execution refused once", d, n-2)
	}

	st.stalled.release()
	for _, ex := range st.exs {
		if got := waitExecution(t, st.s, ex.ID, hasStatus(alorules.StatusSucceeded)); got.Steps[0].Attempts != 1 {
			t.Errorf("%s: got %d attempts, want 1", ex.EventID, got.Steps[0].Attempts)
		}
	}
	if w := st.counted.writes.Load(); w > 2*n {
		t.Errorf("got %d writes in all, want at most %d: a claim and a result each", w, 2*n)
	}
	rank := map[string]int{}
	for i, ex := range st.exs {
		rank[ex.EventID+":stalled:0"] = i
	}
	reqs := st.stalled.requests()
	if len(reqs) != n {
		t.Errorf("stalled target got %d requests, want %d", len(reqs), n)
	}
	// The line hands slots out oldest due first (TestTargetGateLine); on
	// the way to the target, requests in flight at once may still swap.
	// Count the pairs that arrived out of due order: about n²/4 (10,000)
	// for an order that has nothing to do with due times, a few dozen
	// for neighbours swapping.
	seen, arrived := map[string]bool{}, []int{}
	for _, r := range reqs {
		key := r.Header.Get("Idempotency-Key")
		if seen[key] {
			t.Errorf("%s delivered twice", key)
		}
		seen[key] = true
		arrived = append(arrived, rank[key])
	}
	inversions, worst := 0, 0
	for i := range arrived {
		worst = max(worst, arrived[i]-i, i-arrived[i])
		for j := i + 1; j < len(arrived); j++ {
			if arrived[j] < arrived[i] {
				inversions++
			}
		}
	}
	if inversions > 2*n {
		t.Errorf("got %d pairs delivered out of due order, want at most %d", inversions, 2*n)
	}
	t.Logf("%d executions: %d writes while waiting (claims), %d in all; %d pairs out of due order, none more than %d places from its own",
		n, claimed, st.counted.writes.Load(), inversions, worst)
}

// TestRunnerWaitingRequeuedOnShutdown: executions waiting in line when the
// runner stops go back to the queue as they were before their claim, due
// when they were: a retrying step keeps its last failure (status, attempts,
// code, error). While they wait they cannot be retried by hand. The next
// runner sends each once; the retrying step's attempt counts as its second.
func TestRunnerWaitingRequeuedOnShutdown(t *testing.T) {
	s, _ := newStore(t)
	tg := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(tg.URL)})},
	}}
	retrying := newExecution("r", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	retrying.Status, retrying.Error = alorules.StatusRetrying, "step 0: http: unexpected status 503 Service Unavailable"
	retrying.Steps[0].Status, retrying.Steps[0].Attempts, retrying.Steps[0].Code = alorules.StatusRetrying, 1, 503
	retrying.Steps[0].Error = "http: unexpected status 503 Service Unavailable"
	queued := newExecution("r", "ev2", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	counted := &countingStore{Store: s}
	r, stop := startRunner(t, RunnerConfig{Store: counted, Renderer: rnd, Grace: 100 * time.Millisecond})
	// Another attempt holds every slot of the target, before the
	// executions are there to be claimed.
	holder := r.targets.newSlots()
	for range r.cfg.MaxPerTarget {
		holder.take(keyOf(t, tg.URL))
	}
	defer holder.done()
	addExecutions(t, s, retrying, queued)
	want := map[string]*alorules.Execution{}
	for _, ex := range []*alorules.Execution{retrying, queued} {
		got, err := s.Execution(context.Background(), ex.ID)
		if err != nil {
			t.Fatal(err)
		}
		want[ex.ID] = got
	}
	r.Notify()
	deadline := time.Now().Add(15 * time.Second)
	for r.targets.waitingCount() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("got %d executions waiting, want 2", r.targets.waitingCount())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := r.Retry(context.Background(), retrying.ID); !errors.Is(err, alorules.ErrConflict) {
		t.Errorf("retry of a waiting execution: got %v, want ErrConflict", err)
	}
	if w := counted.writes.Load(); w != 2 {
		t.Errorf("got %d writes before the stop, want 2 (the claims)", w)
	}
	stop()
	if n := len(tg.requests()); n != 0 {
		t.Errorf("target got %d requests while busy, want 0", n)
	}
	for id, w := range want {
		got, err := s.Execution(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		gs, ws := got.Steps[0], w.Steps[0]
		if got.Status != w.Status || got.Error != w.Error || !got.NextAttemptAt.Equal(w.NextAttemptAt) {
			t.Errorf("%s after the stop: got %s %q due %s, want %s %q due %s", got.EventID,
				got.Status, got.Error, got.NextAttemptAt, w.Status, w.Error, w.NextAttemptAt)
		}
		if gs.Status != ws.Status || gs.Attempts != ws.Attempts || gs.Code != ws.Code || gs.Error != ws.Error {
			t.Errorf("%s step after the stop: got %s after %d attempts, code %d, error %q; want it as it was: %s, %d, %d, %q",
				got.EventID, gs.Status, gs.Attempts, gs.Code, gs.Error, ws.Status, ws.Attempts, ws.Code, ws.Error)
		}
	}

	startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Grace: 100 * time.Millisecond})
	for id, attempts := range map[string]int{retrying.ID: 2, queued.ID: 1} {
		got := waitExecution(t, s, id, hasStatus(alorules.StatusSucceeded))
		if a := got.Steps[0].Attempts; a != attempts {
			t.Errorf("%s: got %d attempts, want %d", got.EventID, a, attempts)
		}
	}
	if n := len(tg.requests()); n != 2 {
		t.Errorf("target got %d requests, want 2", n)
	}
}

// TestRunnerWaitingBounded: no more than maxWaiting steps wait in memory;
// one refused beyond that goes back to the store's queue (queued, no
// attempt) for about a step timeout, then runs. Each is delivered once.
func TestRunnerWaitingBounded(t *testing.T) {
	s, _ := newStore(t)
	tg := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t", Timeout: "2s"}, Conn: httpConn(tg.URL)})},
	}}
	var exs []*alorules.Execution
	for i := range 6 {
		exs = append(exs, newExecution("r", fmt.Sprint("ev", i), []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{}))
	}
	addExecutions(t, s, exs...)
	var deferrals atomic.Int32
	r := NewRunner(RunnerConfig{Store: s, Renderer: rnd, Workers: 4, MaxPerTarget: 1, Grace: 100 * time.Millisecond,
		OnDefer: func(*alorules.Execution, alorules.StepResult, string) { deferrals.Add(1) }})
	r.targets.maxWaiting = 2
	holder := r.targets.newSlots()
	holder.take(keyOf(t, tg.URL))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Every execution is refused once: 2 wait, 4 go back to the queue,
	// for a step timeout (nothing is known of the target's pace): long
	// enough for the counts below to be read before they come back.
	deadline := time.Now().Add(15 * time.Second)
	for deferrals.Load() < 6 {
		if n := r.targets.waitingCount(); n > 2 {
			t.Fatalf("got %d waiting, want at most 2", n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d deferrals, want 6", deferrals.Load())
		}
		time.Sleep(time.Millisecond)
	}
	// OnDefer is told before the store has the execution back in the
	// queue: poll until the four writes are in, well before they are due.
	backInQueue := func() (back int) {
		for _, ex := range exs {
			got, err := s.Execution(context.Background(), ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			st := got.Steps[0]
			if got.Status == alorules.StatusQueued && st.Status == alorules.StatusQueued && st.Attempts == 0 && got.NextAttemptAt.After(time.Now()) {
				back++
			}
		}
		return back
	}
	settle := time.Now().Add(time.Second)
	back := backInQueue()
	for back != 4 && time.Now().Before(settle) {
		time.Sleep(5 * time.Millisecond)
		back = backInQueue()
	}
	if back != 4 || r.targets.waitingCount() != 2 {
		t.Errorf("got %d back in the queue (queued, not attempted, due later) and %d waiting, want 4 and 2", back, r.targets.waitingCount())
	}

	holder.done()
	for _, ex := range exs {
		got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
		if a := got.Steps[0].Attempts; a != 1 {
			t.Errorf("%s: got %d attempts, want 1", got.EventID, a)
		}
	}
	if n := len(tg.requests()); n != len(exs) {
		t.Errorf("target got %d requests, want %d", n, len(exs))
	}
}
