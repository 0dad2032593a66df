package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"alorules"
	"alorules/engine"
)

// Rule unit tests: a tests file lists sequences of events (and moves of a
// simulated clock) with what the rules should make of each step. They run
// against the real engine on a temporary store; nothing is sent. The
// format is in README.md, "Rule unit tests".

// defaultTestStart is where the simulated clock of a test starts unless it
// says otherwise: a fixed time, so that rendered times are reproducible.
var defaultTestStart = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

type testsFile struct {
	Tests []ruleTest `yaml:"tests"`
}

type ruleTest struct {
	Name  string     `yaml:"name"`
	Start string     `yaml:"start"`
	Steps []testStep `yaml:"steps"`
}

type testStep struct {
	Event   yaml.Node `yaml:"event"`
	Advance string    `yaml:"advance"`
	Expect  *expect   `yaml:"expect"`
}

// expect is what one step should do. Lists of rules compare as sets with
// repeats (sorted); a key left out is not checked, an empty list means
// "none".
type expect struct {
	Matched         *[]string         `yaml:"matched"`
	NotMatched      []string          `yaml:"not_matched"`
	Outcomes        map[string]string `yaml:"outcomes"`
	Executions      *[]string         `yaml:"executions"`
	Requests        []requestExpect   `yaml:"requests"`
	Previous        *bool             `yaml:"previous"`
	Changed         *[]string         `yaml:"changed"`
	TimersSet       *[]string         `yaml:"timers_set"`
	TimersKept      *[]string         `yaml:"timers_kept"`
	TimersCancelled *[]string         `yaml:"timers_cancelled"`
	TimersFired     *[]string         `yaml:"timers_fired"`
	TimersPending   *[]string         `yaml:"timers_pending"`
	DigestsAdded    *[]string         `yaml:"digests_added"`
	DigestsSent     *[]digestExpect   `yaml:"digests_sent"`
}

// requestExpect checks one rendered step of an execution created in the
// step: match is a subset of the request's JSON.
type requestExpect struct {
	Rule  string `yaml:"rule"`
	Step  string `yaml:"step"` // 1-based index or the step's id; default 1
	Match any    `yaml:"match"`
}

// digestExpect is a rule name, or {rule, count, key}.
type digestExpect struct {
	Rule  string
	Count *int
	Key   *string
}

func (d *digestExpect) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		d.Rule = n.Value
		return nil
	}
	var v struct {
		Rule  string  `yaml:"rule"`
		Count *int    `yaml:"count"`
		Key   *string `yaml:"key"`
	}
	dec := yamlStrict(n)
	if err := dec(&v); err != nil {
		return err
	}
	d.Rule, d.Count, d.Key = v.Rule, v.Count, v.Key
	return nil
}

// yamlStrict decodes a node refusing unknown keys (Node.Decode has no
// such option, so the node is encoded and decoded again).
func yamlStrict(n *yaml.Node) func(any) error {
	return func(v any) error {
		b, err := yaml.Marshal(n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		return nil
	}
}

// testReport is one test's result, for --json.
type testReport struct {
	Name     string            `json:"name"`
	Passed   bool              `json:"passed"`
	Failures []string          `json:"failures"`
	Steps    []*engine.SimStep `json:"steps"`
}

// cmdRuleTests runs a tests file against a rules file and reports; exit 1
// when a test fails or a file does not load.
func cmdRuleTests(ctx context.Context, rulesPath, testsPath string, getenv func(string) string, asJSON bool, cio cmdIO) int {
	rs, warns, err := engine.Load(rulesPath, getenv)
	printIssues(cio.stderr, warns)
	if err != nil {
		if issues := loadIssues(err); issues != nil {
			printIssues(cio.stdout, issues)
			return 1
		}
		return cio.errorf("%v", err)
	}
	tf, err := readTests(testsPath)
	if err != nil {
		return cio.errorf("%v", err)
	}
	if problems := checkTestNames(tf, rs); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(cio.stdout, "%s: %s\n", testsPath, p)
		}
		return 1
	}
	var reports []testReport
	failed := 0
	for _, tt := range tf.Tests {
		rep, err := runRuleTest(ctx, rs, tt, filepath.Dir(testsPath))
		if err != nil {
			return cio.errorf("%s: test %q: %v", testsPath, tt.Name, err)
		}
		if !rep.Passed {
			failed++
		}
		reports = append(reports, rep)
	}
	if asJSON {
		enc := json.NewEncoder(cio.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"tests": reports, "passed": len(reports) - failed, "failed": failed}); err != nil {
			return cio.errorf("%v", err)
		}
	} else {
		for _, r := range reports {
			if r.Passed {
				fmt.Fprintf(cio.stdout, "ok    %s (%d steps)\n", r.Name, len(r.Steps))
				continue
			}
			fmt.Fprintf(cio.stdout, "FAIL  %s\n", r.Name)
			for _, f := range r.Failures {
				fmt.Fprintf(cio.stdout, "      %s\n", f)
			}
		}
		fmt.Fprintf(cio.stdout, "%s: %d test(s), %d passed, %d failed\n", testsPath, len(reports), len(reports)-failed, failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func loadIssues(err error) []engine.Issue {
	var le *engine.LoadError
	if !errors.As(err, &le) {
		return nil
	}
	return le.Issues
}

func readTests(path string) (*testsFile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	var tf testsFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(tf.Tests) == 0 {
		return nil, fmt.Errorf("%s: no tests", path)
	}
	for i, tt := range tf.Tests {
		if tt.Name == "" {
			return nil, fmt.Errorf("%s: test %d has no name", path, i+1)
		}
		if len(tt.Steps) == 0 {
			return nil, fmt.Errorf("%s: test %q has no steps", path, tt.Name)
		}
		for j, st := range tt.Steps {
			hasEvent := !st.Event.IsZero()
			switch {
			case hasEvent == (st.Advance != ""):
				return nil, fmt.Errorf("%s: test %q step %d: want exactly one of event or advance", path, tt.Name, j+1)
			case !hasEvent && st.Expect != nil && st.Expect.eventOnly() != "":
				return nil, fmt.Errorf("%s: test %q step %d: expect.%s is only for a step with an event", path, tt.Name, j+1, st.Expect.eventOnly())
			}
		}
	}
	return &tf, nil
}

// eventOnly names an expectation that needs an event's match.
func (e *expect) eventOnly() string {
	switch {
	case e.Matched != nil:
		return "matched"
	case e.NotMatched != nil:
		return "not_matched"
	case e.Outcomes != nil:
		return "outcomes"
	case e.Previous != nil:
		return "previous"
	case e.Changed != nil:
		return "changed"
	case e.TimersSet != nil:
		return "timers_set"
	case e.TimersKept != nil:
		return "timers_kept"
	case e.TimersCancelled != nil:
		return "timers_cancelled"
	case e.DigestsAdded != nil:
		return "digests_added"
	}
	return ""
}

// checkTestNames finds rule names in expectations that the rules file
// does not have: a typo there would make a test pass for nothing.
func checkTestNames(tf *testsFile, rs *engine.RuleSet) []string {
	known := map[string]bool{}
	for _, r := range rs.Rules() {
		known[r.Name] = true
	}
	var out []string
	check := func(test string, step int, field string, names ...string) {
		for _, n := range names {
			if !known[n] {
				out = append(out, fmt.Sprintf("test %q step %d: %s: no rule named %q in the rules file", test, step, field, n))
			}
		}
	}
	for _, tt := range tf.Tests {
		for i, st := range tt.Steps {
			e := st.Expect
			if e == nil {
				continue
			}
			for field, l := range map[string]*[]string{"matched": e.Matched, "executions": e.Executions, "timers_set": e.TimersSet,
				"timers_kept": e.TimersKept, "timers_cancelled": e.TimersCancelled, "timers_fired": e.TimersFired,
				"timers_pending": e.TimersPending, "digests_added": e.DigestsAdded} {
				if l != nil {
					check(tt.Name, i+1, field, *l...)
				}
			}
			check(tt.Name, i+1, "not_matched", e.NotMatched...)
			for r := range e.Outcomes {
				check(tt.Name, i+1, "outcomes", r)
			}
			for _, r := range e.Requests {
				check(tt.Name, i+1, "requests", r.Rule)
			}
			if e.DigestsSent != nil {
				for _, d := range *e.DigestsSent {
					check(tt.Name, i+1, "digests_sent", d.Rule)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// runRuleTest runs one test in a fresh simulation.
func runRuleTest(ctx context.Context, rs *engine.RuleSet, tt ruleTest, dir string) (testReport, error) {
	rep := testReport{Name: tt.Name, Failures: []string{}}
	start := defaultTestStart
	if tt.Start != "" {
		t, err := time.Parse(time.RFC3339, tt.Start)
		if err != nil {
			return rep, fmt.Errorf("start: want an RFC 3339 time, got %q", tt.Start)
		}
		start = t
	}
	sim, err := engine.NewSimulation(rs, start)
	if err != nil {
		return rep, err
	}
	defer sim.Close()
	for i, st := range tt.Steps {
		var step *engine.SimStep
		if st.Advance != "" {
			d, err := time.ParseDuration(st.Advance)
			if err != nil || d < 0 {
				return rep, fmt.Errorf("step %d: advance: want a duration such as 2h, got %q", i+1, st.Advance)
			}
			if step, err = sim.Advance(ctx, d); err != nil {
				return rep, fmt.Errorf("step %d: %w", i+1, err)
			}
		} else {
			body, err := eventBody(&st.Event, dir)
			if err != nil {
				return rep, fmt.Errorf("step %d: event: %w", i+1, err)
			}
			if step, err = sim.Send(ctx, body); err != nil {
				return rep, fmt.Errorf("step %d: %w", i+1, err)
			}
		}
		rep.Steps = append(rep.Steps, step)
		if st.Expect != nil {
			for _, f := range st.Expect.check(step) {
				rep.Failures = append(rep.Failures, fmt.Sprintf("test %q step %d: %s", tt.Name, i+1, f))
			}
		}
	}
	rep.Passed = len(rep.Failures) == 0
	return rep, nil
}

// eventBody is an event given inline (a YAML mapping, or JSON text) or as
// "file:path" relative to the tests file.
func eventBody(n *yaml.Node, dir string) ([]byte, error) {
	if n.Kind == yaml.ScalarNode {
		if path, ok := strings.CutPrefix(n.Value, "file:"); ok {
			path = strings.TrimSpace(path)
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			return os.ReadFile(path)
		}
		if !json.Valid([]byte(n.Value)) {
			return nil, fmt.Errorf("line %d: want a mapping, JSON text or file:PATH", n.Line)
		}
		return []byte(n.Value), nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return json.Marshal(v)
}

// check compares a step with what was expected and returns one readable
// line per difference.
func (e *expect) check(step *engine.SimStep) []string {
	var out []string
	failf := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	results := map[string]alorules.RuleResult{}
	var matched []string
	if m := step.Match; m != nil {
		for _, r := range m.Results {
			results[r.Rule] = r
			if r.Outcome == alorules.OutcomeMatched {
				matched = append(matched, r.Rule)
			}
		}
	}
	outcome := func(rule string) string {
		r, ok := results[rule]
		if !ok {
			return "not evaluated"
		}
		if r.Error != "" {
			return string(r.Outcome) + " (" + r.Error + ")"
		}
		return string(r.Outcome)
	}
	if step.Event != nil && step.Match == nil && (e.Matched != nil || e.Outcomes != nil) {
		failf("the event is a URL handshake, which is never matched")
	}
	if e.Matched != nil {
		want := *e.Matched
		for _, r := range sorted(want) {
			if !slices.Contains(matched, r) {
				failf("rule %s: got %s, want matched", r, outcome(r))
			}
		}
		for _, r := range matched {
			if !slices.Contains(want, r) {
				failf("rule %s: got matched, want not matched (it is not in matched)", r)
			}
		}
	}
	for _, r := range sorted(e.NotMatched) {
		if slices.Contains(matched, r) {
			failf("rule %s: got matched, want not matched", r)
		}
	}
	for _, r := range sortedKeys(e.Outcomes) {
		if got := string(results[r].Outcome); got != e.Outcomes[r] {
			failf("rule %s: got %s, want %s", r, outcome(r), e.Outcomes[r])
		}
	}
	if e.Previous != nil && step.Match != nil {
		if got := step.Match.PreviousEventID != ""; got != *e.Previous {
			failf("previous: got %v, want %v", got, *e.Previous)
		}
	}
	if e.Changed != nil && step.Match != nil {
		if got, want := step.Match.Changed, *e.Changed; !slices.Equal(sorted(got), sorted(want)) {
			failf("changed: got %s, want %s", list(got), list(want))
		}
	}
	var execRules []string
	for _, ex := range step.Executions {
		execRules = append(execRules, ex.Rule)
	}
	compare := func(field string, want *[]string, got []string) {
		if want != nil && !slices.Equal(sorted(got), sorted(*want)) {
			failf("%s: got %s, want %s", field, list(got), list(*want))
		}
	}
	compare("executions", e.Executions, execRules)
	deferred := func(kind alorules.DeferralKind) []string {
		var rules []string
		if step.Match != nil {
			for _, d := range step.Match.Deferred {
				if d.Kind == kind {
					rules = append(rules, d.Rule)
				}
			}
		}
		return rules
	}
	compare("timers_set", e.TimersSet, deferred(alorules.TimerSet))
	compare("timers_kept", e.TimersKept, deferred(alorules.TimerKept))
	compare("timers_cancelled", e.TimersCancelled, deferred(alorules.TimerCancelled))
	compare("digests_added", e.DigestsAdded, deferred(alorules.DigestAdded))
	var timersFired []string
	var digestsSent []engine.Fired
	for _, f := range step.Fired {
		switch f.Kind {
		case engine.FiredTimer:
			timersFired = append(timersFired, f.Rule)
		case engine.FiredDigest:
			digestsSent = append(digestsSent, f)
		}
	}
	compare("timers_fired", e.TimersFired, timersFired)
	var pending []string
	for _, t := range step.PendingTimers {
		pending = append(pending, t.Rule)
	}
	compare("timers_pending", e.TimersPending, pending)
	if e.DigestsSent != nil {
		out = append(out, checkDigests(*e.DigestsSent, digestsSent)...)
	}
	for _, r := range e.Requests {
		out = append(out, r.check(step.Executions)...)
	}
	return out
}

// fits tells whether a digest that closed is one the expectation
// describes: same rule, and the key and count it gives, if any.
func (d digestExpect) fits(f engine.Fired) bool {
	return d.Rule == f.Rule && (d.Key == nil || *d.Key == f.Key) && (d.Count == nil || *d.Count == f.Count)
}

// String is what the expectation asks of a digest of its rule.
func (d digestExpect) String() string {
	var parts []string
	if d.Key != nil {
		parts = append(parts, fmt.Sprintf("key %q", *d.Key))
	}
	if d.Count != nil {
		parts = append(parts, fmt.Sprintf("count %d", *d.Count))
	}
	if len(parts) == 0 {
		return "one"
	}
	return strings.Join(parts, " ")
}

func sentDigest(f engine.Fired) string { return fmt.Sprintf("key %q count %d", f.Key, f.Count) }

// checkDigests pairs the expected digests with those that closed, each
// digest taken by one expectation at most, and reports what is left on
// either side: like the other lists, the list is all that closed.
//
// The pairing is a maximum bipartite matching, not first come, first
// served, because an expectation may give only a key or only a count:
// {rule} listed before {rule, key: b} must not take the digest of key b
// while the one of key a is free.
func checkDigests(want []digestExpect, sent []engine.Fired) []string {
	taker := make([]int, len(sent)) // the expectation paired with sent[j], or -1
	for j := range taker {
		taker[j] = -1
	}
	// pair finds a digest for want[i], moving earlier pairings to other
	// digests they fit when that frees one (Kuhn's augmenting paths).
	var pair func(i int, seen []bool) bool
	pair = func(i int, seen []bool) bool {
		for j, f := range sent {
			if seen[j] || !want[i].fits(f) {
				continue
			}
			seen[j] = true
			if taker[j] < 0 || pair(taker[j], seen) {
				taker[j] = i
				return true
			}
		}
		return false
	}
	lostWant := map[string][]digestExpect{}
	for i, d := range want {
		if !pair(i, make([]bool, len(sent))) {
			lostWant[d.Rule] = append(lostWant[d.Rule], d)
		}
	}
	lostSent := map[string][]engine.Fired{}
	for j, f := range sent {
		if taker[j] < 0 {
			lostSent[f.Rule] = append(lostSent[f.Rule], f)
		}
	}

	// What is left is shown per rule, side by side, so that a wrong key or
	// count reads as one line: got the digest that closed, want what was
	// expected of it. A leftover on one side only is "none" on the other.
	rules := sortedKeys(lostWant)
	for r := range lostSent {
		if lostWant[r] == nil {
			rules = append(rules, r)
		}
	}
	slices.Sort(rules)
	var out []string
	for _, r := range rules {
		ws, fs := lostWant[r], lostSent[r]
		slices.SortFunc(ws, func(a, b digestExpect) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(fs, func(a, b engine.Fired) int { return strings.Compare(sentDigest(a), sentDigest(b)) })
		for k := range max(len(ws), len(fs)) {
			got, wanted := "none", "none"
			if k < len(fs) {
				got = sentDigest(fs[k])
			}
			if k < len(ws) {
				wanted = ws[k].String()
			}
			out = append(out, fmt.Sprintf("digests_sent: %s: got %s, want %s", r, got, wanted))
		}
	}
	return out
}

// check compares the expected subset with the rendered step of each
// execution of the rule created in the step; one that contains it is
// enough. A rule can run more than once in a step (two timers, two digest
// keys), and the format has no selector that would name one of them, so
// any execution may meet the expectation; when none does, the differences
// of each are reported, labelled "execution i of n" once there are two.
func (r requestExpect) check(execs []engine.SimExecution) []string {
	label := r.Step
	if label == "" {
		label = "1"
	}
	var mine []*engine.SimExecution
	for i := range execs {
		if execs[i].Rule == r.Rule {
			mine = append(mine, &execs[i])
		}
	}
	if len(mine) == 0 {
		return []string{fmt.Sprintf("rule %s step %s: got no execution of the rule in this step", r.Rule, label)}
	}
	// Every execution of a rule has the rule's steps, so the step is looked
	// up once, by its position.
	at := -1
	for i, st := range mine[0].Steps {
		if n, err := strconv.Atoi(label); (err == nil && st.Index == n-1) || st.ID == label {
			at = i
			break
		}
	}
	if at < 0 {
		return []string{fmt.Sprintf("rule %s step %s: the rule has no such step (count from 1, or use the step's id)", r.Rule, label)}
	}
	var out []string
	for n, ex := range mine {
		where := fmt.Sprintf("rule %s step %s", r.Rule, label)
		if len(mine) > 1 {
			where = fmt.Sprintf("rule %s execution %d of %d step %s", r.Rule, n+1, len(mine), label)
		}
		diffs := r.diff(ex.Steps[at], where)
		if len(diffs) == 0 {
			return nil
		}
		out = append(out, diffs...)
	}
	return out
}

// diff lists where one rendered step does not contain the expected subset.
func (r requestExpect) diff(st engine.TestStep, where string) []string {
	if st.Error != "" {
		return []string{fmt.Sprintf("%s: does not render: %s", where, st.Error)}
	}
	var got any
	if err := json.Unmarshal(st.Request, &got); err != nil {
		return []string{fmt.Sprintf("%s: %v", where, err)}
	}
	var out []string
	subset(got, r.Match, "request", func(path string, g, w any) {
		out = append(out, fmt.Sprintf("%s: %s: got %s, want %s", where, path, show(g), show(w)))
	})
	return out
}

// subset reports every place where want is not contained in got: objects
// may have more keys than wanted; lists and scalars must be equal (numbers
// by value).
func subset(got, want any, path string, fail func(path string, got, want any)) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			fail(path, got, want)
			return
		}
		for _, k := range sortedKeys(w) {
			gv, ok := g[k]
			if !ok {
				fail(path+"."+k, "(missing)", w[k])
				continue
			}
			subset(gv, w[k], path+"."+k, fail)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			fail(path, got, want)
			return
		}
		for i := range w {
			subset(g[i], w[i], fmt.Sprintf("%s[%d]", path, i), fail)
		}
	default:
		if gf, ok := number(got); ok {
			if wf, ok := number(want); ok && gf == wf {
				return
			}
		}
		if got != want {
			fail(path, got, want)
		}
	}
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	}
	return 0, false
}

func show(v any) string {
	if s, ok := v.(string); ok && s == "(missing)" {
		return s
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Slack links (<url|text>) stay readable
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func sorted(l []string) []string {
	out := slices.Clone(l)
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func list(l []string) string {
	return "[" + strings.Join(sorted(l), ", ") + "]"
}
