package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxEntityPayload is the largest payload kept as an entity's state. A
// larger one is not kept, and the entity's earlier state is forgotten with
// it: a rule comparing against a payload two events old would report
// changes that did not happen.
const MaxEntityPayload = 64 << 10

// EntityState is what the store remembers about one entity (by default an
// ALO action): the last payload seen for it, and the timers pending for
// it, read together so that matching an event costs one lookup.
type EntityState struct {
	// EventID is the event whose payload this is; empty if nothing is
	// remembered.
	EventID   string
	UpdatedAt time.Time
	Payload   json.RawMessage
	// Timers are the pending timers of any rule for this entity.
	Timers []*Timer
}

// EntityWrite replaces an entity's state, in the transaction that saves the
// match of the event it comes from.
type EntityWrite struct {
	Key     string
	EventID string
	At      time.Time
	// Payload is the new state; nil forgets the entity (the payload was
	// too large to keep).
	Payload json.RawMessage
}

// Stored entity state: 8-byte updated nanos, uvarint len(event id), event
// id, payload.
func encodeEntity(w *EntityWrite) []byte {
	buf := make([]byte, 0, 8+binary.MaxVarintLen64+len(w.EventID)+len(w.Payload))
	buf = append(buf, u64(unixNanos(w.At))...)
	buf = binary.AppendUvarint(buf, uint64(len(w.EventID)))
	buf = append(buf, w.EventID...)
	return append(buf, w.Payload...)
}

var errBadEntity = errors.New("bad entity record")

func decodeEntity(v []byte) (updated int64, eventID string, payload []byte, err error) {
	if len(v) < 9 {
		return 0, "", nil, errBadEntity
	}
	updated = getU64(v)
	n, sz := binary.Uvarint(v[8:])
	if sz <= 0 || uint64(len(v)-8-sz) < n {
		return 0, "", nil, errBadEntity
	}
	rest := v[8+sz:]
	return updated, string(rest[:n]), rest[n:], nil
}

// Entity returns the remembered state of the entity with key and its
// pending timers. An entity never seen (or forgotten) has an empty
// EventID and no payload; that is not an error.
func (s *Store) Entity(ctx context.Context, key string) (EntityState, error) {
	var st EntityState
	err := s.view(ctx, func(tx *bolt.Tx) error {
		st = EntityState{}
		if v := tx.Bucket(bEntities).Get(name(key)); v != nil {
			updated, id, payload, err := decodeEntity(v)
			if err != nil {
				return err
			}
			st.EventID, st.UpdatedAt, st.Payload = id, time.Unix(0, updated).UTC(), bytes.Clone(payload)
		}
		return eachAsc(tx.Bucket(bTimerKey), pfx(key), nil, func(_, id []byte) (bool, error) {
			t, err := getTimer(tx, id)
			if err != nil {
				return false, err
			}
			st.Timers = append(st.Timers, t)
			return true, nil
		})
	})
	if err != nil {
		return EntityState{}, fmt.Errorf("entity %s: %w", key, err)
	}
	return st, nil
}

// EntityCount is how many entities have a remembered state.
func (s *Store) EntityCount(ctx context.Context) (int, error) {
	return s.counter(ctx, countEntities)
}

// counter reads one counter of bCounts.
func (s *Store) counter(ctx context.Context, key string) (int, error) {
	n := 0
	err := s.view(ctx, func(tx *bolt.Tx) error {
		n = int(getU64(tx.Bucket(bCounts).Get([]byte(key))))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", key, err)
	}
	return n, nil
}

// putEntity applies w inside a transaction: the state and its age index
// entry, or their removal.
func putEntity(tx *bolt.Tx, w *EntityWrite) error {
	b := tx.Bucket(bEntities)
	age := tx.Bucket(bEntAge)
	k := name(w.Key)
	if old := b.Get(k); old != nil {
		if len(old) < 8 {
			return errBadEntity
		}
		if err := age.Delete(cat(old[:8], k)); err != nil {
			return err
		}
		if w.Payload == nil {
			if err := b.Delete(k); err != nil {
				return err
			}
			return addCount(tx, countEntities, -1)
		}
	} else {
		if w.Payload == nil {
			return nil
		}
		if err := addCount(tx, countEntities, 1); err != nil {
			return err
		}
	}
	if err := b.Put(k, encodeEntity(w)); err != nil {
		return err
	}
	return appendOnly(tx, bEntAge).Put(cat(u64(unixNanos(w.At)), k), nil)
}

// pruneEntities forgets entities not updated since olderThan (if not zero)
// and, least recently updated first, those beyond max (if above zero), a
// batch per transaction.
func (s *Store) pruneEntities(ctx context.Context, olderThan time.Time, max int) (int, error) {
	cut := int64(-1)
	if !olderThan.IsZero() {
		cut = unixNanos(olderThan)
	}
	removed := 0
	for {
		n := 0
		err := s.write(ctx, func(tx *bolt.Tx) error {
			n = 0
			excess := int64(0)
			if max > 0 {
				excess = getU64(tx.Bucket(bCounts).Get([]byte(countEntities))) - int64(max)
			}
			var old [][]byte
			c := tx.Bucket(bEntAge).Cursor()
			for k, _ := c.First(); k != nil && len(old) < sweepBatch; k, _ = c.Next() {
				if getU64(k) >= cut && excess <= 0 {
					break
				}
				old = append(old, bytes.Clone(k))
				excess--
			}
			ents := tx.Bucket(bEntities)
			age := tx.Bucket(bEntAge)
			for _, k := range old {
				if err := age.Delete(k); err != nil {
					return err
				}
				if err := ents.Delete(k[8:]); err != nil {
					return err
				}
			}
			n = len(old)
			return addCount(tx, countEntities, -int64(n))
		})
		if err != nil {
			return removed, fmt.Errorf("prune entities: %w", err)
		}
		removed += n
		if n < sweepBatch {
			return removed, nil
		}
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("prune entities: %w", err)
		}
	}
}
