package main

import (
	"bytes"
	"encoding/json"
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
		`2 test(s), 1 passed, 1 failed`,
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
				Executions []struct{ Rule, Source string }
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("got %v decoding\n%s", err, out.String())
	}
	if res.Passed != 1 || res.Failed != 1 || len(res.Tests) != 2 || res.Tests[0].Passed || len(res.Tests[0].Failures) != 6 {
		t.Fatalf("got %+v, want one test failing 6 ways and one passing", res)
	}
	first := res.Tests[0].Steps[0]
	if first.Match == nil || len(first.Match.Deferred) != 1 || first.Match.Deferred[0].Kind != "timer_set" {
		t.Errorf("got step %+v, want the match with its timer", first)
	}
	if len(first.Executions) != 1 || first.Executions[0].Source != "match" {
		t.Errorf("got executions %+v, want the page from the match", first.Executions)
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
