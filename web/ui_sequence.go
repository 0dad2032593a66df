package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"

	"alorules"
	"alorules/engine"
)

// The playground's sequence form runs a short list of events, with moves
// of a simulated clock between them, through candidate rules (or the
// loaded ones) on a temporary store: what the rule unit tests do, with
// the results on the page. Nothing is sent and nothing here is stored.

// Limits of a playground sequence: it runs inside a request.
const (
	maxSequenceSteps   = 50
	maxSequenceAdvance = 31 * 24 * time.Hour
)

// defaultSequence prefills the sequence box.
const defaultSequence = `# Events (inline, or event_id: of a stored one) and clock moves.
- event: { type: action_created, action: { id: act-1, title: Pump failure, priority: Urgent, status: Open } }
- advance: 1h
- event: { type: action_status_updated, action: { id: act-1, title: Pump failure, priority: Urgent, status: Doing } }
- advance: 4h
`

type sequenceData struct {
	Issues []engine.Issue
	Err    string
	Steps  []sequenceStep
}

type sequenceStep struct {
	N     int
	Label string
	*engine.SimStep
	Matched []string
}

type sequenceItem struct {
	Event   yaml.Node `yaml:"event"`
	EventID string    `yaml:"event_id"`
	Advance string    `yaml:"advance"`
}

// runSequence fills d.Seq from the form's rules and sequence.
func (a *Admin) runSequence(c echo.Context, d *playgroundData) error {
	ctx := c.Request().Context()
	seq := &sequenceData{}
	d.Seq = seq
	var rs *engine.RuleSet
	if strings.TrimSpace(d.Rules) == "" {
		if rs = a.Rules.Current(); rs == nil {
			seq.Err = "No rules are loaded; paste candidate rules."
			return nil
		}
	} else {
		src := a.candidateFile(d.Rules).file
		getenv := a.Getenv
		if getenv == nil {
			getenv = func(string) string { return "" }
		}
		var err error
		rs, _, err = engine.Parse("candidate.yaml", []byte(src), getenv)
		var le *engine.LoadError
		switch {
		case errors.As(err, &le):
			seq.Issues = le.Issues
			return nil
		case err != nil:
			seq.Err = err.Error()
			return nil
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(d.Sequence))
	dec.KnownFields(true)
	var items []sequenceItem
	if err := dec.Decode(&items); err != nil {
		seq.Err = "sequence: " + err.Error()
		return nil
	}
	if len(items) == 0 || len(items) > maxSequenceSteps {
		seq.Err = fmt.Sprintf("sequence: want 1 to %d steps, got %d", maxSequenceSteps, len(items))
		return nil
	}
	sim, err := engine.NewSimulation(rs, a.now())
	if err != nil {
		return err
	}
	defer sim.Close()
	var advanced time.Duration
	for i, it := range items {
		st := sequenceStep{N: i + 1}
		var step *engine.SimStep
		switch {
		case it.Advance != "" && it.Event.IsZero() && it.EventID == "":
			dur, err := time.ParseDuration(it.Advance)
			if err != nil || dur < 0 {
				seq.Err = fmt.Sprintf("step %d: advance: want a duration such as 2h, got %q", i+1, it.Advance)
				return nil
			}
			if advanced += dur; advanced > maxSequenceAdvance {
				seq.Err = fmt.Sprintf("step %d: the clock may move at most %s in all", i+1, maxSequenceAdvance)
				return nil
			}
			st.Label = "advance " + it.Advance
			step, err = sim.Advance(ctx, dur)
			if err != nil {
				return err
			}
		case it.Advance == "" && (it.Event.IsZero() != (it.EventID == "")):
			body, err := a.sequenceBody(c, it)
			if err != nil {
				seq.Err = fmt.Sprintf("step %d: %v", i+1, err)
				return nil
			}
			if step, err = sim.Send(ctx, body); err != nil {
				seq.Err = fmt.Sprintf("step %d: %v", i+1, err)
				return nil
			}
			st.Label = "event " + step.Event.Type
		default:
			seq.Err = fmt.Sprintf("step %d: want exactly one of event, event_id or advance", i+1)
			return nil
		}
		st.SimStep = step
		if step.Match != nil {
			for _, r := range step.Match.Results {
				if r.Outcome == alorules.OutcomeMatched {
					st.Matched = append(st.Matched, r.Rule)
				}
			}
		}
		seq.Steps = append(seq.Steps, st)
	}
	return nil
}

func (a *Admin) sequenceBody(c echo.Context, it sequenceItem) ([]byte, error) {
	if it.EventID != "" {
		ev, err := a.Store.Event(c.Request().Context(), it.EventID)
		if err != nil {
			return nil, fmt.Errorf("event_id %s: %w", it.EventID, err)
		}
		return ev.Payload, nil
	}
	if it.Event.Kind == yaml.ScalarNode {
		if !json.Valid([]byte(it.Event.Value)) {
			return nil, errors.New("event: want a mapping or JSON text")
		}
		return []byte(it.Event.Value), nil
	}
	var v any
	if err := it.Event.Decode(&v); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return buf.Bytes(), nil
}
