package actions

import (
	"context"
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

// stallRunner starts a runner with 4 workers and a cap of 2 per target,
// 6 executions to a stalled target and a step timeout of 30 s, and waits
// until the stalled target holds 2 requests. healthy is a rule to a target
// that answers at once.
func stallRunner(t *testing.T, onDefer func(ex *alorules.Execution, st alorules.StepResult, reason string)) (*store.Store, *stalledTarget, *target, []*alorules.Execution, *atomic.Int32) {
	s, _ := newStore(t)
	stalled := newStalledTarget(t)
	healthy := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"stalled": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "s", Path: "/hook", Timeout: "30s"}, Conn: httpConn(stalled.URL)})},
		"healthy": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "h", Path: "/hook", Timeout: "30s"}, Conn: httpConn(healthy.URL)})},
	}}
	var exs []*alorules.Execution
	for i := range 6 {
		exs = append(exs, newExecution("stalled", fmt.Sprint("ev-stalled-", i), []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{}))
	}
	addExecutions(t, s, exs...)
	var attempts atomic.Int32
	startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Workers: 4, MaxPerTarget: 2, Grace: 100 * time.Millisecond,
		OnStep:  func(*alorules.Execution, alorules.StepResult) { attempts.Add(1) },
		OnDefer: onDefer})
	deadline := time.Now().Add(15 * time.Second)
	for stalled.held() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("stalled target holds %d requests, want 2", stalled.held())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s, stalled, healthy, exs, &attempts
}

// TestRunnerStalledTargetDoesNotBlockOthers is the proof that one stalled
// target cannot take every worker: with 4 workers and a cap of 2, 6
// executions to a target that holds its requests leave room for an
// execution to a healthy target, which succeeds while the stalled target
// still holds its requests. Without the cap, the 4 workers wait for the
// stalled target up to the 30 s step timeout and waitExecution gives up
// after 15 s.
func TestRunnerStalledTargetDoesNotBlockOthers(t *testing.T) {
	s, stalled, healthy, _, _ := stallRunner(t, nil)
	ex := newExecution("healthy", "ev-healthy", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	addExecutions(t, s, ex)
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if n := stalled.held(); n != 2 {
		t.Errorf("stalled target holds %d requests when the healthy one succeeded, want 2", n)
	}
	if n := len(healthy.requests()); n != 1 || got.Steps[0].Attempts != 1 {
		t.Errorf("healthy target: got %d requests, %d attempts, want 1 and 1", n, got.Steps[0].Attempts)
	}
	if p := stalled.maxHeld(); p > 2 {
		t.Errorf("stalled target held %d requests at once, want at most 2", p)
	}
}

// TestRunnerDeferredStepsDeliveredOnce: the executions deferred while
// their target was at its cap wait in the queue as queued, not retrying
// or failed, with no attempt counted; once the target answers, each is
// delivered exactly once and succeeds after one attempt.
func TestRunnerDeferredStepsDeliveredOnce(t *testing.T) {
	var deferrals atomic.Int32
	s, stalled, _, exs, attempts := stallRunner(t, func(ex *alorules.Execution, st alorules.StepResult, reason string) {
		if reason != DeferTargetBusy {
			t.Errorf("got reason %q, want %q", reason, DeferTargetBusy)
		}
		deferrals.Add(1)
	})

	// While deferred, an execution reads queued with its step queued and
	// no attempt, whenever no worker has it.
	seen := false
	deadline := time.Now().Add(15 * time.Second)
	for !seen && time.Now().Before(deadline) {
		for _, ex := range exs {
			got, err := s.Execution(context.Background(), ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			st := got.Steps[0]
			switch {
			case got.Status == alorules.StatusRetrying || got.Status.Final() || st.Status == alorules.StatusRetrying || st.Status.Final():
				t.Fatalf("deferred execution: got %s with step %s (%s), want queued or running", got.Status, st.Status, st.Error)
			case got.Status == alorules.StatusQueued && !got.NextAttemptAt.IsZero() && deferrals.Load() > 0:
				if st.Status != alorules.StatusQueued || st.Attempts != 0 || st.Error != "" || st.Code != 0 {
					t.Errorf("deferred step: got %s after %d attempts (code %d, error %q), want queued after 0", st.Status, st.Attempts, st.Code, st.Error)
				}
				seen = true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !seen {
		t.Fatal("never saw a deferred execution waiting in the queue")
	}
	if n := attempts.Load(); n != 0 {
		t.Errorf("got %d attempts recorded before the target answered, want 0", n)
	}

	stalled.release()
	for _, ex := range exs {
		got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
		if a := got.Steps[0].Attempts; a != 1 {
			t.Errorf("%s: got %d attempts, want 1: deferrals do not count", ex.EventID, a)
		}
	}
	keys := map[string]int{}
	for _, r := range stalled.requests() {
		keys[r.Header.Get("Idempotency-Key")]++
	}
	for _, ex := range exs {
		if n := keys[ex.EventID+":stalled:0"]; n != 1 {
			t.Errorf("%s: delivered %d times, want exactly once", ex.EventID, n)
		}
	}
	if n := len(stalled.requests()); n != len(exs) {
		t.Errorf("stalled target got %d requests, want %d", n, len(exs))
	}
	if n := attempts.Load(); n != int32(len(exs)) {
		t.Errorf("got %d attempts reported to OnStep, want %d: a deferral is not an attempt", n, len(exs))
	}
	if deferrals.Load() == 0 {
		t.Error("OnDefer never called, want the deferrals reported")
	}
	if p := stalled.maxHeld(); p > 2 {
		t.Errorf("stalled target held %d requests at once, want at most 2", p)
	}
}

// TestRunnerDeferralKeepsStepState: a retrying step deferred because its
// target is busy keeps its last failure (status, attempts, error) and its
// execution stays retrying; once the target is free, the next attempt is
// counted as the second.
func TestRunnerDeferralKeepsStepState(t *testing.T) {
	s, _ := newStore(t)
	tg := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(tg.URL)})},
	}}
	ex := newExecution("r", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	ex.Status, ex.Error = alorules.StatusRetrying, "step 0: http: unexpected status 503 Service Unavailable"
	ex.Steps[0].Status, ex.Steps[0].Attempts, ex.Steps[0].Code = alorules.StatusRetrying, 1, 503
	ex.Steps[0].Error = "http: unexpected status 503 Service Unavailable"
	addExecutions(t, s, ex)

	stored := make(chan *alorules.Execution, 10)
	r := NewRunner(RunnerConfig{Store: s, Renderer: rnd, Grace: 100 * time.Millisecond,
		OnDefer: func(ex *alorules.Execution, _ alorules.StepResult, _ string) {
			// Called after the write, by the worker that still has the
			// execution: nobody can claim it before this read.
			got, err := s.Execution(context.Background(), ex.ID)
			if err != nil {
				t.Error(err)
				return
			}
			select {
			case stored <- got:
			default:
			}
		}})
	// Another attempt holds every slot of the target.
	holder := r.targets.newSlots()
	for range r.cfg.MaxPerTarget {
		holder.take(keyOf(t, tg.URL))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var got *alorules.Execution
	select {
	case got = <-stored:
	case <-time.After(15 * time.Second):
		t.Fatal("step never deferred")
	}
	st := got.Steps[0]
	if got.Status != alorules.StatusRetrying || got.Error != ex.Error {
		t.Errorf("deferred execution: got %s %q, want retrying %q", got.Status, got.Error, ex.Error)
	}
	if st.Status != alorules.StatusRetrying || st.Attempts != 1 || st.Code != 503 || st.Error != ex.Steps[0].Error {
		t.Errorf("deferred step: got %s after %d attempts, code %d, error %q; want it as it was", st.Status, st.Attempts, st.Code, st.Error)
	}
	if n := len(tg.requests()); n != 0 {
		t.Errorf("target got %d requests while busy, want 0", n)
	}

	holder.done()
	got = waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if a := got.Steps[0].Attempts; a != 2 {
		t.Errorf("got %d attempts, want 2: the failed one and the one that succeeded", a)
	}
	if n := len(tg.requests()); n != 1 {
		t.Errorf("target got %d requests, want 1", n)
	}
}
