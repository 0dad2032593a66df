package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// Timer is a pending escalation: a rule with "after:" matched an event and
// its steps run at Due unless a later event about the same entity makes
// the rule's "unless" true first. There is at most one pending timer per
// rule and entity.
type Timer struct {
	ID      string    `json:"id"`
	Rule    string    `json:"rule"`
	Entity  string    `json:"entity"`
	EventID string    `json:"event_id"` // the event that set it
	SetAt   time.Time `json:"set_at"`
	Due     time.Time `json:"due"`
	// PreviousEventID is the entity's event before EventID, for steps that
	// read previous.
	PreviousEventID string `json:"previous_event_id,omitempty"`
}

// timerKey is the (entity, rule) index key: entity first, so that one
// prefix walk finds every rule's timer for an entity.
func timerKey(entity, rule string) []byte { return pfx(entity, rule) }

func getTimer(tx *bolt.Tx, id []byte) (*Timer, error) {
	v := tx.Bucket(bTimers).Get(id)
	if v == nil {
		return nil, alorules.ErrNotFound
	}
	t := new(Timer)
	if err := json.Unmarshal(v, t); err != nil {
		return nil, fmt.Errorf("bad timer record %s: %w", id, err)
	}
	return t, nil
}

// prepareTimer fills a new timer's id outside the write, so that a write
// run twice stores the same thing.
func (s *Store) prepareTimer(t *Timer) {
	if t.ID == "" {
		t.ID = s.newID(t.SetAt)
	}
}

// putTimer stores t unless its rule already has a timer pending for the
// entity; it reports whether t was stored.
func putTimer(tx *bolt.Tx, t *Timer) (bool, error) {
	k := timerKey(t.Entity, t.Rule)
	keys := tx.Bucket(bTimerKey)
	if keys.Get(k) != nil {
		return false, nil
	}
	v, err := json.Marshal(t)
	if err != nil {
		return false, err
	}
	id := []byte(t.ID)
	if err := appendOnly(tx, bTimers).Put(id, v); err != nil {
		return false, err
	}
	if err := tx.Bucket(bTimerDue).Put(cat(u64(unixNanos(t.Due)), id), nil); err != nil {
		return false, err
	}
	if err := keys.Put(k, id); err != nil {
		return false, err
	}
	if err := tx.Bucket(bEventRefs).Put(cat(pfx(t.EventID), id), nil); err != nil {
		return false, err
	}
	return true, addCount(tx, countTimers, 1)
}

// deleteTimer removes a timer and its index entries; it returns nil, nil
// if there is no such timer.
func deleteTimer(tx *bolt.Tx, id []byte) (*Timer, error) {
	t, err := getTimer(tx, id)
	if errors.Is(err, alorules.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, del := range []struct {
		b []byte
		k []byte
	}{
		{bTimers, id},
		{bTimerDue, cat(u64(unixNanos(t.Due)), id)},
		{bTimerKey, timerKey(t.Entity, t.Rule)},
		{bEventRefs, cat(pfx(t.EventID), id)},
	} {
		if err := tx.Bucket(del.b).Delete(del.k); err != nil {
			return nil, err
		}
	}
	return t, addCount(tx, countTimers, -1)
}

// CancelTimer removes a pending timer without running it and returns it,
// or an error wrapping alorules.ErrNotFound if it is not pending (never
// set, fired or cancelled already).
func (s *Store) CancelTimer(ctx context.Context, id string) (*Timer, error) {
	var t *Timer
	err := s.write(ctx, func(tx *bolt.Tx) error {
		var err error
		t, err = deleteTimer(tx, []byte(id))
		if err == nil && t == nil {
			return clean(alorules.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cancel timer %s: %w", id, err)
	}
	return t, nil
}

// Timer returns a pending timer, or an error wrapping alorules.ErrNotFound.
func (s *Store) Timer(ctx context.Context, id string) (*Timer, error) {
	return viewOne(ctx, s, "timer", id, getTimer)
}

// FireTimer ends a pending timer by creating its execution, in one
// transaction: the timer and its index entries go, the execution is
// queued (defaults as in SaveMatch) and counted as a hit of its rule. It
// reports false, and writes nothing, if the timer is no longer pending
// (cancelled meanwhile, or fired already by an earlier call). A nil ex
// drops the timer without running anything (its rule was removed).
func (s *Store) FireTimer(ctx context.Context, id string, ex *alorules.Execution) (bool, error) {
	return s.fire(ctx, "timer "+id, ex, func(tx *bolt.Tx) (bool, error) {
		t, err := deleteTimer(tx, []byte(id))
		return t != nil, err
	})
}

// fire removes a pending timer or open digest (remove reports whether it
// was still there) and queues ex in its place, in one transaction. The
// execution is encoded before the committer runs, to keep commits short.
func (s *Store) fire(ctx context.Context, what string, ex *alorules.Execution, remove func(tx *bolt.Tx) (bool, error)) (bool, error) {
	var val []byte
	if ex != nil {
		s.prepareExec(ex, time.Now())
		var err error
		if val, err = encodeExec(ex, 0); err != nil {
			return false, fmt.Errorf("fire %s: %w", what, err)
		}
	}
	fired := false
	err := s.write(ctx, func(tx *bolt.Tx) error {
		var err error
		if fired, err = remove(tx); err != nil || !fired || ex == nil {
			return err
		}
		return insertFired(tx, ex, val)
	})
	if err != nil {
		return false, fmt.Errorf("fire %s: %w", what, err)
	}
	return fired, nil
}

// insertFired stores a new execution made outside a match (a timer fired,
// a digest closed). It is no new hit: the matches that set the timer or
// fed the digest were counted.
func insertFired(tx *bolt.Tx, ex *alorules.Execution, val []byte) error {
	_, err := insertExec(tx, ex, val)
	return err
}

// DueTimers returns up to limit (default 100) pending timers due at or
// before now, the earliest first: a seek in the due index, whatever the
// number pending.
func (s *Store) DueTimers(ctx context.Context, now time.Time, limit int) ([]*Timer, error) {
	out, err := dueIn(ctx, s, bTimerDue, now, limit, getTimer)
	if err != nil {
		return nil, fmt.Errorf("due timers: %w", err)
	}
	return out, nil
}

// dueIn reads up to limit (default 100) records whose keys in the due
// index b (due time, then id) are at or before now, the earliest first.
func dueIn[T any](ctx context.Context, s *Store, b []byte, now time.Time, limit int, get func(tx *bolt.Tx, id []byte) (T, error)) ([]T, error) {
	if limit <= 0 {
		limit = 100
	}
	due := unixNanos(now)
	var out []T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return eachAsc(tx.Bucket(b), nil, nil, func(k, _ []byte) (bool, error) {
			if getU64(k) > due {
				return false, nil
			}
			v, err := get(tx, k[8:])
			if err != nil {
				return false, err
			}
			out = append(out, v)
			return len(out) < limit, nil
		})
	})
	return out, err
}

// NextTimerDue returns the earliest due time of the pending timers, and
// false if there are none.
func (s *Store) NextTimerDue(ctx context.Context) (time.Time, bool, error) {
	return s.firstDue(ctx, bTimerDue)
}

func (s *Store) firstDue(ctx context.Context, b []byte) (time.Time, bool, error) {
	var t time.Time
	var ok bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(b).Cursor().First()
		t, ok = time.Time{}, k != nil
		if ok {
			t = time.Unix(0, getU64(k)).UTC()
		}
		return nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	return t, ok, nil
}

// DueFilter pages through timers or digests by due time.
type DueFilter struct {
	// After is a cursor from an earlier page: only entries due after it.
	After string
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// Timers lists pending timers, the soonest due first, one page at a time,
// with next the cursor of the following page ("" if none).
func (s *Store) Timers(ctx context.Context, f DueFilter) ([]*Timer, string, error) {
	return listDue(ctx, s, bTimerDue, f, "timers", getTimer)
}

// listDue reads a page of a due index's records, soonest due first.
func listDue[T any](ctx context.Context, s *Store, b []byte, f DueFilter, what string, get func(*bolt.Tx, []byte) (T, error)) ([]T, string, error) {
	var out []T
	var next string
	err := s.pageDue(ctx, b, f, func(tx *bolt.Tx, id []byte) error {
		v, err := get(tx, id)
		if err == nil {
			out = append(out, v)
		}
		return err
	}, &next)
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", what, err)
	}
	return out, next, nil
}

// TimerCount is how many timers are pending.
func (s *Store) TimerCount(ctx context.Context) (int, error) {
	return s.counter(ctx, countTimers)
}

// pageDue walks a due index from the cursor, calling add for up to a page
// of ids.
func (s *Store) pageDue(ctx context.Context, b []byte, f DueFilter, add func(tx *bolt.Tx, id []byte) error, next *string) error {
	limit := pageLimit(f.Limit)
	var start []byte
	if f.After != "" {
		var err error
		if start, err = hex.DecodeString(f.After); err != nil {
			return fmt.Errorf("bad cursor %q", f.After)
		}
	}
	return s.view(ctx, func(tx *bolt.Tx) error {
		*next = ""
		n := 0
		var last []byte
		return eachAsc(tx.Bucket(b), nil, start, func(k, _ []byte) (bool, error) {
			if start != nil && bytes.Equal(k, start) {
				return true, nil
			}
			if n == limit {
				*next = hex.EncodeToString(last)
				return false, nil
			}
			n++
			last = bytes.Clone(k)
			return true, add(tx, k[8:])
		})
	})
}
