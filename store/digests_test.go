package store

import (
	"testing"
	"time"

	"alorules"
)

func TestDigests(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	at := time.Now().Add(-72 * time.Hour)
	var evs []string
	for i := range 4 {
		add := &DigestAdd{Rule: "summary", Key: "ch1", At: at.Add(time.Duration(i) * time.Minute), Window: 15 * time.Minute, Max: 2}
		id := mustSave(t, s, newEvent("action_created", add.At))
		add.EventID = id
		if err := s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: id, RuleSetHash: "h"}, Digests: []*DigestAdd{add}}); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, id)
	}
	ds, next, err := s.Digests(ctx, DueFilter{})
	if err != nil || len(ds) != 1 || next != "" {
		t.Fatalf("got %v next %q err %v, want one digest", ds, next, err)
	}
	d := ds[0]
	if d.Count != 4 || len(d.EventIDs) != 2 || d.EventIDs[0] != evs[0] || d.EventIDs[1] != evs[1] || !d.Due.Equal(at.Add(15*time.Minute)) {
		t.Fatalf("got %+v, want 4 counted, the first 2 kept, due 15m after the first", d)
	}
	if due, _ := s.DueDigests(ctx, at.Add(14*time.Minute), 0); len(due) != 0 {
		t.Errorf("due early: got %v", due)
	}
	// Retention keeps the events the digest will render, and only those.
	if n, err := s.Prune(ctx, time.Now().Add(-24*time.Hour), 0); err != nil || n != 2 {
		t.Fatalf("prune: got %d, %v; want the 2 events not kept by the digest", n, err)
	}
	ex := &alorules.Execution{EventID: evs[0], Rule: "summary", RuleSetHash: "h", CreatedAt: d.Due}
	if fired, err := s.FireDigest(ctx, d.ID, ex); err != nil || !fired {
		t.Fatalf("fire: got %v, %v", fired, err)
	}
	if fired, _ := s.FireDigest(ctx, d.ID, ex); fired {
		t.Error("fired twice")
	}
	for _, b := range [][]byte{bDigests, bDigestDue, bDigestKey, bEventRefs} {
		if got := bucketLen(t, s, b); got != 0 {
			t.Errorf("bucket %s: got %d entries, want 0", b, got)
		}
	}
	if n, _ := s.DigestCount(ctx); n != 0 {
		t.Errorf("got %d digests, want 0", n)
	}
}
