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

// Retention works in small transactions so that ingress, whose writes
// share the same committer, waits at most for one of them.
const (
	pruneBatch   = 500   // events deleted per transaction
	pruneExamine = 5000  // events looked at per transaction
	sweepBatch   = 1000  // expired keys deleted per transaction
	sweepExamine = 20000 // keys looked at per transaction
)

// Prune deletes the oldest events received before olderThan (if not zero)
// and, oldest first, those beyond the newest maxEvents (if above zero),
// with everything that belongs to them: type and unmatched index entries,
// match record, dedupe records that point at them, and their executions
// with their indexes. An event that still has unfinished work (an
// execution queued, running or retrying, or the event not matched yet) is
// kept, and still counts towards maxEvents; so is an event that a pending
// timer or an open digest will still run for. Prune also drops expired
// dedupe records, throttle keys that ended before now, hourly rule stats
// older than olderThan, and the state of entities not updated since
// olderThan (or, least recently updated first, beyond maxEvents of them:
// an entity's state is a copy of one of its events). It returns how many
// events it deleted.
func (s *Store) Prune(ctx context.Context, olderThan time.Time, maxEvents int) (removed int, err error) {
	ageBound := ""
	if !olderThan.IsZero() {
		ageBound = idFloor(olderThan)
	}
	var after []byte // the last event looked at: the next batch starts past it
	for {
		n, last, done := 0, after, false
		err := s.write(ctx, func(tx *bolt.Tx) error {
			n, last, done = 0, after, false
			excess := int64(0)
			if maxEvents > 0 {
				excess = getU64(tx.Bucket(bCounts).Get([]byte(countEvents))) - int64(maxEvents)
			}
			c := tx.Bucket(bEvents).Cursor()
			k, _ := c.Seek(after)
			if k != nil && after != nil && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
			var victims [][]byte
			for examined := 0; ; k, _ = c.Next() {
				if k == nil || (excess <= 0 && (ageBound == "" || string(k) >= ageBound)) {
					done = true
					break
				}
				if examined == pruneExamine || len(victims) == pruneBatch {
					break
				}
				examined++
				last = bytes.Clone(k)
				if busy, err := eventBusy(tx, k); err != nil || busy {
					if err != nil {
						return err
					}
					continue
				}
				victims = append(victims, last)
				excess--
			}
			for _, id := range victims {
				if err := deleteEvent(tx, id); err != nil {
					return fmt.Errorf("event %s: %w", id, err)
				}
			}
			n = len(victims)
			return nil
		})
		if err != nil {
			return removed, fmt.Errorf("prune: %w", err)
		}
		removed += n
		after = last
		if done {
			break
		}
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("prune: %w", err)
		}
	}
	if err := s.sweep(ctx, olderThan); err != nil {
		return removed, fmt.Errorf("prune: %w", err)
	}
	if _, err := s.pruneEntities(ctx, olderThan, maxEvents); err != nil {
		return removed, fmt.Errorf("prune: %w", err)
	}
	return removed, nil
}

// eventBusy reports whether an event still has work to do: not matched
// yet, or an execution that is not final.
func eventBusy(tx *bolt.Tx, id []byte) (bool, error) {
	if tx.Bucket(bPending).Get(id) != nil {
		return true, nil
	}
	// A pending timer or an open digest will render its steps with it.
	if k, _ := tx.Bucket(bEventRefs).Cursor().Seek(pfx(string(id))); k != nil && bytes.HasPrefix(k, pfx(string(id))) {
		return true, nil
	}
	busy := false
	err := eachAsc(tx.Bucket(bExEvent), pfx(string(id)), nil, func(_, st []byte) (bool, error) {
		busy = unfinished(alorules.Status(st))
		return !busy, nil
	})
	return busy, err
}

// deleteEvent removes one event and everything that belongs to it.
func deleteEvent(tx *bolt.Tx, id []byte) error {
	v := tx.Bucket(bEvents).Get(id)
	if v == nil {
		return alorules.ErrNotFound
	}
	head, keys, _, err := splitEvent(v)
	if err != nil {
		return err
	}
	var ev alorules.Event
	if err := json.Unmarshal(head, &ev); err != nil {
		return fmt.Errorf("%w: %w", errBadEvent, err)
	}
	// Copy the keys out of v before the event's page changes.
	for i, k := range keys {
		keys[i] = bytes.Clone(k)
	}
	dd := tx.Bucket(bDedupe)
	for _, k := range keys {
		// The record may have expired and been taken over by a later
		// event; then it is not this event's to delete.
		if r := dd.Get(k); r != nil && bytes.Equal(r[8:], id) {
			if err := dd.Delete(k); err != nil {
				return err
			}
		}
	}
	for _, b := range [][]byte{bEvents, bUnmatched, bMatches, bPending} {
		if err := tx.Bucket(b).Delete(id); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bEvType).Delete(cat(pfx(ev.Type), id)); err != nil {
		return err
	}
	var execs [][]byte
	err = eachAsc(tx.Bucket(bExEvent), pfx(string(id)), nil, func(x, _ []byte) (bool, error) {
		execs = append(execs, bytes.Clone(x))
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, x := range execs {
		if err := deleteExec(tx, x); err != nil {
			return err
		}
	}
	if err := deleteRuleEvents(tx, id); err != nil {
		return err
	}
	return addEventCount(tx, id, -1)
}

// sweep drops expired dedupe records and throttle keys, and hourly rule
// stats before olderThan, a batch per transaction.
func (s *Store) sweep(ctx context.Context, olderThan time.Time) error {
	now := unixNanos(time.Now())
	// Dedupe records and throttles have no expiry index: that would be one
	// more write per key on the ingest path. Their number is bounded
	// anyway (a record goes with its event), so the sweep walks them, a
	// batch per transaction, to keep the file lean.
	if err := s.sweepExpired(ctx, bDedupe, now); err != nil {
		return fmt.Errorf("sweep dedupe: %w", err)
	}
	if err := s.sweepExpired(ctx, bThrottles, now); err != nil {
		return fmt.Errorf("sweep throttles: %w", err)
	}
	if olderThan.IsZero() {
		return nil
	}
	cut := hourNanos(olderThan)
	err := s.write(ctx, func(tx *bolt.Tx) error {
		hb := tx.Bucket(bRuleHours)
		var old [][]byte
		err := tx.Bucket(bRules).ForEach(func(_, v []byte) error {
			p := pfx(string(getTail(v)))
			return eachAsc(hb, p, nil, func(h, _ []byte) (bool, error) {
				if getU64(h) >= cut {
					return false, nil
				}
				old = append(old, cat(p, h))
				return true, nil
			})
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := hb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sweep rule stats: %w", err)
	}
	return nil
}

// sweepExpired deletes the records of bucket b (dedupe records, throttles:
// values starting with an 8-byte time) whose time is not after now.
func (s *Store) sweepExpired(ctx context.Context, b []byte, now int64) error {
	var after []byte
	for more := true; more; {
		var last []byte
		err := s.write(ctx, func(tx *bolt.Tx) error {
			more, last = false, nil
			var ended [][]byte
			examined := 0
			err := eachAsc(tx.Bucket(b), nil, after, func(k, v []byte) (bool, error) {
				if after != nil && bytes.Equal(k, after) {
					return true, nil
				}
				if len(ended) == sweepBatch || examined == sweepExamine {
					more = true
					return false, nil
				}
				examined++
				last = bytes.Clone(k)
				if getU64(v) <= now {
					ended = append(ended, last)
				}
				return true, nil
			})
			if err != nil {
				return err
			}
			for _, k := range ended {
				if err := tx.Bucket(b).Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if last != nil {
			after = last
		}
	}
	return nil
}
