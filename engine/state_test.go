package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

func decoded(t testing.TB, body string) any {
	t.Helper()
	if body == "" {
		return nil
	}
	v, err := decodePayload([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestChanged(t *testing.T) {
	tests := []struct {
		name, prev, cur, path string
		want                  bool
	}{
		{"flat same", `{"status":"Open"}`, `{"status":"Open"}`, "status", false},
		{"flat differs", `{"status":"Open"}`, `{"status":"Doing"}`, "status", true},
		{"nested same", `{"action":{"status":"Open","id":"a1"}}`, `{"action":{"status":"Open","id":"a1"}}`, "action.status", false},
		{"nested differs", `{"action":{"status":"Open"}}`, `{"action":{"status":"Completed"}}`, "action.status", true},
		{"subtree differs", `{"action":{"form":{"a":1}}}`, `{"action":{"form":{"a":2}}}`, "action", true},
		{"appeared", `{"action":{}}`, `{"action":{"status":"Open"}}`, "action.status", true},
		{"went away", `{"action":{"status":"Open"}}`, `{"action":{}}`, "action.status", true},
		{"missing both", `{"action":{}}`, `{"action":{}}`, "action.status", false},
		{"number kinds", `{"n":1}`, `{"n":1.0}`, "n", false},
		{"array element", `{"a":{"tags":["x","y"]}}`, `{"a":{"tags":["x","z"]}}`, "a.tags.1", true},
		{"array element same", `{"a":{"tags":["x","y"]}}`, `{"a":{"tags":["x","z"]}}`, "a.tags.0", false},
		{"array index out of range", `{"a":[1]}`, `{"a":[1]}`, "a.5", false},
		{"through a string", `{"a":"text"}`, `{"a":"text"}`, "a.b", false},
		{"no previous, value now", "", `{"action":{"status":"Open"}}`, "action.status", true},
		{"no previous, no value", "", `{"action":{}}`, "action.status", false},
		{"no previous, null value", "", `{"action":{"status":null}}`, "action.status", false},
		{"whole payload", `{"a":1}`, `{"a":2}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &changes{cur: decoded(t, tt.cur), prev: decoded(t, tt.prev)}
			if got := c.changed(tt.path); got != tt.want {
				t.Errorf("changed(%q): got %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

func TestDiffPaths(t *testing.T) {
	tests := []struct {
		name, prev, cur string
		want            []string
	}{
		{"same", `{"a":{"b":1}}`, `{"a":{"b":1}}`, nil},
		{"leaf", `{"type":"action_updated","action":{"status":"Open","id":"a1"}}`,
			`{"type":"action_status_updated","action":{"status":"Done","id":"a1"}}`, []string{"action.status", "type"}},
		{"added subtree", `{"a":{}}`, `{"a":{"form":{"x":1,"y":[1,2]}}}`, []string{"a.form.x", "a.form.y.0", "a.form.y.1"}},
		{"removed key", `{"a":1,"b":2}`, `{"a":1}`, []string{"b"}},
		{"kind change", `{"a":{"b":1}}`, `{"a":"gone"}`, []string{"a"}},
		{"array grew", `{"l":[1]}`, `{"l":[1,2]}`, []string{"l.1"}},
		{"emptied object", `{"a":{"b":1}}`, `{"a":{}}`, []string{"a.b"}},
		{"new empty object", `{}`, `{"a":{}}`, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more := diffPaths(decoded(t, tt.prev), decoded(t, tt.cur))
			if !slices.Equal(got, tt.want) || more != 0 {
				t.Errorf("got %q (+%d), want %q", got, more, tt.want)
			}
		})
	}
	// A payload rewritten wholesale is capped, deterministically.
	var a, b strings.Builder
	a.WriteString("{")
	b.WriteString("{")
	for i := range 120 {
		if i > 0 {
			a.WriteString(",")
			b.WriteString(",")
		}
		a.WriteString(`"k` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `":` + "1")
		b.WriteString(`"k` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `":` + "2")
	}
	a.WriteString("}")
	b.WriteString("}")
	first, more := diffPaths(decoded(t, a.String()), decoded(t, b.String()))
	if len(first) != alorules.MaxChanged || more == 0 {
		t.Fatalf("got %d paths and %d more, want %d and some more", len(first), more, alorules.MaxChanged)
	}
	for range 5 {
		again, _ := diffPaths(decoded(t, a.String()), decoded(t, b.String()))
		if !slices.Equal(again, first) {
			t.Fatalf("capped list depends on map order: got %q, then %q", first, again)
		}
	}
}

// The native evaluator answers for previous and changed() the way the VM
// does.
func TestFastStateDifferential(t *testing.T) {
	conds := []string{
		`changed("action.status")`, `!changed("action.status")`, `changed("action")`,
		`changed("action.status") && event.action?.status == "Completed"`,
		`previous == nil`, `previous != nil`, `previous?.action?.status == "Open"`,
		`previous?.action?.status != event.action?.status`, `previous.action.status == "Open"`,
	}
	pairs := [][2]string{
		{"", `{"action":{"status":"Open"}}`},
		{`{"action":{"status":"Open"}}`, `{"action":{"status":"Completed"}}`},
		{`{"action":{"status":"Completed"}}`, `{"action":{"status":"Completed"}}`},
		{`{"action":null}`, `{"action":{"status":"Open"}}`},
		{`{"other":1}`, `{"action":{"status":"Open"}}`},
		{`{"action":"text"}`, `{}`},
	}
	for _, src := range conds {
		p, err := compile(src, false, true)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		fc := newFastCompiler()
		fast := fc.compile(p.prog.Node())
		if fast == nil {
			t.Errorf("%s: got no native evaluator, want one", src)
			continue
		}
		answered := 0
		for _, pair := range pairs {
			m := newMachine(envInput{Event: rawEvent(t, `{"type":"action_updated"}`), Payload: decoded(t, pair[1]), Now: time.Now()})
			if prev := decoded(t, pair[0]); prev != nil {
				m.setPrevious(prev)
			}
			want, werr := m.run(p)
			got, ok := fast(newFastState(m.env, len(fc.paths), &m.chg))
			m.release()
			if !ok {
				continue
			}
			answered++
			if werr != nil {
				t.Errorf("%s on %s -> %s: got %v natively, the VM fails with %v", src, pair[0], pair[1], got, werr)
			} else if got != want {
				t.Errorf("%s on %s -> %s: got %v natively, the VM says %v", src, pair[0], pair[1], got, want)
			}
		}
		if answered == 0 {
			t.Errorf("%s: the native evaluator never answered", src)
		}
	}
}

// simEngine is an engine on a real store in a temp dir with a clock the
// test moves.
type simEngine struct {
	t     *testing.T
	st    *store.Store
	e     *Engine
	now   time.Time
	mu    sync.Mutex
	logs  *bytes.Buffer
	path  string
	rules string
}

func newSim(t *testing.T, rules string) *simEngine {
	t.Helper()
	dir := t.TempDir()
	s := &simEngine{t: t, now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), logs: &bytes.Buffer{},
		path: filepath.Join(dir, "alorules.db"), rules: filepath.Join(dir, "rules.yaml")}
	writeFile(t, s.rules, rules)
	s.open()
	return s
}

func (s *simEngine) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// open (re)starts the store and engine on the same file, as a restart
// would.
func (s *simEngine) open() {
	s.t.Helper()
	s.st = openStore(s.t, s.path)
	log := slog.New(slog.NewTextHandler(lockedWriter{&s.mu, s.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	s.e, err = New(Config{Store: s.st, RulesPath: s.rules, Getenv: getenv, Now: s.clock, Logger: log})
	if err != nil {
		s.t.Fatal(err)
	}
	st := s.st
	s.t.Cleanup(func() { st.Close() })
}

func (s *simEngine) restart() {
	s.t.Helper()
	if err := s.st.Close(); err != nil {
		s.t.Fatal(err)
	}
	s.open()
}

func (s *simEngine) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// send stores an event received now, matches it, fires what is due, and
// returns its match.
func (s *simEngine) send(body string) *alorules.Match {
	s.t.Helper()
	ev, err := NewEvent([]byte(body), s.clock())
	if err != nil {
		s.t.Fatal(err)
	}
	id := ingest(s.t, s.st, ev)
	s.matchAll()
	m, err := s.st.Match(context.Background(), id)
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *simEngine) matchAll() {
	s.t.Helper()
	for {
		n, err := s.e.MatchPending(context.Background())
		if err != nil {
			s.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func outcomeOf(m *alorules.Match, rule string) alorules.Outcome {
	for _, r := range m.Results {
		if r.Rule == rule {
			return r.Outcome
		}
	}
	return ""
}

// Transitions work on any payload shape: the entity key says where the id
// is, changed() where the field is.
func TestTransitions(t *testing.T) {
	tests := []struct {
		name   string
		rules  string
		events []string
		// want is the outcome of the rule "done" per event; previous is
		// the index of the event each one saw as previous (-1: none).
		want     []alorules.Outcome
		previous []int
		changed  [][]string
	}{
		{
			name: "nested action payloads",
			rules: `version: 1
rules:
  - name: done
    if: changed("action.status") && event.action?.status == "Completed"
`,
			events: []string{
				`{"type":"action_created","action":{"id":"a1","status":"Open","title":"Pump"}}`,
				`{"type":"action_updated","action":{"id":"a1","status":"Open","title":"Pump 2"}}`,
				`{"type":"action_status_updated","action":{"id":"a1","status":"Completed","title":"Pump 2"}}`,
				`{"type":"action_updated","action":{"id":"a1","status":"Completed","title":"Pump 3"}}`,
				`{"type":"action_status_updated","action":{"id":"a2","status":"Completed"}}`,
			},
			want:     []alorules.Outcome{"not_matched", "not_matched", "matched", "not_matched", "matched"},
			previous: []int{-1, 0, 1, 2, -1},
			changed:  [][]string{nil, {"action.title", "type"}, {"action.status", "type"}, {"action.title", "type"}, nil},
		},
		{
			name: "flat payloads with their own key",
			rules: `version: 1
entity: { key: "{{ event.ticket }}" }
rules:
  - name: done
    if: changed("state") && event.state == "closed"
`,
			events: []string{
				`{"type":"ticket","ticket":17,"state":"open"}`,
				`{"type":"ticket","ticket":17,"state":"closed"}`,
				`{"type":"ticket","ticket":18,"state":"closed"}`,
				`{"type":"ticket","ticket":17,"state":"closed"}`,
			},
			want:     []alorules.Outcome{"not_matched", "matched", "matched", "not_matched"},
			previous: []int{-1, 0, -1, 1},
			changed:  [][]string{nil, {"state"}, nil, nil},
		},
		{
			name: "a key per event type",
			rules: `version: 1
entity:
  types:
    action_message_added: "{{ event.message?.action_id }}"
rules:
  - name: done
    on: [action_message_added]
    if: previous?.action?.status == "Completed"
`,
			events: []string{
				`{"type":"action_status_updated","action":{"id":"a1","status":"Completed"}}`,
				`{"type":"action_message_added","message":{"action_id":"a1","content":"thanks"}}`,
				`{"type":"action_message_added","message":{"action_id":"a1","content":"again"}}`,
			},
			want:     []alorules.Outcome{"skipped", "matched", "not_matched"},
			previous: []int{-1, 0, 1},
		},
		{
			name: "events without an id neither see nor leave state",
			rules: `version: 1
rules:
  - name: done
    if: previous == nil
`,
			events: []string{
				`{"type":"action_updated","action":{"id":"a1","status":"Open"}}`,
				`{"type":"action_updated","action":{"status":"Open"}}`,
				`{"type":"action_updated","other":{"id":"a1"}}`,
				`{"type":"action_updated","action":{"id":""}}`,
				`{"type":"action_updated","action":{"id":"a1","status":"Doing"}}`,
			},
			want:     []alorules.Outcome{"matched", "matched", "matched", "matched", "not_matched"},
			previous: []int{-1, -1, -1, -1, 0},
			changed:  [][]string{nil, nil, nil, nil, {"action.status"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, tt.rules)
			var ids []string
			for i, body := range tt.events {
				m := s.send(body)
				ids = append(ids, m.EventID)
				if got := outcomeOf(m, "done"); got != tt.want[i] {
					t.Errorf("event %d: rule done: got %s, want %s", i+1, got, tt.want[i])
				}
				want := ""
				if p := tt.previous[i]; p >= 0 {
					want = ids[p]
				}
				if m.PreviousEventID != want {
					t.Errorf("event %d: got previous %q, want %q", i+1, m.PreviousEventID, want)
				}
				if tt.changed != nil && !slices.Equal(m.Changed, tt.changed[i]) {
					t.Errorf("event %d: got changed %q, want %q", i+1, m.Changed, tt.changed[i])
				}
			}
		})
	}
}

// Templates read previous and changed() too, also when the step renders
// after the entity moved on (and after a restart).
func TestPreviousInTemplates(t *testing.T) {
	s := newSim(t, `version: 1
connections:
  hook: { http: { base_url: "https://example.com" } }
rules:
  - name: moved
    if: changed("action.status") && previous != nil
    do:
      - http:
          connection: hook
          path: /x
          json: { from: "{{ previous?.action?.status }}", to: "{{ event.action?.status }}", title_changed: "{{ changed(\"action.title\") }}" }
`)
	s.send(`{"type":"action_created","action":{"id":"a1","status":"Open","title":"t"}}`)
	m := s.send(`{"type":"action_status_updated","action":{"id":"a1","status":"Doing","title":"t"}}`)
	s.send(`{"type":"action_status_updated","action":{"id":"a1","status":"Done","title":"t2"}}`)
	s.restart()
	exs, err := s.st.EventExecutions(context.Background(), m.EventID)
	if err != nil || len(exs) != 1 {
		t.Fatalf("got %d executions (%v), want 1", len(exs), err)
	}
	req, err := s.e.RenderStep(context.Background(), exs[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(req.Spec)
	for _, want := range []string{`"from":"Open"`, `"to":"Doing"`, `"title_changed":false`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("got %s, want it to contain %s", got, want)
		}
	}
}

// A payload too large to keep is not kept: the next event sees no
// previous, and the log says why.
func TestEntityStateLimit(t *testing.T) {
	s := newSim(t, `version: 1
rules:
  - name: first
    if: previous == nil
`)
	s.send(`{"type":"action_created","action":{"id":"a1","status":"Open"}}`)
	big := `{"type":"action_updated","action":{"id":"a1","status":"Open","notes":"` + strings.Repeat("x", store.MaxEntityPayload) + `"}}`
	if m := s.send(big); outcomeOf(m, "first") != alorules.OutcomeNotMatched {
		t.Errorf("big event: rule first: got %s, want not_matched (it has a previous)", outcomeOf(m, "first"))
	}
	if m := s.send(`{"type":"action_updated","action":{"id":"a1","status":"Doing"}}`); outcomeOf(m, "first") != alorules.OutcomeMatched || m.PreviousEventID != "" {
		t.Errorf("after the big event: got %s with previous %q, want matched and none", outcomeOf(m, "first"), m.PreviousEventID)
	}
	if !strings.Contains(s.log(), "payload too large to remember") {
		t.Errorf("log has no warning about the large payload:\n%s", s.log())
	}
	if n, _ := s.st.EntityCount(context.Background()); n != 1 {
		t.Errorf("got %d entities, want 1", n)
	}
}
