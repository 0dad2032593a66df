package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/engine"
)

func TestCandidateName(t *testing.T) {
	long := strings.Repeat("r", maxCandidateName+10) + ".yaml"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "candidate.yaml"},
		{"plain", "my-rules.yaml", "my-rules.yaml"},
		{"unicode", "règles-été.yaml", "règles-été.yaml"},
		{"unix path", "/etc/alorules/prod.yaml", "prod.yaml"},
		{"relative path", "../../secret/rules.yaml", "rules.yaml"},
		{"windows path", `C:\ops\rules\win.yaml`, "win.yaml"},
		{"directory only", "rules/", "candidate.yaml"},
		{"dot", ".", "candidate.yaml"},
		{"dot dot", "..", "candidate.yaml"},
		{"newline cannot forge a line", "a.yaml\nb.yaml:1: all good", "a.yamlb.yaml:1: all good"},
		{"control and bidi runes dropped", "x\x1b[31m\u202e.yaml", "x[31m.yaml"},
		{"invalid utf-8 dropped", "r\xffu.yaml", "ru.yaml"},
		{"nothing printable", "\x00\t", "candidate.yaml"},
		{"long name capped", long, long[:maxCandidateName]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := candidateName(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRulesTestNamesTheFile: issues of candidate rules sent to
// POST /api/v1/rules/test name the file the client sent, not a fixed name.
func TestRulesTestNamesTheFile(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	broken := "version: 1\nrules:\n  - name: x\n    if: event.(\n"
	tests := []struct {
		name, file, want string
	}{
		{"named", "my-rules.yaml", "my-rules.yaml:4: "},
		{"path sent", "/home/ops/rules/team.yaml", "team.yaml:4: "},
		{"unnamed", "", "candidate.yaml:4: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, raw, res := postRulesTest(t, e, RulesTestRequest{Rules: broken, File: tc.file, Event: []byte(`{"type":"action_created"}`)})
			if code != http.StatusBadRequest || len(res.Issues) == 0 {
				t.Fatalf("got %d %s, want 400 with issues", code, raw)
			}
			for _, is := range res.Issues {
				if got := is.String(); !strings.HasPrefix(got, tc.want) {
					t.Errorf("got issue %q, want it to start with %q", got, tc.want)
				}
			}
		})
	}
}

// TestEventPayloadVerbatim: GET /api/v1/events/{id} carries the payload
// byte for byte: not compacted, markup not escaped, unicode and its
// escapes as the sender wrote them.
func TestEventPayloadVerbatim(t *testing.T) {
	tests := []struct{ name, payload string }{
		{"markup and ampersand", `{"type":"action_created","title":"<b>Freezer</b> & co","url":"a?b=1&c=2"}`},
		{"whitespace", "{ \"type\" : \"action_updated\",\n\t\"action\": { \"id\" : \"a1\" ,\n  \"tags\": [ 1,  2 ] } }"},
		{"unicode", `{"type":"action_created","city":"Zürich ☃ 東京","escaped":"\u00e9\u003c\/","emoji":"🧊"}`},
		{"line separators", "{\"type\":\"action_created\",\"s\":\"a\u2028b\u2029c\"}"},
		{"all of it", "{\"type\": \"action_status_changed\",\r\n \"note\": \"<i>done</i> &amp; \\u0026 ok\",  \"who\": \"Zoë\" }"},
	}
	e := newUIEnv(t, uiOptions{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := e.save(tc.payload, e.now)
			code, body := e.get(nil, "/api/v1/events/"+ev.ID)
			if code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", code, body)
			}
			var got struct {
				ID      string          `json:"id"`
				Type    string          `json:"type"`
				Payload json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, body)
			}
			if string(got.Payload) != tc.payload {
				t.Errorf("got payload %q, want %q", got.Payload, tc.payload)
			}
			if got.ID != ev.ID || got.Type != ev.Type {
				t.Errorf("got id %q type %q, want %q %q", got.ID, got.Type, ev.ID, ev.Type)
			}
		})
	}
}

// TestAPIShowsMarkupUnescaped: other answers that carry payload text (here
// a dry run rendering a step from it) leave markup as written too, and no
// admin answer may be sniffed as HTML.
func TestAPIShowsMarkupUnescaped(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	ev := e.save(uiXSSPayload, e.now)
	tests := []struct{ name, method, path string }{
		{"event", http.MethodGet, "/api/v1/events/" + ev.ID},
		{"dry run", http.MethodPost, "/api/v1/events/" + ev.ID + "/replay?dry_run=true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, raw)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("got X-Content-Type-Options %q, want nosniff", got)
			}
			if !bytes.Contains(raw, []byte(uiXSSValue)) || bytes.Contains(raw, []byte(`\u003c`)) {
				t.Errorf("got %s, want %s in it unescaped", raw, uiXSSValue)
			}
		})
	}
}

// TestTypeFilterFoldsAliases: both spellings of the status change find
// the same events in every list that filters by type, whichever spelling
// ALO sent.
func TestTypeFilterFoldsAliases(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	changed := e.save(`{"type":"action_status_changed","only_status":1}`, e.now.Add(-3*time.Minute))
	updated := e.save(`{"type":"action_status_updated","only_status":2}`, e.now.Add(-2*time.Minute))
	created := e.save(`{"type":"action_created","only_created":3}`, e.now.Add(-time.Minute))
	status := []string{changed.ID, updated.ID}
	tests := []struct {
		name, path    string
		want, notWant []string
	}{
		{"api alias", "/api/v1/events?type=action_status_changed", status, []string{created.ID}},
		{"api canonical", "/api/v1/events?type=action_status_updated", status, []string{created.ID}},
		{"events page alias", "/events?type=action_status_changed", status, []string{created.ID}},
		{"fields page alias", "/events/fields?type=action_status_changed", []string{"only_status"}, []string{"only_created"}},
		{"playground alias", "/playground?if=true&type=action_status_changed", status, []string{created.ID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.get(nil, tc.path)
			if code != http.StatusOK {
				t.Fatalf("got %d, want 200: %s", code, body)
			}
			for _, s := range tc.want {
				if !strings.Contains(body, s) {
					t.Errorf("got no %s, want it listed", s)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(body, s) {
					t.Errorf("got %s, want it filtered out", s)
				}
			}
		})
	}
}

// TestListEventsPaging walks GET /api/v1/events by its next cursor, with
// and without a type filter, and checks every page's ids in order.
func TestListEventsPaging(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	// Oldest first: c1 u1 c2 c3 u2 c4 c5.
	ids := map[string]string{}
	for i, name := range []string{"c1", "u1", "c2", "c3", "u2", "c4", "c5"} {
		typ := "action_created"
		if name[0] == 'u' {
			typ = "action_updated"
		}
		ev := e.save(`{"type":"`+typ+`","n":"`+name+`"}`, e.now.Add(time.Duration(i-10)*time.Minute))
		ids[name] = ev.ID
	}
	tests := []struct {
		name, query string
		want        [][]string // pages, newest first
	}{
		{"all in one page", "", [][]string{{"c5", "c4", "u2", "c3", "c2", "u1", "c1"}}},
		{"limit 3", "limit=3", [][]string{{"c5", "c4", "u2"}, {"c3", "c2", "u1"}, {"c1"}}},
		{"limit 1 (lower bound)", "limit=1", [][]string{{"c5"}, {"c4"}, {"u2"}, {"c3"}, {"c2"}, {"u1"}, {"c1"}}},
		{"limit 500 (upper bound)", "limit=500", [][]string{{"c5", "c4", "u2", "c3", "c2", "u1", "c1"}}},
		{"type with limit 2", "type=action_created&limit=2", [][]string{{"c5", "c4"}, {"c3", "c2"}, {"c1"}}},
		{"type filling its last page exactly", "type=action_updated&limit=2", [][]string{{"u2", "u1"}}},
		{"type with no events", "type=action_message_added", [][]string{{}}},
		{"starting before an id", "before=" + ids["c3"] + "&limit=2", [][]string{{"c2", "u1"}, {"c1"}}},
		{"type starting before an id", "type=action_created&before=" + ids["c4"], [][]string{{"c3", "c2", "c1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.allPages(t, tc.query, ids)
			if g, w := fmt.Sprint(got), fmt.Sprint(tc.want); g != w {
				t.Errorf("got pages %s, want %s", g, w)
			}
		})
	}
}

func TestListEventsBadLimit(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	for _, limit := range []string{"0", "501", "-1", "ten", "2.5"} {
		t.Run(limit, func(t *testing.T) {
			code, body := e.get(nil, "/api/v1/events?limit="+limit)
			if code != http.StatusBadRequest || !strings.Contains(body, "limit: want a whole number from 1 to 500") {
				t.Errorf("got %d %s, want 400 naming the limit's range", code, body)
			}
		})
	}
}

// TestListEventsByRule: GET /api/v1/events?rule= lists a rule's hits, and
// with outcome=failure its failures, from an index, paged like the rest.
func TestListEventsByRule(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	ids := map[string]string{"urgent": s.urgent.ID, "low": s.low.ID, "done": s.done.ID, "xss": s.xss.ID,
		"q0": s.queued[0].EventID, "q1": s.queued[1].EventID, "q2": s.queued[2].EventID}
	// A rule's hits are listed by the time they were counted: the match,
	// at the time the seed asked for (not that of the id, which is
	// clamped to increase within the process).
	q1At := s.queued[1].CreatedAt
	tests := []struct {
		name, query string
		want        [][]string
	}{
		{"hits", "rule=page-urgent", [][]string{{"xss", "q2", "q1", "q0", "urgent"}}},
		{"hits, by name", "rule=status-done&outcome=matched", [][]string{{"done"}}},
		{"failures", "rule=page-urgent&outcome=failure", [][]string{{"urgent"}}},
		{"failures, paged", "rule=title-check&outcome=failure&limit=4", [][]string{{"xss", "q2", "q1", "q0"}, {"low", "urgent"}}},
		{"with type", "rule=record-created&type=action_updated", [][]string{{}}},
		{"since", "rule=page-urgent&since=" + url.QueryEscape(q1At.Format(time.RFC3339Nano)), [][]string{{"xss", "q2", "q1"}}},
		{"a rule with none", "rule=nope", [][]string{{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.allPages(t, tc.query, ids)
			if g, w := fmt.Sprint(got), fmt.Sprint(tc.want); g != w {
				t.Errorf("got pages %s, want %s", g, w)
			}
		})
	}
	for _, q := range []string{"rule=page-urgent&outcome=error", "rule=page-urgent&since=yesterday"} {
		if code, body := e.get(nil, "/api/v1/events?"+q); code != http.StatusBadRequest {
			t.Errorf("GET ?%s: got %d %s, want 400", q, code, body)
		}
	}
}

type eventsAnswer struct {
	Events []struct {
		ID string `json:"id"`
	} `json:"events"`
	Next string `json:"next"`
}

// eventsPage is one GET /api/v1/events?query, decoded.
func (e *uiEnv) eventsPage(t *testing.T, query string) eventsAnswer {
	t.Helper()
	code, body := e.get(nil, "/api/v1/events?"+query)
	if code != http.StatusOK {
		t.Fatalf("GET ?%s: got %d %s, want 200", query, code, body)
	}
	var page eventsAnswer
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("GET ?%s: %v: %s", query, err, body)
	}
	return page
}

// allPages follows GET /api/v1/events?query by its next cursor and
// returns each page's events by their names in ids.
func (e *uiEnv) allPages(t *testing.T, query string, ids map[string]string) [][]string {
	t.Helper()
	var pages [][]string
	q := query
	for range 20 { // far more pages than any test has
		page := e.eventsPage(t, q)
		names := []string{}
		for _, ev := range page.Events {
			names = append(names, nameOf(ids, ev.ID))
		}
		pages = append(pages, names)
		if page.Next == "" {
			return pages
		}
		q = withBefore(query, page.Next)
	}
	t.Fatalf("GET ?%s: got more than 20 pages", query)
	return nil
}

// withBefore is query with its before cursor set to next.
func withBefore(query, next string) string {
	v, _ := url.ParseQuery(query)
	v.Set("before", next)
	return v.Encode()
}

// nameOf is the seed name of an event id, or the id itself if unknown.
func nameOf(ids map[string]string, id string) string {
	for name, v := range ids {
		if v == id {
			return name
		}
	}
	return id
}

// TestRetryExecutionAPI: POST /api/v1/executions/{id}/retry over HTTP runs
// a failed execution again from its first failed step (the step that
// succeeded is not sent again), and refuses what is not failed with 409
// and the reason, and an unknown id with 404.
func TestRetryExecutionAPI(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	hits := map[string]int{}
	tg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/second" && broken.Load() {
			http.Error(w, `{"error":"second is down"}`, http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(tg.Close)
	hitsOf := func() (first, second int) {
		mu.Lock()
		defer mu.Unlock()
		return hits["/first"], hits["/second"]
	}
	rules := fmt.Sprintf(`version: 1
connections:
  target:
    allow_private: true
    http: { base_url: %q }
defaults:
  retry: { attempts: 1 }
rules:
  - name: two-steps
    on: [action_created]
    do:
      - id: first
        http: { connection: target, method: POST, path: /first }
      - id: second
        http: { connection: target, method: POST, path: /second }
`, tg.URL)
	if err := os.WriteFile(e.rulesPath, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	_, exs := e.ingest(uiUrgentPayload, e.now)
	if len(exs) != 1 {
		t.Fatalf("got %d executions, want 1", len(exs))
	}
	id := exs[0].ID
	e.runner.Notify()
	waitFor := func(status alorules.Status) *alorules.Execution {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			ex, err := e.st.Execution(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if ex.Status == status {
				return ex
			}
			if time.Now().After(deadline) {
				t.Fatalf("execution is %s, want %s", ex.Status, status)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	failed := waitFor(alorules.StatusFailed)
	if failed.Steps[0].Status != alorules.StatusSucceeded || failed.Steps[1].Status != alorules.StatusFailed {
		t.Fatalf("got steps %s and %s, want succeeded and failed", failed.Steps[0].Status, failed.Steps[1].Status)
	}

	retry := func(id string) (int, string) {
		t.Helper()
		resp, err := http.Post(e.srv.URL+"/api/v1/executions/"+id+"/retry", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	broken.Store(false)
	code, body := retry(id)
	if code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	var queued alorules.Execution
	if err := json.Unmarshal([]byte(body), &queued); err != nil {
		t.Fatalf("answer is not an execution: %v: %s", err, body)
	}
	if queued.ID != id || queued.Status != alorules.StatusQueued || queued.Error != "" {
		t.Errorf("got %s %s error %q, want %s queued without error", queued.ID, queued.Status, queued.Error, id)
	}
	if st := queued.Steps[0]; st.Status != alorules.StatusSucceeded || st.Attempts != 1 || st.Code != 200 {
		t.Errorf("first step: got %s after %d attempts code %d, want kept as succeeded", st.Status, st.Attempts, st.Code)
	}
	if st := queued.Steps[1]; st.Status != alorules.StatusQueued || st.Attempts != 0 || st.Error != "" {
		t.Errorf("second step: got %s after %d attempts error %q, want queued afresh", st.Status, st.Attempts, st.Error)
	}
	done2 := waitFor(alorules.StatusSucceeded)
	if first, second := hitsOf(); first != 1 || second != 2 {
		t.Errorf("got %d requests to the first step and %d to the second, want 1 and 2: the retry starts at the failed step", first, second)
	}
	if st := done2.Steps[1]; st.Status != alorules.StatusSucceeded || st.Attempts != 1 {
		t.Errorf("second step: got %s after %d attempts, want succeeded after 1", st.Status, st.Attempts)
	}

	// What is not failed is refused, and says why.
	code, body = retry(id)
	if code != http.StatusConflict || !strings.Contains(body, "status is succeeded, not failed") {
		t.Errorf("retry of a succeeded execution: got %d %s, want 409 naming its status", code, body)
	}
	if code, body = retry("no-such-execution"); code != http.StatusNotFound {
		t.Errorf("retry of an unknown execution: got %d %s, want 404", code, body)
	}
	if first, second := hitsOf(); first != 1 || second != 2 {
		t.Errorf("got %d and %d requests after the refusals, want still 1 and 2", first, second)
	}
}

// TestRulesTestSeesPrevious: POST /api/v1/rules/test on a stored event
// evaluates it with the previous payload the matcher compared it with, as
// a replay does, so that a changed() rule has the outcome it has in the
// service; once that event is pruned, the result says so.
func TestRulesTestSeesPrevious(t *testing.T) {
	e := newUIEnv(t, uiOptions{noSync: true})
	ctx := context.Background()
	first := e.save(`{"type":"action_updated","action":{"id":"act-9","status":"Open"}}`, e.now)
	second := e.save(`{"type":"action_updated","action":{"id":"act-9","status":"Doing"}}`, e.now)
	if n, err := e.eng.MatchPending(ctx); err != nil || n != 2 {
		t.Fatalf("matched %d events: %v, want 2", n, err)
	}
	rules := "version: 1\nrules:\n  - name: status-moved\n    if: previous != nil && changed(\"action.status\")\n"
	test := func() engine.TestResult {
		t.Helper()
		code, raw, res := postRulesTest(t, e, RulesTestRequest{Rules: rules, EventIDs: []string{second.ID}})
		if code != http.StatusOK || len(res.Results) != 1 || len(res.Results[0].Results) != 1 {
			t.Fatalf("got %d %s, want 200 with one result for one rule", code, raw)
		}
		return res.Results[0]
	}

	res := test()
	if got := res.Results[0].Outcome; got != alorules.OutcomeMatched {
		t.Errorf("got outcome %s, want matched: the service saw the status change", got)
	}
	if res.PreviousEventID != first.ID || !slices.Equal(res.Changed, []string{"action.status"}) || res.Note != "" {
		t.Errorf("got previous %q, changed %q, note %q, want %q, [action.status], no note", res.PreviousEventID, res.Changed, res.Note, first.ID)
	}

	// Keeping one event prunes the older one (ids grow with every event).
	if n, err := e.st.Prune(ctx, time.Time{}, 1); err != nil || n != 1 {
		t.Fatalf("pruned %d events: %v, want the first", n, err)
	}
	res = test()
	if got := res.Results[0].Outcome; got != alorules.OutcomeNotMatched {
		t.Errorf("previous event pruned: got outcome %s, want not_matched", got)
	}
	if res.PreviousEventID != "" || !strings.Contains(res.Note, first.ID) || !strings.Contains(res.Note, "pruned") {
		t.Errorf("previous event pruned: got previous %q, note %q, want none and a note naming %s", res.PreviousEventID, res.Note, first.ID)
	}
	// A replay says the same, on its page too.
	if _, page := e.get(nil, "/events/"+second.ID+"/replay"); !strings.Contains(page, first.ID+") has been pruned") {
		t.Errorf("replay page does not say that the previous event %s has been pruned", first.ID)
	}
}

// postRulesTest sends req to POST /api/v1/rules/test and returns the
// status, the raw answer and the answer decoded (it must be JSON).
func postRulesTest(t *testing.T, e *uiEnv, req RulesTestRequest) (int, []byte, RulesTestResponse) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := http.Post(e.srv.URL+"/api/v1/rules/test", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var res RulesTestResponse
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("got %d %s, want a JSON answer", resp.StatusCode, raw)
	}
	return resp.StatusCode, raw, res
}
