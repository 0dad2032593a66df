package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"alorules"
)

func TestSaveMatchIdempotent(t *testing.T) {
	s := openTest(t)
	at := time.Now()
	id := mustSave(t, s, newEvent("a", at))
	write := func() MatchWrite {
		return MatchWrite{
			Match: &alorules.Match{EventID: id, RuleSetHash: "h1", Results: []alorules.RuleResult{
				{Rule: "r1", Outcome: alorules.OutcomeMatched},
				{Rule: "r2", Outcome: alorules.OutcomeNotMatched},
				{Rule: "r3", Outcome: alorules.OutcomeMatched},
			}},
			Executions: []*alorules.Execution{{Rule: "r1", CreatedAt: at}, {Rule: "r3", CreatedAt: at}},
			Throttles:  map[string]time.Time{"r1:42": at.Add(10 * time.Minute)},
		}
	}
	w := write()
	if err := s.SaveMatch(ctx, w); err != nil {
		t.Fatal(err)
	}
	for _, ex := range w.Executions {
		if ex.ID == "" || ex.Status != alorules.StatusQueued || !ex.NextAttemptAt.Equal(at) || ex.EventID != id {
			t.Errorf("execution defaults: got %+v, want id, queued, due at creation, event id", ex)
		}
	}
	if got := w.Match.Results[0].ExecutionID; got != w.Executions[0].ID {
		t.Errorf("result r1 execution id: got %q, want %q", got, w.Executions[0].ID)
	}
	before := bucketLens(t, s)
	stats1, _ := s.RuleStats(ctx, at.Add(-time.Hour))

	if err := s.SaveMatch(ctx, write()); err != nil {
		t.Fatal(err)
	}
	if after := bucketLens(t, s); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("second SaveMatch changed buckets: got %v, want %v", after, before)
	}
	stats2, _ := s.RuleStats(ctx, at.Add(-time.Hour))
	if stats2["r1"].Hits != 1 || stats1["r1"].Hits != 1 {
		t.Errorf("r1 hits: got %d then %d, want 1 and 1", stats1["r1"].Hits, stats2["r1"].Hits)
	}
	m, err := s.Match(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.RuleSetHash != "h1" || len(m.Results) != 3 || m.Results[2].ExecutionID != w.Executions[1].ID {
		t.Errorf("match: got %+v", m)
	}
	exs, err := s.EventExecutions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 2 || exs[0].ID != w.Executions[0].ID || exs[1].ID != w.Executions[1].ID {
		t.Errorf("event executions: got %d, want the 2 created in order", len(exs))
	}
	if until, _ := s.ThrottledUntil(ctx, "r1:42"); !until.Equal(at.Add(10 * time.Minute)) {
		t.Errorf("throttle: got %v, want %v", until, at.Add(10*time.Minute))
	}
	if until, _ := s.ThrottledUntil(ctx, "other"); !until.IsZero() {
		t.Errorf("unset throttle: got %v, want zero", until)
	}
	if pending, _ := s.PendingEvents(ctx, 10); len(pending) != 0 {
		t.Errorf("pending after match: got %d, want 0", len(pending))
	}
	checkExecIndexes(t, s)

	if _, err := s.Match(ctx, "nope"); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("missing match: got %v, want ErrNotFound", err)
	}
	err = s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: "nope"}})
	if !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("match of a missing event: got %v, want ErrNotFound", err)
	}
}

func TestExecutionQueue(t *testing.T) {
	s := openTest(t)
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	id := mustSave(t, s, newEvent("a", base))
	var exs []*alorules.Execution
	for i, due := range []time.Duration{3, 1, 2, 5} {
		exs = append(exs, &alorules.Execution{EventID: id, Rule: fmt.Sprint("r", i), CreatedAt: base,
			NextAttemptAt: base.Add(due * time.Minute)})
	}
	if err := s.AddExecutions(ctx, exs); err != nil {
		t.Fatal(err)
	}
	// AddExecutions is idempotent per id.
	if err := s.AddExecutions(ctx, exs[:1]); err != nil {
		t.Fatal(err)
	}
	dueIDs := func(now time.Time, limit int) []string {
		t.Helper()
		got, err := s.DueExecutions(ctx, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		var r []string
		for _, ex := range got {
			r = append(r, ex.Rule)
		}
		return r
	}
	next := func() time.Time {
		t.Helper()
		n, ok, err := s.NextDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return time.Time{}
		}
		return n
	}
	tests := []struct {
		now   time.Duration
		limit int
		want  string
	}{
		{0, 10, "[]"},
		{2 * time.Minute, 10, "[r1 r2]"},
		{10 * time.Minute, 10, "[r1 r2 r0 r3]"},
		{10 * time.Minute, 2, "[r1 r2]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(dueIDs(base.Add(tt.now), tt.limit)); got != tt.want {
			t.Errorf("DueExecutions(+%v, %d): got %s, want %s", tt.now, tt.limit, got, tt.want)
		}
	}
	if got, want := next(), base.Add(time.Minute); !got.Equal(want) {
		t.Errorf("NextDue: got %v, want %v", got, want)
	}

	// Walk r1 through its life; the queue and indexes follow.
	r1 := exs[1]
	steps := []struct {
		status   alorules.Status
		due      time.Duration
		wantDue  string
		wantNext time.Duration
	}{
		{alorules.StatusRunning, 1, "[r2 r0 r3]", 2},
		{alorules.StatusRetrying, 4, "[r2 r0 r1 r3]", 2},
		{alorules.StatusRunning, 4, "[r2 r0 r3]", 2},
		{alorules.StatusFailed, 4, "[r2 r0 r3]", 2},
		{alorules.StatusQueued, 0, "[r1 r2 r0 r3]", 0},
		{alorules.StatusSucceeded, 0, "[r2 r0 r3]", 2},
	}
	for _, st := range steps {
		r1.Status = st.status
		r1.NextAttemptAt = base.Add(st.due * time.Minute)
		r1.UpdatedAt = base.Add(time.Hour)
		if err := s.UpdateExecution(ctx, r1); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(dueIDs(base.Add(time.Hour), 10)); got != st.wantDue {
			t.Errorf("after %s: due got %s, want %s", st.status, got, st.wantDue)
		}
		if got, want := next(), base.Add(st.wantNext*time.Minute); !got.Equal(want) {
			t.Errorf("after %s: NextDue got %v, want %v", st.status, got, want)
		}
		checkExecIndexes(t, s)
		got, err := s.Execution(ctx, r1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != st.status {
			t.Errorf("stored status: got %s, want %s", got.Status, st.status)
		}
	}
	// Failing again after a requeue counts once: r1 failed once above.
	r1.Status = alorules.StatusFailed
	if err := s.UpdateExecution(ctx, r1); err != nil {
		t.Fatal(err)
	}
	stats, _ := s.RuleStats(ctx, base)
	if got := stats["r1"].Failures; got != 1 {
		t.Errorf("r1 failures: got %d, want 1", got)
	}

	if err := s.UpdateExecution(ctx, &alorules.Execution{ID: "nope", Status: alorules.StatusFailed}); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("update of a missing execution: got %v, want ErrNotFound", err)
	}
}

func TestResetRunning(t *testing.T) {
	s := openTest(t)
	id := mustSave(t, s, newEvent("a", time.Now()))
	exs := mustMatch(t, s, id, time.Now(), "r1", "r2", "r3")
	for _, ex := range exs[:2] {
		ex.Status = alorules.StatusRunning
		if err := s.UpdateExecution(ctx, ex); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.ResetRunning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("reset: got %d, want 2", n)
	}
	counts, _ := s.CountByStatus(ctx)
	if counts[alorules.StatusQueued] != 3 || counts[alorules.StatusRunning] != 0 {
		t.Errorf("counts: got %v, want 3 queued, 0 running", counts)
	}
	if due, _ := s.DueExecutions(ctx, time.Now(), 10); len(due) != 3 {
		t.Errorf("due after reset: got %d, want 3", len(due))
	}
	checkExecIndexes(t, s)
	if n, _ := s.ResetRunning(ctx); n != 0 {
		t.Errorf("second reset: got %d, want 0", n)
	}
}

func TestExecutionsFilter(t *testing.T) {
	s := openTest(t)
	allowPast(s)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type rec struct{ id, rule, status, event string }
	var all []rec // oldest first
	var events []string
	for i := range 30 {
		at := base.Add(time.Duration(i) * time.Minute)
		if i%10 == 0 {
			events = append(events, mustSave(t, s, newEvent("a", at)))
		}
		ex := &alorules.Execution{EventID: events[len(events)-1], Rule: []string{"r1", "r2", "r3"}[i%3], CreatedAt: at}
		if err := s.AddExecutions(ctx, []*alorules.Execution{ex}); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			ex.Status = alorules.StatusFailed
			if err := s.UpdateExecution(ctx, ex); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, rec{ex.ID, ex.Rule, string(ex.Status), ex.EventID})
	}
	want := func(keep func(i int, r rec) bool) []string {
		var ids []string
		for i := len(all) - 1; i >= 0; i-- {
			if keep(i, all[i]) {
				ids = append(ids, all[i].id)
			}
		}
		return ids
	}
	tests := []struct {
		name string
		f    ExecutionFilter
		want []string
	}{
		{"all", ExecutionFilter{Limit: 7}, want(func(int, rec) bool { return true })},
		{"rule", ExecutionFilter{Rule: "r2", Limit: 3}, want(func(_ int, r rec) bool { return r.rule == "r2" })},
		{"status", ExecutionFilter{Status: "failed", Limit: 2}, want(func(_ int, r rec) bool { return r.status == "failed" })},
		{"rule and status", ExecutionFilter{Rule: "r1", Status: "queued", Limit: 2},
			want(func(_ int, r rec) bool { return r.rule == "r1" && r.status == "queued" })},
		{"event", ExecutionFilter{EventID: events[1], Limit: 4}, want(func(_ int, r rec) bool { return r.event == events[1] })},
		{"event and status", ExecutionFilter{EventID: events[2], Status: "failed", Limit: 1},
			want(func(_ int, r rec) bool { return r.event == events[2] && r.status == "failed" })},
		{"since and until", ExecutionFilter{Since: base.Add(5 * time.Minute), Until: base.Add(15 * time.Minute), Limit: 4},
			want(func(i int, _ rec) bool { return i >= 5 && i < 15 })},
		{"rule since", ExecutionFilter{Rule: "r3", Since: base.Add(20 * time.Minute)},
			want(func(i int, r rec) bool { return i >= 20 && r.rule == "r3" })},
		{"nothing", ExecutionFilter{Rule: "r9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			f := tt.f
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				exs, next, err := s.Executions(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, ex := range exs {
					got = append(got, ex.ID)
				}
				if next == "" {
					break
				}
				f.Before = next
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	checkExecIndexes(t, s)
}

func TestRuleStats(t *testing.T) {
	s := openTest(t)
	now := time.Now().UTC()
	hour := now.Truncate(time.Hour)
	for i, ago := range []time.Duration{0, 0, time.Hour, 3 * time.Hour, 30 * time.Hour} {
		at := now.Add(-ago)
		id := mustSave(t, s, newEvent("a", at))
		exs := mustMatch(t, s, id, at, "r1")
		if i == 2 {
			exs[0].Status = alorules.StatusFailed
			exs[0].UpdatedAt = at
			if err := s.UpdateExecution(ctx, exs[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	stats, err := s.RuleStats(ctx, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !time.Now().UTC().Truncate(time.Hour).Equal(hour) {
		t.Skip("the hour turned during the test; the expected buckets moved")
	}
	r1 := stats["r1"]
	if r1 == nil {
		t.Fatalf("stats: got %v, want r1", stats)
	}
	if r1.Hits != 4 || r1.Failures != 1 || !r1.LastHit.Equal(now) {
		t.Errorf("r1: got hits %d, failures %d, last hit %v; want 4, 1, %v", r1.Hits, r1.Failures, r1.LastHit, now)
	}
	if len(r1.Hourly) != 25 {
		t.Fatalf("hourly: got %d entries, want 25 (every hour of the day)", len(r1.Hourly))
	}
	want := map[int]HourStat{24: {Hits: 2}, 23: {Hits: 1, Failures: 1}, 21: {Hits: 1}}
	for i, h := range r1.Hourly {
		if wantHour := hour.Add(time.Duration(i-24) * time.Hour); !h.Hour.Equal(wantHour) {
			t.Errorf("hourly[%d].Hour: got %v, want %v", i, h.Hour, wantHour)
		}
		if h.Hits != want[i].Hits || h.Failures != want[i].Failures {
			t.Errorf("hourly[%d]: got %d hits %d failures, want %d and %d", i, h.Hits, h.Failures, want[i].Hits, want[i].Failures)
		}
	}
	all, _ := s.RuleStats(ctx, time.Time{})
	if got := all["r1"]; got.Hits != 5 || len(got.Hourly) != 4 {
		t.Errorf("all time: got %d hits in %d hours, want 5 in 4 (only hours with data)", got.Hits, len(got.Hourly))
	}
}

// TestRuleStatsCountOutcomes: a hit is a match, whether or not the rule
// has steps (a rule that only sets a timer, or records); a condition that
// fails at run time counts as a failure; a firing timer adds no hit.
func TestRuleStatsCountOutcomes(t *testing.T) {
	s := openTest(t)
	at := time.Now().UTC()
	id := mustSave(t, s, newEvent("a", at))
	m := &alorules.Match{EventID: id, RuleSetHash: "h1", MatchedAt: at, Results: []alorules.RuleResult{
		{Rule: "no-steps", Outcome: alorules.OutcomeMatched},
		{Rule: "broken", Outcome: alorules.OutcomeError, Error: "boom"},
		{Rule: "quiet", Outcome: alorules.OutcomeNotMatched},
		{Rule: "later", Outcome: alorules.OutcomeMatched},
	}}
	timer := &Timer{Rule: "later", Entity: "a1", EventID: id, SetAt: at, Due: at}
	if err := s.SaveMatch(ctx, MatchWrite{Match: m, Timers: []*Timer{timer}}); err != nil {
		t.Fatal(err)
	}
	ex := &alorules.Execution{EventID: id, Rule: "later", RuleSetHash: "h1", CreatedAt: at}
	if fired, err := s.FireTimer(ctx, timer.ID, ex); err != nil || !fired {
		t.Fatalf("FireTimer: got %v %v, want fired", fired, err)
	}
	stats, err := s.RuleStats(ctx, at.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{"no-steps": {1, 0}, "broken": {0, 1}, "later": {1, 0}}
	for rule, w := range want {
		st := stats[rule]
		if st == nil || st.Hits != w[0] || st.Failures != w[1] {
			t.Errorf("%s: got %+v, want %d hits and %d failures", rule, st, w[0], w[1])
		}
	}
	if st := stats["quiet"]; st != nil && (st.Hits != 0 || st.Failures != 0) {
		t.Errorf("quiet: got %+v, want nothing counted", st)
	}
}

func TestRuleSets(t *testing.T) {
	s := openTest(t)
	if err := s.SaveRuleSet(ctx, "abc", []byte("version: 1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRuleSet(ctx, "abc", []byte("other")); err != nil {
		t.Fatal(err)
	}
	src, err := s.RuleSet(ctx, "abc")
	if err != nil || string(src) != "version: 1" {
		t.Errorf("rule set: got %q, %v; want %q", src, err, "version: 1")
	}
	if _, err := s.RuleSet(ctx, "nope"); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("missing rule set: got %v, want ErrNotFound", err)
	}
}
