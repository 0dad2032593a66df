package store

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"alorules"
)

// matchWith saves the match of a new event with w's extra writes.
func matchWith(t testing.TB, s *Store, at time.Time, w MatchWrite) string {
	t.Helper()
	id := mustSave(t, s, newEvent("action_updated", at))
	w.Match = &alorules.Match{EventID: id, RuleSetHash: "h1", MatchedAt: at,
		Results: []alorules.RuleResult{{Rule: "r", Outcome: alorules.OutcomeNotMatched}}}
	if w.Entity != nil && w.Entity.EventID == "" {
		w.Entity.EventID = id
	}
	if err := s.SaveMatch(ctx, w); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEntityState(t *testing.T) {
	s := openTest(t)
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	if st, err := s.Entity(ctx, "a1"); err != nil || st.EventID != "" || st.Payload != nil {
		t.Fatalf("unknown entity: got %+v, %v; want nothing", st, err)
	}
	steps := []struct {
		payload   string // "" forgets
		wantCount int
	}{
		{`{"action":{"id":"a1","status":"Open"}}`, 1},
		{`{"action":{"id":"a1","status":"Doing"}}`, 1},
		{"", 0},
		{"", 0},
		{`{"action":{"id":"a1","status":"Done"}}`, 1},
	}
	for i, step := range steps {
		w := &EntityWrite{Key: "a1", At: at.Add(time.Duration(i) * time.Minute)}
		if step.payload != "" {
			w.Payload = json.RawMessage(step.payload)
		}
		id := matchWith(t, s, w.At, MatchWrite{Entity: w})
		st, err := s.Entity(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		wantID := id
		if step.payload == "" {
			wantID = ""
		}
		if st.EventID != wantID || string(st.Payload) != step.payload {
			t.Errorf("step %d: got %s %s, want %s %s", i, st.EventID, st.Payload, wantID, step.payload)
		}
		if step.payload != "" && !st.UpdatedAt.Equal(w.At) {
			t.Errorf("step %d: got updated %s, want %s", i, st.UpdatedAt, w.At)
		}
		if n, _ := s.EntityCount(ctx); n != step.wantCount {
			t.Errorf("step %d: got %d entities, want %d", i, n, step.wantCount)
		}
	}
	if n := bucketLen(t, s, bEntAge); n != 1 {
		t.Errorf("age index: got %d entries, want 1", n)
	}
}

// Saving the same match twice (a matcher that crashed after committing)
// changes the entity once.
func TestEntityStateIdempotent(t *testing.T) {
	s := openTest(t)
	at := time.Now()
	id := mustSave(t, s, newEvent("action_updated", at))
	w := MatchWrite{
		Match:  &alorules.Match{EventID: id, RuleSetHash: "h", Results: []alorules.RuleResult{}},
		Entity: &EntityWrite{Key: "a1", EventID: id, At: at, Payload: json.RawMessage(`{"x":1}`)},
	}
	for range 2 {
		if err := s.SaveMatch(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.EntityCount(ctx); n != 1 {
		t.Errorf("got %d entities, want 1", n)
	}
}

// A flood of entities is pruned with the retention of events: by age, and
// beyond the event count, least recently updated first.
func TestPruneEntities(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	old := time.Now().Add(-48 * time.Hour)
	const flood = 2500 // more than one prune batch
	for i := range flood {
		at := old.Add(time.Duration(i) * time.Second)
		matchWith(t, s, at, MatchWrite{Entity: &EntityWrite{Key: fmt.Sprintf("old-%d", i), At: at, Payload: json.RawMessage(`{}`)}})
	}
	recent := time.Now().Add(-time.Minute)
	for i := range 10 {
		at := recent.Add(time.Duration(i) * time.Millisecond)
		matchWith(t, s, at, MatchWrite{Entity: &EntityWrite{Key: fmt.Sprintf("new-%d", i), At: at, Payload: json.RawMessage(`{}`)}})
	}
	if _, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.EntityCount(ctx); n != 10 {
		t.Errorf("after pruning by age: got %d entities, want 10", n)
	}
	if got, want := bucketLen(t, s, bEntities), 10; got != want {
		t.Errorf("entities bucket: got %d, want %d", got, want)
	}
	if got, want := bucketLen(t, s, bEntAge), 10; got != want {
		t.Errorf("age index: got %d, want %d", got, want)
	}
	// A count bound keeps the most recently updated.
	if _, err := s.Prune(ctx, time.Time{}, 4); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		st, err := s.Entity(ctx, fmt.Sprintf("new-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if kept := st.EventID != ""; kept != (i >= 6) {
			t.Errorf("new-%d: got kept %v, want %v", i, kept, i >= 6)
		}
	}
}
