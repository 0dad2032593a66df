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
	evaluate := func(ev *alorules.Event, now time.Time) Evaluation {
		return rs.evaluate(context.Background(), ev, now, nil, guard)
	}
	var got []alorules.Outcome
	for i := range 5 {
		eval := evaluate(ev, start.Add(time.Duration(i)*time.Second))
		got = append(got, eval.Results[0].Outcome)
		if eval.Results[0].Outcome == alorules.OutcomeLoop && !strings.Contains(eval.Results[0].Error, "more than 3 times") {
			t.Errorf("got message %q, want it to say why", eval.Results[0].Error)
		}
	}
	want := []alorules.Outcome{"matched", "matched", "matched", "loop_suspected", "loop_suspected"}
	if !equalOutcomes(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// The next minute starts afresh; another action is never affected;
	// Evaluate on its own (replays) does not count.
	for range 20 {
		if got := rs.Evaluate(ev, start, nil).Results[0].Outcome; got != alorules.OutcomeMatched {
			t.Fatalf("Evaluate: got %s, want matched", got)
		}
	}
	if got := evaluate(ev, start.Add(time.Minute)).Results[0].Outcome; got != alorules.OutcomeMatched {
		t.Errorf("next minute: got %s, want matched", got)
	}
	other := rawEvent(t, `{"type":"action_updated","action":{"id":"act-other"}}`)
	if got := evaluate(other, start.Add(time.Minute)).Results[0].Outcome; got != alorules.OutcomeMatched {
		t.Errorf("other action: got %s, want matched", got)
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
