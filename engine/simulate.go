package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"alorules"
	"alorules/store"
)

// A Simulation runs a sequence of events through a rule set the way the
// service would, with the real matcher, entity state, timers and digests
// on a temporary store, and a clock that only moves when told: for rule
// unit tests (`alorules test --tests`) and the playground. Nothing is
// sent: executions are created and their steps rendered, never run.
type Simulation struct {
	rs  *RuleSet
	dir string
	st  *store.Store
	e   *Engine

	mu  sync.Mutex
	now time.Time
}

// SimStep is what one event or one move of the clock did.
type SimStep struct {
	// At is the simulated time after the step.
	At time.Time `json:"at"`
	// Event is the event sent (nil when the clock moved); Match is its
	// record (nil for a handshake, which is never matched).
	Event *alorules.Event `json:"event,omitempty"`
	Match *alorules.Match `json:"match,omitempty"`
	// Fired are the timers and digests that came due, in order.
	Fired []Fired `json:"fired,omitempty"`
	// Executions are those created in this step, by the match or by what
	// fired, with their steps rendered.
	Executions []SimExecution `json:"executions,omitempty"`
	// PendingTimers are the timers pending after the step.
	PendingTimers []*store.Timer `json:"pending_timers,omitempty"`
}

// SimExecution is an execution a simulation created, rendered.
type SimExecution struct {
	ID      string `json:"id"`
	Rule    string `json:"rule"`
	EventID string `json:"event_id"`
	// Source is "match", "timer" or "digest".
	Source string     `json:"source"`
	Steps  []TestStep `json:"steps"`
}

// Sources of a simulated execution.
const (
	SourceMatch  = "match"
	SourceTimer  = FiredTimer
	SourceDigest = FiredDigest
)

// NewSimulation starts a simulation of rs with the clock at start. Close
// it to remove its store.
func NewSimulation(rs *RuleSet, start time.Time) (*Simulation, error) {
	dir, err := os.MkdirTemp("", "alorules-sim-")
	if err != nil {
		return nil, fmt.Errorf("simulation: %w", err)
	}
	sim := &Simulation{rs: rs, dir: dir, now: start}
	sim.st, err = store.Open(filepath.Join(dir, "sim.db"), store.Options{NoSync: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("simulation: %w", err)
	}
	sim.e, err = New(Config{Store: sim.st, RuleSet: rs, RulesPath: rs.file, Now: sim.clock,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		sim.Close()
		return nil, fmt.Errorf("simulation: %w", err)
	}
	return sim, nil
}

// Close removes the simulation's store.
func (sim *Simulation) Close() error {
	err := sim.st.Close()
	return errors.Join(err, os.RemoveAll(sim.dir))
}

func (sim *Simulation) clock() time.Time {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	return sim.now
}

func (sim *Simulation) set(t time.Time) {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if t.After(sim.now) {
		sim.now = t
	}
}

// Now is the simulated time.
func (sim *Simulation) Now() time.Time { return sim.clock() }

// Send delivers one webhook body at the simulated time: it is stored,
// matched, and whatever is due at that time fires.
func (sim *Simulation) Send(ctx context.Context, body []byte) (*SimStep, error) {
	ev, err := NewEvent(body, sim.clock())
	if err != nil {
		return nil, err
	}
	if _, _, err := sim.st.SaveEvent(ctx, ev, nil); err != nil {
		return nil, err
	}
	step := &SimStep{Event: ev}
	for {
		n, err := sim.e.MatchPending(ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	if !ev.Handshake {
		if step.Match, err = sim.st.Match(ctx, ev.ID); err != nil {
			return nil, err
		}
		for _, r := range step.Match.Results {
			if r.ExecutionID != "" {
				if err := sim.addExecution(ctx, step, r.ExecutionID, SourceMatch); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := sim.fire(ctx, step); err != nil {
		return nil, err
	}
	return step, sim.finish(ctx, step)
}

// Advance moves the clock by d, stopping at each due time on the way so
// that timers and digests fire in order, each at its own time.
func (sim *Simulation) Advance(ctx context.Context, d time.Duration) (*SimStep, error) {
	if d < 0 {
		return nil, fmt.Errorf("advance: %s is negative", d)
	}
	target := sim.clock().Add(d)
	step := &SimStep{}
	for {
		next, ok := sim.nextDue(ctx)
		if !ok || next.After(target) {
			break
		}
		sim.set(next)
		if err := sim.fire(ctx, step); err != nil {
			return nil, err
		}
	}
	sim.set(target)
	if err := sim.fire(ctx, step); err != nil {
		return nil, err
	}
	return step, sim.finish(ctx, step)
}

func (sim *Simulation) nextDue(ctx context.Context) (time.Time, bool) {
	var best time.Time
	found := false
	for _, next := range []func(context.Context) (time.Time, bool, error){sim.st.NextTimerDue, sim.st.NextDigestDue} {
		if t, ok, err := next(ctx); err == nil && ok && (!found || t.Before(best)) {
			best, found = t, true
		}
	}
	return best, found
}

func (sim *Simulation) fire(ctx context.Context, step *SimStep) error {
	fired, err := sim.e.FireDue(ctx)
	if err != nil {
		return err
	}
	for _, f := range fired {
		step.Fired = append(step.Fired, f)
		if f.ExecutionID != "" {
			if err := sim.addExecution(ctx, step, f.ExecutionID, f.Kind); err != nil {
				return err
			}
		}
	}
	return nil
}

// addExecution renders an execution's steps as the runner would send them
// (steps reading steps.<id> see empty results), secrets redacted.
func (sim *Simulation) addExecution(ctx context.Context, step *SimStep, id, source string) error {
	ex, err := sim.st.Execution(ctx, id)
	if err != nil {
		return err
	}
	se := SimExecution{ID: ex.ID, Rule: ex.Rule, EventID: ex.EventID, Source: source, Steps: []TestStep{}}
	for i, sr := range ex.Steps {
		ts := TestStep{Index: i, ID: sr.ID, Kind: sr.Kind}
		req, err := sim.e.RenderStep(ctx, ex, i)
		if err != nil {
			ts.Error = err.Error()
		} else {
			ts.Request = redactedJSON(req.Spec, sim.rs.jsonSecrets)
		}
		se.Steps = append(se.Steps, ts)
	}
	step.Executions = append(step.Executions, se)
	return nil
}

func (sim *Simulation) finish(ctx context.Context, step *SimStep) error {
	step.At = sim.clock()
	ts, _, err := sim.st.Timers(ctx, store.DueFilter{Limit: 500})
	if err != nil {
		return err
	}
	step.PendingTimers = ts
	return nil
}
