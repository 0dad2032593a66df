package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

// openTest opens a store in a fresh temporary directory, closed at the end
// of the test. Tests skip fsync: durability is bbolt's, and the package
// must stay fast on two cores.
func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "alorules.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("check: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// allowPast makes the store's ids follow the given times exactly, without
// the process-wide monotonic clamp, so tests can store events in the past.
func allowPast(s *Store) {
	s.newID = func(t time.Time) string { return encodeID(unixNanos(t), rand.Uint32()) }
}

// bucketLen counts the keys in a top-level bucket.
func bucketLen(t testing.TB, s *Store, name []byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bucketLens counts the keys of every bucket that tracks events or
// executions.
func bucketLens(t testing.TB, s *Store) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, b := range allBuckets {
		m[string(b)] = bucketLen(t, s, b)
	}
	return m
}

var ctx = context.Background()

// allPages lists the events f selects, following the cursor from page to
// page, and returns them with the number of pages.
func allPages(t testing.TB, s *Store, f EventFilter) (evs []*alorules.Event, pages int) {
	t.Helper()
	for {
		page, next, err := s.Events(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		evs = append(evs, page...)
		if next == "" {
			return evs, pages
		}
		if pages > 10000 {
			t.Fatalf("got more than %d pages of %+v", pages, f)
		}
		f.Before = next
	}
}

// readOnly opens the file at path read-only, calls fn with it, closes it,
// and checks that not a byte of the file changed.
func readOnly(t *testing.T, path string, fn func(s *Store)) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	fn(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the file changed under a read-only open")
	}
}

// eventIDs are the ids of evs, in order.
func eventIDs(evs []*alorules.Event) []string {
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	return ids
}

// newEvent returns an event of the given type received at at.
func newEvent(typ string, at time.Time) *alorules.Event {
	body := fmt.Sprintf(`{"type": %q, "n": %d}`, typ, rand.Int())
	return &alorules.Event{Type: typ, RawType: typ, ReceivedAt: at, Payload: json.RawMessage(body)}
}

// mustSave stores an event and returns its id.
func mustSave(t testing.TB, s *Store, ev *alorules.Event, keys ...DedupeKey) string {
	t.Helper()
	id, dup, err := s.SaveEvent(ctx, ev, keys)
	if err != nil {
		t.Fatal(err)
	}
	if dup {
		t.Fatalf("event %s: unexpected duplicate", id)
	}
	return id
}

// mustMatch records a match for an event with one execution per rule.
func mustMatch(t testing.TB, s *Store, eventID string, at time.Time, rules ...string) []*alorules.Execution {
	t.Helper()
	m := &alorules.Match{EventID: eventID, RuleSetHash: "h1", MatchedAt: at}
	var exs []*alorules.Execution
	for _, r := range rules {
		m.Results = append(m.Results, alorules.RuleResult{Rule: r, Outcome: alorules.OutcomeMatched})
		exs = append(exs, &alorules.Execution{EventID: eventID, Rule: r, RuleSetHash: "h1", CreatedAt: at})
	}
	if len(rules) == 0 {
		m.Results = []alorules.RuleResult{{Rule: "other", Outcome: alorules.OutcomeNotMatched}}
	}
	if err := s.SaveMatch(ctx, MatchWrite{Match: m, Executions: exs}); err != nil {
		t.Fatal(err)
	}
	return exs
}

// checkExecIndexes verifies, by a full scan, that every index entry,
// queue entry and status counter agrees with the stored executions.
func checkExecIndexes(t testing.TB, s *Store) {
	t.Helper()
	want := map[string]map[string]bool{}
	add := func(b []byte, k []byte) {
		if want[string(b)] == nil {
			want[string(b)] = map[string]bool{}
		}
		want[string(b)][string(k)] = true
	}
	status := map[alorules.Status]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bExecs).ForEach(func(k, v []byte) error {
			ex, _, err := decodeExec(v)
			if err != nil {
				return err
			}
			status[ex.Status]++
			for _, e := range execIndex(ex) {
				add(e[0], e[1])
			}
			add(bExEvent, cat(pfx(ex.EventID), k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{bExRule, bExStatus, bExRuleSt, bQueue, bExEvent} {
		got := map[string]bool{}
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(b).ForEach(func(k, _ []byte) error { got[string(k)] = true; return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want[string(b)]) {
			t.Errorf("bucket %s: got %d entries, want %d", b, len(got), len(want[string(b)]))
		}
		for k := range want[string(b)] {
			if !got[k] {
				t.Errorf("bucket %s: missing entry %q", b, k)
			}
		}
	}
	counts, err := s.CountByStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []alorules.Status{alorules.StatusQueued, alorules.StatusRunning,
		alorules.StatusRetrying, alorules.StatusSucceeded, alorules.StatusFailed} {
		if counts[st] != status[st] {
			t.Errorf("CountByStatus[%s]: got %d, want %d (full count)", st, counts[st], status[st])
		}
	}
}
