package store

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

func TestNewIDSortableAndMonotonic(t *testing.T) {
	// Now, not a fixed date: ids are monotonic for the whole process, and a
	// date ahead of the clock would push every later test's ids ahead too.
	at := time.Now()
	ids := make([]string, 5000)
	for i := range ids {
		// The same time over and over, then a step back: ids must still
		// increase strictly.
		ts := at
		if i > len(ids)/2 {
			ts = at.Add(-time.Minute)
		}
		ids[i] = NewID(ts)
	}
	urlSafe := regexp.MustCompile(`^[0-9a-v]+$`)
	for i, id := range ids {
		if len(id) != idLen || !urlSafe.MatchString(id) {
			t.Fatalf("id %q: want %d characters of [0-9a-v]", id, idLen)
		}
		if i > 0 && id <= ids[i-1] {
			t.Fatalf("id %d %q <= previous %q: ids must strictly increase", i, id, ids[i-1])
		}
	}
	got, ok := IDTime(ids[0])
	if !ok || got.Before(at) || got.Sub(at) > time.Second {
		t.Errorf("IDTime(first): got %v %v, want about %v", got, ok, at)
	}
}

func TestIDOrderFollowsTime(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0),
		time.Unix(1, 0),
		time.Unix(1, 1),
		time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 999, time.UTC),
		time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	var ids []string
	for _, ts := range times {
		id := encodeID(unixNanos(ts), 0xffffffff)
		ids = append(ids, id)
		got, ok := IDTime(id)
		if !ok || !got.Equal(ts) {
			t.Errorf("IDTime(encode(%v)): got %v %v, want %v", ts, got, ok, ts)
		}
		if floor := idFloor(ts); floor > id {
			t.Errorf("idFloor(%v) = %q > id %q of the same time", ts, floor, id)
		}
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids of increasing times do not sort: %q", ids)
	}
}

func TestIDTimeRejects(t *testing.T) {
	for _, id := range []string{"", "abc", "zzzzzzzzzzzzzzzzzzzz", "0123456789ABCDEFGHIJ", NewID(time.Now()) + "0"} {
		if got, ok := IDTime(id); ok {
			t.Errorf("IDTime(%q): got %v, true; want false", id, got)
		}
	}
}
