package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// MatchWrite is everything that matching one event produces, stored by
// SaveMatch in one transaction.
type MatchWrite struct {
	Match      *alorules.Match
	Executions []*alorules.Execution
	// Throttles maps throttle keys to the time until which they hold.
	Throttles map[string]time.Time
	// Entity, if set, replaces the state of the event's entity.
	Entity *EntityWrite
	// Timers are new timers to set; one whose rule already has a timer
	// pending for the entity is not stored (the first due time stays).
	// Ids are filled if empty.
	Timers []*Timer
	// CancelTimers are ids of pending timers to drop; ids no longer
	// pending are ignored.
	CancelTimers []string
	// Digests are the event's additions to open digests.
	Digests []*DigestAdd
}

// SaveMatch records the outcome of matching one event in one transaction:
// the match record, the event's removal from the pending queue (and its
// entry in the "unmatched" index if no rule matched), each new execution
// with its indexes and run queue entry, the throttle keys, and each rule's
// hit or condition error in the rule stats and the rule_events index.
//
// New executions get an id if they have none (and that id is written into
// the match result of the same rule that has none), status queued,
// CreatedAt now and NextAttemptAt = CreatedAt, unless set. SaveMatch is
// idempotent per event: if the event has a match record already, it
// writes nothing, so a matcher that crashed after committing and matches
// again creates no second set of executions or hits. The event must exist
// (alorules.ErrNotFound).
func (s *Store) SaveMatch(ctx context.Context, w MatchWrite) error {
	if w.Match == nil || w.Match.EventID == "" {
		return fmt.Errorf("save match: no event id")
	}
	now := time.Now()
	m := *w.Match
	m.Results = append([]alorules.RuleResult(nil), w.Match.Results...)
	if m.MatchedAt.IsZero() {
		m.MatchedAt = now
	}
	matched := false
	for _, r := range m.Results {
		matched = matched || r.Outcome == alorules.OutcomeMatched
	}
	vals := make([][]byte, len(w.Executions))
	for i, ex := range w.Executions {
		hadID := ex.ID != ""
		if ex.EventID == "" {
			ex.EventID = m.EventID
		}
		s.prepareExec(ex, now)
		if !hadID {
			linkResult(m.Results, ex)
		}
		v, err := encodeExec(ex, 0)
		if err != nil {
			return fmt.Errorf("save match %s: %w", m.EventID, err)
		}
		vals[i] = v
	}
	for _, t := range w.Timers {
		s.prepareTimer(t)
	}
	for _, d := range w.Digests {
		if d.ID == "" {
			d.ID = s.newID(d.At)
		}
	}
	mj, err := json.Marshal(&m)
	if err != nil {
		return fmt.Errorf("save match %s: %w", m.EventID, err)
	}
	eid := []byte(m.EventID)
	already := false
	err = s.write(ctx, func(tx *bolt.Tx) error {
		ms := tx.Bucket(bMatches)
		if already = ms.Get(eid) != nil; already {
			return nil
		}
		if tx.Bucket(bEvents).Get(eid) == nil {
			return clean(fmt.Errorf("event: %w", alorules.ErrNotFound))
		}
		if err := ms.Put(eid, mj); err != nil {
			return err
		}
		if err := tx.Bucket(bPending).Delete(eid); err != nil {
			return err
		}
		if !matched {
			if err := tx.Bucket(bUnmatched).Put(eid, nil); err != nil {
				return err
			}
		}
		for i, ex := range w.Executions {
			if _, err := insertExec(tx, ex, vals[i]); err != nil {
				return fmt.Errorf("execution %s: %w", ex.ID, err)
			}
		}
		// A hit is a rule whose condition held, whether it then ran
		// steps, set a timer or fed a digest; a condition that failed
		// at run time is a failure, like an execution that failed.
		for _, r := range m.Results {
			if kind := resultKind(r.Outcome); kind != "" {
				if err := countRuleEvent(tx, r.Rule, kind, m.EventID, m.MatchedAt); err != nil {
					return err
				}
			}
		}
		th := tx.Bucket(bThrottles)
		for k, until := range w.Throttles {
			if k == "" {
				continue
			}
			if err := th.Put(name(k), u64(unixNanos(until))); err != nil {
				return err
			}
		}
		return saveDeferred(tx, w)
	})
	if err != nil {
		return fmt.Errorf("save match %s: %w", m.EventID, err)
	}
	if already {
		return nil
	}
	w.Match.MatchedAt = m.MatchedAt
	w.Match.Results = m.Results
	return nil
}

// saveDeferred writes what a match does to entity state, timers and
// digests. Cancellations go first, so that an event which cancels a timer
// and matches its rule again sets a fresh one.
func saveDeferred(tx *bolt.Tx, w MatchWrite) error {
	for _, id := range w.CancelTimers {
		if _, err := deleteTimer(tx, []byte(id)); err != nil {
			return fmt.Errorf("cancel timer %s: %w", id, err)
		}
	}
	for _, t := range w.Timers {
		if _, err := putTimer(tx, t); err != nil {
			return fmt.Errorf("timer %s: %w", t.ID, err)
		}
	}
	for _, d := range w.Digests {
		if err := addToDigest(tx, d); err != nil {
			return fmt.Errorf("digest %s: %w", d.Rule, err)
		}
	}
	if w.Entity != nil && w.Entity.Key != "" {
		if err := putEntity(tx, w.Entity); err != nil {
			return fmt.Errorf("entity %s: %w", w.Entity.Key, err)
		}
	}
	return nil
}

// linkResult writes ex's new id into the first matched result of its rule
// that names no execution yet.
func linkResult(results []alorules.RuleResult, ex *alorules.Execution) {
	for i := range results {
		r := &results[i]
		if r.Rule == ex.Rule && r.Outcome == alorules.OutcomeMatched && r.ExecutionID == "" {
			r.ExecutionID = ex.ID
			return
		}
	}
}

// Match returns the match record of an event, or an error wrapping
// alorules.ErrNotFound if it has not been matched yet.
func (s *Store) Match(ctx context.Context, eventID string) (*alorules.Match, error) {
	var m *alorules.Match
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bMatches).Get([]byte(eventID))
		if v == nil {
			return alorules.ErrNotFound
		}
		m = new(alorules.Match)
		return json.Unmarshal(v, m)
	})
	if err != nil {
		return nil, fmt.Errorf("match %s: %w", eventID, err)
	}
	return m, nil
}

// ThrottledUntil returns the time until which a throttle key holds, the
// zero time if it was never set (or has been pruned after expiring).
func (s *Store) ThrottledUntil(ctx context.Context, key string) (time.Time, error) {
	var t time.Time
	err := s.view(ctx, func(tx *bolt.Tx) error {
		t = time.Time{}
		if v := tx.Bucket(bThrottles).Get(name(key)); v != nil {
			t = time.Unix(0, getU64(v)).UTC()
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("throttle %s: %w", key, err)
	}
	return t, nil
}

// SaveRuleSet stores the source of a rule set under its hash, so that an
// execution is rendered under the rules it was matched with even after a
// reload. Saving the same hash again changes nothing.
func (s *Store) SaveRuleSet(ctx context.Context, hash string, source []byte) error {
	if hash == "" {
		return fmt.Errorf("save rule set: empty hash")
	}
	src := bytes.Clone(source)
	err := s.write(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bRuleSets)
		if b.Get([]byte(hash)) != nil {
			return nil
		}
		return b.Put([]byte(hash), src)
	})
	if err != nil {
		return fmt.Errorf("save rule set %s: %w", hash, err)
	}
	return nil
}

// RuleSet returns the source stored under hash, or an error wrapping
// alorules.ErrNotFound.
func (s *Store) RuleSet(ctx context.Context, hash string) ([]byte, error) {
	var src []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bRuleSets).Get([]byte(hash))
		if v == nil {
			return alorules.ErrNotFound
		}
		src = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rule set %s: %w", hash, err)
	}
	return src, nil
}
