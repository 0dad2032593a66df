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
