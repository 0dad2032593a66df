package actions

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// hiccupStore is the real store whose next few execution writes fail, as
// they would while a disk is momentarily full.
type hiccupStore struct {
	*store.Store
	failures atomic.Int32
}

func (h *hiccupStore) UpdateExecution(ctx context.Context, ex *alorules.Execution) error {
	if ex.Status.Final() && h.failures.Add(-1) >= 0 {
		return errors.New("commit: no space left on device")
	}
	return h.Store.UpdateExecution(ctx, ex)
}

// TestRunnerSavesFinalStateThroughHiccups: a failed write of an
// execution's final state is tried again, so the execution does not stay
// "running" until the next restart.
func TestRunnerSavesFinalStateThroughHiccups(t *testing.T) {
	s, _ := newStore(t)
	hs := &hiccupStore{Store: s}
	hs.failures.Store(3)
	target := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(target.URL)})},
	}}
	r, _ := startRunner(t, RunnerConfig{Store: hs, Renderer: rnd})
	ex := newExecution("r", "ev-hiccup", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
	addExecutions(t, s, ex)
	r.Notify()
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if got.Steps[0].Status != alorules.StatusSucceeded {
		t.Errorf("got step %s, want succeeded", got.Steps[0].Status)
	}
	if n := hs.failures.Load(); n >= 0 {
		t.Errorf("got %d failures left, want all three used", n+1)
	}
}

// outageStore is the real store whose writes of final executions fail
// until the outage ends, as they would while a disk stays full.
type outageStore struct {
	*store.Store
	down atomic.Bool
}

func (o *outageStore) UpdateExecution(ctx context.Context, ex *alorules.Execution) error {
	if ex.Status.Final() && o.down.Load() {
		return errors.New("commit: no space left on device")
	}
	return o.Store.UpdateExecution(ctx, ex)
}

// TestRunnerSavesFinalStateAfterLongOutage: when the store fails for
// longer than a worker keeps trying, the execution's final state is kept
// and written once the store recovers, without a restart.
func TestRunnerSavesFinalStateAfterLongOutage(t *testing.T) {
	s, _ := newStore(t)
	ost := &outageStore{Store: s}
	ost.down.Store(true)
	target := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(target.URL)})},
	}}
	r, _ := startRunner(t, RunnerConfig{Store: ost, Renderer: rnd, SaveTimeout: 50 * time.Millisecond})
	ex := newExecution("r", "ev-outage", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
	addExecutions(t, s, ex)
	r.Notify()

	// The step was sent and the worker gave up writing the result: the
	// store still says running.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.unsaved)
		r.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d unsaved executions, want 1 (target got %d requests)", n, len(target.requests()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := s.Execution(context.Background(), ex.ID); got.Status != alorules.StatusRunning {
		t.Fatalf("during the outage: got %s, want running", got.Status)
	}

	ost.down.Store(false)
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if got.Steps[0].Status != alorules.StatusSucceeded || got.Steps[0].Attempts != 1 {
		t.Errorf("got step %s after %d attempts, want succeeded after 1", got.Steps[0].Status, got.Steps[0].Attempts)
	}
	if n := len(target.requests()); n != 1 {
		t.Errorf("target got %d requests, want 1 (the step is not sent again)", n)
	}
}
