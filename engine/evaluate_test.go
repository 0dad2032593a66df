package engine

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"alorules"
)

func TestEvaluateOutcomes(t *testing.T) {
	rs := mustParse(t, "outcomes.yaml")
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		event string
		want  map[string]alorules.Outcome
	}{
		{"action_created", map[string]alorules.Outcome{
			"urgent":       alorules.OutcomeMatched,
			"low":          alorules.OutcomeNotMatched,
			"status-only":  alorules.OutcomeSkipped,
			"broken":       alorules.OutcomeError,
			"not-a-number": alorules.OutcomeError,
			"record-only":  alorules.OutcomeMatched,
		}},
		{"action_status_changed", map[string]alorules.Outcome{
			"urgent":       alorules.OutcomeSkipped,
			"low":          alorules.OutcomeSkipped,
			"status-only":  alorules.OutcomeMatched, // the alias folds into action_status_updated
			"broken":       alorules.OutcomeSkipped,
			"not-a-number": alorules.OutcomeSkipped,
			"record-only":  alorules.OutcomeNotMatched,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.event, func(t *testing.T) {
			eval := rs.Evaluate(event(t, tt.event), now, nil)
			got := outcomes(eval.Results)
			for rule, want := range tt.want {
				if got[rule] != want {
					t.Errorf("rule %s: got %s, want %s", rule, got[rule], want)
				}
			}
			if len(eval.Results) != len(tt.want) {
				t.Errorf("got %d results, want %d (every rule, in file order)", len(eval.Results), len(tt.want))
			}
			for i, r := range eval.Results {
				if r.Rule != rs.rules[i].name {
					t.Errorf("result %d: got rule %s, want %s (file order)", i, r.Rule, rs.rules[i].name)
				}
			}
		})
	}
}

func TestEvaluateRuntimeErrorsAreReported(t *testing.T) {
	rs := mustParse(t, "outcomes.yaml")
	eval := rs.Evaluate(event(t, "action_created"), time.Now(), nil)
	msgs := map[string]string{}
	for _, r := range eval.Results {
		msgs[r.Rule] = r.Error
	}
	if got := msgs["broken"]; !strings.HasPrefix(got, "if: ") || !strings.Contains(got, "deeper") {
		t.Errorf("got error %q, want the failing expression's message", got)
	}
	if got := msgs["not-a-number"]; !strings.Contains(got, "string") || !strings.Contains(got, "column") {
		t.Errorf("got error %q, want a type error with its column", got)
	}
}

func TestEvaluateExecutions(t *testing.T) {
	rs := mustParse(t, "outcomes.yaml")
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	ev := event(t, "action_created")
	eval := rs.Evaluate(ev, now, nil)
	// urgent has steps; record-only matched without steps: no execution.
	if len(eval.Executions) != 1 {
		t.Fatalf("got %d executions, want 1", len(eval.Executions))
	}
	ex := eval.Executions[0]
	if ex.ID != "" || ex.EventID != ev.ID || ex.Rule != "urgent" || ex.RuleSetHash != rs.Hash() ||
		ex.Status != alorules.StatusQueued || !ex.CreatedAt.Equal(now) {
		t.Errorf("got execution %+v", ex)
	}
	if want := (alorules.RetryPolicy{Attempts: DefaultAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff}); ex.Retry != want {
		t.Errorf("got retry %+v, want the defaults %+v", ex.Retry, want)
	}
	if ex.Timeout != 3*time.Second {
		t.Errorf("got timeout %s, want 3s from defaults", ex.Timeout)
	}
	if len(ex.Steps) != 3 {
		t.Fatalf("got %d steps, want 3", len(ex.Steps))
	}
	for i, s := range ex.Steps {
		if s.Index != i || s.Kind != "http" || s.Status != alorules.StatusQueued {
			t.Errorf("step %d: got %+v", i, s)
		}
	}
	if ex.Steps[1].ID != "second" {
		t.Errorf("got step id %q, want second", ex.Steps[1].ID)
	}
	var req map[string]any
	if err := json.Unmarshal(ex.Steps[0].Request, &req); err != nil {
		t.Fatalf("step 1 request %s: %v", ex.Steps[0].Request, err)
	}
	if got, want := req["path"], "/urgent/act-1042"; got != want {
		t.Errorf("got path %v, want %v", got, want)
	}
	if ex.Steps[2].Request != nil {
		t.Errorf("got request %s for a step reading steps.second, want none until it runs", ex.Steps[2].Request)
	}
}

func TestEvaluateStop(t *testing.T) {
	rs := mustParse(t, "stop.yaml")
	eval := rs.Evaluate(event(t, "action_updated"), time.Now(), nil)
	want := []alorules.RuleResult{
		{Rule: "first", Outcome: alorules.OutcomeNotMatched},
		{Rule: "sandbox", Outcome: alorules.OutcomeMatched, Stopped: true},
	}
	if len(eval.Results) != len(want) {
		t.Fatalf("got results %+v, want %+v", eval.Results, want)
	}
	for i := range want {
		if eval.Results[i] != want[i] {
			t.Errorf("result %d: got %+v, want %+v", i, eval.Results[i], want[i])
		}
	}
}

func TestEvaluateNumbers(t *testing.T) {
	rs := parseString(t, `version: 1
rules:
  - name: int-compare
    if: event.action.count > 2 && event.action.count == 3
  - name: float-compare
    if: event.action.ratio == 2.5
  - name: whole-float-is-int
    if: event.action.whole_float % 3 == 1
  - name: arithmetic
    if: event.action.count * 2 + event.action.ratio == 8.5
`)
	eval := rs.Evaluate(event(t, "hostile"), time.Now(), nil)
	for _, r := range eval.Results {
		if r.Outcome != alorules.OutcomeMatched {
			t.Errorf("rule %s: got %s (%s), want matched", r.Rule, r.Outcome, r.Error)
		}
	}
}

func TestEvaluateLoopGuard(t *testing.T) {
	rs := parseString(t, `version: 1
defaults: { loop_limit: 3 }
rules:
  - name: echo
    on: [action_updated]
`)
	ev := event(t, "action_updated")
	start := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	guard := newLoopGuard()
	evaluate := func(ev *alorules.Event, after time.Duration) alorules.Outcome {
		t.Helper()
		res := rs.evaluate(context.Background(), ev, start.Add(after), nil, guard).Results[0]
		if res.Outcome == alorules.OutcomeLoop && !strings.Contains(res.Error, "more than 3 times in a minute") {
			t.Errorf("got message %q, want it to say why", res.Error)
		}
		return res.Outcome
	}
	// Each step is a firing attempt at a time after start.
	steps := []struct {
		after time.Duration
		want  alorules.Outcome
	}{
		{0, "matched"}, {time.Second, "matched"}, {2 * time.Second, "matched"},
		{3 * time.Second, "loop_suspected"},
		// A loop that keeps trying stays stopped, past the minute.
		{50 * time.Second, "loop_suspected"},
		{100 * time.Second, "loop_suspected"},
	}
	for _, st := range steps {
		if got := evaluate(ev, st.after); got != st.want {
			t.Errorf("at +%s: got %s, want %s", st.after, got, st.want)
		}
	}
	if got := guard.suspended(start.Add(100 * time.Second)); len(got) != 1 || got[0].Rule != "echo" || got[0].Key != "act-1042" ||
		!got[0].Since.Equal(start.Add(3*time.Second)) || !got[0].Until.Equal(start.Add(160*time.Second)) || got[0].Refused != 3 {
		t.Errorf("suspended at +100s: got %+v, want echo for act-1042 since +3s until +160s, 3 refused", got)
	}
	if got := guard.suspended(start.Add(160 * time.Second)); len(got) != 0 {
		t.Errorf("suspended at +160s: got %+v, want none", got)
	}
	// A quiet minute after the last attempt lets it through again.
	if got := evaluate(ev, 161*time.Second); got != alorules.OutcomeMatched {
		t.Errorf("after a quiet minute: got %s, want matched", got)
	}
	// Another action is never affected; Evaluate on its own (replays)
	// does not count.
	for range 20 {
		if got := rs.Evaluate(ev, start, nil).Results[0].Outcome; got != alorules.OutcomeMatched {
			t.Fatalf("Evaluate: got %s, want matched", got)
		}
	}
	other := rawEvent(t, `{"type":"action_updated","action":{"id":"act-other"}}`)
	if got := evaluate(other, 100*time.Second); got != alorules.OutcomeMatched {
		t.Errorf("other action: got %s, want matched", got)
	}
}

// TestLoopGuardKeys: without a throttle the guard counts by the entity
// the rules file names (here a field of chat messages), with one by its
// key; an event with neither is not counted.
func TestLoopGuardKeys(t *testing.T) {
	rs := parseString(t, `version: 1
defaults: { loop_limit: 1 }
entity:
  types:
    action_message_added: "{{ event.message?.action_id }}"
rules:
  - name: by-entity
    on: [action_message_added]
  - name: by-throttle
    on: [action_message_added]
    throttle: { key: "{{ event.message?.room }}", per: 1ms }
`)
	start := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	guard := newLoopGuard()
	msg := func(action, room string) *alorules.Event {
		return rawEvent(t, `{"type":"action_message_added","message":{"action_id":"`+action+`","room":"`+room+`"}}`)
	}
	tests := []struct {
		ev   *alorules.Event
		want [2]alorules.Outcome
	}{
		{msg("a1", "r1"), [2]alorules.Outcome{"matched", "matched"}},
		{msg("a1", "r2"), [2]alorules.Outcome{"loop_suspected", "matched"}},
		{msg("a2", "r1"), [2]alorules.Outcome{"matched", "loop_suspected"}},
		{rawEvent(t, `{"type":"action_message_added"}`), [2]alorules.Outcome{"matched", "matched"}},
		{rawEvent(t, `{"type":"action_message_added"}`), [2]alorules.Outcome{"matched", "matched"}},
	}
	for i, tt := range tests {
		res := rs.evaluate(context.Background(), tt.ev, start.Add(time.Duration(i)*time.Second), nil, guard).Results
		if got := [2]alorules.Outcome{res[0].Outcome, res[1].Outcome}; got != tt.want {
			t.Errorf("event %d: got %v, want %v", i, got, tt.want)
		}
	}
}

func equalOutcomes(a, b []alorules.Outcome) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
