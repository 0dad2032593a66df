package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"alorules"
	"alorules/actions"
	"alorules/alo"
)

// Throttles tells when a throttle key's window ends. *store.Store
// satisfies it; keys are scoped by rule name.
type Throttles interface {
	ThrottledUntil(ctx context.Context, key string) (time.Time, error)
}

// Evaluation is the outcome of matching one event against a rule set.
type Evaluation struct {
	// Results has one entry per rule walked, in file order; rules after a
	// rule that stopped the walk are left out.
	Results []alorules.RuleResult
	// Executions are the runs to queue, one per matched rule with steps.
	// IDs are empty: the store assigns them.
	Executions []*alorules.Execution
	// Throttles are the windows opened by this event (key -> until), to
	// save with the match so they outlive a restart.
	Throttles map[string]time.Time
}

// Evaluate matches ev against every rule in file order. thr may be nil (no
// throttling, as for replays and tests of candidate rules). The loop guard
// is not applied: it counts firings over time, which only the Engine's
// matcher sees.
func (rs *RuleSet) Evaluate(ev *alorules.Event, now time.Time, thr Throttles) Evaluation {
	return rs.evaluate(context.Background(), ev, now, thr, nil)
}

func (rs *RuleSet) evaluate(ctx context.Context, ev *alorules.Event, now time.Time, thr Throttles, guard *loopGuard) Evaluation {
	ti := rs.byType[alo.NormalizeType(ev.Type)]
	if ti == nil {
		ti = rs.anyType
	}
	out := Evaluation{Results: slices.Clone(ti.results)}
	if len(ti.apply) == 0 {
		return out
	}
	payload, perr := decodePayload(ev.Payload)
	m := newMachine(envInput{Event: ev, Payload: payload, Now: now})
	defer m.release()
	m.fast = newFastState(m.env, rs.paths)
	for _, i := range ti.apply {
		r := rs.rules[i]
		res := &out.Results[i]
		matched := false
		if perr != nil && r.cond != nil {
			res.Outcome, res.Error = alorules.OutcomeError, perr.Error()
		} else {
			matched, res.Error = rs.test(m, r)
			res.Outcome = alorules.OutcomeNotMatched
			if res.Error != "" {
				res.Outcome = alorules.OutcomeError
			}
		}
		if matched {
			res.Outcome, res.Error = rs.fire(ctx, m, r, ev, payload, now, thr, guard, &out)
			if r.stop {
				// Later rules are not evaluated: they are left out.
				res.Stopped = true
				out.Results = out.Results[:i+1]
				break
			}
		}
	}
	return out
}

// test runs a rule's condition; a run-time error is reported, never taken
// as false.
func (rs *RuleSet) test(m *machine, r *rule) (bool, string) {
	if r.cond == nil {
		return true, ""
	}
	if r.cond.fast != nil {
		if v, ok := r.cond.fast(m.fast); ok {
			return v, ""
		}
	}
	v, err := m.run(r.cond)
	if err != nil {
		return false, "if: " + err.Error()
	}
	b, _ := v.(bool)
	return b, ""
}

// fire handles a rule whose condition held: throttle, loop guard, then an
// execution.
func (rs *RuleSet) fire(ctx context.Context, m *machine, r *rule, ev *alorules.Event, payload any, now time.Time, thr Throttles, guard *loopGuard, out *Evaluation) (alorules.Outcome, string) {
	var key string
	haveKey := false
	if r.throttle != nil {
		k, err := renderKey(m, r.throttle.key)
		if err != nil {
			return alorules.OutcomeError, "throttle.key: " + err.Error()
		}
		key, haveKey = r.name+":"+k, true
		if _, opened := out.Throttles[key]; opened {
			return alorules.OutcomeThrottled, ""
		}
		if thr != nil {
			until, err := thr.ThrottledUntil(ctx, key)
			if err != nil {
				return alorules.OutcomeError, "throttle: " + err.Error()
			}
			if until.After(now) {
				return alorules.OutcomeThrottled, ""
			}
		}
	} else if id, ok := entityKey(payload); ok {
		key, haveKey = r.name+":"+id, true
	}
	if haveKey && guard != nil && rs.loop > 0 && !guard.allow(key, now, rs.loop) {
		return alorules.OutcomeLoop, fmt.Sprintf("fired more than %d times this minute for key %q; suspended until the minute ends (raise defaults.loop_limit if this is expected)", rs.loop, key)
	}
	if r.throttle != nil {
		if out.Throttles == nil {
			out.Throttles = map[string]time.Time{}
		}
		out.Throttles[key] = now.Add(r.throttle.per)
	}
	if len(r.steps) > 0 {
		out.Executions = append(out.Executions, rs.execution(m, r, ev, now))
	}
	return alorules.OutcomeMatched, ""
}

func renderKey(m *machine, t *tstring) (string, error) {
	if t == nil {
		return "", nil
	}
	v, err := t.render(m)
	if err != nil {
		return "", err
	}
	return stringify(v), nil
}

// entityKey is the ALO action id, the default key of the loop guard for
// rules without a throttle.
func entityKey(payload any) (string, bool) {
	obj, ok := payload.(map[string]any)
	if !ok {
		return "", false
	}
	action, ok := obj["action"].(map[string]any)
	if !ok {
		return "", false
	}
	switch id := action["id"].(type) {
	case string:
		return id, id != ""
	case int:
		return strconv.Itoa(id), true
	}
	return "", false
}

// execution builds the queued execution of a matched rule. Steps that do
// not read steps.<id> are rendered now, so the UI shows what will be sent
// even before it runs.
func (rs *RuleSet) execution(m *machine, r *rule, ev *alorules.Event, now time.Time) *alorules.Execution {
	ex := &alorules.Execution{
		EventID:     ev.ID,
		Rule:        r.name,
		RuleSetHash: rs.hash,
		Status:      alorules.StatusQueued,
		CreatedAt:   now,
		UpdatedAt:   now,
		Retry:       r.retry,
		Timeout:     r.timeout,
		Steps:       make([]alorules.StepResult, len(r.steps)),
	}
	for i, s := range r.steps {
		sr := alorules.StepResult{Index: i, ID: s.id, Kind: s.kind, ContinueOnError: s.continueOnError, Status: alorules.StatusQueued}
		if !s.usesSteps {
			// The record only: the runner renders again through the
			// spec and validates, so matching skips that part of the
			// cost. A step that cannot render is left without one and
			// fails, with the message, when it runs.
			if v, err := s.tree.render(m); err == nil {
				sr.Request = redactedJSON(v, rs.jsonSecrets)
			}
		}
		ex.Steps[i] = sr
	}
	return ex
}

// renderSpec renders a step: template tree -> plain values -> JSON ->
// strict decode into the spec -> the spec's validation against its
// connection. Errors name the rule and the step (counted from 1).
func (rs *RuleSet) renderSpec(m *machine, r *rule, s *step) (actions.Spec, error) {
	fail := func(err error) (actions.Spec, error) {
		return nil, fmt.Errorf("rule %q: step %d (%s): %w", r.name, s.index+1, s.kind, err)
	}
	v, err := s.tree.render(m)
	if err != nil {
		return fail(err)
	}
	spec, err := actions.NewSpec(s.kind)
	if err != nil {
		return fail(err)
	}
	if err := decodeStrict(v, spec); err != nil {
		return fail(err)
	}
	if err := spec.Validate(s.conn); err != nil {
		return fail(err)
	}
	return spec, nil
}

// redactedJSON is a rendered step as recorded: JSON with every secret
// replaced. The redactor holds the secrets as JSON escapes them, so one
// marshal and one replace suffice.
func redactedJSON(v any, red alorules.Redactor) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// No HTML escaping: the record is shown as text, escaped by the UI.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil
	}
	return json.RawMessage(red.String(string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))))
}

// jsonRedactor redacts secrets inside JSON text, where they appear
// escaped.
func jsonRedactor(secrets []string) alorules.Redactor {
	escaped := make([]string, 0, len(secrets))
	for _, s := range secrets {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if enc.Encode(s) == nil {
			e := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			escaped = append(escaped, string(e[1:len(e)-1]))
		}
	}
	return alorules.NewRedactor(escaped...)
}

// loopGuard counts firings per rule and key in the current minute. A rule
// that fires more than its limit for one key (typically because its own
// steps cause new events about the same action) is stopped for that key
// until the minute ends. Counters are in memory: a restart forgets them,
// which only delays the guard by a minute.
type loopGuard struct {
	mu     sync.Mutex
	minute time.Time
	counts map[string]int
}

func newLoopGuard() *loopGuard { return &loopGuard{counts: map[string]int{}} }

// allow counts one firing of key at now and reports whether it is within
// limit.
func (g *loopGuard) allow(key string, now time.Time, limit int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := now.Truncate(time.Minute); !m.Equal(g.minute) {
		g.minute = m
		clear(g.counts)
	}
	g.counts[key]++
	return g.counts[key] <= limit
}
