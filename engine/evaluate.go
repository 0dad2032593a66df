package engine

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"alorules"
	"alorules/actions"
	"alorules/alo"
	"alorules/store"
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

	// Entity is the key of the thing the event is about; "" if none.
	Entity string
	// PreviousEventID is the entity's event before this one, whose
	// payload the rules saw as previous; "" if none.
	PreviousEventID string
	// Changed are the leaf paths that differ from the previous payload
	// (at most alorules.MaxChanged; ChangedMore counts the rest).
	Changed     []string
	ChangedMore int
	// Deferred says what the event did to timers and digests.
	Deferred []alorules.Deferral
	// Timers are the timers to set, CancelTimers the ids of pending ones
	// to drop, Digests the additions to open digests.
	Timers       []*store.Timer
	CancelTimers []string
	Digests      []*store.DigestAdd

	// payload is the event's decoded payload, which the engine keeps as
	// the entity's next previous when the rules read it.
	payload any
	// ignored is the entity's remembered event whose payload did not
	// decode, and why: it was taken as nothing remembered.
	ignored    string
	ignoredErr error
}

// Evaluate matches ev against every rule in file order. thr may be nil (no
// throttling, as for replays and tests of candidate rules). The loop guard
// is not applied: it counts firings over time, which only the Engine's
// matcher sees. No previous payload is known: previous is nil, and
// changed() is true for every path that has a value.
func (rs *RuleSet) Evaluate(ev *alorules.Event, now time.Time, thr Throttles) Evaluation {
	return rs.evaluate(context.Background(), ev, now, thr, nil)
}

// EvaluateAfter is Evaluate with prev as the event before ev about the same
// entity (nil for none): for replays and dry runs, which must see the
// previous payload the matcher saw.
func (rs *RuleSet) EvaluateAfter(ev, prev *alorules.Event, now time.Time, thr Throttles) Evaluation {
	eval, _ := rs.evaluateWith(context.Background(), evalInput{ev: ev, now: now, thr: thr, recall: recallEvent(prev)})
	return eval
}

// recallEvent remembers one given event as every entity's previous.
func recallEvent(prev *alorules.Event) recallFunc {
	if prev == nil {
		return nil
	}
	return func(context.Context, string, bool) (recalled, error) {
		return recalled{eventID: prev.ID, raw: prev.Payload}, nil
	}
}

func (rs *RuleSet) evaluate(ctx context.Context, ev *alorules.Event, now time.Time, thr Throttles, guard *loopGuard) Evaluation {
	eval, _ := rs.evaluateWith(ctx, evalInput{ev: ev, now: now, thr: thr, guard: guard})
	return eval
}

// recalled is what is remembered about an event's entity.
type recalled struct {
	eventID string // "" if nothing is remembered
	raw     json.RawMessage
	// payload is raw decoded, if the recall had it at hand; nil means
	// it is to be decoded when needed.
	payload any
	timers  []*store.Timer
}

// recallFunc looks up an entity by key: the engine's is the store (one
// read per event), with a cache of decoded payloads for rule sets that
// read them (decoded).
type recallFunc func(ctx context.Context, key string, decoded bool) (recalled, error)

// evalInput is one evaluation's inputs.
type evalInput struct {
	ev    *alorules.Event
	now   time.Time
	thr   Throttles
	guard *loopGuard
	// recall, if set, gives the entity's previous payload and pending
	// timers; its error ends the evaluation (the store failed).
	recall recallFunc
}

// pass is one event on its way through a rule set: decoded once, with one
// machine, and what is remembered about its entity.
type pass struct {
	rs      *RuleSet
	in      evalInput
	payload any
	m       *machine
	entity  string
	prevID  string
	prevRaw json.RawMessage
	// pending are the entity's timers by rule; unless caches each
	// rule's "unless" for this event.
	pending map[string]*store.Timer
	unless  map[*rule]unlessResult
}

type unlessResult struct {
	held bool
	err  string
}

func (rs *RuleSet) evaluateWith(ctx context.Context, in evalInput) (Evaluation, error) {
	ev := in.ev
	ti := rs.byType[alo.NormalizeType(ev.Type)]
	if ti == nil {
		ti = rs.anyType
	}
	out := Evaluation{Results: slices.Clone(ti.results)}
	if len(ti.apply) == 0 && in.recall == nil {
		return out, nil
	}
	payload, perr := decodePayload(ev.Payload)
	out.payload = payload
	m := newMachine(envInput{Event: ev, Payload: payload, Now: in.now, noState: !rs.readsState})
	defer m.release()
	m.fast = newFastState(m.env, rs.paths, &m.chg)
	ps := &pass{rs: rs, in: in, payload: payload, m: m}
	if perr == nil && (in.recall != nil || rs.deferred || (in.guard != nil && rs.loop > 0)) {
		ps.entity = rs.entityKey(m, alo.NormalizeType(ev.Type))
		out.Entity = ps.entity
	}
	if ps.entity != "" && in.recall != nil {
		rec, err := in.recall(ctx, ps.entity, rs.readsState)
		if err != nil {
			return out, fmt.Errorf("entity %s: %w", ps.entity, err)
		}
		if rec.eventID != "" {
			ps.previous(rec, &out)
		}
		for _, t := range rec.timers {
			if ps.pending == nil {
				ps.pending = map[string]*store.Timer{}
			}
			ps.pending[t.Rule] = t
		}
	}
	unlessErrs := ps.checkTimers(&out)
	for _, i := range ti.apply {
		r := rs.rules[i]
		res := &out.Results[i]
		matched := false
		switch {
		case perr != nil && r.cond != nil:
			res.Outcome, res.Error = alorules.OutcomeError, perr.Error()
		case unlessErrs[r] != "":
			res.Outcome, res.Error = alorules.OutcomeError, unlessErrs[r]
			delete(unlessErrs, r)
		default:
			matched, res.Error = rs.test(m, r)
			res.Outcome = alorules.OutcomeNotMatched
			if res.Error != "" {
				res.Outcome = alorules.OutcomeError
			}
		}
		if matched {
			res.Outcome, res.Error = ps.fire(ctx, r, &out)
			if r.stop {
				// Later rules are not evaluated: they are left out.
				res.Stopped = true
				out.Results = out.Results[:i+1]
				break
			}
		}
	}
	// An "unless" that failed for a rule the event's type does not reach
	// is still the rule's problem to show.
	for r, msg := range unlessErrs {
		for i := range out.Results {
			if out.Results[i].Rule == r.name {
				out.Results[i].Outcome, out.Results[i].Error = alorules.OutcomeError, msg
			}
		}
	}
	return out, nil
}

// previous gives the rules the entity's previous payload, and lists for
// the match record the paths that changed since. The paths come from the
// two texts, so the previous payload is decoded only when a rule reads it.
// One that does not decode is ignored, as if nothing were remembered.
func (ps *pass) previous(rec recalled, out *Evaluation) {
	if bytes.Equal(bytes.TrimSpace(rec.raw), []byte("null")) {
		return // decodes to nil: nothing to compare with
	}
	changed, more, err := diffRaw(rec.raw, ps.in.ev.Payload)
	prev := rec.payload
	if err == nil && prev == nil && ps.rs.readsState {
		prev, err = decodePayload(rec.raw)
	}
	if err != nil {
		out.ignored, out.ignoredErr = rec.eventID, err
		return
	}
	if prev != nil {
		ps.m.setPrevious(prev)
	}
	ps.prevID, ps.prevRaw = rec.eventID, rec.raw
	out.PreviousEventID, out.Changed, out.ChangedMore = rec.eventID, changed, more
}

// entityKey renders the entity key for an event of type typ: the type's
// own key if the file names one, else the default. An error (a key
// expression that fails on this payload) means no entity.
func (rs *RuleSet) entityKey(m *machine, typ string) string {
	t := rs.entity.key
	if k, ok := rs.entity.types[typ]; ok {
		t = k
	}
	if t == nil {
		return ""
	}
	k, err := renderKey(m, t)
	if err != nil {
		return ""
	}
	return k
}

// checkTimers evaluates the "unless" of every timer pending for the
// entity with this event, whatever its type: a timer is cancelled as soon
// as any event about the entity makes it true. It returns the rules whose
// "unless" failed to run.
func (ps *pass) checkTimers(out *Evaluation) map[*rule]string {
	var errs map[*rule]string
	for name, t := range ps.pending {
		r := ps.rs.byName[name]
		if r == nil || r.after == 0 || r.unless == nil {
			continue // fires (or is dropped) when due
		}
		u := ps.unlessOf(r)
		switch {
		case u.err != "":
			if errs == nil {
				errs = map[*rule]string{}
			}
			errs[r] = u.err
		case u.held:
			out.CancelTimers = append(out.CancelTimers, t.ID)
			out.Deferred = append(out.Deferred, alorules.Deferral{Rule: r.name, Kind: alorules.TimerCancelled, TimerID: t.ID, Due: t.Due})
			delete(ps.pending, name)
		}
	}
	// Map order must not reach the record.
	slices.SortFunc(out.Deferred, func(a, b alorules.Deferral) int { return strings.Compare(a.Rule, b.Rule) })
	slices.Sort(out.CancelTimers)
	return errs
}

// unlessOf runs a rule's "unless" once per event.
func (ps *pass) unlessOf(r *rule) unlessResult {
	if u, ok := ps.unless[r]; ok {
		return u
	}
	var u unlessResult
	if r.unless != nil {
		held, msg := runCondition(ps.m, r.unless)
		if msg != "" {
			msg = "unless: " + msg
		}
		u = unlessResult{held: held, err: msg}
	}
	if ps.unless == nil {
		ps.unless = map[*rule]unlessResult{}
	}
	ps.unless[r] = u
	return u
}

// test runs a rule's condition; a run-time error is reported, never taken
// as false.
func (rs *RuleSet) test(m *machine, r *rule) (bool, string) {
	if r.cond == nil {
		return true, ""
	}
	held, msg := runCondition(m, r.cond)
	if msg != "" {
		msg = "if: " + msg
	}
	return held, msg
}

// runCondition runs a boolean program, natively when it can.
func runCondition(m *machine, p *program) (bool, string) {
	if p.fast != nil {
		if v, ok := p.fast(m.fast); ok {
			return v, ""
		}
	}
	v, err := m.run(p)
	if err != nil {
		return false, err.Error()
	}
	b, _ := v.(bool)
	return b, ""
}

// fire handles a rule whose condition held: a timer or a digest for
// deferred rules; else throttle, loop guard, then an execution.
func (ps *pass) fire(ctx context.Context, r *rule, out *Evaluation) (alorules.Outcome, string) {
	switch {
	case r.after > 0:
		return ps.setTimer(r, out)
	case r.digest != nil:
		return ps.collect(r, out)
	}
	rs, m, now := ps.rs, ps.m, ps.in.now
	// The loop guard counts by the throttle key, or else by the entity.
	var key, loopKey string
	if r.throttle != nil {
		k, err := renderKey(m, r.throttle.key)
		if err != nil {
			return alorules.OutcomeError, "throttle.key: " + err.Error()
		}
		key, loopKey = r.name+":"+k, k
		if _, opened := out.Throttles[key]; opened {
			return alorules.OutcomeThrottled, ""
		}
		if ps.in.thr != nil {
			until, err := ps.in.thr.ThrottledUntil(ctx, key)
			if err != nil {
				return alorules.OutcomeError, "throttle: " + err.Error()
			}
			if until.After(now) {
				return alorules.OutcomeThrottled, ""
			}
		}
	} else {
		loopKey = ps.entity
	}
	if loopKey != "" && ps.in.guard != nil && rs.loop > 0 && !ps.in.guard.allow(r.name, loopKey, now, rs.loop) {
		return alorules.OutcomeLoop, fmt.Sprintf("fired more than %d times in a minute for key %q; stopped for this key until a minute passes without it firing (raise defaults.loop_limit if this is expected)", rs.loop, loopKey)
	}
	if r.throttle != nil {
		if out.Throttles == nil {
			out.Throttles = map[string]time.Time{}
		}
		out.Throttles[key] = now.Add(r.throttle.per)
	}
	if len(r.steps) > 0 {
		ex := rs.execution(m, r, ps.in.ev, now)
		if r.readsPrevious && ps.prevRaw != nil {
			ex.Vars = map[string]json.RawMessage{"previous": ps.prevRaw}
		}
		out.Executions = append(out.Executions, ex)
	}
	return alorules.OutcomeMatched, ""
}

// setTimer starts the timer of an "after" rule for the event's entity,
// unless its "unless" holds already or a timer is pending (whose first
// due time stays).
func (ps *pass) setTimer(r *rule, out *Evaluation) (alorules.Outcome, string) {
	if ps.entity == "" {
		return alorules.OutcomeError, "after: the event names no entity (entity.key gave nothing), so no later event could cancel a timer"
	}
	u := ps.unlessOf(r)
	switch {
	case u.err != "":
		return alorules.OutcomeError, u.err
	case u.held:
		out.Deferred = append(out.Deferred, alorules.Deferral{Rule: r.name, Kind: alorules.TimerNotSet})
	case ps.pending[r.name] != nil:
		t := ps.pending[r.name]
		out.Deferred = append(out.Deferred, alorules.Deferral{Rule: r.name, Kind: alorules.TimerKept, TimerID: t.ID, Due: t.Due})
	default:
		now := ps.in.now
		t := &store.Timer{ID: store.NewID(now), Rule: r.name, Entity: ps.entity, EventID: ps.in.ev.ID,
			SetAt: now, Due: ps.happenedAt().Add(r.after), PreviousEventID: ps.prevID}
		out.Timers = append(out.Timers, t)
		out.Deferred = append(out.Deferred, alorules.Deferral{Rule: r.name, Kind: alorules.TimerSet, TimerID: t.ID, Due: t.Due})
	}
	return alorules.OutcomeMatched, ""
}

// happenedAt is when the event was received, or the matcher's now if that
// is earlier (a clock moved back): timers count "after" from the event,
// and digest windows collect events by receipt, so that a matcher that
// fell behind neither delays a timer nor files an event in a later window.
func (ps *pass) happenedAt() time.Time {
	if at := ps.in.ev.ReceivedAt; !at.IsZero() && at.Before(ps.in.now) {
		return at
	}
	return ps.in.now
}

// collect adds the event to its digest.
func (ps *pass) collect(r *rule, out *Evaluation) (alorules.Outcome, string) {
	key, err := renderKey(ps.m, r.digest.key)
	if err != nil {
		return alorules.OutcomeError, "digest.key: " + err.Error()
	}
	out.Digests = append(out.Digests, &store.DigestAdd{Rule: r.name, Key: key, EventID: ps.in.ev.ID,
		At: ps.happenedAt(), Window: r.digest.window, Max: r.digest.max})
	out.Deferred = append(out.Deferred, alorules.Deferral{Rule: r.name, Kind: alorules.DigestAdded, Key: key})
	return alorules.OutcomeMatched, ""
}

func renderKey(m *machine, t *tstring) (string, error) {
	if t == nil {
		return "", nil
	}
	if t.fast != nil && m.fast != nil {
		if v, ok := t.fast(m.fast); ok {
			return stringify(v), nil
		}
	}
	v, err := t.render(m)
	if err != nil {
		return "", err
	}
	return stringify(v), nil
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
			// cost. A step that cannot render carries the error now,
			// so that the match shows why, in the words the runner
			// will use when it fails the step.
			if v, err := s.tree.render(m); err != nil {
				sr.Error = "render: " + rs.Secrets.String(stepError(r, s, err).Error())
			} else {
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
	fail := func(err error) (actions.Spec, error) { return nil, stepError(r, s, err) }
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

// stepError names the rule and the step (counted from 1) in a render error.
func stepError(r *rule, s *step, err error) error {
	return fmt.Errorf("rule %q: step %d (%s): %w", r.name, s.index+1, s.kind, err)
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

// loopGuard counts firings per rule and key. A rule that fires more than
// its limit within a minute for one key (typically because its own steps
// cause new events about the same action) is stopped for that key until a
// whole minute passes without an attempt to fire: a loop that the guard
// broke then goes quiet and is let through again, while one still fed
// from outside stays stopped. Counters are in memory: a restart forgets
// them, which only delays the guard by a minute.
type loopGuard struct {
	mu        sync.Mutex
	keys      map[loopKey]*loopCount
	lastSweep time.Time
}

type loopKey struct{ rule, key string }

type loopCount struct {
	start   time.Time // of the current one-minute window
	count   int       // firings in it
	since   time.Time // when the key was stopped
	until   time.Time // stopped until then; each attempt moves it on
	refused int       // attempts refused since then
}

// LoopSuspension is a rule stopped for one key by the loop guard.
type LoopSuspension struct {
	Rule string `json:"rule"`
	Key  string `json:"key"`
	// Since is when the guard stopped it; Until, when it will be let
	// through again unless it keeps trying.
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	Refused int       `json:"refused"`
}

func newLoopGuard() *loopGuard { return &loopGuard{keys: map[loopKey]*loopCount{}} }

// allow counts one firing of rule for key at now and reports whether it
// may run.
func (g *loopGuard) allow(rule, key string, now time.Time, limit int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweep(now)
	k := loopKey{rule, key}
	c := g.keys[k]
	if c == nil {
		c = &loopCount{start: now}
		g.keys[k] = c
	}
	if now.Before(c.until) {
		c.until = now.Add(time.Minute)
		c.refused++
		return false
	}
	if now.Sub(c.start) >= time.Minute {
		c.start, c.count, c.refused = now, 0, 0
	}
	c.count++
	if c.count > limit {
		c.since, c.until, c.refused = now, now.Add(time.Minute), 1
		return false
	}
	return true
}

// sweep forgets, once a minute, the keys that are neither counting nor
// stopped, so that a flood of actions does not grow the map for good.
func (g *loopGuard) sweep(now time.Time) {
	if now.Sub(g.lastSweep) < time.Minute {
		return
	}
	g.lastSweep = now
	for k, c := range g.keys {
		if now.Sub(c.start) >= time.Minute && !now.Before(c.until) {
			delete(g.keys, k)
		}
	}
}

// suspended lists the keys stopped at now, by rule and key.
func (g *loopGuard) suspended(now time.Time) []LoopSuspension {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []LoopSuspension
	for k, c := range g.keys {
		if now.Before(c.until) {
			out = append(out, LoopSuspension{Rule: k.rule, Key: k.key, Since: c.since, Until: c.until, Refused: c.refused})
		}
	}
	slices.SortFunc(out, func(a, b LoopSuspension) int {
		return cmp.Or(strings.Compare(a.Rule, b.Rule), strings.Compare(a.Key, b.Key))
	})
	return out
}
