package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Rules over time for the UI tests: an escalation timer, a digest and a
// transition.
const uiTimerRules = `version: 1
connections:
  target:
    allow_private: true
    http: { base_url: "${TARGET_URL}" }
rules:
  - name: stuck-urgent
    on: [action_created]
    if: event.action?.priority == "Urgent"
    after: 4h
    unless: event.action?.status == "Completed"
    do:
      - http: { connection: target, method: POST, path: /stuck }
  - name: new-low
    on: [action_created]
    if: event.action?.priority == "Low"
    digest: { window: 15m, key: "{{ event.action?.form?.location }}" }
    do:
      - http: { connection: target, method: POST, path: /digest, json: { n: "{{ digest.count }}" } }
  - name: moved
    if: changed("action.status")
`

// timerEnv is the UI env with the timer rules loaded, events matched by
// the engine itself (entity state and all).
func timerEnv(t *testing.T) *uiEnv {
	t.Helper()
	e := newUIEnv(t, uiOptions{noSync: true})
	if err := os.WriteFile(e.rulesPath, []byte(uiTimerRules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Reload(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *uiEnv) send(payload string) string {
	e.t.Helper()
	ev := e.save(payload, time.Now())
	if _, err := e.eng.MatchPending(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return ev.ID
}

func (e *uiEnv) apiTimers() (ids []string) {
	e.t.Helper()
	code, raw := e.get(nil, "/api/v1/timers")
	if code != http.StatusOK {
		e.t.Fatalf("GET /api/v1/timers: got %d %s", code, raw)
	}
	var res struct {
		Timers []struct {
			ID, Rule, Entity, Event string
			EventID                 string `json:"event_id"`
		}
		Count int
	}
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		e.t.Fatal(err)
	}
	for _, tm := range res.Timers {
		if tm.Event != "/api/v1/events/"+tm.EventID || tm.Rule != "stuck-urgent" || tm.Entity == "" {
			e.t.Errorf("got timer %+v, want rule, entity and a link to its event", tm)
		}
		ids = append(ids, tm.ID)
	}
	if res.Count != len(ids) {
		e.t.Errorf("got count %d for %d timers", res.Count, len(ids))
	}
	return ids
}

func TestTimersAPI(t *testing.T) {
	e := timerEnv(t)
	e.send(uiUrgentPayload)
	e.send(strings.Replace(uiUrgentPayload, `"act-1"`, `"act-9"`, 1))
	ids := e.apiTimers()
	if len(ids) != 2 {
		t.Fatalf("got %d timers, want 2", len(ids))
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/timers/"+ids[0]+"/cancel", nil)
	for i, want := range []int{http.StatusOK, http.StatusNotFound} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("cancel %d: got %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	if ids := e.apiTimers(); len(ids) != 1 {
		t.Errorf("after cancel: got %d timers, want 1", len(ids))
	}
	// Completing the other action cancels its timer through unless.
	e.send(`{"type":"action_status_updated","action":{"id":"act-9","status":"Completed"}}`)
	if ids := e.apiTimers(); len(ids) != 0 {
		t.Errorf("after completion: got %d timers, want 0", len(ids))
	}
	for path, want := range map[string]int{
		"/api/v1/timers?after=zz": http.StatusBadRequest, "/api/v1/timers?limit=0": http.StatusBadRequest,
		"/api/v1/digests": http.StatusOK,
	} {
		if code, body := e.get(nil, path); code != want {
			t.Errorf("GET %s: got %d %s, want %d", path, code, body, want)
		}
	}
}

func TestTimersPage(t *testing.T) {
	e := timerEnv(t)
	urgent := e.send(uiUrgentPayload)
	e.send(uiLowPayload)
	c := e.client()
	_, dash := e.get(c, "/")
	for _, want := range []string{`<span class="big">1</span> timers pending`, `<span class="big">1</span> digests open`, `action="/timers/`, `stuck-urgent`} {
		if !strings.Contains(dash, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	code, page := e.get(c, "/timers")
	if code != http.StatusOK {
		t.Fatalf("GET /timers: got %d", code)
	}
	for _, want := range []string{"1 pending timer", "<code>act-1</code>", `href="/events/` + urgent + `"`, "1 open digest", "<code>Hall</code>", `>Cancel</button>`} {
		if !strings.Contains(page, want) {
			t.Errorf("timers page lacks %q", want)
		}
	}
	ids := e.apiTimers()
	// Without the form token, nothing is cancelled.
	if resp := e.post(c, "/timers/"+ids[0]+"/cancel", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cancel without a token: got %d, want 403", resp.StatusCode)
	}
	resp := e.post(c, "/timers/"+ids[0]+"/cancel", url.Values{"csrf": {e.token(c)}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/timers" {
		t.Fatalf("cancel: got %d to %q, want 303 to /timers", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := e.get(c, "/timers"); !strings.Contains(page, "Cancelled the timer of stuck-urgent for act-1") || !strings.Contains(page, "No timers pending") {
		t.Errorf("after cancel the page shows no confirmation or still lists the timer")
	}
	// A second click finds nothing to cancel and says so.
	e.post(c, "/timers/"+ids[0]+"/cancel", url.Values{"csrf": {e.token(c)}}, nil)
	if _, page := e.get(c, "/timers"); !strings.Contains(page, "no longer pending") {
		t.Errorf("second cancel: no message that the timer is gone")
	}
}

// A cancel that fails for another reason than the timer being gone (here
// the store is closed) shows that failure, not "no longer pending".
func TestTimersPageCancelStoreFailure(t *testing.T) {
	e := timerEnv(t)
	e.send(uiUrgentPayload)
	c := e.client()
	ids := e.apiTimers()
	tok := e.token(c)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	resp := e.post(c, "/timers/"+ids[0]+"/cancel", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("cancel with the store closed: got %d to %q, want 503", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// The event page links the previous event about the same action and lists
// what changed; matched rules show what happened to their timer.
func TestEventPagePrevious(t *testing.T) {
	e := timerEnv(t)
	first := e.send(uiUrgentPayload)
	second := e.send(`{"type":"action_status_updated","action":{"id":"act-1","title":"Freezer 3 alarm","priority":"Urgent","status":"Completed"}}`)
	_, page := e.get(nil, "/events/"+second)
	for _, want := range []string{
		`<code>act-1</code>`, `href="/events/` + first + `"`, `<li><code>action.status</code></li>`,
		`<li><code>action.assignees.0.id</code></li>`, `timer cancelled: unless became true`,
		`Previous payload (<code>previous</code> in conditions)`, `&#34;status&#34;: &#34;Open&#34;`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("event page lacks %q", want)
		}
	}
	_, page = e.get(nil, "/events/"+first)
	for _, want := range []string{`none: the first event about it`, `timer set, due`, `href="/timers#t-`} {
		if !strings.Contains(page, want) {
			t.Errorf("first event's page lacks %q", want)
		}
	}
}

// The playground runs a sequence of events with clock moves through the
// loaded rules and shows the timer set, then fired.
func TestPlaygroundSequence(t *testing.T) {
	e := timerEnv(t)
	c := e.client()
	seq := `- event: { type: action_created, action: { id: act-5, priority: Urgent, status: Open } }
- event: { type: action_updated, action: { id: act-5, priority: Urgent, status: Doing } }
- advance: 4h
`
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/playground", strings.NewReader(url.Values{
		"csrf": {e.token(c)}, "mode": {"sequence"}, "sequence": {seq}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d", resp.StatusCode)
	}
	for _, want := range []string{
		"Step 1: event action_created", "stuck-urgent: timer_set", "Entity <code>act-5</code>: the first event about it",
		"Step 2: event action_updated", "changed <code>action.status</code>", "Matched: moved",
		"Step 3: advance 4h", "timer of stuck-urgent fired for <code>act-5</code>", "Execution of stuck-urgent (timer)",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The simulation stored nothing here.
	if ids := e.apiTimers(); len(ids) != 0 {
		t.Errorf("got %d timers in the real store, want 0", len(ids))
	}
	// A broken sequence is reported, not a 500.
	req, _ = http.NewRequest(http.MethodPost, e.srv.URL+"/playground", strings.NewReader(url.Values{
		"csrf": {e.token(c)}, "mode": {"sequence"}, "sequence": {"- advance: soon"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	io.Copy(&b, resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK || !strings.Contains(b.String(), `step 1: advance: want a duration such as 2h, got &#34;soon&#34;`) {
		t.Errorf("got %d, want the page to say what is wrong", resp2.StatusCode)
	}
}

// TestTimersPageSafety: the timers pages and API need credentials, the
// Cancel form needs its token from the same origin, and entity ids and
// digest keys from hostile payloads render as text.
func TestTimersPageSafety(t *testing.T) {
	e := timerEnv(t)
	hostile := uiJSONString(uiXSSValue + uiXSSAttr)
	e.send(`{"type":"action_created","action":{"id":` + hostile + `,"priority":"Urgent","status":"Open"}}`)
	e.send(`{"type":"action_created","action":{"id":"act-9","priority":"Low","status":"Open","form":{"location":` + hostile + `}}}`)
	c := e.client()
	for _, p := range []string{"/timers", "/", "/events"} {
		code, body := e.get(c, p)
		if code != http.StatusOK {
			t.Errorf("GET %s: got %d", p, code)
		}
		uiCheckInert(t, "GET "+p, body)
		if p == "/timers" && strings.Count(body, "&lt;script&gt;alert(1)&lt;/script&gt;") < 2 {
			t.Errorf("GET /timers: want the hostile entity and digest key shown escaped")
		}
	}
	ids := e.apiTimers()
	if len(ids) != 1 {
		t.Fatalf("got %d timers, want 1", len(ids))
	}
	tok := e.token(c)
	refused := []struct {
		name   string
		client *http.Client
		token  string
		hdr    map[string]string
	}{
		{"no token", c, "", nil},
		{"wrong token", c, strings.Repeat("A", 43), nil},
		{"no cookie", e.client(), tok, nil},
		{"cross-site", c, tok, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"foreign origin", c, tok, map[string]string{"Origin": "https://evil.example"}},
	}
	for _, tc := range refused {
		form := url.Values{}
		if tc.token != "" {
			form.Set("csrf", tc.token)
		}
		if resp := e.post(tc.client, "/timers/"+ids[0]+"/cancel", form, tc.hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("cancel, %s: got %d, want 403", tc.name, resp.StatusCode)
		}
	}
	if got := e.apiTimers(); len(got) != 1 {
		t.Errorf("after refused cancels: got %d timers, want the one still pending", len(got))
	}
	// The JSON API's cancel refuses browsers from elsewhere too.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/timers/"+ids[0]+"/cancel", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site API cancel: got %d, want 403", resp.StatusCode)
	}
}

// TestTimersNeedAuth: with admin auth on, the timers page, its API and
// the cancel form answer 401 without credentials.
func TestTimersNeedAuth(t *testing.T) {
	e := newUIEnv(t, uiOptions{auth: &Auth{Token: "tok-123456"}})
	for _, p := range []string{"/timers", "/api/v1/timers", "/api/v1/digests", "/%74imers"} {
		resp, err := http.Get(e.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: got %d, want 401", p, resp.StatusCode)
		}
	}
	for _, p := range []string{"/timers/x/cancel", "/api/v1/timers/x/cancel"} {
		resp, err := http.Post(e.srv.URL+p, "application/x-www-form-urlencoded", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s without credentials: got %d, want 401", p, resp.StatusCode)
		}
	}
}
