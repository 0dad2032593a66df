package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

func (s *simEngine) advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

func (s *simEngine) fire() []Fired {
	s.t.Helper()
	f, err := s.e.FireDue(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return f
}

func (s *simEngine) timers() []*store.Timer {
	s.t.Helper()
	ts, _, err := s.st.Timers(context.Background(), store.DueFilter{Limit: 500})
	if err != nil {
		s.t.Fatal(err)
	}
	return ts
}

// render renders every step of an execution as JSON.
func (s *simEngine) render(exID string) string {
	s.t.Helper()
	ex, err := s.st.Execution(context.Background(), exID)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for i := range ex.Steps {
		req, err := s.e.RenderStep(context.Background(), ex, i)
		if err != nil {
			s.t.Fatalf("render %s step %d: %v", exID, i, err)
		}
		b, _ := json.Marshal(req.Spec)
		out = append(out, string(b))
	}
	return strings.Join(out, "\n")
}

func deferredKinds(m *alorules.Match) []string {
	var out []string
	for _, d := range m.Deferred {
		out = append(out, d.Rule+":"+string(d.Kind))
	}
	return out
}

const escalationRules = `version: 1
connections:
  hook: { http: { base_url: "https://example.com" } }
rules:
  - name: stuck-urgent
    if: event.action?.priority == "Urgent" && event.action?.status != "Completed"
    after: 4h
    unless: event.action?.status == "Completed"
    do:
      - http:
          connection: hook
          path: /page
          json:
            title: "{{ event.action?.title }}"
            status_now: "{{ state?.action?.status }}"
            set_at: "{{ timer.set_at }}"
            after: "{{ timer.after }}"
`

func TestTimerFires(t *testing.T) {
	s := newSim(t, escalationRules)
	m := s.send(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open","title":"Pump"}}`)
	if got := deferredKinds(m); !slices.Equal(got, []string{"stuck-urgent:timer_set"}) {
		t.Fatalf("got %q, want a timer set", got)
	}
	if got := outcomeOf(m, "stuck-urgent"); got != alorules.OutcomeMatched {
		t.Errorf("got %s, want matched", got)
	}
	due := m.Deferred[0].Due
	if want := s.clock().Add(4 * time.Hour); !due.Equal(want) {
		t.Errorf("got due %s, want %s", due, want)
	}

	// A second match keeps the first due time.
	s.advance(time.Hour)
	m2 := s.send(`{"type":"action_updated","action":{"id":"a1","priority":"Urgent","status":"Doing","title":"Pump"}}`)
	if got := deferredKinds(m2); !slices.Equal(got, []string{"stuck-urgent:timer_kept"}) || !m2.Deferred[0].Due.Equal(due) {
		t.Fatalf("got %q due %v, want the timer kept, due %s", got, m2.Deferred, due)
	}
	if got := s.fire(); len(got) != 0 {
		t.Fatalf("fired %v before due", got)
	}
	s.advance(3*time.Hour - time.Second)
	if got := s.fire(); len(got) != 0 {
		t.Fatalf("fired %v a second before due", got)
	}
	s.advance(time.Second)
	fired := s.fire()
	if len(fired) != 1 || fired[0].Kind != FiredTimer || fired[0].Rule != "stuck-urgent" || fired[0].ExecutionID == "" || fired[0].EventID != m.EventID {
		t.Fatalf("got %+v, want one timer fired for the first event", fired)
	}
	// The steps see the triggering event and the entity's latest state.
	got := s.render(fired[0].ExecutionID)
	for _, want := range []string{`"title":"Pump"`, `"status_now":"Doing"`, `"after":"4h0m0s"`, `"set_at":"2026-03-02T09:00:00Z"`} {
		if !strings.Contains(got, want) {
			t.Errorf("got %s, want it to contain %s", got, want)
		}
	}
	if ts := s.timers(); len(ts) != 0 {
		t.Errorf("got %d timers pending after firing, want 0", len(ts))
	}
	if got := s.fire(); len(got) != 0 {
		t.Errorf("fired again: %v", got)
	}
	// The next match sets a fresh timer.
	m3 := s.send(`{"type":"action_updated","action":{"id":"a1","priority":"Urgent","status":"Doing","title":"Pump"}}`)
	if got := deferredKinds(m3); !slices.Equal(got, []string{"stuck-urgent:timer_set"}) {
		t.Errorf("got %q, want a new timer", got)
	}
}

func TestTimerCancelled(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		want   [][]string // deferred kinds per event
		fires  bool
	}{
		{
			name: "completed in time",
			events: []string{
				`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`,
				`{"type":"action_status_updated","action":{"id":"a1","priority":"Urgent","status":"Completed"}}`,
			},
			want: [][]string{{"stuck-urgent:timer_set"}, {"stuck-urgent:timer_cancelled"}},
		},
		{
			name: "an event of a type no rule names cancels too",
			events: []string{
				`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`,
				`{"type":"something_else","action":{"id":"a1","status":"Completed"}}`,
			},
			want: [][]string{{"stuck-urgent:timer_set"}, {"stuck-urgent:timer_cancelled"}},
		},
		{
			name: "another action does not cancel",
			events: []string{
				`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`,
				`{"type":"action_status_updated","action":{"id":"a2","priority":"Low","status":"Completed"}}`,
			},
			want:  [][]string{{"stuck-urgent:timer_set"}, nil},
			fires: true,
		},
		{
			name: "unless holds from the start",
			events: []string{
				`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Completed"}}`,
			},
			want: [][]string{nil},
		},
		{
			name: "reopened after completion sets a new timer",
			events: []string{
				`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`,
				`{"type":"action_status_updated","action":{"id":"a1","priority":"Urgent","status":"Completed"}}`,
				`{"type":"action_status_updated","action":{"id":"a1","priority":"Urgent","status":"Open"}}`,
			},
			want:  [][]string{{"stuck-urgent:timer_set"}, {"stuck-urgent:timer_cancelled"}, {"stuck-urgent:timer_set"}},
			fires: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, escalationRules)
			for i, body := range tt.events {
				s.advance(time.Minute)
				m := s.send(body)
				if got := deferredKinds(m); !slices.Equal(got, tt.want[i]) {
					t.Errorf("event %d: got %q, want %q", i+1, got, tt.want[i])
				}
			}
			s.advance(5 * time.Hour)
			if got := len(s.fire()) == 1; got != tt.fires {
				t.Errorf("got fired %v, want %v", got, tt.fires)
			}
		})
	}
}

// TestTimerWaitsForBacklog: a matcher that fell behind must not fire a
// timer before matching an event received before the timer fell due; and
// the timer counts from when its event was received, not matched.
func TestTimerWaitsForBacklog(t *testing.T) {
	s := newSim(t, escalationRules)
	ctx := context.Background()
	save := func(body string) {
		t.Helper()
		ev, err := NewEvent([]byte(body), s.clock())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.st.SaveEvent(ctx, ev, nil); err != nil {
			t.Fatal(err)
		}
	}
	save(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`)
	s.advance(time.Hour) // matched an hour late
	if _, err := s.e.MatchPending(ctx); err != nil {
		t.Fatal(err)
	}
	if ts := s.timers(); len(ts) != 1 || !ts[0].Due.Equal(s.clock().Add(3*time.Hour)) {
		t.Fatalf("got timers %+v, want one due 4h after the event was received", ts)
	}

	// More events than one matching batch, then the completion, all
	// received before the timer is due; matching resumes after it.
	s.advance(2 * time.Hour)
	for range 150 {
		save(`{"type":"other"}`)
	}
	save(`{"type":"action_status_updated","action":{"id":"a1","priority":"Urgent","status":"Completed"}}`)
	s.advance(3 * time.Hour)
	for {
		n, err := s.e.MatchPending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f := s.fire(); len(f) != 0 {
			t.Fatalf("after matching %d events: fired %+v before the completion was matched", n, f)
		}
		if n == 0 {
			break
		}
	}
	if ts := s.timers(); len(ts) != 0 {
		t.Errorf("got %d timers pending, want the completion to have cancelled it", len(ts))
	}
}

// Timers survive a restart and fire late, not never, after downtime; the
// Run loop fires them without being told.
func TestTimerSurvivesRestart(t *testing.T) {
	s := newSim(t, escalationRules)
	m := s.send(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open","title":"Pump"}}`)
	s.restart()
	if ts := s.timers(); len(ts) != 1 || ts[0].EventID != m.EventID {
		t.Fatalf("after restart: got %v, want the timer", ts)
	}
	// Down for a day: the timer is overdue when the service comes back.
	s.advance(24 * time.Hour)
	s.restart()
	var exec string
	stop := run(t, s.e)
	waitFor(t, "the overdue timer to fire", func() bool {
		exs, err := s.st.EventExecutions(context.Background(), m.EventID)
		if err != nil || len(exs) == 0 {
			return false
		}
		exec = exs[0].ID
		return true
	})
	stop()
	if got := s.render(exec); !strings.Contains(got, `"title":"Pump"`) {
		t.Errorf("got %s, want the event's title", got)
	}
	if !strings.Contains(s.log(), "timer fired") {
		t.Errorf("log does not say the timer fired:\n%s", s.log())
	}
}

func TestTimerNeedsEntity(t *testing.T) {
	s := newSim(t, escalationRules)
	m := s.send(`{"type":"action_created","action":{"priority":"Urgent","status":"Open"}}`)
	r := m.Results[0]
	if r.Outcome != alorules.OutcomeError || !strings.Contains(r.Error, "names no entity") {
		t.Errorf("got %s %q, want an error saying the event names no entity", r.Outcome, r.Error)
	}
}

// A timer whose rule is gone after a reload is dropped when due, not run.
func TestTimerDroppedWithItsRule(t *testing.T) {
	s := newSim(t, escalationRules)
	s.send(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`)
	writeFile(t, s.rules, "version: 1\nrules: []\n")
	if err := s.e.Reload(); err != nil {
		t.Fatal(err)
	}
	s.advance(5 * time.Hour)
	fired := s.fire()
	if len(fired) != 1 || fired[0].ExecutionID != "" || !strings.Contains(fired[0].Dropped, "no longer") {
		t.Fatalf("got %+v, want the timer dropped", fired)
	}
	if n, _ := s.st.TimerCount(context.Background()); n != 0 {
		t.Errorf("got %d timers, want 0", n)
	}
}

// One pending timer per rule and entity: a thousand actions get a
// thousand timers, each cancelled only by its own action.
func TestTimersPerEntity(t *testing.T) {
	s := newSim(t, escalationRules)
	for i := range 50 {
		s.send(fmt.Sprintf(`{"type":"action_created","action":{"id":"a%d","priority":"Urgent","status":"Open"}}`, i))
	}
	for i := range 50 {
		if i%2 == 0 {
			s.send(fmt.Sprintf(`{"type":"action_status_updated","action":{"id":"a%d","priority":"Urgent","status":"Completed"}}`, i))
		}
	}
	if ts := s.timers(); len(ts) != 25 {
		t.Fatalf("got %d pending timers, want 25", len(ts))
	}
	s.advance(5 * time.Hour)
	fired := s.fire()
	if len(fired) != 25 {
		t.Fatalf("got %d fired, want 25", len(fired))
	}
	for _, f := range fired {
		var n int
		fmt.Sscanf(f.Entity, "a%d", &n)
		if n%2 == 0 {
			t.Errorf("timer of %s fired, want it cancelled", f.Entity)
		}
	}
}

const digestRules = `version: 1
connections:
  hook: { http: { base_url: "https://example.com" } }
rules:
  - name: summary
    on: [action_created]
    digest: { window: 15m, key: "{{ event.action?.channel_id }}", max: 3 }
    do:
      - http:
          connection: hook
          path: /summary
          json:
            text: "{{ digest.count }} new in {{ digest.key }}: {{ join(map(events, .action.title), \", \") }}"
            listed: "{{ len(events) }}"
`

func TestDigest(t *testing.T) {
	s := newSim(t, digestRules)
	var first string
	for i := range 5 {
		m := s.send(fmt.Sprintf(`{"type":"action_created","action":{"id":"a%d","channel_id":"ch1","title":"T%d"}}`, i, i))
		if i == 0 {
			first = m.EventID
		}
		if got := deferredKinds(m); !slices.Equal(got, []string{"summary:digest_added"}) || m.Deferred[0].Key != "ch1" {
			t.Fatalf("event %d: got %v, want it added to digest ch1", i, m.Deferred)
		}
		s.advance(time.Minute)
	}
	other := s.send(`{"type":"action_created","action":{"id":"b1","channel_id":"ch2","title":"Other"}}`)
	if n, _ := s.st.DigestCount(context.Background()); n != 2 {
		t.Fatalf("got %d open digests, want 2", n)
	}
	// Nothing until the window ends, counted from the first event.
	s.advance(10*time.Minute - time.Second)
	if got := s.fire(); len(got) != 0 {
		t.Fatalf("fired %v before the window ended", got)
	}
	s.restart() // the open digests are durable
	s.advance(time.Second)
	fired := s.fire()
	if len(fired) != 1 || fired[0].Kind != FiredDigest || fired[0].Key != "ch1" || fired[0].Count != 5 || fired[0].EventID != first {
		t.Fatalf("got %+v, want the ch1 digest of 5 events, run for the first", fired)
	}
	got := s.render(fired[0].ExecutionID)
	for _, want := range []string{`"text":"5 new in ch1: T0, T1, T2"`, `"listed":3`} {
		if !strings.Contains(got, want) {
			t.Errorf("got %s, want it to contain %s", got, want)
		}
	}
	s.advance(5 * time.Minute)
	fired = s.fire()
	if len(fired) != 1 || fired[0].Key != "ch2" || fired[0].EventID != other.EventID {
		t.Fatalf("got %+v, want the ch2 digest", fired)
	}
	// A new match opens a new window.
	if m := s.send(`{"type":"action_created","action":{"id":"a9","channel_id":"ch1","title":"Later"}}`); len(m.Deferred) != 1 {
		t.Fatalf("got %v, want the event added to a new digest", m.Deferred)
	}
	if n, _ := s.st.DigestCount(context.Background()); n != 1 {
		t.Errorf("got %d open digests, want 1", n)
	}
}

// A rule whose unless already holds when it matches sets no timer, and
// says so.
func TestTimerNotSet(t *testing.T) {
	s := newSim(t, `version: 1
rules:
  - name: stuck
    if: event.action?.priority == "Urgent"
    after: 1h
    unless: event.action?.status == "Completed"
`)
	m := s.send(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Completed"}}`)
	if got := deferredKinds(m); !slices.Equal(got, []string{"stuck:timer_not_set"}) || outcomeOf(m, "stuck") != alorules.OutcomeMatched {
		t.Errorf("got %s %q, want matched with no timer set", outcomeOf(m, "stuck"), got)
	}
	if ts := s.timers(); len(ts) != 0 {
		t.Errorf("got %d timers, want 0", len(ts))
	}
	// An unless that fails is the rule's error, even for an event its
	// "on" does not reach, and the timer stays.
	s2 := newSim(t, `version: 1
entity:
  types:
    action_message_added: "{{ event.message?.action_id }}"
rules:
  - name: stuck
    on: [action_created]
    if: event.action?.priority == "Urgent"
    after: 1h
    unless: event.action.status == "Completed"
`)
	s2.send(`{"type":"action_created","action":{"id":"a1","priority":"Urgent","status":"Open"}}`)
	m = s2.send(`{"type":"action_message_added","message":{"action_id":"a1","text":"hi"}}`)
	if r := m.Results[0]; r.Outcome != alorules.OutcomeError || !strings.HasPrefix(r.Error, "unless: ") {
		t.Errorf("got %s %q, want an unless error", r.Outcome, r.Error)
	}
	if ts := s2.timers(); len(ts) != 1 {
		t.Errorf("got %d timers, want the timer kept", len(ts))
	}
}
