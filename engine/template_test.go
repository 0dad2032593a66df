package engine

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"alorules/actions"
)

// render renders every step of a rule for ev, as the runner would see them
// (no earlier step results).
func render(t *testing.T, rs *RuleSet, ruleName string, evName string) []actions.Spec {
	t.Helper()
	ev := event(t, evName)
	payload, err := decodePayload(ev.Payload)
	if err != nil {
		t.Fatal(err)
	}
	m := newMachine(envInput{Event: ev, Payload: payload, Now: time.Now(), Steps: map[string]any{}})
	defer m.release()
	r := rs.byName[ruleName]
	var out []actions.Spec
	for _, s := range r.steps {
		spec, err := rs.renderSpec(m, r, s)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		out = append(out, spec)
	}
	return out
}

// TestTemplateEscaping renders a payload full of markup, template syntax,
// path climbing and JSON breakouts into each destination.
func TestTemplateEscaping(t *testing.T) {
	rs := mustParse(t, "hostile.yaml")
	specs := render(t, rs, "hostile", "hostile")
	title := "<!channel> & <@U123> {{ 1+1 }} \"} ${SLACK_URL}"
	escTitle := "&lt;!channel&gt; &amp; &lt;@U123&gt; {{ 1+1 }} \"} ${SLACK_URL}"

	slack := specs[0].(*actions.Slack)
	if want := "Alert: " + escTitle + " (<https://evil.example/x?a=1&amp;b=&lt;2&gt;|open>)"; slack.Text != want {
		t.Errorf("slack text:\ngot  %q\nwant %q", slack.Text, want)
	}
	block := slack.Blocks.([]any)[0].(map[string]any)
	if got, want := block["text"].(map[string]any)["text"], "*"+escTitle+"*"; got != want {
		t.Errorf("block text: got %q, want %q", got, want)
	}
	if got, want := block["fields"].([]any)[0].(map[string]any)["text"], "../../admin"; got != want {
		t.Errorf("block field: got %q, want %q", got, want)
	}
	if got := block["block_id"]; got != title {
		t.Errorf("block_id (not text): got %q, want it raw %q", got, title)
	}

	h := specs[1].(*actions.HTTP)
	if want := "/actions/..%2F..%2Fadmin/notes"; h.Path != want {
		t.Errorf("path: got %q, want %q", h.Path, want)
	}
	if want := "a&b=c#frag"; h.Query["q"] != want {
		t.Errorf("query: got %q, want it raw %q (the HTTP client encodes it)", h.Query["q"], want)
	}
	if h.Headers["X-Title"] != title {
		t.Errorf("header: got %q, want %q", h.Headers["X-Title"], title)
	}
	body := h.JSON.(map[string]any)
	wantBody := map[string]any{
		"channel": `"},"injected":"yes`,
		"count":   json.Number("3"),
		"ratio":   json.Number("2.5"),
		"urgent":  true,
		"label":   "n=3",
		"title":   title,
	}
	for k, want := range wantBody {
		if got := body[k]; got != want {
			t.Errorf("json %s: got %#v, want %#v", k, got, want)
		}
	}
	if action, ok := body["action"].(map[string]any); !ok || action["id"] != "../../admin" {
		t.Errorf("json action: got %#v, want the object itself", body["action"])
	}
	// Marshalled, the body is one object with exactly these keys: the
	// channel value could not break out.
	b, _ := json.Marshal(h.JSON)
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 7 || back["injected"] != nil {
		t.Errorf("got body %s, want 7 keys and no injection", b)
	}

	u := specs[2].(*actions.HTTP)
	if want := "https://search.example.com/find/..%2F..%2Fadmin?q=a%26b%3Dc%23frag"; u.URL != want {
		t.Errorf("url: got %q, want %q", u.URL, want)
	}
	if want := "/dots/%2E%2E"; specs[3].(*actions.HTTP).Path != want {
		t.Errorf("dots: got %q, want %q", specs[3].(*actions.HTTP).Path, want)
	}
	if got, want := specs[4].(*actions.ALO).Request.Path, "/users/..%2F..%2Fadmin"; got != want {
		t.Errorf("alo path: got %q, want %q", got, want)
	}
}

func TestTemplateKeepsType(t *testing.T) {
	tests := []struct {
		tmpl string
		want any
	}{
		{`{{ event.action.count }}`, 3},
		{`{{ event.action.ratio }}`, 2.5},
		{`{{ event.action.count > 2 }}`, true},
		{`{{ [1, "a"] }}`, []any{1, "a"}},
		{`{{ event.nothing }}`, nil},
		{` {{ event.action.count }}`, " 3"},
		{`{{ event.action.count }}{{ event.action.count }}`, "33"},
		{`{{ {"a": {"b": 1}} }}`, map[string]any{"a": map[string]any{"b": 1}}},
		{`no template`, "no template"},
		{`{{ "{{ not a template }}" }}`, "{{ not a template }}"},
	}
	ev := event(t, "hostile")
	payload, _ := decodePayload(ev.Payload)
	m := newMachine(envInput{Event: ev, Payload: payload, Now: time.Now(), Steps: map[string]any{}})
	defer m.release()
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			segs, err := parseTemplate(tt.tmpl, true, func(s string) (string, error) { return s, nil })
			if err != nil {
				t.Fatal(err)
			}
			got, err := (&tstring{segs: segs, want: reflect.Interface}).render(m)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestTemplateStringDestination(t *testing.T) {
	rs := parseString(t, `version: 1
rules:
  - name: a
    do:
      - http: { url: "https://example.com/x", body: "{{ event.action.count }}", method: "{{ 'P' + 'UT' }}" }
`)
	h := render(t, rs, "a", "hostile")[0].(*actions.HTTP)
	if h.Body != "3" || h.Method != "PUT" {
		t.Errorf("got body %q method %q, want the number as text and PUT", h.Body, h.Method)
	}
}

func TestRenderErrorNamesRuleAndStep(t *testing.T) {
	rs := mustParse(t, "hostile.yaml")
	res := Test(rs, event(t, "hostile"), time.Now())
	var steps []TestStep
	for _, r := range res.Results {
		if r.Rule == "bad-render" {
			steps = r.Steps
		}
	}
	if len(steps) != 2 || steps[0].Error != "" {
		t.Fatalf("got steps %+v, want two with the first rendered", steps)
	}
	want := `rule "bad-render": step 2 (http): {{ event.action.missing.deeper }}: `
	if !strings.HasPrefix(steps[1].Error, want) {
		t.Errorf("got %q, want it to start with %q", steps[1].Error, want)
	}
}

func TestTestRedactsAndNotes(t *testing.T) {
	rs := parseString(t, `version: 1
rules:
  - name: a
    do:
      - id: first
        http: { url: "https://example.com/hook/${TICKETS_TOKEN}", json: { n: 1 } }
      - http: { url: "https://example.com/next", json: { code: "{{ steps.first.code }}", id: "{{ steps.first.json.id }}" } }
`)
	res := Test(rs, event(t, "action_created"), time.Now())
	steps := res.Results[0].Steps
	if len(steps) != 2 {
		t.Fatalf("got %d steps, want 2", len(steps))
	}
	if got := string(steps[0].Request); strings.Contains(got, testEnv["TICKETS_TOKEN"]) || !strings.Contains(got, "hook/<secret>") {
		t.Errorf("got request %s, want the token redacted", got)
	}
	if steps[1].Note == "" || steps[1].Error != "" || steps[1].Request != nil {
		t.Errorf("got %+v, want a note that it renders when it runs", steps[1])
	}
}

// FuzzSlackText checks that no inserted value can add Slack markup: every
// <, > and & in the output comes from the template's own text.
func FuzzSlackText(f *testing.F) {
	for _, s := range []string{"<!channel>", "a & b", "{{ 1+1 }}", `"}`, "../", "<https://x|y>", "&amp;", "\x00"} {
		f.Add(s)
	}
	rs, _, err := Parse("rules.yaml", []byte(`version: 1
connections:
  s: { slack: { webhook_url: "https://hooks.slack.test/x" } }
rules:
  - name: a
    do:
      - slack: { connection: s, text: "<{{ event.v }}|x>" }
`), nil)
	if err != nil {
		f.Fatal(err)
	}
	r := rs.byName["a"]
	f.Fuzz(func(t *testing.T, v string) {
		payload, _ := json.Marshal(map[string]any{"type": "action_created", "v": v})
		text := renderFirstStep(t, rs, r, payload).(*actions.Slack).Text
		inner := strings.TrimSuffix(strings.TrimPrefix(text, "<"), "|x>")
		if strings.ContainsAny(inner, "<>") {
			t.Errorf("got %q: an inserted value added markup", text)
		}
		back := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(inner)
		if want := (func() string { var s string; _ = json.Unmarshal(mustJSON(v), &s); return s })(); back != want {
			t.Errorf("got %q back from %q, want %q", back, text, want)
		}
	})
}

// renderFirstStep renders r's first step for a payload as the runner
// would (no earlier steps); a payload that is not an event skips the
// fuzz input.
func renderFirstStep(t *testing.T, rs *RuleSet, r *rule, payload []byte) actions.Spec {
	t.Helper()
	ev, err := NewEvent(payload, time.Now())
	if err != nil {
		t.Skip()
	}
	p, err := decodePayload(ev.Payload)
	if err != nil {
		t.Skip()
	}
	m := newMachine(envInput{Event: ev, Payload: p, Now: time.Now(), Steps: map[string]any{}})
	defer m.release()
	spec, err := rs.renderSpec(m, r, r.steps[0])
	if err != nil {
		t.Fatalf("render %s: %v", payload, err)
	}
	return spec
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestSecretsNeverRecorded(t *testing.T) {
	rs := parseString(t, `version: 1
connections:
  api:
    http: { base_url: "https://api.example.com", headers: { Authorization: "Bearer ${WEIRD_TOKEN}" } }
rules:
  - name: a
    do:
      - http:
          connection: api
          path: /x
          headers: { X-Token: "${WEIRD_TOKEN}" }
          json: { token: "${WEIRD_TOKEN}", title: "{{ event.action?.title }}" }
`)
	secret := testEnv["WEIRD_TOKEN"]
	escaped, _ := json.Marshal(secret)
	leaks := func(what string, b []byte) {
		t.Helper()
		for _, form := range []string{secret, string(escaped[1 : len(escaped)-1]), "to\\\"ken"} {
			if strings.Contains(string(b), form) {
				t.Errorf("%s leaks the secret (as %q): %s", what, form, b)
			}
		}
		if !strings.Contains(string(b), "<secret>") && !strings.Contains(string(b), `\u003csecret\u003e`) {
			t.Errorf("%s: got %s, want <secret> in place of the token", what, b)
		}
	}
	res := Test(rs, event(t, "action_created"), time.Now())
	leaks("test result", res.Results[0].Steps[0].Request)
	eval := rs.Evaluate(event(t, "action_created"), time.Now(), nil)
	leaks("execution step request", eval.Executions[0].Steps[0].Request)
	whole, _ := json.Marshal(res)
	leaks("test result as JSON", whole)
	// The spec sent on the wire does carry the real value.
	spec := render(t, rs, "a", "action_created")[0].(*actions.HTTP)
	if spec.Headers["X-Token"] != secret {
		t.Errorf("got header %q, want the real token on the wire", spec.Headers["X-Token"])
	}
}
