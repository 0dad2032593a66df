package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"alorules"
	"alorules/alo"
)

// TestResult is what a rule set would do with one event, without running
// or recording anything: for `alorules test` and POST /api/v1/rules/test.
type TestResult struct {
	RuleSetHash string     `json:"ruleset_hash"`
	EventID     string     `json:"event_id,omitempty"`
	Type        string     `json:"type"`
	Results     []TestRule `json:"results"`
	// Entity, PreviousEventID and Changed are as the matcher would record
	// them, given the previous event.
	Entity          string   `json:"entity,omitempty"`
	PreviousEventID string   `json:"previous_event_id,omitempty"`
	Changed         []string `json:"changed,omitempty"`
	// Note says why no rule was evaluated (a handshake), or, from the
	// admin API, that the previous event the service saw is gone.
	Note string `json:"note,omitempty"`
}

// handshakeNote explains the empty result of testing a handshake.
const handshakeNote = "a URL verification handshake: the service answers and stores it, but never matches it against rules"

// TestRule is one rule's outcome and, when it matched, its rendered steps.
type TestRule struct {
	alorules.RuleResult
	// Deferred is what the event would do to the rule's timer or digest.
	Deferred []alorules.Deferral `json:"deferred,omitempty"`
	// Note explains steps that would not run now (timers, digests).
	Note  string     `json:"note,omitempty"`
	Steps []TestStep `json:"steps,omitempty"`
}

// TestStep is one rendered step, secrets redacted.
type TestStep struct {
	Index   int             `json:"index"`
	ID      string          `json:"id,omitempty"`
	Kind    string          `json:"kind"`
	Request json.RawMessage `json:"request,omitempty"`
	Error   string          `json:"error,omitempty"`
	// Note explains a step that can only be rendered when it runs.
	Note string `json:"note,omitempty"`
}

// Test evaluates ev against rs at now and renders the steps of matching
// rules. Nothing is sent, saved or counted: throttles and the loop guard
// are not consulted, and no previous event is known. Steps that read
// steps.<id> are rendered against empty results of the earlier steps;
// when that fails, Note says so.
func Test(rs *RuleSet, ev *alorules.Event, now time.Time) TestResult {
	return TestAfter(rs, ev, nil, now)
}

// TestAfter is Test with prev as the entity's previous event (nil for
// none). A rule with after: shows its steps as they would render if the
// timer fired now; a digest rule, as if the digest held this event alone.
func TestAfter(rs *RuleSet, ev, prev *alorules.Event, now time.Time) TestResult {
	e := *ev
	e.Type = alo.NormalizeType(e.Type)
	if e.Handshake || alo.IsHandshake(e.Type) {
		return TestResult{RuleSetHash: rs.hash, EventID: e.ID, Type: e.Type, Results: []TestRule{}, Note: handshakeNote}
	}
	eval, _ := rs.evaluateWith(context.Background(), evalInput{ev: &e, now: now, recall: recallEvent(prev)})
	out := TestResult{RuleSetHash: rs.hash, EventID: e.ID, Type: e.Type, Results: make([]TestRule, len(eval.Results)),
		Entity: eval.Entity, PreviousEventID: eval.PreviousEventID, Changed: eval.Changed}
	payload, _ := decodePayload(e.Payload)
	var prevPayload any
	if eval.PreviousEventID != "" {
		prevPayload, _ = decodePayload(prev.Payload)
	}
	empty := map[string]any{}
	m := newMachine(envInput{Event: &e, Payload: payload, Previous: prevPayload, Now: now, Steps: empty})
	defer m.release()
	for i, res := range eval.Results {
		tr := TestRule{RuleResult: res}
		for _, d := range eval.Deferred {
			if d.Rule == res.Rule {
				tr.Deferred = append(tr.Deferred, d)
			}
		}
		r := rs.byName[res.Rule]
		if res.Outcome == alorules.OutcomeMatched && r != nil {
			clear(empty)
			switch {
			case r.after > 0:
				tr.Note = fmt.Sprintf("after %s: the steps run when the timer fires, unless a later event about %q makes unless true first; shown as they would render now", r.after, eval.Entity)
				m.env["timer"] = map[string]any{"entity": eval.Entity, "set_at": now, "due": now.Add(r.after), "after": r.after.String()}
			case r.digest != nil:
				tr.Note = fmt.Sprintf("digest: the steps run once when the %s window ends, with every event collected; shown with this event alone", r.digest.window)
				m.env["events"] = []any{payload}
				key := ""
				for _, d := range tr.Deferred {
					key = d.Key
				}
				m.env["digest"] = map[string]any{"key": key, "count": 1, "opened_at": now, "closed_at": now.Add(r.digest.window), "window": r.digest.window.String()}
			}
			for _, s := range r.steps {
				ts := TestStep{Index: s.index, ID: s.id, Kind: s.kind}
				spec, err := rs.renderSpec(m, r, s)
				switch {
				case err == nil:
					ts.Request = redactedJSON(spec, rs.jsonSecrets)
					if s.usesSteps {
						ts.Note = "reads steps.<id>: shown with empty results of the earlier steps"
					}
				case s.usesSteps:
					ts.Note = "reads steps.<id>: rendered when it runs (with empty results: " + rs.Secrets.String(err.Error()) + ")"
				default:
					ts.Error = rs.Secrets.String(err.Error())
				}
				if s.id != "" {
					empty[s.id] = stepValue("", 0, "")
				}
				tr.Steps = append(tr.Steps, ts)
			}
		}
		out.Results[i] = tr
	}
	return out
}

// NewEvent builds an event from a webhook body, as ingress would, for
// testing rules against captured payloads: the type is read from the
// body's "type" and normalised.
func NewEvent(payload []byte, receivedAt time.Time) (*alorules.Event, error) {
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(payload, &head); err != nil {
		return nil, fmt.Errorf("event: want a JSON object: %w", err)
	}
	if head.Type == nil || strings.TrimSpace(*head.Type) == "" {
		return nil, errors.New("event: no \"type\" string")
	}
	return &alorules.Event{
		Type:       alo.NormalizeType(*head.Type),
		RawType:    *head.Type,
		ReceivedAt: receivedAt,
		Payload:    json.RawMessage(payload),
		Handshake:  alo.IsHandshake(*head.Type),
	}, nil
}

// stepValue is what a template sees as steps.<id>: the status, the HTTP
// code, the body, and the body decoded when it is JSON (else nil).
func stepValue(status alorules.Status, code int, body string) map[string]any {
	var js any
	if body != "" {
		if v, err := decodePayload([]byte(body)); err == nil {
			js = v
		}
	}
	return map[string]any{"status": string(status), "code": code, "body": body, "json": js}
}

// stepsEnv is steps.<id> for every earlier step with an id.
func stepsEnv(results []alorules.StepResult) map[string]any {
	env := make(map[string]any, len(results))
	for _, sr := range results {
		if sr.ID != "" {
			env[sr.ID] = stepValue(sr.Status, sr.Code, sr.Body)
		}
	}
	return env
}
