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

	"alorules"
)

// DedupeKey is one key under which an accepted event is remembered, so that
// a second delivery with the same key is recognised as a duplicate.
type DedupeKey struct {
	// Key identifies the delivery (for example "body:" + SHA-256 of the
	// body, or "sig:" + the signature). Empty keys are ignored.
	Key string
	// TTL is how long after the event's ReceivedAt the key counts; 0 or
	// less keeps it as long as the event itself.
	TTL time.Duration
}

// EventFilter selects events for Events.
type EventFilter struct {
	// Type keeps events of this (normalised) type only.
	Type string
	// Before is a paging cursor: only ids below it are listed.
	Before string
	// Limit is the page size: default 50, at most 500.
	Limit int
	// Unmatched keeps events whose match record says that no rule matched.
	// Events not matched yet and handshakes are not "unmatched".
	Unmatched bool
	// Rule keeps the events that rule matched (Outcome RuleMatched, the
	// default) or failed on (Outcome RuleFailed), from the rule_events
	// index: by the hour they were counted in, newest first, an event
	// once per hour it was counted in (see RuleStats). The cursor (next,
	// Before) is then the hour and the event id. Outcome without Rule is
	// ignored.
	Rule, Outcome string
	// Since keeps events received at or after it (by the time in their
	// id), if not zero; with Rule, those counted at or after it, so that
	// from the start of an hour the list holds what RuleStats counts.
	Since time.Time
}

// Page sizes for Events and Executions.
const (
	defaultLimit = 50
	maxLimit     = 500
	// maxScan bounds how many index entries one page may examine and
	// discard when two filters meet (type and unmatched; a status within
	// one event's executions). Past it the page ends early with a cursor,
	// so a request never turns into a walk of the whole store.
	maxScan = 10000
)

func pageLimit(n int) int {
	if n <= 0 {
		return defaultLimit
	}
	return min(n, maxLimit)
}

// eventFormat is the first byte of a stored event:
//
//	format, uvarint len(head), head (the Event as JSON, without payload),
//	uvarint n, n × (uvarint len(key), key): the event's dedupe keys,
//	payload (the rest).
//
// The payload is stored byte for byte: json.Marshal of a RawMessage would
// compact it and escape <, > and &, and the design promises the body
// exactly as received. The dedupe keys ride along so that retention can
// delete an event's dedupe records without another index to write on the
// ingest path.
const eventFormat = 1

func encodeEvent(ev *alorules.Event, keys []dedupeRec) ([]byte, error) {
	head := *ev
	head.Payload = nil
	hj, err := json.Marshal(&head)
	if err != nil {
		return nil, err
	}
	n := 1 + 2*binary.MaxVarintLen64 + len(hj) + len(ev.Payload)
	for _, k := range keys {
		n += binary.MaxVarintLen64 + len(k.key)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, eventFormat)
	buf = binary.AppendUvarint(buf, uint64(len(hj)))
	buf = append(buf, hj...)
	buf = binary.AppendUvarint(buf, uint64(len(keys)))
	for _, k := range keys {
		buf = binary.AppendUvarint(buf, uint64(len(k.key)))
		buf = append(buf, k.key...)
	}
	return append(buf, ev.Payload...), nil
}

var errBadEvent = errors.New("bad event record")

// splitEvent cuts a stored event into its head, dedupe keys and payload,
// all sharing v's memory.
func splitEvent(v []byte) (head []byte, keys [][]byte, payload []byte, err error) {
	if len(v) < 1 || v[0] != eventFormat {
		return nil, nil, nil, errBadEvent
	}
	rest := v[1:]
	next := func() ([]byte, bool) {
		n, sz := binary.Uvarint(rest)
		if sz <= 0 || uint64(len(rest)-sz) < n {
			return nil, false
		}
		b := rest[sz : sz+int(n)]
		rest = rest[sz+int(n):]
		return b, true
	}
	head, ok := next()
	if !ok {
		return nil, nil, nil, errBadEvent
	}
	nk, sz := binary.Uvarint(rest)
	if sz <= 0 || nk > uint64(len(rest)) {
		return nil, nil, nil, errBadEvent
	}
	rest = rest[sz:]
	for range nk {
		k, ok := next()
		if !ok {
			return nil, nil, nil, errBadEvent
		}
		keys = append(keys, k)
	}
	return head, keys, rest, nil
}

// decodeEvent decodes a stored event; the result shares no memory with v.
func decodeEvent(v []byte) (*alorules.Event, error) {
	head, _, payload, err := splitEvent(v)
	if err != nil {
		return nil, err
	}
	ev := new(alorules.Event)
	if err := json.Unmarshal(head, ev); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadEvent, err)
	}
	ev.Payload = nil
	if len(payload) > 0 {
		ev.Payload = bytes.Clone(payload)
	}
	return ev, nil
}

// dedupeRec is a prepared dedupe key.
type dedupeRec struct {
	key     []byte
	expires int64 // unix nanos
}

// SaveEvent stores an accepted event and returns its new id, which it also
// sets in ev.ID. If one of the dedupe keys was already recorded and has not
// expired, it writes nothing and returns the original event's id with
// duplicate true (ev is left alone). Otherwise one transaction writes the
// event, its type index, its dedupe records (expiring at ReceivedAt+TTL) and,
// unless it is a handshake, its entry in the queue for the matcher.
// A zero ReceivedAt is set to now. Concurrent calls share commits; the
// event is durable when SaveEvent returns.
func (s *Store) SaveEvent(ctx context.Context, ev *alorules.Event, dedupe []DedupeKey) (id string, duplicate bool, err error) {
	w, err := s.newEventWrite(ev, dedupe)
	if err != nil {
		return "", false, fmt.Errorf("save event: %w", err)
	}
	if err := s.write(ctx, w.apply); err != nil {
		return "", false, fmt.Errorf("save event: %w", err)
	}
	if w.duplicate {
		return w.original, true, nil
	}
	ev.ID = w.id
	return w.id, false, nil
}

// eventWrite is one prepared SaveEvent. Everything that can be computed
// outside the transaction is, so the committer only looks up and puts.
type eventWrite struct {
	id        string
	val       []byte
	typeKey   []byte
	keys      []dedupeRec
	now       int64 // ReceivedAt in unix nanos: dedupe records expire against it
	handshake bool

	// Results of apply.
	original  string
	duplicate bool
}

func (s *Store) newEventWrite(ev *alorules.Event, dedupe []DedupeKey) (*eventWrite, error) {
	if ev.ReceivedAt.IsZero() {
		ev.ReceivedAt = time.Now()
	}
	w := &eventWrite{id: s.newID(ev.ReceivedAt), now: unixNanos(ev.ReceivedAt), handshake: ev.Handshake}
	for _, d := range dedupe {
		if d.Key == "" {
			continue
		}
		exp := int64(1<<63 - 1)
		if d.TTL > 0 {
			exp = w.now + int64(d.TTL)
		}
		w.keys = append(w.keys, dedupeRec{key: name(d.Key), expires: exp})
	}
	rec := *ev
	rec.ID = w.id
	var err error
	if w.val, err = encodeEvent(&rec, w.keys); err != nil {
		return nil, err
	}
	w.typeKey = cat(pfx(ev.Type), []byte(w.id))
	return w, nil
}

// apply is the transaction part of SaveEvent. It sees the writes of
// earlier requests in the same batch, so of two identical deliveries in one
// batch the second is the duplicate. It is safe to run again.
func (w *eventWrite) apply(tx *bolt.Tx) error {
	w.original, w.duplicate = "", false
	idb := []byte(w.id)
	if tx.Bucket(bEvents).Get(idb) != nil {
		return nil // run again after it committed
	}
	dd := tx.Bucket(bDedupe)
	for _, k := range w.keys {
		v := dd.Get(k.key)
		if v == nil || getU64(v) <= w.now {
			continue
		}
		w.original, w.duplicate = string(v[8:]), true
		return nil
	}
	if err := appendOnly(tx, bEvents).Put(idb, w.val); err != nil {
		return err
	}
	if err := appendOnly(tx, bEvType).Put(w.typeKey, nil); err != nil {
		return err
	}
	for _, k := range w.keys {
		// An expired record of the same key is simply replaced.
		if err := dd.Put(k.key, cat(u64(k.expires), idb)); err != nil {
			return err
		}
	}
	if !w.handshake {
		if err := appendOnly(tx, bPending).Put(idb, nil); err != nil {
			return err
		}
	}
	return addEventCount(tx, idb, 1)
}

// Event returns the event with the given id, or an error wrapping
// alorules.ErrNotFound.
func (s *Store) Event(ctx context.Context, id string) (*alorules.Event, error) {
	return viewOne(ctx, s, "event", id, getEvent)
}

// viewOne reads one record by id in a read transaction, naming it in the
// error (which wraps alorules.ErrNotFound when there is none).
func viewOne[T any](ctx context.Context, s *Store, what, id string, get func(*bolt.Tx, []byte) (T, error)) (T, error) {
	var v T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		v, err = get(tx, []byte(id))
		return err
	})
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s %s: %w", what, id, err)
	}
	return v, nil
}

func getEvent(tx *bolt.Tx, id []byte) (*alorules.Event, error) {
	v := tx.Bucket(bEvents).Get(id)
	if v == nil {
		return nil, alorules.ErrNotFound
	}
	return decodeEvent(v)
}

// Events lists events newest first, one page at a time. next is the cursor
// for the following page (pass it as Before), "" when there are no more.
// Each filter walks an index in key order; nothing scans the whole store.
func (s *Store) Events(ctx context.Context, f EventFilter) (evs []*alorules.Event, next string, err error) {
	if f.Rule != "" && !s.ruleIndex {
		return nil, "", fmt.Errorf("list events: %w", errNoRuleIndex)
	}
	limit := pageLimit(f.Limit)
	floor := ""
	if !f.Since.IsZero() {
		floor = idFloor(f.Since)
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		evs, next = nil, ""
		unmatched := tx.Bucket(bUnmatched)
		// The most selective filter picks the index to walk; the others
		// are checked by a keyed read per entry.
		var idx *bolt.Bucket
		var p []byte
		var keep []func(id []byte) bool
		ofType := func(id []byte) bool { return tx.Bucket(bEvType).Get(cat(pfx(f.Type), id)) != nil }
		isUnmatched := func(id []byte) bool { return unmatched.Get(id) != nil }
		byRule := f.Rule != ""
		switch {
		case byRule:
			kind := f.Outcome
			if kind == "" {
				kind = RuleMatched
			}
			idx, p = tx.Bucket(bRuleEvents), pfx(f.Rule, kind)
			if floor != "" {
				floor = hourKey(f.Since)
			}
			if f.Type != "" {
				keep = append(keep, ofType)
			}
			if f.Unmatched {
				keep = append(keep, isUnmatched)
			}
		case f.Type != "":
			idx, p = tx.Bucket(bEvType), pfx(f.Type)
			if f.Unmatched {
				keep = append(keep, isUnmatched)
			}
		case f.Unmatched:
			idx = unmatched
		default:
			idx = tx.Bucket(bEvents)
		}
		since := unixNanos(f.Since)
		scanned := 0
		skip := func(cursor []byte) bool {
			if scanned++; scanned >= maxScan {
				next = string(cursor)
				return false
			}
			return true
		}
		// The cursor is the key after the prefix: the event id, or for a
		// rule's list the hour and the event id.
		last := ""
		return eachDesc(idx, p, f.Before, floor, func(cursor, v []byte) (bool, error) {
			id := cursor
			if byRule {
				if len(cursor) < hourKeyLen {
					return false, fmt.Errorf("bad rule_events key %q", cursor)
				}
				id = cursor[hourKeyLen:]
				// The walk starts at since's hour; in it, only what was
				// counted at or after since.
				if !f.Since.IsZero() && getU64(v) < since {
					return skip(cursor), nil
				}
			}
			for _, k := range keep {
				if !k(id) {
					return skip(cursor), nil
				}
			}
			if len(evs) == limit {
				// One more exists: this page is full.
				next = last
				return false, nil
			}
			ev, err := getEvent(tx, id)
			if err != nil {
				return false, fmt.Errorf("event %s: %w", id, err)
			}
			evs = append(evs, ev)
			last = string(cursor)
			return true, nil
		})
	})
	if err != nil {
		return nil, "", fmt.Errorf("list events: %w", err)
	}
	return evs, next, nil
}

// PendingEvents returns up to limit (default 100) stored events that have
// not been matched yet, oldest first. Handshakes are never pending.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]*alorules.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	var evs []*alorules.Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		evs = nil
		return eachAsc(tx.Bucket(bPending), nil, nil, func(id, _ []byte) (bool, error) {
			ev, err := getEvent(tx, id)
			if err != nil {
				return false, fmt.Errorf("event %s: %w", id, err)
			}
			evs = append(evs, ev)
			return len(evs) < limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pending events: %w", err)
	}
	return evs, nil
}

// EventCountSince counts the events received at or after t. It walks the
// keys of t's partial hour from a cursor seek and adds hourly counters for
// the rest, reading no records.
func (s *Store) EventCountSince(ctx context.Context, t time.Time) (int, error) {
	n := int64(0)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		n = 0
		from := unixNanos(t)
		full := hourNanos(t) // first hour counted whole
		if full < from {
			full += int64(time.Hour)
		}
		end := []byte(encodeID(full, 0))
		c := tx.Bucket(bEvents).Cursor()
		for k, _ := c.Seek([]byte(encodeID(from, 0))); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Next() {
			n++
		}
		return eachAsc(tx.Bucket(bCounts), []byte(countEventHour), u64(full), func(_, v []byte) (bool, error) {
			n += getU64(v)
			return true, nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	return int(n), nil
}
