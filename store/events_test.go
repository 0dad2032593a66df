package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

func TestSaveAndReadEvent(t *testing.T) {
	s := openTest(t)
	at := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
	// Whitespace and HTML characters must survive byte for byte.
	payload := json.RawMessage("{ \"type\":\"action_created\",\n  \"title\": \"<b>a & b</b>\" }")
	ev := &alorules.Event{
		Type: "action_status_updated", RawType: "action_status_changed", ReceivedAt: at,
		Payload: payload, Headers: map[string]string{"User-Agent": "alo"}, SignatureForm: "v0=hex",
	}
	id := mustSave(t, s, ev)
	if ev.ID != id {
		t.Errorf("ev.ID: got %q, want %q", ev.ID, id)
	}
	got, err := s.Event(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, payload) {
		t.Errorf("payload: got %q, want %q", got.Payload, payload)
	}
	if got.ID != id || got.Type != ev.Type || got.RawType != ev.RawType || !got.ReceivedAt.Equal(at) ||
		got.Headers["User-Agent"] != "alo" || got.SignatureForm != "v0=hex" || got.Handshake {
		t.Errorf("event: got %+v, want %+v", got, ev)
	}
	if _, err := s.Event(ctx, "nope"); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("missing event: got %v, want ErrNotFound", err)
	}
}

func TestEventsPaging(t *testing.T) {
	s := openTest(t)
	types := []string{"action_created", "action_updated", "x"}
	var all []string
	byType := map[string][]string{}
	for i := range 130 {
		typ := types[i%3]
		id := mustSave(t, s, newEvent(typ, time.Now()))
		all = append(all, id)
		byType[typ] = append(byType[typ], id)
	}
	// A type that is a prefix of another must not list the other's events.
	all = append(all, mustSave(t, s, newEvent("action_created_extra", time.Now())))

	tests := []struct {
		name  string
		f     EventFilter
		want  []string // oldest first
		pages int
	}{
		{"all default limit", EventFilter{}, nil, 0},
		{"all pages of 40", EventFilter{Limit: 40}, all, 4},
		{"type pages of 10", EventFilter{Type: "action_created", Limit: 10}, byType["action_created"], 5},
		{"type exact page", EventFilter{Type: "x", Limit: 43}, byType["x"], 1},
		{"unknown type", EventFilter{Type: "nope"}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == nil && tt.pages == 0 {
				evs, next, err := s.Events(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) != defaultLimit || next != evs[len(evs)-1].ID {
					t.Errorf("got %d events, next %q; want %d and the last id", len(evs), next, defaultLimit)
				}
				return
			}
			evs, pages := allPages(t, s, tt.f)
			for _, ev := range evs {
				if tt.f.Type != "" && ev.Type != tt.f.Type {
					t.Errorf("event %s: got type %q, want %q", ev.ID, ev.Type, tt.f.Type)
				}
			}
			got := eventIDs(evs)
			if pages != tt.pages {
				t.Errorf("pages: got %d, want %d", pages, tt.pages)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events: got %d, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if want := tt.want[len(tt.want)-1-i]; got[i] != want {
					t.Fatalf("event %d: got %s, want %s (newest first)", i, got[i], want)
				}
			}
		})
	}
}

func TestEventsUnmatched(t *testing.T) {
	s := openTest(t)
	var unmatchedX, unmatchedAll []string
	for i := range 12 {
		typ := []string{"x", "y"}[i%2]
		id := mustSave(t, s, newEvent(typ, time.Now()))
		switch i % 3 {
		case 0:
			mustMatch(t, s, id, time.Now(), "r1")
		case 1:
			mustMatch(t, s, id, time.Now())
			unmatchedAll = append(unmatchedAll, id)
			if typ == "x" {
				unmatchedX = append(unmatchedX, id)
			}
		}
		// i%3 == 2: never matched, not "unmatched" either.
	}
	for _, tt := range []struct {
		name string
		f    EventFilter
		want []string
	}{
		{"unmatched", EventFilter{Unmatched: true, Limit: 2}, unmatchedAll},
		{"unmatched of type x", EventFilter{Unmatched: true, Type: "x", Limit: 1}, unmatchedX},
	} {
		t.Run(tt.name, func(t *testing.T) {
			evs, _ := allPages(t, s, tt.f)
			if got := eventIDs(evs); fmt.Sprint(got) != fmt.Sprint(reversed(tt.want)) {
				t.Errorf("got %v, want %v", got, reversed(tt.want))
			}
		})
	}
}

func reversed(s []string) []string {
	r := make([]string, len(s))
	for i, v := range s {
		r[len(s)-1-i] = v
	}
	return r
}

func TestDedupe(t *testing.T) {
	s := openTest(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	allowPast(s)
	orig := mustSave(t, s, newEvent("a", at), DedupeKey{Key: "body:1", TTL: time.Hour}, DedupeKey{Key: "sig:1", TTL: 5 * time.Minute})

	tests := []struct {
		name    string
		at      time.Time
		keys    []DedupeKey
		wantDup bool
	}{
		{"same body key", at.Add(time.Minute), []DedupeKey{{Key: "body:1", TTL: time.Hour}}, true},
		{"same signature, other body", at.Add(time.Minute), []DedupeKey{{Key: "body:2", TTL: time.Hour}, {Key: "sig:1", TTL: 5 * time.Minute}}, true},
		{"signature key expired", at.Add(10 * time.Minute), []DedupeKey{{Key: "sig:1", TTL: 5 * time.Minute}}, false},
		{"no keys", at.Add(time.Minute), nil, false},
		{"empty key ignored", at.Add(time.Minute), []DedupeKey{{Key: ""}}, false},
		{"long key", at.Add(time.Minute), []DedupeKey{{Key: string(bytes.Repeat([]byte("k"), 40000)), TTL: time.Hour}}, false},
		{"long key again", at.Add(2 * time.Minute), []DedupeKey{{Key: string(bytes.Repeat([]byte("k"), 40000)), TTL: time.Hour}}, true},
		{"body key expired", at.Add(2 * time.Hour), []DedupeKey{{Key: "body:1", TTL: time.Hour}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bucketLen(t, s, bEvents)
			ev := newEvent("a", tt.at)
			id, dup, err := s.SaveEvent(ctx, ev, tt.keys)
			if err != nil {
				t.Fatal(err)
			}
			if dup != tt.wantDup {
				t.Fatalf("duplicate: got %v, want %v", dup, tt.wantDup)
			}
			after := bucketLen(t, s, bEvents)
			if dup {
				if tt.name != "long key again" && id != orig {
					t.Errorf("id: got %s, want original %s", id, orig)
				}
				if after != before || ev.ID != "" {
					t.Errorf("duplicate stored something: events %d -> %d, ev.ID %q", before, after, ev.ID)
				}
			} else if after != before+1 || id == orig {
				t.Errorf("accepted event: events %d -> %d, id %s", before, after, id)
			}
		})
	}
	// Expired keys were taken over, not added: body:1, sig:1 and the long
	// key remain.
	if n := bucketLen(t, s, bDedupe); n != 3 {
		t.Errorf("dedupe records: got %d, want 3", n)
	}
}

// holdCommitter blocks the committer inside a transaction until the
// returned release is called, so that requests sent meanwhile form one
// batch.
func holdCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	in, out := make(chan struct{}, 1), make(chan struct{})
	go func() {
		_ = s.write(ctx, func(*bolt.Tx) error {
			select {
			case in <- struct{}{}:
			default: // run again: do not block twice
			}
			<-out
			return nil
		})
	}()
	<-in
	return func() { close(out) }
}

func TestDedupeRaceInOneBatch(t *testing.T) {
	s := openTest(t)
	release := holdCommitter(t, s)
	type result struct {
		id  string
		dup bool
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			id, dup, err := s.SaveEvent(ctx, newEvent("a", time.Now()), []DedupeKey{{Key: "body:same", TTL: time.Hour}})
			results <- result{id, dup, err}
		}()
	}
	for len(s.reqs) < 2 {
		time.Sleep(time.Millisecond)
	}
	commits := s.commits.Load()
	release()
	r1, r2 := <-results, <-results
	if r1.err != nil || r2.err != nil {
		t.Fatal(r1.err, r2.err)
	}
	if got := s.commits.Load() - commits; got != 2 {
		t.Errorf("commits: got %d, want 2 (the held one and one batch)", got)
	}
	if r1.dup == r2.dup {
		t.Fatalf("duplicate flags: got %v and %v, want exactly one duplicate", r1.dup, r2.dup)
	}
	if r1.id != r2.id {
		t.Errorf("ids: got %s and %s, want the duplicate to name the original", r1.id, r2.id)
	}
	if n := bucketLen(t, s, bEvents); n != 1 {
		t.Errorf("events stored: got %d, want 1", n)
	}
}

func TestBatchIsolatesFailedRequest(t *testing.T) {
	s := openTest(t)
	release := holdCommitter(t, s)
	errs := make(chan error, 3)
	go func() {
		errs <- s.write(ctx, func(tx *bolt.Tx) error {
			// Writes, then fails: the batch must be rolled back and
			// the others committed without it.
			if err := tx.Bucket(bMeta).Put([]byte("junk"), []byte("x")); err != nil {
				return err
			}
			return errors.New("boom")
		})
	}()
	for len(s.reqs) < 1 {
		time.Sleep(time.Millisecond)
	}
	for range 2 {
		go func() { _, _, err := s.SaveEvent(ctx, newEvent("a", time.Now()), nil); errs <- err }()
	}
	for len(s.reqs) < 3 {
		time.Sleep(time.Millisecond)
	}
	release()
	failed := 0
	for range 3 {
		if err := <-errs; err != nil {
			failed++
			if err.Error() != "boom" {
				t.Errorf("error: got %v, want boom", err)
			}
		}
	}
	if failed != 1 {
		t.Errorf("failed requests: got %d, want 1", failed)
	}
	if n := bucketLen(t, s, bEvents); n != 2 {
		t.Errorf("events stored: got %d, want 2", n)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bMeta).Get([]byte("junk")) != nil {
			return errors.New("the failed request's write was committed")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestSaveEventConcurrent(t *testing.T) {
	s := openTest(t)
	const senders, each = 16, 50
	ids := make(chan string, senders*each)
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				id, dup, err := s.SaveEvent(ctx, newEvent("a", time.Now()), []DedupeKey{{Key: fmt.Sprint(g, "-", i), TTL: time.Hour}})
				if err != nil || dup {
					t.Errorf("save: %v, duplicate %v", err, dup)
					return
				}
				ids <- id
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %s given twice", id)
		}
		seen[id] = true
		if _, err := s.Event(ctx, id); err != nil {
			t.Errorf("event %s: %v", id, err)
		}
	}
	if len(seen) != senders*each {
		t.Errorf("ids: got %d, want %d", len(seen), senders*each)
	}
	if n := bucketLen(t, s, bEvents); n != senders*each {
		t.Errorf("events stored: got %d, want %d", n, senders*each)
	}
	t.Logf("%d events in %d commits", senders*each, s.commits.Load())
}

func TestPendingAndHandshake(t *testing.T) {
	s := openTest(t)
	a := mustSave(t, s, newEvent("a", time.Now()))
	hs := newEvent("webhook_url_verification", time.Now())
	hs.Handshake = true
	mustSave(t, s, hs)
	b := mustSave(t, s, newEvent("b", time.Now()))

	evs, err := s.PendingEvents(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(evs); fmt.Sprint(got) != fmt.Sprint([]string{a, b}) {
		t.Errorf("pending: got %v, want %v (oldest first, no handshake)", got, []string{a, b})
	}
	mustMatch(t, s, a, time.Now())
	evs, _ = s.PendingEvents(ctx, 10)
	if got := ids(evs); fmt.Sprint(got) != fmt.Sprint([]string{b}) {
		t.Errorf("pending after match: got %v, want %v", got, []string{b})
	}
	if evs, _ := s.PendingEvents(ctx, 1); len(evs) != 1 {
		t.Errorf("pending with limit 1: got %d", len(evs))
	}
}

func ids(evs []*alorules.Event) []string {
	var r []string
	for _, ev := range evs {
		r = append(r, ev.ID)
	}
	return r
}

func TestEventCountSince(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var times []time.Time
	for i := range 10 {
		at := base.Add(time.Duration(i)*time.Hour + time.Duration(i*7)*time.Minute)
		times = append(times, at, at.Add(time.Second))
		mustSave(t, s, newEvent("a", at))
		mustSave(t, s, newEvent("a", at.Add(time.Second)))
	}
	for _, since := range []time.Time{
		{},
		base,
		base.Add(time.Nanosecond),
		base.Add(time.Second),
		base.Add(time.Hour),
		base.Add(time.Hour + 7*time.Minute + time.Second),
		base.Add(7*time.Hour + 30*time.Minute),
		base.Add(9*time.Hour + 63*time.Minute),
		base.Add(24 * time.Hour),
	} {
		want := 0
		for _, at := range times {
			if !at.Before(since) {
				want++
			}
		}
		got, err := s.EventCountSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("EventCountSince(%v): got %d, want %d", since, got, want)
		}
	}
}
