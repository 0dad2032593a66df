package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"alorules"
	"alorules/store"
)

// recall reads what the store remembers about an entity: one read per
// event whatever the number of rules. For rules that read the previous
// payload (decoded), decoding it would cost as much as decoding the event
// itself, so the decoded payloads of recently seen entities are kept,
// checked against the stored event id.
func (e *Engine) recall(ctx context.Context, key string, decoded bool) (recalled, error) {
	st, err := e.cfg.Store.Entity(ctx, key)
	if err != nil {
		return recalled{}, err
	}
	rec := recalled{eventID: st.EventID, raw: st.Payload, timers: st.Timers}
	if decoded && st.EventID != "" {
		rec.payload, _ = e.prev.get(key, st.EventID)
	}
	return rec, nil
}

// prevCacheSize bounds the decoded payloads kept; an entity beyond it is
// decoded from the store when its next event comes.
const prevCacheSize = 1024

// prevCache holds decoded payloads by entity. Decoded payloads are never
// modified, so one may serve as an event's payload and later as the next
// event's previous.
type prevCache struct {
	mu sync.Mutex
	m  map[string]prevEntry
}

type prevEntry struct {
	eventID string
	payload any
}

func (c *prevCache) get(key, eventID string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	en, ok := c.m[key]
	if !ok || en.eventID != eventID {
		return nil, false
	}
	return en.payload, true
}

func (c *prevCache) put(key, eventID string, payload any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= prevCacheSize {
		// Starting over is crude but bounded and rare; a miss costs one
		// decode.
		c.m = make(map[string]prevEntry, prevCacheSize)
	}
	c.m[key] = prevEntry{eventID: eventID, payload: payload}
}

func (c *prevCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// reset forgets every payload.
func (c *prevCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// Fired is a timer or digest that came due.
type Fired struct {
	// Kind is "timer" or "digest".
	Kind string    `json:"kind"`
	ID   string    `json:"id"`
	Rule string    `json:"rule"`
	Due  time.Time `json:"due"`
	// Entity is a timer's entity, Key a digest's key.
	Entity string `json:"entity,omitempty"`
	Key    string `json:"key,omitempty"`
	// EventID is the event whose execution it is: the one that set the
	// timer, or the first of the digest.
	EventID string `json:"event_id"`
	// Count is how many events a digest collected.
	Count int `json:"count,omitempty"`
	// ExecutionID is the execution created; empty when nothing ran
	// (Dropped says why).
	ExecutionID string `json:"execution_id,omitempty"`
	Dropped     string `json:"dropped,omitempty"`
}

// Kinds of Fired.
const (
	FiredTimer  = "timer"
	FiredDigest = "digest"
)

// fireBatch is how many due timers and digests are read at once.
const fireBatch = 100

// FireDue runs every timer and digest due at the engine's clock, the
// earliest first: each becomes one execution under the current rules. A
// timer whose rule is gone (or no longer has after:) is dropped, and so
// is a digest whose rule no longer has digest:. After downtime they fire
// late, never not at all. Run calls it after each batch of matching; rule
// simulations call it after moving their clock.
//
// Only what fell due before the oldest event still waiting to be matched
// fires: that event, received earlier, may cancel a timer or belong to a
// digest, and a matcher that fell behind (a backlog, a restart) must not
// let a timer beat it.
func (e *Engine) FireDue(ctx context.Context) ([]Fired, error) {
	var out []Fired
	for {
		now := e.cfg.Now()
		upTo, err := e.fireHorizon(ctx, now)
		if err != nil {
			return out, err
		}
		timers, err := e.cfg.Store.DueTimers(ctx, upTo, fireBatch)
		if err != nil {
			return out, err
		}
		digests, err := e.cfg.Store.DueDigests(ctx, upTo, fireBatch)
		if err != nil {
			return out, err
		}
		if len(timers) == 0 && len(digests) == 0 {
			break
		}
		// Merge by due time, so that a simulation sees them in order.
		ti, di := 0, 0
		for ti < len(timers) || di < len(digests) {
			var f Fired
			var err error
			if di == len(digests) || (ti < len(timers) && !timers[ti].Due.After(digests[di].Due)) {
				f, err = e.fireTimer(ctx, timers[ti], now)
				ti++
			} else {
				f, err = e.fireDigest(ctx, digests[di], now)
				di++
			}
			if err != nil {
				return out, err
			}
			if f.ID != "" {
				out = append(out, f)
			}
		}
		if len(timers) < fireBatch && len(digests) < fireBatch {
			break
		}
	}
	for _, f := range out {
		if f.ExecutionID != "" {
			e.cfg.OnExecutions()
			break
		}
	}
	return out, nil
}

// untilDue is how long the matcher may wait before a timer or digest is
// due, at most limit.
func (e *Engine) untilDue(ctx context.Context, limit time.Duration) time.Duration {
	wait := limit
	now := e.cfg.Now()
	for _, next := range []func(context.Context) (time.Time, bool, error){e.cfg.Store.NextTimerDue, e.cfg.Store.NextDigestDue} {
		t, ok, err := next(ctx)
		if err != nil || !ok {
			continue
		}
		wait = min(wait, max(t.Sub(now), time.Millisecond))
	}
	return wait
}

func (e *Engine) fireTimer(ctx context.Context, t *store.Timer, now time.Time) (Fired, error) {
	f := Fired{Kind: FiredTimer, ID: t.ID, Rule: t.Rule, Due: t.Due, Entity: t.Entity, EventID: t.EventID}
	rs := e.Current()
	r := rs.byName[t.Rule]
	var ex *alorules.Execution
	switch {
	case r == nil:
		f.Dropped = "the rule is no longer in the rules file"
	case r.after == 0:
		f.Dropped = "the rule no longer has after:"
	case len(r.steps) == 0:
		f.Dropped = "the rule has no steps"
	default:
		ev, err := e.cfg.Store.Event(ctx, t.EventID)
		if errors.Is(err, alorules.ErrNotFound) {
			f.Dropped = "its event is gone"
			break
		}
		if err != nil {
			return f, fmt.Errorf("fire timer %s: %w", t.ID, err)
		}
		state := ev.Payload
		if st, err := e.cfg.Store.Entity(ctx, t.Entity); err != nil {
			return f, fmt.Errorf("fire timer %s: %w", t.ID, err)
		} else if st.Payload != nil {
			state = st.Payload
		}
		timer, _ := json.Marshal(map[string]any{"id": t.ID, "entity": t.Entity, "set_at": t.SetAt, "due": t.Due, "after": r.after.String()})
		vars := map[string]json.RawMessage{"state": state, "timer": timer}
		if r.readsPrevious && t.PreviousEventID != "" {
			if pev, err := e.cfg.Store.Event(ctx, t.PreviousEventID); err == nil {
				vars["previous"] = pev.Payload
			}
		}
		if ex, err = e.deferredExecution(rs, r, ev, vars, now); err != nil {
			return f, fmt.Errorf("fire timer %s: %w", t.ID, err)
		}
	}
	fired, err := e.cfg.Store.FireTimer(ctx, t.ID, ex)
	if err != nil {
		return f, err
	}
	if !fired {
		return Fired{}, nil // cancelled meanwhile
	}
	if ex != nil {
		f.ExecutionID = ex.ID
		e.log.Info("timer fired", "rule", t.Rule, "entity", t.Entity, "event_id", t.EventID, "execution_id", ex.ID, "late", now.Sub(t.Due).Round(time.Millisecond))
	} else {
		e.log.Warn("timer dropped", "rule", t.Rule, "entity", t.Entity, "event_id", t.EventID, "why", f.Dropped)
	}
	return f, nil
}

// maxDigestVars bounds the payloads a digest's execution carries: they are
// stored with it so that its steps render the same after a restart.
const maxDigestVars = 4 << 20

func (e *Engine) fireDigest(ctx context.Context, d *store.Digest, now time.Time) (Fired, error) {
	f := Fired{Kind: FiredDigest, ID: d.ID, Rule: d.Rule, Due: d.Due, Key: d.Key, Count: d.Count}
	if len(d.EventIDs) > 0 {
		f.EventID = d.EventIDs[0]
	}
	rs := e.Current()
	r := rs.byName[d.Rule]
	var ex *alorules.Execution
	switch {
	case r == nil:
		f.Dropped = "the rule is no longer in the rules file"
	case r.digest == nil:
		f.Dropped = "the rule no longer has digest:"
	case len(r.steps) == 0:
		f.Dropped = "the rule has no steps"
	default:
		var first *alorules.Event
		events := []byte{'['}
		size := 0
		for _, id := range d.EventIDs {
			ev, err := e.cfg.Store.Event(ctx, id)
			if errors.Is(err, alorules.ErrNotFound) {
				continue
			}
			if err != nil {
				return f, fmt.Errorf("fire digest %s: %w", d.ID, err)
			}
			if first == nil {
				first = ev
			}
			if size+len(ev.Payload) > maxDigestVars {
				break
			}
			if size > 0 {
				events = append(events, ',')
			}
			events = append(events, ev.Payload...)
			size += len(ev.Payload) + 1
		}
		if first == nil {
			f.Dropped = "its events are gone"
			break
		}
		f.EventID = first.ID
		events = append(events, ']')
		info, _ := json.Marshal(map[string]any{"key": d.Key, "count": d.Count, "opened_at": d.OpenedAt, "closed_at": d.Due, "window": r.digest.window.String()})
		vars := map[string]json.RawMessage{"events": events, "digest": info}
		var err error
		if ex, err = e.deferredExecution(rs, r, first, vars, now); err != nil {
			return f, fmt.Errorf("fire digest %s: %w", d.ID, err)
		}
	}
	fired, err := e.cfg.Store.FireDigest(ctx, d.ID, ex)
	if err != nil {
		return f, err
	}
	if !fired {
		return Fired{}, nil
	}
	if ex != nil {
		f.ExecutionID = ex.ID
		e.log.Info("digest sent", "rule", d.Rule, "key", d.Key, "events", d.Count, "event_id", f.EventID, "execution_id", ex.ID)
	} else {
		e.log.Warn("digest dropped", "rule", d.Rule, "key", d.Key, "events", d.Count, "why", f.Dropped)
	}
	return f, nil
}

// deferredExecution builds the execution of a fired timer or digest, its
// steps rendered for the record as a matched rule's are.
func (e *Engine) deferredExecution(rs *RuleSet, r *rule, ev *alorules.Event, vars map[string]json.RawMessage, now time.Time) (*alorules.Execution, error) {
	m, err := templateMachine(ev, vars, now, nil)
	if err != nil {
		return nil, err
	}
	defer m.release()
	ex := rs.execution(m, r, ev, now)
	ex.Vars = vars
	ex.ID = store.NewID(now)
	return ex, nil
}

// templateMachine builds the environment step templates render in: the
// event, the execution's Vars (previous among them), and steps.
func templateMachine(ev *alorules.Event, rawVars map[string]json.RawMessage, now time.Time, steps map[string]any) (*machine, error) {
	payload, err := decodePayload(ev.Payload)
	if err != nil {
		return nil, err
	}
	vars := make(map[string]any, len(rawVars))
	for _, k := range slices.Sorted(maps.Keys(rawVars)) {
		v, err := decodePayload(rawVars[k])
		if err != nil {
			return nil, fmt.Errorf("var %s: %w", k, err)
		}
		vars[k] = v
	}
	prev := vars["previous"]
	delete(vars, "previous")
	if steps == nil {
		steps = map[string]any{}
	}
	return newMachine(envInput{Event: ev, Payload: payload, Previous: prev, Now: now, Steps: steps, Vars: vars}), nil
}

// fireHorizon is the time up to which timers and digests may fire: now, or
// just before the oldest pending event was received.
func (e *Engine) fireHorizon(ctx context.Context, now time.Time) (time.Time, error) {
	pending, err := e.cfg.Store.PendingEvents(ctx, 1)
	if err != nil {
		return time.Time{}, err
	}
	if len(pending) == 1 && pending[0].ReceivedAt.Before(now) {
		return pending[0].ReceivedAt.Add(-time.Nanosecond), nil
	}
	return now, nil
}
