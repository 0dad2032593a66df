package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// ruleEventsFixture stores events an hour apart with what rules r1 and r2
// made of them, and returns their ids by name.
func ruleEventsFixture(t *testing.T, s *Store, base time.Time) map[string]string {
	t.Helper()
	allowPast(s)
	ids := map[string]string{}
	var all []*alorules.Execution
	save := func(name, typ string, at time.Time, results []alorules.RuleResult, execs ...string) []*alorules.Execution {
		id := mustSave(t, s, newEvent(typ, at))
		ids[name] = id
		var exs []*alorules.Execution
		for _, r := range execs {
			exs = append(exs, &alorules.Execution{EventID: id, Rule: r, RuleSetHash: "h1", CreatedAt: at})
		}
		m := &alorules.Match{EventID: id, RuleSetHash: "h1", MatchedAt: at, Results: results}
		if err := s.SaveMatch(ctx, MatchWrite{Match: m, Executions: exs}); err != nil {
			t.Fatal(err)
		}
		all = append(all, exs...)
		return exs
	}
	matched := func(r string) alorules.RuleResult {
		return alorules.RuleResult{Rule: r, Outcome: alorules.OutcomeMatched}
	}
	save("old-hit", "a", base, []alorules.RuleResult{matched("r1")})
	save("hit", "a", base.Add(time.Hour), []alorules.RuleResult{matched("r1")}, "r1")
	save("error", "b", base.Add(2*time.Hour), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeError, Error: "boom"}})
	save("failed", "a", base.Add(3*time.Hour), []alorules.RuleResult{matched("r1"), matched("r2")}, "r1", "r2")
	save("r2-only", "b", base.Add(4*time.Hour), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeNotMatched}, matched("r2")}, "r2")
	save("throttled", "a", base.Add(5*time.Hour), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeThrottled}})
	// Every execution ends, so that nothing keeps its event from Prune;
	// only r1's for "failed" fails.
	for _, ex := range all {
		ex.Status = alorules.StatusSucceeded
		if ex.EventID == ids["failed"] && ex.Rule == "r1" {
			ex.Status = alorules.StatusFailed
		}
		if err := s.UpdateExecution(ctx, ex); err != nil {
			t.Fatal(err)
		}
		// A second update of a failed execution adds nothing.
		if err := s.UpdateExecution(ctx, ex); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func TestEventsByRule(t *testing.T) {
	s := openTest(t)
	base := time.Now().Add(-10 * time.Hour).Truncate(time.Hour)
	ids := ruleEventsFixture(t, s, base)
	tests := []struct {
		name string
		f    EventFilter
		want []string // newest first
	}{
		{"hits", EventFilter{Rule: "r1"}, []string{"failed", "hit", "old-hit"}},
		{"hits by name", EventFilter{Rule: "r1", Outcome: RuleMatched}, []string{"failed", "hit", "old-hit"}},
		{"failures: a condition error and a failed execution", EventFilter{Rule: "r1", Outcome: RuleFailed}, []string{"failed", "error"}},
		{"another rule", EventFilter{Rule: "r2"}, []string{"r2-only", "failed"}},
		{"a succeeded execution is no failure", EventFilter{Rule: "r2", Outcome: RuleFailed}, nil},
		{"an unknown rule", EventFilter{Rule: "nope"}, nil},
		{"since", EventFilter{Rule: "r1", Since: base.Add(time.Hour)}, []string{"failed", "hit"}},
		{"since, on the edge", EventFilter{Rule: "r1", Since: base.Add(time.Hour + time.Nanosecond)}, []string{"failed"}},
		{"and type", EventFilter{Rule: "r1", Outcome: RuleFailed, Type: "b"}, []string{"error"}},
		{"and matched nothing", EventFilter{Rule: "r1", Outcome: RuleFailed, Unmatched: true}, []string{"error"}},
		{"since without rule", EventFilter{Since: base.Add(4 * time.Hour)}, []string{"throttled", "r2-only"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, next, err := s.Events(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range tc.want {
				want = append(want, ids[n])
			}
			var got []string
			for _, ev := range evs {
				got = append(got, ev.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) || next != "" {
				t.Errorf("got %v (next %q), want %v (%v)", got, next, want, tc.want)
			}
		})
	}

	// Paging: one per page, to the end.
	var got []string
	f := EventFilter{Rule: "r1", Limit: 1}
	for range 10 {
		evs, next, err := s.Events(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			got = append(got, ev.ID)
		}
		if next == "" {
			break
		}
		f.Before = next
	}
	if want := fmt.Sprint([]string{ids["failed"], ids["hit"], ids["old-hit"]}); fmt.Sprint(got) != want {
		t.Errorf("paging: got %v, want %v", got, want)
	}

	// The entries go with their events.
	if _, err := s.Prune(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if n := bucketLen(t, s, bRuleEvents); n != 0 {
		t.Errorf("after pruning every event: got %d rule_events entries, want 0", n)
	}
}

// TestMigrateSchema1: a schema 1 file, written before the rule_events
// index or by a build that kept it with gaps (a build without it saved
// matches and pruned events), gets the index rebuilt when opened
// read-write, a batch per transaction, and is marked schema 2; a
// read-only open reads it as it is and builds nothing.
func TestMigrateSchema1(t *testing.T) {
	defer func(n int) { ruleEventsBatch = n }(ruleEventsBatch)
	ruleEventsBatch = 1 // every record in a transaction of its own
	tests := []struct {
		name string
		// v1 turns the current file into a schema 1 file.
		v1 func(tx *bolt.Tx) error
	}{
		{"from before the index", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bRuleEvents)
		}},
		{"with gaps and stale entries", func(tx *bolt.Tx) error {
			b := tx.Bucket(bRuleEvents)
			k, _ := b.Cursor().First()
			if err := b.Delete(k); err != nil {
				return err
			}
			if err := b.Put(cat(pfx("r1", RuleMatched), []byte(idFloor(time.Now()))), nil); err != nil {
				return err
			}
			return tx.Bucket(bMeta).Put([]byte("rule_events_built"), []byte("1"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "alorules.db")
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			ids := ruleEventsFixture(t, s, time.Now().Add(-10*time.Hour).Truncate(time.Hour))
			want := bucketKeys(t, s, bRuleEvents)
			if len(want) != 7 { // 5 hits, 2 failures
				t.Fatalf("got %d rule_events entries, want 7", len(want))
			}
			err = s.db.Update(func(tx *bolt.Tx) error {
				if err := tc.v1(tx); err != nil {
					return err
				}
				return tx.Bucket(bMeta).Put([]byte("schema_version"), []byte("1"))
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err = Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Event(ctx, ids["failed"]); err != nil {
				t.Errorf("read-only: %v", err)
			}
			if _, _, err := s.Events(ctx, EventFilter{Rule: "r1"}); !errors.Is(err, errNoRuleIndex) {
				t.Errorf("read-only, by rule: got %v, want %v", err, errNoRuleIndex)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("the file changed under a read-only open")
			}

			for range 2 { // the second Open finds schema 2 and builds nothing
				s, err = Open(path, Options{NoSync: true})
				if err != nil {
					t.Fatal(err)
				}
				if got := bucketKeys(t, s, bRuleEvents); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("after Open: got entries %q, want %q", got, want)
				}
				evs, _, err := s.Events(ctx, EventFilter{Rule: "r1", Outcome: RuleFailed})
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) != 2 || evs[0].ID != ids["failed"] || evs[1].ID != ids["error"] {
					t.Errorf("failures of r1 after Open: got %d events, want failed and error", len(evs))
				}
				err = s.db.View(func(tx *bolt.Tx) error {
					meta := tx.Bucket(bMeta)
					if v := string(meta.Get([]byte("schema_version"))); v != "2" {
						t.Errorf("got schema version %q, want 2", v)
					}
					if meta.Get([]byte("rule_events_built")) != nil {
						t.Error("got the mark of the build before schema 2, want it gone")
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// bucketKeys lists the keys of a top-level bucket in order.
func bucketKeys(t testing.TB, s *Store, name []byte) []string {
	t.Helper()
	var keys []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
