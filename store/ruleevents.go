package store

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

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

// metaRuleEvents in the meta bucket says that the rule_events index
// covers every match, including those stored before it existed.
const metaRuleEvents = "rule_events_built"

// ruleEventsBatch is how many match records one transaction of the
// rule_events backfill reads.
const ruleEventsBatch = 5000

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

// backfillRuleEvents builds the rule_events index of a file written before
// it existed, from the match records and the failed executions, a batch
// per transaction; it runs once, at Open. An execution that failed and
// then succeeded on retry before the upgrade is not found: its failure
// stays in the counts of its hour only.
func backfillRuleEvents(db *bolt.DB) error {
	built := false
	if err := db.View(func(tx *bolt.Tx) error {
		built = tx.Bucket(bMeta).Get([]byte(metaRuleEvents)) != nil
		return nil
	}); err != nil || built {
		return err
	}
	var after []byte
	for done := false; !done; {
		err := db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bMatches).Cursor()
			k, v := c.Seek(after)
			if k != nil && after != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
			for n := 0; k != nil && n < ruleEventsBatch; k, v = c.Next() {
				n++
				after = bytes.Clone(k)
				var m alorules.Match
				if json.Unmarshal(v, &m) != nil {
					continue // unreadable here as everywhere else; not worth failing Open
				}
				if err := addResultEvents(tx, string(k), m.Results); err != nil {
					return err
				}
			}
			if k != nil {
				return nil
			}
			done = true
			err := eachAsc(tx.Bucket(bExStatus), pfx(string(alorules.StatusFailed)), nil, func(id, _ []byte) (bool, error) {
				ex, _, err := getExec(tx, id)
				if err != nil {
					return false, fmt.Errorf("execution %s: %w", id, err)
				}
				return true, addRuleEvent(tx, ex.Rule, RuleFailed, ex.EventID)
			})
			if err != nil {
				return err
			}
			return tx.Bucket(bMeta).Put([]byte(metaRuleEvents), []byte("1"))
		})
		if err != nil {
			return fmt.Errorf("build rule_events index: %w", err)
		}
	}
	return nil
}
