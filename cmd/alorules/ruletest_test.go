package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"alorules/engine"
)

func noEnv(string) string { return "" }

// The example rules ship with their own tests; make test runs them.
func TestRuleExampleTests(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"test", "../../rules.example.yaml", "--tests", "../../rules.example.tests.yaml", "--env-placeholders"}, nil, &out, &errb, noEnv)
	if code != 0 {
		t.Fatalf("got exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "4 test(s), 4 passed, 0 failed") {
		t.Errorf("got\n%s\nwant a summary of 4 passing tests", out.String())
	}
}

// A failing test exits 1 and says, per step, what differs.
func TestRuleTestsFailing(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"test", "../../rules.example.yaml", "--tests", "testdata/ruletests/failing.tests.yaml", "--env-placeholders"}, nil, &out, &errb, noEnv)
	if code != 1 {
		t.Fatalf("got exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
	want := []string{
		`FAIL  wrong expectations`,
		`test "wrong expectations" step 1: rule urgent-not-completed: got matched, want not matched`,
		`test "wrong expectations" step 1: rule urgent-completed: got skipped, want matched`,
		`test "wrong expectations" step 1: timers_set: got [urgent-not-completed], want []`,
		`test "wrong expectations" step 1: rule page-on-urgent-action step 1: request.text: got ":rotating_light: Urgent: Freezer 3 temperature alarm at Kitchen B (<https://app.alo.ai/actions/act-1042|open in ALO>)", want "Urgent: something else"`,
		`test "wrong expectations" step 2: timers_fired: got [], want [urgent-not-completed]`,
		`ok    right expectations (1 steps)`,
		`22 test(s), 1 passed, 21 failed`,
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q; got\n%s", w, out.String())
		}
	}
}

func TestRuleTestsJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"test", "--json", "--rules", "../../rules.example.yaml", "--tests", "testdata/ruletests/failing.tests.yaml", "--env-placeholders"}, nil, &out, &errb, noEnv)
	if code != 1 {
		t.Fatalf("got exit %d, want 1: %s", code, errb.String())
	}
	var res struct {
		Passed, Failed int
		Tests          []struct {
			Name     string
			Passed   bool
			Failures []string
			Steps    []struct {
				Match *struct {
					Deferred []struct{ Rule, Kind string }
				}
				Fired []struct {
					Kind, Rule, Key string
					Count           int
					ExecutionID     string `json:"execution_id"`
				}
				Executions []struct{ ID, Rule, Source string }
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("got %v decoding\n%s", err, out.String())
	}
	if res.Passed != 1 || res.Failed != 21 || len(res.Tests) != 22 || res.Tests[0].Passed || len(res.Tests[0].Failures) != 6 {
		t.Fatalf("got %+v, want the first test failing 6 ways, the second passing, 20 more failing", res)
	}
	first := res.Tests[0].Steps[0]
	if first.Match == nil || len(first.Match.Deferred) != 1 || first.Match.Deferred[0].Kind != "timer_set" {
		t.Errorf("got step %+v, want the match with its timer", first)
	}
	if len(first.Executions) != 1 || first.Executions[0].Source != "match" {
		t.Errorf("got executions %+v, want the page from the match", first.Executions)
	}

	// Two digests of one rule closing in a step: each with its key and
	// count, and the execution it created, which is how a reader tells
	// "execution i of n" in a failure apart.
	for _, tt := range res.Tests {
		if tt.Name != "digests_sent.count" {
			continue
		}
		step := tt.Steps[3]
		var got []string
		for i, f := range step.Fired {
			ex := "no execution"
			if i < len(step.Executions) && step.Executions[i].ID == f.ExecutionID {
				ex = step.Executions[i].Rule + " " + step.Executions[i].Source
			}
			got = append(got, fmt.Sprintf("%s %s %s %d: %s", f.Kind, f.Rule, f.Key, f.Count, ex))
		}
		want := []string{
			"digest new-actions-digest ch-kitchen 1: new-actions-digest digest",
			"digest new-actions-digest ch-lobby 2: new-actions-digest digest",
		}
		if !slices.Equal(got, want) {
			t.Errorf("got fired %q, want %q", got, want)
		}
	}
}

// Mistakes in a tests file are reported, not run as tests that pass for
// nothing.
func TestRuleTestsBadFiles(t *testing.T) {
	tests := []struct {
		file, want string
	}{
		{"unknown_rule.tests.yaml", `test "typo in a rule name" step 1: matched: no rule named "page-on-urgnet-action" in the rules file`},
		{"unknown_key.tests.yaml", `field mached not found`},
		{"event_and_advance.tests.yaml", `test "two things at once" step 1: want exactly one of event or advance`},
		{"match_on_advance.tests.yaml", `step 1: expect.matched is only for a step with an event`},
		{"missing_file.tests.yaml", `no-such-event.json: no such file`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run([]string{"test", "../../rules.example.yaml", "--tests", "testdata/ruletests/" + tt.file, "--env-placeholders"}, nil, &out, &errb, noEnv)
			if code != 1 {
				t.Fatalf("got exit %d, want 1", code)
			}
			if got := out.String() + errb.String(); !strings.Contains(got, tt.want) {
				t.Errorf("got\n%s\nwant it to contain %q", got, tt.want)
			}
		})
	}
}

// The older forms keep working beside --tests.
func TestRuleTestsUsage(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"test", "--rules", "../../rules.example.yaml", "--env-placeholders", "../../testdata/events/action_created.json"}, 0},
		{[]string{"test", "--env-placeholders", "../../rules.example.yaml", "../../testdata/events/action_created.json"}, 0},
		{[]string{"test", "--tests", "../../rules.example.tests.yaml"}, 2},
		{[]string{"test", "a.yaml", "b.yaml", "--tests", "../../rules.example.tests.yaml"}, 2},
		{[]string{"test", "../../rules.example.yaml"}, 2},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if code := run(tt.args, nil, &out, &errb, noEnv); code != tt.want {
			t.Errorf("%v: got exit %d, want %d\n%s%s", tt.args, code, tt.want, out.String(), errb.String())
		}
	}
}

// Tests that must pass: a rule that fires twice in one step is checked
// execution by execution and digest by digest.
func TestRuleTestsSameStep(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"test", "../../rules.example.yaml", "--tests", "testdata/ruletests/same_step.tests.yaml", "--env-placeholders"}, nil, &out, &errb, noEnv)
	if code != 0 {
		t.Fatalf("got exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "2 test(s), 2 passed, 0 failed") {
		t.Errorf("got\n%s\nwant a summary of 2 passing tests", out.String())
	}
}

// Expected digests are paired one to one with those that closed, so that
// two digests of one rule in a step are each checked against their own
// expectation, whatever the order of either list.
func TestCheckDigests(t *testing.T) {
	key := func(s string) *string { return &s }
	count := func(n int) *int { return &n }
	sent := func(rule, key string, count int) engine.Fired {
		return engine.Fired{Kind: engine.FiredDigest, Rule: rule, Key: key, Count: count}
	}
	kitchen, lobby := sent("digest", "ch-kitchen", 1), sent("digest", "ch-lobby", 2)
	tests := []struct {
		name string
		want []digestExpect
		sent []engine.Fired
		diff []string
	}{
		{"both, in the order they closed", []digestExpect{{Rule: "digest", Key: key("ch-kitchen"), Count: count(1)}, {Rule: "digest", Key: key("ch-lobby"), Count: count(2)}},
			[]engine.Fired{kitchen, lobby}, nil},
		{"both, in the other order", []digestExpect{{Rule: "digest", Key: key("ch-lobby"), Count: count(2)}, {Rule: "digest", Key: key("ch-kitchen"), Count: count(1)}},
			[]engine.Fired{kitchen, lobby}, nil},
		{"a bare rule does not take the digest a key asks for", []digestExpect{{Rule: "digest"}, {Rule: "digest", Key: key("ch-kitchen")}},
			[]engine.Fired{kitchen, lobby}, nil},
		{"a bare rule does not take the digest a count asks for", []digestExpect{{Rule: "digest"}, {Rule: "digest", Count: count(2)}},
			[]engine.Fired{lobby, kitchen}, nil},
		{"a key and a count that both fit the first digest", []digestExpect{{Rule: "digest", Key: key("ch-kitchen")}, {Rule: "digest", Count: count(1)}},
			[]engine.Fired{kitchen, sent("digest", "ch-kitchen", 3)}, nil},
		{"wrong count", []digestExpect{{Rule: "digest", Key: key("ch-lobby"), Count: count(3)}},
			[]engine.Fired{lobby},
			[]string{`digests_sent: digest: got key "ch-lobby" count 2, want key "ch-lobby" count 3`}},
		{"counts swapped between two keys", []digestExpect{{Rule: "digest", Key: key("ch-kitchen"), Count: count(2)}, {Rule: "digest", Key: key("ch-lobby"), Count: count(1)}},
			[]engine.Fired{kitchen, lobby},
			[]string{
				`digests_sent: digest: got key "ch-kitchen" count 1, want key "ch-kitchen" count 2`,
				`digests_sent: digest: got key "ch-lobby" count 2, want key "ch-lobby" count 1`,
			}},
		{"one digest more than listed", []digestExpect{{Rule: "digest", Key: key("ch-kitchen")}},
			[]engine.Fired{kitchen, lobby},
			[]string{`digests_sent: digest: got key "ch-lobby" count 2, want none`}},
		{"one digest fewer than listed", []digestExpect{{Rule: "digest"}, {Rule: "digest"}},
			[]engine.Fired{lobby},
			[]string{`digests_sent: digest: got none, want one`}},
		{"another rule's digest", []digestExpect{{Rule: "other"}},
			[]engine.Fired{kitchen},
			[]string{`digests_sent: digest: got key "ch-kitchen" count 1, want none`, `digests_sent: other: got none, want one`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkDigests(tt.want, tt.sent); !slices.Equal(got, tt.diff) {
				t.Errorf("got %q, want %q", got, tt.diff)
			}
		})
	}
}

// Every kind of expectation has a test in failing.tests.yaml that must fail
// with exactly these differences: a check that always passed, or that
// reported something unreadable or extra, would show here. The lines are
// the same in the text output and in --json's failures.
func TestRuleTestsFailingKinds(t *testing.T) {
	tests := []struct {
		kind string // the expect key, or key.field
		test string // the test's name in failing.tests.yaml
		want []string
	}{
		{"matched", "matched", []string{
			`step 1: rule urgent-completed: got skipped, want matched`,
			`step 1: rule urgent-not-completed: got matched, want not matched (it is not in matched)`,
		}},
		{"matched", "a handshake is never matched", []string{
			`step 1: the event is a URL handshake, which is never matched`,
		}},
		{"not_matched", "not_matched", []string{
			`step 1: rule page-on-urgent-action: got matched, want not matched`,
		}},
		{"outcomes", "outcomes", []string{
			`step 1: rule new-actions-digest: got not_matched, want matched`,
		}},
		{"previous", "previous", []string{
			`step 1: previous: got false, want true`,
		}},
		{"changed", "changed", []string{
			`step 2: changed: got [action.status, type], want [action.status]`,
		}},
		{"executions", "executions", []string{
			`step 1: executions: got [page-on-urgent-action], want []`,
		}},
		{"requests", "requests", []string{
			`step 1: rule page-on-urgent-action step ticket: request.json.priority: got "Urgent", want "High"`,
			`step 1: rule page-on-urgent-action step ticket: request.json.watchers: got (missing), want []`,
			`step 1: rule page-on-urgent-action step ticket: request.method: got "POST", want "PUT"`,
		}},
		{"requests", "requests of a rule that did not run", []string{
			`step 1: rule urgent-completed step 1: got no execution of the rule in this step`,
		}},
		{"requests", "requests of a step the rule does not have", []string{
			`step 1: rule page-on-urgent-action step 4: the rule has no such step (count from 1, or use the step's id)`,
			`step 1: rule page-on-urgent-action step no-such-id: the rule has no such step (count from 1, or use the step's id)`,
		}},
		{"requests", "requests of a rule that ran twice", []string{
			`step 3: rule new-actions-digest execution 1 of 2 step 1: request.text: got "1 new action(s) in 15 minutes: Restock gloves", want "2 new action(s) in 15 minutes: Restock gloves, Check lights"`,
			`step 3: rule new-actions-digest execution 2 of 2 step 1: request.text: got "1 new action(s) in 15 minutes: Check lights", want "2 new action(s) in 15 minutes: Restock gloves, Check lights"`,
		}},
		{"timers_set", "timers_set", []string{
			`step 1: timers_set: got [urgent-not-completed], want []`,
		}},
		{"timers_kept", "timers_kept", []string{
			`step 3: timers_kept: got [urgent-not-completed], want []`,
		}},
		{"timers_cancelled", "timers_cancelled", []string{
			`step 2: timers_cancelled: got [urgent-not-completed], want []`,
		}},
		{"timers_fired", "timers_fired", []string{
			`step 2: timers_fired: got [urgent-not-completed], want []`,
		}},
		{"timers_pending", "timers_pending", []string{
			`step 2: timers_pending: got [urgent-not-completed], want []`,
		}},
		{"digests_added", "digests_added", []string{
			`step 1: digests_added: got [new-actions-digest], want []`,
		}},
		{"digests_sent", "digests_sent", []string{
			`step 2: digests_sent: new-actions-digest: got key "ch-kitchen" count 1, want none`,
		}},
		{"digests_sent.count", "digests_sent.count", []string{
			`step 4: digests_sent: new-actions-digest: got key "ch-kitchen" count 1, want key "ch-kitchen" count 2`,
			`step 4: digests_sent: new-actions-digest: got key "ch-lobby" count 2, want key "ch-lobby" count 1`,
		}},
		{"digests_sent.key", "digests_sent.key", []string{
			`step 4: digests_sent: new-actions-digest: got key "ch-kitchen" count 1, want key "ch-hall"`,
		}},
	}

	// A new kind of expectation needs a case here before it can ship.
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.kind] = true
	}
	kinds := []string{"digests_sent.count", "digests_sent.key"}
	et := reflect.TypeFor[expect]()
	for i := range et.NumField() {
		kinds = append(kinds, strings.Split(et.Field(i).Tag.Get("yaml"), ",")[0])
	}
	for _, k := range kinds {
		if !covered[k] {
			t.Errorf("expectation %s: got no failing case, want one", k)
		}
	}

	args := []string{"test", "../../rules.example.yaml", "--tests", "testdata/ruletests/failing.tests.yaml", "--env-placeholders"}
	var text, errb bytes.Buffer
	if code := run(args, nil, &text, &errb, noEnv); code != 1 {
		t.Fatalf("got exit %d, want 1\n%s%s", code, text.String(), errb.String())
	}
	var js bytes.Buffer
	if code := run(append(args, "--json"), nil, &js, &errb, noEnv); code != 1 {
		t.Fatalf("--json: got exit %d, want 1\n%s", code, errb.String())
	}
	var res struct {
		Tests []struct {
			Name     string
			Failures []string
		}
	}
	if err := json.Unmarshal(js.Bytes(), &res); err != nil {
		t.Fatalf("got %v decoding\n%s", err, js.String())
	}
	failures := map[string][]string{}
	for _, r := range res.Tests {
		failures[r.Name] = r.Failures
	}
	for _, tt := range tests {
		t.Run(tt.test, func(t *testing.T) {
			got, ok := failures[tt.test]
			if !ok {
				t.Fatalf("got no test %q in failing.tests.yaml, want one", tt.test)
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, fmt.Sprintf("test %q %s", tt.test, w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("--json failures:\ngot  %q\nwant %q", got, want)
			}
			block := "FAIL  " + tt.test + "\n      " + strings.Join(want, "\n      ") + "\n"
			if !strings.Contains(text.String(), block) {
				t.Errorf("text output: got no such block, want\n%s", block)
			}
		})
	}
}
