package engine

import (
	"strings"
	"testing"
	"time"

	"alorules"
)

// TestHostileExpressionsRefused: what is obviously too big is refused at
// load, with a message.
func TestHostileExpressionsRefused(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"deep nesting", strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + " != nil", "exceeds maximum allowed nodes"},
		{"long chain", strings.Repeat("1 + ", 1500) + "1 > 0", "exceeds maximum allowed nodes"},
		{"too long", strings.Repeat("(", 5000) + "true" + strings.Repeat(")", 5000), "the limit is 8192"},
		{"huge range", "len(1..1000000000) > 0", "range of 1000000000 elements is too large"},
		{"huge negative range", "len(-500000..500000) > 0", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compile(tt.src, false, true)
			if err == nil {
				t.Fatal("got no error, want the expression refused")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to mention %q", err.Error(), tt.want)
			}
		})
	}
}

// TestHostileExpressionsLimited: what can only be judged at run time stops
// with an error outcome instead of hanging or exhausting memory.
func TestHostileExpressionsLimited(t *testing.T) {
	list := "[" + strings.TrimSuffix(strings.Repeat("1,", 2000), ",") + "]"
	ev := rawEvent(t, `{"type":"action_created","n":1000000000,"list":`+list+`}`)
	tests := []struct {
		name, cond, want string
	}{
		{"range from payload", "len(1..event.n) > 0", "memory budget exceeded"},
		{"nested loops over payload", "all(event.list, {all(event.list, {all(event.list, {# == 1})})})", "iteration budget exceeded"},
		{"huge string", `len(repeat("ab", 10000000)) > 0`, "memory budget exceeded"},
		{"many ranges", "all(1..1000, {all(1..1000, {all(1..1000, {true})})})", "budget exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := parseString(t, "version: 1\nrules:\n  - name: hostile\n    if: '"+tt.cond+"'\n  - name: next\n")
			start := time.Now()
			eval := rs.Evaluate(ev, time.Now(), nil)
			if took := time.Since(start); took > 30*time.Second {
				t.Logf("took %s", took) // not an assertion: the error below is
			}
			got := eval.Results[0]
			if got.Outcome != alorules.OutcomeError || !strings.Contains(got.Error, tt.want) {
				t.Errorf("got %s %q, want error mentioning %q", got.Outcome, got.Error, tt.want)
			}
			if next := eval.Results[1].Outcome; next != alorules.OutcomeMatched {
				t.Errorf("got %s for the next rule, want matched: one rule's failure must not affect others", next)
			}
		})
	}
}

func TestExprEnvironment(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ev := event(t, "action_created") // received 08:14:03
	tests := []struct {
		cond string
		want bool
	}{
		{`type == "action_created"`, true},
		{`received_at < now()`, true},
		{`now() - received_at > duration("3h")`, true},
		{`now().Hour() == 12`, true},
		{`event.action.form.temperature_c < -4`, true},
		{`event.action?.nope?.deeper == nil`, true},
		{`len(event.action.assignees) == 0`, true},
		{`event.team_id startsWith "team-"`, true},
		{`event.action.created_by.name matches "^Dana"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			p, cerr := compile(tt.cond, false, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			payload, _ := decodePayload(ev.Payload)
			m := newMachine(envInput{Event: ev, Payload: payload, Now: now})
			defer m.release()
			got, err := m.run(p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestExprStatusTypeAlias(t *testing.T) {
	// A rule may name either spelling; both see the status change, and
	// "type" is the normalised name.
	rs := parseString(t, `version: 1
rules:
  - name: old-name
    on: [action_status_changed]
    if: type == "action_status_updated"
  - name: new-name
    on: [action_status_updated]
`)
	for _, raw := range []string{"action_status_changed", "action_status_updated"} {
		eval := rs.Evaluate(rawEvent(t, `{"type":"`+raw+`"}`), time.Now(), nil)
		for _, r := range eval.Results {
			if r.Outcome != alorules.OutcomeMatched {
				t.Errorf("%s: rule %s got %s %s, want matched", raw, r.Rule, r.Outcome, r.Error)
			}
		}
	}
}
