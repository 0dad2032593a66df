package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"alorules"
)

// The rule_events index lists, per rule, the events it matched and the
// events it failed on, by the hour they were counted in: the lists behind
// a rule's hourly hit and failure counts, read without opening every match
// record. An entry is
//
//	pfx(rule, kind) + hourKey(t) + event id -> 8-byte t (unix nanos)
//
// where t is when it was counted: the match for a hit or a condition
// error, the first failure of an execution. It is written in the same
// transaction as the count, and the count goes up only when the entry is
// new: each hour counts the distinct events it lists. An event received
// before the hour but matched or failed in it is counted and listed in
// it; two failures for one event (a replay) count once in one hour, and
// once in each of two hours, where it is listed twice.
//
// Each entry has a twin in rule_events_event, pfx(event id) + the entry's
// key, so that retention deletes exactly the entries an event has.

// Kinds of rule_events entries: the values of EventFilter.Outcome.
const (
	// RuleMatched lists the events whose rule condition held: its hits.
	RuleMatched = string(alorules.OutcomeMatched)
	// RuleFailed lists the events the rule's condition failed to evaluate
	// on, and those an execution of the rule failed for: its failures.
	RuleFailed = "failure"
)

// ruleEventsBatch is how many records one transaction of the rule_events
// backfill reads; a variable for tests.
var ruleEventsBatch = 5000

// errNoRuleIndex answers a by-rule list on a file from before schema 2
// opened read-only, which builds nothing.
var errNoRuleIndex = errors.New("this file has no complete rule_events index yet: open it read-write once to build it")

// hourKeyLen is the length of an hourKey.
var hourKeyLen = idEncoding.EncodedLen(idTimeBytes)

// hourKey is t's hour as a string that sorts in time order, like an id.
func hourKey(t time.Time) string {
	return idEncoding.EncodeToString(u64(hourNanos(t)))
}

// addRuleEvent adds event eventID to rule's list of kind for the hour of
// t, unless it is there already; added says whether it was new. Nothing
// without a rule or an event is listed.
func addRuleEvent(tx *bolt.Tx, rule, kind, eventID string, t time.Time) (added bool, err error) {
	if rule == "" || eventID == "" {
		return false, nil
	}
	k := cat(pfx(rule, kind), []byte(hourKey(t)), []byte(eventID))
	b := tx.Bucket(bRuleEvents)
	if b.Get(k) != nil {
		return false, nil
	}
	if err := b.Put(k, u64(unixNanos(t))); err != nil {
		return false, err
	}
	return true, tx.Bucket(bRuleEventRefs).Put(cat(pfx(eventID), k), nil)
}

// countRuleEvent adds event eventID to rule's list of kind for the hour of
// t and, if it was not there yet, counts it in the rule's stats for that
// hour: a hit (RuleMatched) or a failure.
func countRuleEvent(tx *bolt.Tx, rule, kind, eventID string, t time.Time) error {
	added, err := addRuleEvent(tx, rule, kind, eventID, t)
	if err != nil || !added {
		return err
	}
	if kind == RuleMatched {
		return addRuleStat(tx, rule, t, 1, 0)
	}
	return addRuleStat(tx, rule, t, 0, 1)
}

// resultKind is the list a rule's outcome puts the event on: a hit, or a
// condition that failed; "" for none.
func resultKind(o alorules.Outcome) string {
	switch o {
	case alorules.OutcomeMatched:
		return RuleMatched
	case alorules.OutcomeError:
		return RuleFailed
	}
	return ""
}

// deleteRuleEvents removes every rule_events entry of event id.
func deleteRuleEvents(tx *bolt.Tx, id []byte) error {
	refs := tx.Bucket(bRuleEventRefs)
	p := pfx(string(id))
	var keys [][]byte
	err := eachAsc(refs, p, nil, func(k, _ []byte) (bool, error) {
		keys = append(keys, bytes.Clone(k))
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Bucket(bRuleEvents).Delete(k); err != nil {
			return err
		}
		if err := refs.Delete(cat(p, k)); err != nil {
			return err
		}
	}
	return nil
}

// migrateRuleEvents takes a schema 1 file to schema 2: it builds the
// rule_events index from the match records (at MatchedAt) and the failed
// executions (at UpdatedAt), a batch per transaction, then writes the new
// version. Whatever index the file had (a build that kept it by event
// alone, or a migration cut short) is dropped first: a build that did not
// keep it may have saved matches and pruned events without it. The rule
// stats are left as they were counted; an execution that failed and then
// succeeded on retry before the migration is not found, and one retried
// and failed again is listed at its last failure.
func migrateRuleEvents(db *bolt.DB) error {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range indexBuckets {
			if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		// The mark of the build before schema 2 that kept the index.
		return tx.Bucket(bMeta).Delete([]byte("rule_events_built"))
	})
	if err == nil {
		err = eachBatch(db, bMatches, nil, func(tx *bolt.Tx, id, v []byte) error {
			var m alorules.Match
			if json.Unmarshal(v, &m) != nil {
				return nil // unreadable here as everywhere else; not worth failing Open
			}
			for _, r := range m.Results {
				if kind := resultKind(r.Outcome); kind != "" {
					if _, err := addRuleEvent(tx, r.Rule, kind, string(id), m.MatchedAt); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	if err == nil {
		err = eachBatch(db, bExStatus, pfx(string(alorules.StatusFailed)), func(tx *bolt.Tx, id, _ []byte) error {
			ex, _, err := getExec(tx, id)
			if err != nil {
				return fmt.Errorf("execution %s: %w", id, err)
			}
			_, err = addRuleEvent(tx, ex.Rule, RuleFailed, ex.EventID, ex.UpdatedAt)
			return err
		})
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bMeta).Put([]byte("schema_version"), []byte(strconv.Itoa(schemaVersion)))
		})
	}
	if err != nil {
		return fmt.Errorf("migrate to schema %d: build rule_events index: %w", schemaVersion, err)
	}
	return nil
}

// eachBatch calls fn with the rest (after p) and value of each key of
// bucket b under prefix p, in key order, ruleEventsBatch keys per
// read-write transaction: each transaction seeks past the last key of the
// one before. fn must not write to b.
func eachBatch(db *bolt.DB, b, p []byte, fn func(tx *bolt.Tx, rest, v []byte) error) error {
	var after []byte // the last key done
	for done := false; !done; {
		err := db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(b).Cursor()
			k, v := c.Seek(p)
			if after != nil {
				if k, v = c.Seek(after); bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for n := 0; k != nil && bytes.HasPrefix(k, p) && n < ruleEventsBatch; k, v = c.Next() {
				n++
				after = bytes.Clone(k)
				if err := fn(tx, k[len(p):], v); err != nil {
					return err
				}
			}
			done = k == nil || !bytes.HasPrefix(k, p)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
