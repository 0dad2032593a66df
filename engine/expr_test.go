package engine

import (
	"reflect"
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

// TestFetchPatchDifferential holds the fast member access to expr's own:
// the same results and the same errors on every shape of payload.
func TestFetchPatchDifferential(t *testing.T) {
	exprs := []string{
		`event.a`, `event.a.b`, `event.a.b.c`, `event.a?.b`, `event.a?.b.c`, `event.a?.b?.c`,
		`event?.a.b.c`, `event.a?.b ?? "d"`, `event.a?.b.c ?? "d"`, `event.a.b?.c`, `event.a?.b.c.d`,
		`event.list[0]`, `event.list?.[0]`, `event.list[-1]`, `event.list[5]`, `event.a?.list?.[0]`,
		`event.objs?.[0]?.x`, `event.objs[1].x`, `event.s.x`, `event.n.x`, `event.nilv.x`, `event.nilv?.x`,
		`event["a"]["b"]`, `event[type]`, `$env.event.a`, `event.a?.b[0]`, `len(event.a?.list ?? [])`,
		`map(event.objs ?? [], .x)`, `filter(event.list ?? [], # > 1)`, `(event.a?.b).c`,
		`received_at.Year()`, `now().Unix() > 0`, `event.a?.s.missing`, `event.a?.b?.c?.d?.e`,
		`event.objs?.[0].x`, `event.a?.b == nil`, `event.a?.b.c == 1 || true`, `event?.a?.list[1]`,
		`{"x": {"y": 2}}.x.y`, `{"x": nil}.x?.y`, `[event.a?.b, event.n]`,
	}
	payloads := []string{
		`{"a":{"b":{"c":1,"d":[]},"list":[1,2],"s":"str"},"list":[1,2,3],"objs":[{"x":1},{"x":2}],"s":"str","n":5,"nilv":null}`,
		`{"a":null}`,
		`{"a":{"b":null}}`,
		`{}`,
		`{"a":{"b":"text"}}`,
		`{"a":{"b":[1]},"list":[],"objs":[]}`,
		`{"a":[1],"list":"notalist","objs":[null]}`,
	}
	for _, src := range exprs {
		fast, err := compileWith(src, false, false, true)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		slow, err := compileWith(src, false, false, false)
		if err != nil {
			t.Errorf("%s (unpatched): %v", src, err)
			continue
		}
		for _, body := range payloads {
			ev := rawEvent(t, `{"type":"action_created"}`)
			payload, _ := decodePayload([]byte(body))
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			m1 := newMachine(envInput{Event: ev, Payload: payload, Now: now})
			got, gerr := m1.run(fast)
			m1.release()
			payload, _ = decodePayload([]byte(body))
			m2 := newMachine(envInput{Event: ev, Payload: payload, Now: now})
			want, werr := m2.run(slow)
			m2.release()
			if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
				t.Errorf("%s on %s: got error %v, expr %v", src, body, gerr, werr)
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s on %s: got %#v, expr %#v", src, body, got, want)
			}
		}
	}
}

// TestFastConditionsDifferential holds the native evaluator of simple
// conditions to the VM: whenever it answers, the VM gives the same answer
// and no error; conditions of the simple shape do get a native evaluator.
func TestFastConditionsDifferential(t *testing.T) {
	conds := []string{
		`event.a?.b == "x"`, `event.a?.b != "x"`, `event.a.b == "x"`, `event.a?.b?.c == 1`,
		`event.a?.b == nil`, `event.a?.b != nil`, `event.n > 2`, `event.n >= 5.0`, `event.n < 2.5`,
		`event.n <= 5`, `event.s < "t"`, `event.a?.b == "x" && event.n > 1`, `event.a?.b == "x" || event.n > 1`,
		`!(event.a?.b == "x")`, `not (event.n == 5)`, `type == "action_created"`, `event.a?.b == event.s`,
		`event.f == 2.5`, `event.t == true`, `event.a?.b > 1`, `event.nilv == nil`, `event.nilv.x == 1`,
		`true && event.a?.b == "x"`, `event.list == nil`, `event.a?.b?.c?.d == "deep"`, `event.n == "5"`,
	}
	payloads := []string{
		`{"a":{"b":"x"},"n":5,"s":"str","f":2.5,"t":true,"nilv":null,"list":[1]}`,
		`{"a":{"b":{"c":1,"d":"deep"}},"n":1.5,"s":"a"}`,
		`{"a":null,"n":"5","s":1}`,
		`{"a":"text","n":null}`,
		`{}`,
		`{"a":{"b":{"c":{"d":"deep"}}},"n":-3,"t":false}`,
	}
	for _, src := range conds {
		p, err := compile(src, false, true)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		fc := newFastCompiler()
		fast := fc.compile(p.prog.Node())
		if fast == nil {
			t.Errorf("%s: got no native evaluator, want one", src)
			continue
		}
		for _, body := range payloads {
			payload, _ := decodePayload([]byte(body))
			m := newMachine(envInput{Event: rawEvent(t, `{"type":"action_created"}`), Payload: payload, Now: time.Now()})
			want, werr := m.run(p)
			got, ok := fast(newFastState(m.env, len(fc.paths), &m.chg))
			m.release()
			if !ok {
				continue // the VM decides
			}
			if werr != nil {
				t.Errorf("%s on %s: got %v natively, the VM fails with %v", src, body, got, werr)
			} else if got != want {
				t.Errorf("%s on %s: got %v natively, the VM says %v", src, body, got, want)
			}
		}
	}
	// Other shapes stay with the VM.
	for _, src := range []string{`len(event.list) > 0`, `event.a?.b in ["x", "y"]`, `event.s matches "^s"`, `now() > received_at`} {
		p, err := compile(src, false, true)
		if err != nil {
			t.Fatal(err)
		}
		if newFastCompiler().compile(p.prog.Node()) != nil {
			t.Errorf("%s: got a native evaluator, want the VM", src)
		}
	}
}

// Members of typed values keep expr's compile-time checks.
func TestTypedMembersChecked(t *testing.T) {
	if _, err := compile(`received_at.Yaer() > 2000`, false, true); err == nil || !strings.Contains(err.Error(), "Yaer") {
		t.Errorf("got %v, want a compile error naming Yaer", err)
	}
	if _, err := compile(`received_at.Year() > 2000 && event.a?.b == 1`, false, true); err != nil {
		t.Errorf("got %v", err)
	}
}
