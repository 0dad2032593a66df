package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"alorules"
)

func TestTimers(t *testing.T) {
	s := openTest(t)
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	var ids []string
	// Five entities, due in reverse order of setting.
	for i := range 5 {
		tm := &Timer{Rule: "stuck", Entity: fmt.Sprintf("a%d", i), SetAt: at, Due: at.Add(time.Duration(5-i) * time.Hour)}
		tm.EventID = matchWith(t, s, at, MatchWrite{Timers: []*Timer{tm}})
		if tm.ID == "" {
			t.Fatal("SaveMatch gave the timer no id")
		}
		ids = append(ids, tm.ID)
	}
	// A second timer for the same rule and entity is not stored.
	dup := &Timer{Rule: "stuck", Entity: "a0", SetAt: at, Due: at.Add(time.Minute)}
	matchWith(t, s, at, MatchWrite{Timers: []*Timer{dup}})
	if _, err := s.Timer(ctx, dup.ID); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("duplicate timer: got %v, want not found", err)
	}
	if n, _ := s.TimerCount(ctx); n != 5 {
		t.Errorf("got %d timers, want 5", n)
	}
	// Listed soonest first, a page at a time.
	page, next, err := s.Timers(ctx, DueFilter{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Entity != "a4" || page[1].Entity != "a3" || next == "" {
		t.Fatalf("first page: got %v next %q", page, next)
	}
	page, next, err = s.Timers(ctx, DueFilter{Limit: 2, After: next})
	if err != nil || len(page) != 2 || page[0].Entity != "a2" || next == "" {
		t.Fatalf("second page: got %v next %q err %v", page, next, err)
	}
	page, next, _ = s.Timers(ctx, DueFilter{Limit: 2, After: next})
	if len(page) != 1 || page[0].Entity != "a0" || next != "" {
		t.Fatalf("last page: got %v next %q", page, next)
	}
	// The entity's lookup finds its timer.
	if st, _ := s.Entity(ctx, "a2"); len(st.Timers) != 1 || st.Timers[0].ID != ids[2] {
		t.Errorf("entity a2: got timers %v, want %s", st.Timers, ids[2])
	}
	// Due ones, earliest first.
	due, err := s.DueTimers(ctx, at.Add(2*time.Hour), 0)
	if err != nil || len(due) != 2 || due[0].Entity != "a4" || due[1].Entity != "a3" {
		t.Fatalf("due: got %v, %v", due, err)
	}
	if next, ok, _ := s.NextTimerDue(ctx); !ok || !next.Equal(at.Add(time.Hour)) {
		t.Errorf("next due: got %s %v, want %s", next, ok, at.Add(time.Hour))
	}
	// Firing creates the execution once.
	ex := &alorules.Execution{EventID: mustSave(t, s, newEvent("x", at)), Rule: "stuck", RuleSetHash: "h", CreatedAt: at.Add(time.Hour)}
	for i, want := range []bool{true, false} {
		fired, err := s.FireTimer(ctx, ids[4], ex)
		if err != nil || fired != want {
			t.Fatalf("fire %d: got %v, %v; want %v", i, fired, err, want)
		}
	}
	if got, err := s.Execution(ctx, ex.ID); err != nil || got.Status != alorules.StatusQueued {
		t.Errorf("fired execution: got %v, %v", got, err)
	}
	// Cancelling: once, then not found; by a match too.
	if tm, err := s.CancelTimer(ctx, ids[3]); err != nil || tm.Entity != "a3" {
		t.Errorf("cancel: got %v, %v", tm, err)
	}
	if _, err := s.CancelTimer(ctx, ids[3]); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("cancel again: got %v, want not found", err)
	}
	matchWith(t, s, at, MatchWrite{CancelTimers: []string{ids[2], "no-such-timer"}})
	if n, _ := s.TimerCount(ctx); n != 2 {
		t.Errorf("got %d timers, want 2", n)
	}
	for _, b := range [][]byte{bTimers, bTimerDue, bTimerKey} {
		if got := bucketLen(t, s, b); got != 2 {
			t.Errorf("bucket %s: got %d entries, want 2", b, got)
		}
	}
	// A cancelled timer's key is free again.
	again := &Timer{Rule: "stuck", Entity: "a3", SetAt: at, Due: at.Add(time.Hour)}
	matchWith(t, s, at, MatchWrite{Timers: []*Timer{again}})
	if _, err := s.Timer(ctx, again.ID); err != nil {
		t.Errorf("new timer after cancel: %v", err)
	}
}

// An event that a pending timer will run for is kept by retention until
// the timer is gone.
func TestPruneKeepsTimerEvents(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	old := time.Now().Add(-72 * time.Hour)
	id := mustSave(t, s, newEvent("action_created", old))
	tm := &Timer{Rule: "stuck", Entity: "a1", EventID: id, SetAt: old, Due: time.Now().Add(time.Hour)}
	if err := s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: id, RuleSetHash: "h"}, Timers: []*Timer{tm}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 0); err != nil || n != 0 {
		t.Fatalf("prune: got %d, %v; want the event kept", n, err)
	}
	if _, err := s.CancelTimer(ctx, tm.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 0); err != nil || n != 1 {
		t.Fatalf("prune after cancel: got %d, %v; want the event gone", n, err)
	}
	if got := bucketLen(t, s, bEventRefs); got != 0 {
		t.Errorf("event refs: got %d, want 0", got)
	}
}
