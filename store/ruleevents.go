package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"alorules"
)

// The rule_events index lists, per rule, the events it matched and the
// events it failed on: the lists behind a rule's hit and failure counts,
// read without opening every match record. It is written in the same
// transactions as the counts (SaveMatch, and the first failure of an
// execution), so a list and its count agree, and it goes with the event.

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

func addRuleEvent(tx *bolt.Tx, rule, kind, eventID string) error {
	if rule == "" || eventID == "" {
		return nil
	}
	return tx.Bucket(bRuleEvents).Put(cat(pfx(rule, kind), []byte(eventID)), nil)
}

// addResultEvents indexes the outcomes of one match that count: a hit, or
// a condition that failed.
func addResultEvents(tx *bolt.Tx, eventID string, results []alorules.RuleResult) error {
	for _, r := range results {
		var err error
		switch r.Outcome {
		case alorules.OutcomeMatched:
			err = addRuleEvent(tx, r.Rule, RuleMatched, eventID)
		case alorules.OutcomeError:
			err = addRuleEvent(tx, r.Rule, RuleFailed, eventID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// deleteRuleEvents removes event id's entries for each of rules.
func deleteRuleEvents(tx *bolt.Tx, id []byte, rules map[string]bool) error {
	b := tx.Bucket(bRuleEvents)
	for r := range rules {
		for _, kind := range []string{RuleMatched, RuleFailed} {
			if err := b.Delete(cat(pfx(r, kind), id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// migrateRuleEvents takes a schema 1 file to schema 2: it builds the
// rule_events index from the match records and the failed executions, a
// batch per transaction, then writes the new version. Whatever index the
// file had (a build that kept it, or a migration cut short) is dropped
// first: a build that did not keep it may have saved matches and pruned
// events without it. An execution that failed and then succeeded on retry
// before the migration is not found: its failure stays in the counts of
// its hour only.
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
			return addResultEvents(tx, string(id), m.Results)
		})
	}
	if err == nil {
		err = eachBatch(db, bExStatus, pfx(string(alorules.StatusFailed)), func(tx *bolt.Tx, id, _ []byte) error {
			ex, _, err := getExec(tx, id)
			if err != nil {
				return fmt.Errorf("execution %s: %w", id, err)
			}
			return addRuleEvent(tx, ex.Rule, RuleFailed, ex.EventID)
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
