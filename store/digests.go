package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// Digest is an open digest: the matches of one rule for one key, collected
// until the window ends, when one execution runs for all of them.
type Digest struct {
	ID       string    `json:"id"`
	Rule     string    `json:"rule"`
	Key      string    `json:"key"`
	OpenedAt time.Time `json:"opened_at"`
	Due      time.Time `json:"due"`
	// EventIDs are the first Max events collected, oldest first.
	EventIDs []string `json:"event_ids"`
	// Count is how many events were collected, also those beyond Max.
	Count int `json:"count"`
	Max   int `json:"max"`
}

// DigestAdd collects one matched event into the open digest of its rule
// and key, opening one (due at At+Window) if there is none.
type DigestAdd struct {
	Rule, Key, EventID string
	At                 time.Time
	Window             time.Duration
	Max                int
	// ID is the id a new digest gets; SaveMatch fills it.
	ID string
}

func digestKey(rule, key string) []byte { return pfx(rule, key) }

func getDigest(tx *bolt.Tx, id []byte) (*Digest, error) {
	v := tx.Bucket(bDigests).Get(id)
	if v == nil {
		return nil, alorules.ErrNotFound
	}
	d := new(Digest)
	if err := json.Unmarshal(v, d); err != nil {
		return nil, fmt.Errorf("bad digest record %s: %w", id, err)
	}
	return d, nil
}

// addToDigest applies one DigestAdd inside a transaction.
func addToDigest(tx *bolt.Tx, a *DigestAdd) error {
	keys := tx.Bucket(bDigestKey)
	k := digestKey(a.Rule, a.Key)
	var d *Digest
	if id := keys.Get(k); id != nil {
		var err error
		if d, err = getDigest(tx, id); err != nil {
			return err
		}
	} else {
		d = &Digest{ID: a.ID, Rule: a.Rule, Key: a.Key, OpenedAt: a.At, Due: a.At.Add(a.Window), Max: a.Max, EventIDs: []string{}}
		id := []byte(d.ID)
		if err := keys.Put(k, id); err != nil {
			return err
		}
		if err := tx.Bucket(bDigestDue).Put(cat(u64(unixNanos(d.Due)), id), nil); err != nil {
			return err
		}
		if err := addCount(tx, countDigests, 1); err != nil {
			return err
		}
	}
	d.Count++
	if len(d.EventIDs) < d.Max {
		d.EventIDs = append(d.EventIDs, a.EventID)
		if err := tx.Bucket(bEventRefs).Put(cat(pfx(a.EventID), []byte(d.ID)), nil); err != nil {
			return err
		}
	}
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bDigests).Put([]byte(d.ID), v)
}

// deleteDigest removes a digest and its index entries; nil, nil if there
// is no such digest.
func deleteDigest(tx *bolt.Tx, id []byte) (*Digest, error) {
	d, err := getDigest(tx, id)
	if errors.Is(err, alorules.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	dels := []struct{ b, k []byte }{
		{bDigests, id},
		{bDigestDue, cat(u64(unixNanos(d.Due)), id)},
		{bDigestKey, digestKey(d.Rule, d.Key)},
	}
	for _, ev := range d.EventIDs {
		dels = append(dels, struct{ b, k []byte }{bEventRefs, cat(pfx(ev), id)})
	}
	for _, del := range dels {
		if err := tx.Bucket(del.b).Delete(del.k); err != nil {
			return nil, err
		}
	}
	return d, addCount(tx, countDigests, -1)
}

// Digest returns an open digest, or an error wrapping alorules.ErrNotFound.
func (s *Store) Digest(ctx context.Context, id string) (*Digest, error) {
	return viewOne(ctx, s, "digest", id, getDigest)
}

// FireDigest closes an open digest by creating its execution, in one
// transaction, like FireTimer. It reports false, writing nothing, if the
// digest is no longer open. A nil ex drops the digest.
func (s *Store) FireDigest(ctx context.Context, id string, ex *alorules.Execution) (bool, error) {
	return s.fire(ctx, "digest "+id, ex, func(tx *bolt.Tx) (bool, error) {
		d, err := deleteDigest(tx, []byte(id))
		return d != nil, err
	})
}

// DueDigests returns up to limit (default 100) open digests whose window
// ended at or before now, the earliest first.
func (s *Store) DueDigests(ctx context.Context, now time.Time, limit int) ([]*Digest, error) {
	out, err := dueIn(ctx, s, bDigestDue, now, limit, getDigest)
	if err != nil {
		return nil, fmt.Errorf("due digests: %w", err)
	}
	return out, nil
}

// NextDigestDue returns the earliest end of an open digest's window, and
// false if none is open.
func (s *Store) NextDigestDue(ctx context.Context) (time.Time, bool, error) {
	return s.firstDue(ctx, bDigestDue)
}

// Digests lists open digests, the soonest due first, a page at a time.
func (s *Store) Digests(ctx context.Context, f DueFilter) ([]*Digest, string, error) {
	return listDue(ctx, s, bDigestDue, f, "digests", getDigest)
}

// DigestCount is how many digests are open.
func (s *Store) DigestCount(ctx context.Context) (int, error) {
	return s.counter(ctx, countDigests)
}
