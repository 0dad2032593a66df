package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// ExecutionFilter selects executions for Executions. Empty fields do not
// filter.
type ExecutionFilter struct {
	Rule, Status, EventID string
	// Before is a paging cursor: only ids below it are listed.
	Before string
	// Since and Until bound the time in the execution's id (its creation):
	// Since inclusive, Until exclusive.
	Since, Until time.Time
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// Stored execution: a format byte, a flags byte, then JSON.
const (
	execFormat = 1
	// flagFailureCounted records that this execution's failure is in the
	// rule stats already, so a later failure of the same execution (after
	// a manual requeue) is not counted twice.
	flagFailureCounted = 1 << 0
)

func encodeExec(ex *alorules.Execution, flags byte) ([]byte, error) {
	j, err := json.Marshal(ex)
	if err != nil {
		return nil, err
	}
	return append([]byte{execFormat, flags}, j...), nil
}

func decodeExec(v []byte) (*alorules.Execution, byte, error) {
	if len(v) < 2 || v[0] != execFormat {
		return nil, 0, errors.New("bad execution record")
	}
	ex := new(alorules.Execution)
	if err := json.Unmarshal(v[2:], ex); err != nil {
		return nil, 0, fmt.Errorf("bad execution record: %w", err)
	}
	return ex, v[1], nil
}

// queued reports whether an execution in status st waits in the run queue.
func queued(st alorules.Status) bool {
	return st == alorules.StatusQueued || st == alorules.StatusRetrying
}

// unfinished reports whether an execution in status st still has work due.
func unfinished(st alorules.Status) bool {
	return queued(st) || st == alorules.StatusRunning
}

// prepareExec fills the defaults of a new execution (outside the write, so
// that a write run twice stores the same thing): an id, CreatedAt now,
// status queued, due at creation.
func (s *Store) prepareExec(ex *alorules.Execution, now time.Time) {
	if ex.CreatedAt.IsZero() {
		ex.CreatedAt = now
	}
	if ex.ID == "" {
		ex.ID = s.newID(ex.CreatedAt)
	}
	if ex.Status == "" {
		ex.Status = alorules.StatusQueued
	}
	if ex.UpdatedAt.IsZero() {
		ex.UpdatedAt = ex.CreatedAt
	}
	if ex.NextAttemptAt.IsZero() && queued(ex.Status) {
		ex.NextAttemptAt = ex.CreatedAt
	}
}

// indexKeys are the index entries of one execution, by bucket.
func execIndex(ex *alorules.Execution) [][2][]byte {
	id := []byte(ex.ID)
	st := string(ex.Status)
	idx := [][2][]byte{
		{bExRule, cat(pfx(ex.Rule), id)},
		{bExStatus, cat(pfx(st), id)},
		{bExRuleSt, cat(pfx(ex.Rule, st), id)},
	}
	if queued(ex.Status) {
		idx = append(idx, [2][]byte{bQueue, cat(u64(unixNanos(ex.NextAttemptAt)), id)})
	}
	return idx
}

// putExecIndex adds ex's index entries and its status count.
func putExecIndex(tx *bolt.Tx, ex *alorules.Execution) error {
	for _, e := range execIndex(ex) {
		// Ids and due times mostly grow: fill pages before splitting.
		if err := appendOnly(tx, e[0]).Put(e[1], nil); err != nil {
			return err
		}
	}
	// The by-event entry carries the status, so retention can tell an
	// event with unfinished work without loading its executions.
	if err := appendOnly(tx, bExEvent).Put(cat(pfx(ex.EventID), []byte(ex.ID)), []byte(ex.Status)); err != nil {
		return err
	}
	return addCount(tx, countStatusPrefix+string(ex.Status), 1)
}

// deleteExecIndex removes ex's index entries and its status count.
func deleteExecIndex(tx *bolt.Tx, ex *alorules.Execution) error {
	for _, e := range execIndex(ex) {
		if err := tx.Bucket(e[0]).Delete(e[1]); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bExEvent).Delete(cat(pfx(ex.EventID), []byte(ex.ID))); err != nil {
		return err
	}
	return addCount(tx, countStatusPrefix+string(ex.Status), -1)
}

// insertExec stores a new execution with its indexes; it reports false
// without writing if the id exists already (a repeated call).
func insertExec(tx *bolt.Tx, ex *alorules.Execution, val []byte) (bool, error) {
	b := tx.Bucket(bExecs)
	if b.Get([]byte(ex.ID)) != nil {
		return false, nil
	}
	if ex.Status == alorules.StatusFailed {
		// Stored failed from the start: counted like any other failure,
		// once.
		val = bytes.Clone(val)
		val[1] |= flagFailureCounted
		if err := countRuleEvent(tx, ex.Rule, RuleFailed, ex.EventID, ex.UpdatedAt); err != nil {
			return false, err
		}
	}
	if err := appendOnly(tx, bExecs).Put([]byte(ex.ID), val); err != nil {
		return false, err
	}
	return true, putExecIndex(tx, ex)
}

// deleteExec removes an execution and its indexes.
func deleteExec(tx *bolt.Tx, id []byte) error {
	b := tx.Bucket(bExecs)
	v := b.Get(id)
	if v == nil {
		return nil
	}
	ex, _, err := decodeExec(v)
	if err != nil {
		return fmt.Errorf("execution %s: %w", id, err)
	}
	if err := deleteExecIndex(tx, ex); err != nil {
		return err
	}
	return b.Delete(id)
}

func getExec(tx *bolt.Tx, id []byte) (*alorules.Execution, byte, error) {
	v := tx.Bucket(bExecs).Get(id)
	if v == nil {
		return nil, 0, alorules.ErrNotFound
	}
	return decodeExec(v)
}

// AddExecutions stores new executions outside a match: replays and
// retries-as-new. Defaults as in SaveMatch (id, status queued, due at
// CreatedAt); an id that exists already is left as it is. Hits are counted
// in rule stats by SaveMatch only.
func (s *Store) AddExecutions(ctx context.Context, execs []*alorules.Execution) error {
	now := time.Now()
	vals := make([][]byte, len(execs))
	for i, ex := range execs {
		s.prepareExec(ex, now)
		v, err := encodeExec(ex, 0)
		if err != nil {
			return fmt.Errorf("add executions: %w", err)
		}
		vals[i] = v
	}
	err := s.write(ctx, func(tx *bolt.Tx) error {
		for i, ex := range execs {
			if _, err := insertExec(tx, ex, vals[i]); err != nil {
				return fmt.Errorf("execution %s: %w", ex.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add executions: %w", err)
	}
	return nil
}

// Execution returns the execution with the given id, or an error wrapping
// alorules.ErrNotFound.
func (s *Store) Execution(ctx context.Context, id string) (*alorules.Execution, error) {
	return viewOne(ctx, s, "execution", id, func(tx *bolt.Tx, id []byte) (*alorules.Execution, error) {
		ex, _, err := getExec(tx, id)
		return ex, err
	})
}

// Executions lists executions newest first, one page at a time, with next
// the cursor for the following page ("" when there are no more). It walks
// the narrowest index the filter allows: by event, by rule and status, by
// status, by rule, or all; Since/Until bound the walk by id time.
func (s *Store) Executions(ctx context.Context, f ExecutionFilter) (exs []*alorules.Execution, next string, err error) {
	limit := pageLimit(f.Limit)
	ceil, floor := f.Before, ""
	if !f.Until.IsZero() {
		if u := idFloor(f.Until); ceil == "" || u < ceil {
			ceil = u
		}
	}
	if !f.Since.IsZero() {
		floor = idFloor(f.Since)
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		exs, next = nil, ""
		var idx *bolt.Bucket
		var p []byte
		switch {
		case f.EventID != "":
			idx, p = tx.Bucket(bExEvent), pfx(f.EventID)
		case f.Rule != "" && f.Status != "":
			idx, p = tx.Bucket(bExRuleSt), pfx(f.Rule, f.Status)
		case f.Status != "":
			idx, p = tx.Bucket(bExStatus), pfx(f.Status)
		case f.Rule != "":
			idx, p = tx.Bucket(bExRule), pfx(f.Rule)
		default:
			idx = tx.Bucket(bExecs)
		}
		scanned := 0
		return eachDesc(idx, p, ceil, floor, func(id, _ []byte) (bool, error) {
			ex, _, err := getExec(tx, id)
			if err != nil {
				return false, fmt.Errorf("execution %s: %w", id, err)
			}
			if (f.Rule != "" && ex.Rule != f.Rule) || (f.Status != "" && string(ex.Status) != f.Status) {
				// Only with EventID: an event has few executions.
				if scanned++; scanned >= maxScan {
					next = string(id)
					return false, nil
				}
				return true, nil
			}
			if len(exs) == limit {
				next = exs[limit-1].ID
				return false, nil
			}
			exs = append(exs, ex)
			return true, nil
		})
	})
	if err != nil {
		return nil, "", fmt.Errorf("list executions: %w", err)
	}
	return exs, next, nil
}

// EventExecutions returns every execution of one event, oldest first.
func (s *Store) EventExecutions(ctx context.Context, eventID string) ([]*alorules.Execution, error) {
	var exs []*alorules.Execution
	err := s.view(ctx, func(tx *bolt.Tx) error {
		exs = nil
		return eachAsc(tx.Bucket(bExEvent), pfx(eventID), nil, func(id, _ []byte) (bool, error) {
			ex, _, err := getExec(tx, id)
			if err != nil {
				return false, fmt.Errorf("execution %s: %w", id, err)
			}
			exs = append(exs, ex)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("event %s executions: %w", eventID, err)
	}
	return exs, nil
}

// DueExecutions returns up to limit (default 100) queued or retrying
// executions whose NextAttemptAt is at or before now, the earliest due
// first. It reads the run queue, whose keys are due times.
func (s *Store) DueExecutions(ctx context.Context, now time.Time, limit int) ([]*alorules.Execution, error) {
	exs, err := dueIn(ctx, s, bQueue, now, limit, func(tx *bolt.Tx, id []byte) (*alorules.Execution, error) {
		ex, _, err := getExec(tx, id)
		if err != nil {
			return nil, fmt.Errorf("execution %s: %w", id, err)
		}
		return ex, nil
	})
	if err != nil {
		return nil, fmt.Errorf("due executions: %w", err)
	}
	return exs, nil
}

// NextDue returns the earliest NextAttemptAt among queued and retrying
// executions, and false if there are none: the runner sleeps until then.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	return s.firstDue(ctx, bQueue)
}

// UpdateExecution stores the new state of an existing execution durably,
// moving its status index entry, its run queue entry (present only while
// queued or retrying, keyed by NextAttemptAt) and the status counters. The
// first time an execution becomes failed, the failure is counted in its
// rule's stats for the hour of UpdatedAt, unless that hour counts a failure
// of the rule for the same event already (see rule_events). A zero
// UpdatedAt is set to now. The execution must exist
// (alorules.ErrNotFound).
func (s *Store) UpdateExecution(ctx context.Context, ex *alorules.Execution) error {
	if ex.UpdatedAt.IsZero() {
		ex.UpdatedAt = time.Now()
	}
	// Encoded here, not in the committer, which serves everyone.
	val, err := encodeExec(ex, 0)
	if err != nil {
		return fmt.Errorf("update execution %s: %w", ex.ID, err)
	}
	upd := *ex
	err = s.write(ctx, func(tx *bolt.Tx) error {
		return updateExec(tx, &upd, val)
	})
	if err != nil {
		return fmt.Errorf("update execution %s: %w", ex.ID, err)
	}
	return nil
}

// updateExec replaces a stored execution with ex, encoded in val with no
// flags, keeping indexes, counters and failure stats right. Running it
// twice changes nothing more.
func updateExec(tx *bolt.Tx, ex *alorules.Execution, val []byte) error {
	old, flags, err := getExec(tx, []byte(ex.ID))
	if errors.Is(err, alorules.ErrNotFound) {
		return clean(err)
	}
	if err != nil {
		return err
	}
	if err := deleteExecIndex(tx, old); err != nil {
		return err
	}
	if ex.Status == alorules.StatusFailed && flags&flagFailureCounted == 0 {
		if err := countRuleEvent(tx, ex.Rule, RuleFailed, ex.EventID, ex.UpdatedAt); err != nil {
			return err
		}
		flags |= flagFailureCounted
	}
	v := bytes.Clone(val)
	v[1] = flags
	if err := tx.Bucket(bExecs).Put([]byte(ex.ID), v); err != nil {
		return err
	}
	return putExecIndex(tx, ex)
}

// ResetRunning puts every running execution back in the queue, due at its
// NextAttemptAt (now if unset): at start-up nothing can be running, so
// these were cut off by a crash or kill and run again (at-least-once).
// It returns how many were reset.
func (s *Store) ResetRunning(ctx context.Context) (int, error) {
	now := time.Now()
	n := 0
	err := s.write(ctx, func(tx *bolt.Tx) error {
		n = 0
		var ids [][]byte
		err := eachAsc(tx.Bucket(bExStatus), pfx(string(alorules.StatusRunning)), nil, func(id, _ []byte) (bool, error) {
			ids = append(ids, bytes.Clone(id))
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			ex, _, err := getExec(tx, id)
			if err != nil {
				return fmt.Errorf("execution %s: %w", id, err)
			}
			ex.Status = alorules.StatusQueued
			ex.UpdatedAt = now
			if ex.NextAttemptAt.IsZero() {
				ex.NextAttemptAt = now
			}
			val, err := encodeExec(ex, 0)
			if err != nil {
				return err
			}
			if err := updateExec(tx, ex, val); err != nil {
				return fmt.Errorf("execution %s: %w", id, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reset running: %w", err)
	}
	return n, nil
}

// CountByStatus returns how many executions are in each status, read from
// counters kept by every write rather than by scanning. Every known status
// is present, zero included.
func (s *Store) CountByStatus(ctx context.Context) (map[alorules.Status]int, error) {
	counts := map[alorules.Status]int{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		for _, st := range []alorules.Status{alorules.StatusQueued, alorules.StatusRunning,
			alorules.StatusRetrying, alorules.StatusSucceeded, alorules.StatusFailed} {
			counts[st] = 0
		}
		return eachAsc(tx.Bucket(bCounts), []byte(countStatusPrefix), nil, func(st, v []byte) (bool, error) {
			if n := getU64(v); n != 0 {
				counts[alorules.Status(st)] = int(n)
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count by status: %w", err)
	}
	return counts, nil
}
