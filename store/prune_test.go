package store

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"alorules"
)

// pruneFixture stores 20 events an hour apart, two days ago, each with a
// dedupe key that never expires, and with a life given by kind(i).
type pruneFixture struct {
	s    *Store
	base time.Time
	ids  []string
	exs  map[string][]*alorules.Execution
}

// Event kinds in the prune fixture.
const (
	kindDone      = "done"      // matched, execution succeeded
	kindFailed    = "failed"    // matched, execution failed
	kindQueued    = "queued"    // matched, execution still queued
	kindRunning   = "running"   // matched, execution running
	kindUnmatched = "unmatched" // matched no rule
	kindPending   = "pending"   // not matched yet
)

func pruneKind(i int) string {
	switch {
	case i == 2:
		return kindQueued
	case i == 3:
		return kindRunning
	case i == 5:
		return kindPending
	case i%4 == 0:
		return kindUnmatched
	case i%2 == 1:
		return kindFailed
	}
	return kindDone
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	s := openTest(t)
	allowPast(s)
	f := &pruneFixture{s: s, base: time.Now().Add(-48 * time.Hour).Truncate(time.Hour), exs: map[string][]*alorules.Execution{}}
	for i := range 20 {
		at := f.base.Add(time.Duration(i) * time.Hour)
		keys := []DedupeKey{{Key: fmt.Sprint("body:", i)}}
		if i == 19 {
			// Expired by now: swept even though its event stays.
			keys = append(keys, DedupeKey{Key: "sig:19", TTL: time.Hour})
		}
		id := mustSave(t, s, newEvent(fmt.Sprint("type", i%3), at), keys...)
		f.ids = append(f.ids, id)
		kind := pruneKind(i)
		switch kind {
		case kindPending:
			continue
		case kindUnmatched:
			err := s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: id}, Throttles: map[string]time.Time{
				fmt.Sprint("ended", i): time.Now().Add(-time.Minute), fmt.Sprint("holds", i): time.Now().Add(time.Hour)}})
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		exs := mustMatch(t, s, id, at, "r1", "r2")
		f.exs[id] = exs
		status := map[string]alorules.Status{kindDone: alorules.StatusSucceeded, kindFailed: alorules.StatusFailed,
			kindRunning: alorules.StatusRunning, kindQueued: alorules.StatusQueued}[kind]
		for _, ex := range exs {
			ex.Status = status
			if err := s.UpdateExecution(ctx, ex); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := bucketLen(t, s, bThrottles); n != 10 {
		t.Fatalf("throttles: got %d, want 10", n)
	}
	return f
}

// check asserts that exactly the events with the given indexes remain, and
// that every bucket holds exactly what belongs to them.
func (f *pruneFixture) check(t *testing.T, remain []int) {
	t.Helper()
	var wantIDs []string
	want := map[string]int{}
	for _, i := range remain {
		wantIDs = append(wantIDs, f.ids[i])
		want[string(bEvents)]++
		want[string(bEvType)]++
		want[string(bDedupe)]++ // the never-expiring body key
		switch pruneKind(i) {
		case kindPending:
			want[string(bPending)]++
			continue
		case kindUnmatched:
			want[string(bUnmatched)]++
		}
		want[string(bMatches)]++
		want[string(bExecs)] += len(f.exs[f.ids[i]])
		if pruneKind(i) != kindUnmatched {
			want[string(bRuleEvents)] += 2 // r1 and r2 matched
		}
		if pruneKind(i) == kindFailed {
			want[string(bRuleEvents)] += 2 // and both failed
		}
	}
	want[string(bRuleEventRefs)] = want[string(bRuleEvents)] // one twin each
	want[string(bThrottles)] = 5                             // the ones that still hold
	got := bucketLens(t, f.s)
	for b, n := range want {
		if got[b] != n {
			t.Errorf("bucket %s: got %d entries, want %d", b, got[b], n)
		}
	}
	evs, _, err := f.s.Events(ctx, EventFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, ev := range evs {
		gotIDs = append(gotIDs, ev.ID)
	}
	slices.Reverse(gotIDs)
	if fmt.Sprint(gotIDs) != fmt.Sprint(wantIDs) {
		t.Errorf("events: got %v, want %v", gotIDs, wantIDs)
	}
	if n, err := f.s.EventCountSince(ctx, time.Time{}); err != nil || n != len(remain) {
		t.Errorf("EventCountSince: got %d, %v; want %d", n, err, len(remain))
	}
	if n, err := f.s.EventCountSince(ctx, f.base.Add(15*time.Hour+time.Minute)); err != nil || n != 4 {
		t.Errorf("EventCountSince(base+15h1m): got %d, %v; want 4 (events 16-19)", n, err)
	}
	checkExecIndexes(t, f.s)
}

func TestPrune(t *testing.T) {
	f := newPruneFixture(t)
	s := f.s
	hoursBefore := bucketLen(t, s, bRuleHours)

	// By age: events 0-9 are older than base+10h; 2 (queued), 3 (running)
	// and 5 (pending) have work left and stay.
	removed, err := s.Prune(ctx, f.base.Add(10*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 7 {
		t.Errorf("removed by age: got %d, want 7", removed)
	}
	f.check(t, []int{2, 3, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19})
	if got := bucketLen(t, s, bRuleHours); got >= hoursBefore {
		t.Errorf("hourly rule stats: got %d entries after pruning by age, want fewer than %d", got, hoursBefore)
	}

	// By count: keep 8, counting the three busy ones.
	removed, err = s.Prune(ctx, time.Time{}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 5 {
		t.Errorf("removed by count: got %d, want 5", removed)
	}
	f.check(t, []int{2, 3, 5, 15, 16, 17, 18, 19})

	// Once its work is done, an old event goes too.
	for _, ex := range f.exs[f.ids[2]] {
		ex.Status = alorules.StatusSucceeded
		if err := s.UpdateExecution(ctx, ex); err != nil {
			t.Fatal(err)
		}
	}
	if removed, err = s.Prune(ctx, f.base.Add(10*time.Hour), 0); err != nil || removed != 1 {
		t.Errorf("prune after finishing: got %d, %v; want 1", removed, err)
	}
	f.check(t, []int{3, 5, 15, 16, 17, 18, 19})

	// Nothing to do.
	if removed, err = s.Prune(ctx, time.Time{}, 0); err != nil || removed != 0 {
		t.Errorf("prune with no limits: got %d, %v; want 0", removed, err)
	}
	if until, _ := s.ThrottledUntil(ctx, "holds0"); until.IsZero() {
		t.Errorf("throttle that still holds was pruned")
	}
}

func TestPruneManyBatches(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	base := time.Now().Add(-time.Hour)
	// Saved concurrently in shared commits to keep the test quick.
	const n = 620 // more than one transaction of pruneBatch
	ids := make([]string, n)
	evs := make([]*alorules.Event, n)
	for i := range evs {
		evs[i] = newEvent("a", base.Add(time.Duration(i)*time.Millisecond))
	}
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := g; i < n; i += 8 {
				ids[i] = mustSave(t, s, evs[i], DedupeKey{Key: fmt.Sprint(i)})
				if err := s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: ids[i]}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	commits := s.commits.Load()
	removed, err := s.Prune(ctx, time.Time{}, 100) // 520 to delete: two transactions
	if err != nil {
		t.Fatal(err)
	}
	if got := s.commits.Load() - commits; got < 2+2 {
		t.Errorf("prune transactions: got %d, want at least 2 for events and 2 for sweeps", got)
	}
	if removed != n-100 {
		t.Errorf("removed: got %d, want %d", removed, n-100)
	}
	for b, want := range map[string]int{"events": 100, "dedupe": 100, "matches": 100, "unmatched": 100} {
		if got := bucketLen(t, s, []byte(b)); got != want {
			t.Errorf("bucket %s: got %d, want %d", b, got, want)
		}
	}
	if got, _ := s.EventCountSince(ctx, base.Add(-time.Hour)); got != 100 {
		t.Errorf("events left: got %d, want 100", got)
	}
	slices.Sort(ids)
	if _, err := s.Event(ctx, ids[n-100]); err != nil {
		t.Errorf("the oldest kept event: %v", err)
	}
}

func TestPruneKeepsDedupeTakenOver(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	base := time.Now().Add(-10 * time.Hour)
	key := DedupeKey{Key: "body:x", TTL: 24 * time.Hour}
	short := DedupeKey{Key: "body:x", TTL: time.Hour}
	a := mustSave(t, s, newEvent("a", base), short)
	mustMatch(t, s, a, base)
	// Two hours later a's record has expired and b takes the key over.
	b := mustSave(t, s, newEvent("a", base.Add(2*time.Hour)), key)
	mustMatch(t, s, b, base)
	if removed, err := s.Prune(ctx, base.Add(time.Hour), 0); err != nil || removed != 1 {
		t.Fatalf("prune: got %d, %v; want 1", removed, err)
	}
	id, dup, err := s.SaveEvent(ctx, newEvent("a", base.Add(3*time.Hour)), []DedupeKey{key})
	if err != nil {
		t.Fatal(err)
	}
	if !dup || id != b {
		t.Errorf("delivery after pruning a: got %s, duplicate %v; want duplicate of %s", id, dup, b)
	}
}
