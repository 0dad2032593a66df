package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// ruleEventsFixture stores events with what rules r1 and r2 made of them,
// base being an hour at least 10 hours back, and returns their ids by
// name. Most are matched as they are received, an hour apart; "late" is
// matched six hours after it came in (a backlog) and its execution fails
// an hour later; "replayed" has its execution fail, then two replays of
// it, one in the same hour and one seven hours later.
func ruleEventsFixture(t *testing.T, s *Store, base time.Time) map[string]string {
	t.Helper()
	allowPast(s)
	ids := map[string]string{}
	hour := func(h int, min ...time.Duration) time.Time {
		at := base.Add(time.Duration(h) * time.Hour)
		for _, m := range min {
			at = at.Add(m * time.Minute)
		}
		return at
	}
	// end finishes an execution at at; only failures count.
	end := func(ex *alorules.Execution, st alorules.Status, at time.Time) {
		ex.Status, ex.UpdatedAt = st, at
		// A second update of a failed execution adds nothing.
		for range 2 {
			if err := s.UpdateExecution(ctx, ex); err != nil {
				t.Fatal(err)
			}
		}
	}
	save := func(name, typ string, at, matchedAt time.Time, results []alorules.RuleResult, execs ...string) []*alorules.Execution {
		id := mustSave(t, s, newEvent(typ, at))
		ids[name] = id
		var exs []*alorules.Execution
		for _, r := range execs {
			exs = append(exs, &alorules.Execution{EventID: id, Rule: r, RuleSetHash: "h1", CreatedAt: matchedAt})
		}
		m := &alorules.Match{EventID: id, RuleSetHash: "h1", MatchedAt: matchedAt, Results: results}
		if err := s.SaveMatch(ctx, MatchWrite{Match: m, Executions: exs}); err != nil {
			t.Fatal(err)
		}
		// Every execution ends, so that nothing keeps its event from
		// Prune.
		for _, ex := range exs {
			end(ex, alorules.StatusSucceeded, matchedAt)
		}
		return exs
	}
	matched := func(r ...string) []alorules.RuleResult {
		var rs []alorules.RuleResult
		for _, r := range r {
			rs = append(rs, alorules.RuleResult{Rule: r, Outcome: alorules.OutcomeMatched})
		}
		return rs
	}
	save("old-hit", "a", hour(0), hour(0), matched("r1"))
	save("hit", "a", hour(1), hour(1), matched("r1"), "r1")
	save("error", "b", hour(2), hour(2), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeError, Error: "boom"}})
	exs := save("failed", "a", hour(3), hour(3), matched("r1", "r2"), "r1", "r2")
	end(exs[0], alorules.StatusFailed, hour(3, 1))
	save("r2-only", "b", hour(4), hour(4), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeNotMatched}, matched("r2")[0]}, "r2")
	save("throttled", "a", hour(5), hour(5), []alorules.RuleResult{{Rule: "r1", Outcome: alorules.OutcomeThrottled}})
	exs = save("late", "a", hour(0, 30), hour(6), matched("r2"), "r2")
	end(exs[0], alorules.StatusFailed, hour(7))
	exs = save("replayed", "a", hour(1, 30), hour(1, 30), matched("r2"), "r2")
	end(exs[0], alorules.StatusFailed, hour(1, 40))
	for _, at := range []time.Time{hour(1, 45), hour(8)} {
		replay := &alorules.Execution{EventID: ids["replayed"], Rule: "r2", RuleSetHash: "h1", Replay: true, CreatedAt: at}
		if err := s.AddExecutions(ctx, []*alorules.Execution{replay}); err != nil {
			t.Fatal(err)
		}
		end(replay, alorules.StatusFailed, at.Add(5*time.Minute))
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
		{"hits by the hour matched", EventFilter{Rule: "r2"}, []string{"late", "r2-only", "failed", "replayed"}},
		{"failures by the hour failed, an event once per hour", EventFilter{Rule: "r2", Outcome: RuleFailed},
			[]string{"replayed", "late", "replayed"}},
		{"an unknown rule", EventFilter{Rule: "nope"}, nil},
		{"since", EventFilter{Rule: "r1", Since: base.Add(time.Hour)}, []string{"failed", "hit"}},
		{"since, on the edge", EventFilter{Rule: "r1", Since: base.Add(time.Hour + time.Nanosecond)}, []string{"failed"}},
		{"since, inside the hour", EventFilter{Rule: "r2", Outcome: RuleFailed, Since: base.Add(time.Hour + 42*time.Minute)},
			[]string{"replayed", "late"}},
		{"since: matched after it, received before", EventFilter{Rule: "r2", Since: base.Add(6 * time.Hour)}, []string{"late"}},
		{"since: failed after it, received before", EventFilter{Rule: "r2", Outcome: RuleFailed, Since: base.Add(7 * time.Hour)},
			[]string{"replayed", "late"}},
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
			if got := eventIDs(evs); fmt.Sprint(got) != fmt.Sprint(want) || next != "" {
				t.Errorf("got %v (next %q), want %v (%v)", got, next, want, tc.want)
			}
		})
	}

	// Paging: one per page, to the end.
	evs, pages := allPages(t, s, EventFilter{Rule: "r2", Outcome: RuleFailed, Limit: 1})
	got, want := fmt.Sprint(eventIDs(evs)), fmt.Sprint([]string{ids["replayed"], ids["late"], ids["replayed"]})
	if got != want || pages != 3 {
		t.Errorf("paging: got %v in %d pages, want %v in 3", got, pages, want)
	}

	// The entries go with their events.
	if _, err := s.Prune(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	for _, b := range indexBuckets {
		if n := bucketLen(t, s, b); n != 0 {
			t.Errorf("after pruning every event: got %d %s entries, want 0", n, b)
		}
	}
}

// TestRuleStatsCountWhatEventsByRuleList: from the start of any hour, a
// rule's hits and failures in RuleStats are as many as the events its
// lists show: an event received earlier but matched or failed in the
// window is in both; one that failed twice in an hour, once in each.
func TestRuleStatsCountWhatEventsByRuleList(t *testing.T) {
	s := openTest(t)
	base := time.Now().Add(-10 * time.Hour).Truncate(time.Hour)
	ruleEventsFixture(t, s, base)
	for h := range 11 {
		since := base.Add(time.Duration(h) * time.Hour)
		stats, err := s.RuleStats(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		for _, rule := range []string{"r1", "r2"} {
			for _, kind := range []string{RuleMatched, RuleFailed} {
				evs, _ := allPages(t, s, EventFilter{Rule: rule, Outcome: kind, Since: since, Limit: 2})
				n := stats[rule].Hits
				if kind == RuleFailed {
					n = stats[rule].Failures
				}
				if len(evs) != n {
					t.Errorf("since hour %d, %s %s: got %d counted and %d listed, want the same", h, rule, kind, n, len(evs))
				}
			}
		}
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
			if len(want) != 12 { // 7 hits, 5 failures
				t.Fatalf("got %d rule_events entries, want 12", len(want))
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

			readOnly(t, path, func(s *Store) {
				if _, err := s.Event(ctx, ids["failed"]); err != nil {
					t.Errorf("read-only: %v", err)
				}
				if _, _, err := s.Events(ctx, EventFilter{Rule: "r1"}); !errors.Is(err, errNoRuleIndex) {
					t.Errorf("read-only, by rule: got %v, want %v", err, errNoRuleIndex)
				}
			})

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
