package web

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"alorules"
	"alorules/store"
)

func TestUIPages(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	// Ids are strictly increasing within a process, so an id made for a
	// past time after one made for now carries a later time: take the
	// boundary from the ids themselves.
	boundary, ok := store.IDTime(s.queued[0].ID)
	if !ok {
		t.Fatal("no time in an execution id")
	}
	since := url.QueryEscape(boundary.Format(time.RFC3339Nano))
	today, err := e.st.EventCountSince(context.Background(), e.now.Truncate(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		path    string
		code    int
		want    []string
		notWant []string
	}{
		{"dashboard", "/", 200,
			[]string{"page-urgent", "status-done", "record-created", `event.action?.priority == &#34;Urgent&#34;`,
				"<svg class=\"chart\"", `action="/ui/reload"`, `<title data-hour="`, `" data-text=": 0 hits, 0 failures">`, ` UTC: 0 hits, 0 failures</title>`, strconv.Itoa(today) + "</span> events today", "waiting to run", "rules.yaml"},
			nil},
		{"executions", "/executions", 200,
			[]string{s.failed.ID, s.succeeded.ID, s.queued[2].ID, "http 400: target says no", `data-refresh="/executions?partial=1"`},
			nil},
		{"executions by rule", "/executions?rule=status-done", 200,
			[]string{s.succeeded.ID}, []string{s.failed.ID, s.queued[0].ID}},
		{"executions by status", "/executions?status=failed", 200,
			[]string{s.failed.ID}, []string{s.succeeded.ID, s.queued[0].ID}},
		{"executions by rule and status", "/executions?rule=page-urgent&status=queued", 200,
			[]string{s.queued[0].ID, s.queued[2].ID}, []string{s.failed.ID, s.succeeded.ID}},
		{"executions since", "/executions?since=" + since, 200,
			[]string{s.queued[0].ID}, []string{s.failed.ID, s.succeeded.ID}},
		{"executions until", "/executions?until=" + since, 200,
			[]string{s.failed.ID, s.succeeded.ID}, []string{s.queued[0].ID}},
		{"executions of an event", "/executions?event=" + s.urgent.ID, 200,
			[]string{s.failed.ID}, []string{s.succeeded.ID}},
		{"executions page one", "/executions?limit=2", 200,
			[]string{s.xssExec.ID, s.queued[2].ID, `rel="next"`, "Older"}, []string{s.queued[1].ID, s.failed.ID}},
		{"executions bad status", "/executions?status=bogus", 400,
			[]string{"status: want queued", `name="rule"`}, nil},
		{"executions rows fragment", "/executions?partial=1", 200,
			[]string{"<table", s.failed.ID}, []string{"<html", "<nav"}},
		{"execution failed", "/executions/" + s.failed.ID, 200,
			[]string{"page-urgent", s.urgent.ID, "Freezer 3 alarm", "target says no", "400", "42ms",
				`action="/executions/` + s.failed.ID + `/retry"`, "Retry</button>", shortHash(s.failed.RuleSetHash)},
			nil},
		{"execution succeeded has no retry", "/executions/" + s.succeeded.ID, 200,
			[]string{"status-done", "T-1"}, []string{"Retry</button>"}},
		{"execution unknown", "/executions/0000000000000000", 404, []string{"404 Not Found"}, nil},
		{"events", "/events", 200,
			[]string{s.urgent.ID, s.low.ID, s.done.ID, s.updated.ID, s.pending.ID, "not matched yet", "page-urgent, record-created",
				`data-refresh="/events?partial=1"`},
			nil},
		{"events by type", "/events?type=action_status_updated", 200,
			[]string{s.done.ID, "action_status_changed"}, []string{s.urgent.ID, s.updated.ID}},
		{"events matched nothing", "/events?unmatched=true", 200,
			[]string{s.updated.ID}, []string{s.urgent.ID, s.done.ID, s.pending.ID}},
		{"events bad limit", "/events?limit=0", 400, []string{"limit: want", `name="type"`}, nil},
		{"events page one", "/events?limit=3", 200,
			[]string{s.pending.ID, `rel="next"`}, []string{s.urgent.ID}},
		{"events rows fragment", "/events?partial=1&type=action_updated", 200,
			[]string{s.updated.ID}, []string{"<html", s.urgent.ID}},
		{"event urgent", "/events/" + s.urgent.ID, 200,
			[]string{"Freezer 3 alarm", "Kitchen B", `title="event.action?.form?.location"`, `title="event.action?.assignees?.[0]?.name"`,
				"o-matched", "o-error", "title-check", "The condition was true", s.failed.ID, "Raw JSON", "/events/" + s.urgent.ID + "/replay"},
			nil},
		{"event low", "/events/" + s.low.ID, 200,
			[]string{"o-not_matched", "The condition was false", "o-skipped", "status-done"}, nil},
		{"event done skipped", "/events/" + s.done.ID, 200,
			[]string{"The rule listens to action_created; this event is action_status_updated.", "(sent as action_status_changed)"}, nil},
		{"event pending", "/events/" + s.pending.ID, 200, []string{"not matched yet"}, []string{"o-matched"}},
		{"event unknown", "/events/nope", 404, []string{"404 Not Found"}, nil},
		{"replay dry run", "/events/" + s.urgent.ID + "/replay", 200,
			[]string{"Dry run", "page-urgent: rendered steps", "Freezer 3 alarm", `name="confirm" value="yes"`, "Yes, replay and send"}, nil},
		{"replay unknown", "/events/nope/replay", 404, nil, nil},
		{"fields", "/events/fields?type=action_created", 200,
			[]string{"event.action?.priority", "event.action?.form?.temperature_c", "event.action?.assignees?.[0]?.id",
				"&#34;Urgent&#34;", "-4.5", "<meter"},
			[]string{"event.action?.status&#34;"}},
		{"fields bad n", "/events/fields?n=0", 400, []string{"n: want"}, nil},
		{"playground form", "/playground", 200, []string{`name="if"`, `name="rules"`, "name: page-urgent"}, nil},
		{"playground condition", "/playground?if=" + url.QueryEscape(`event.action?.priority == "Urgent"`) + "&type=action_created", 200,
			[]string{"matched 5 of 7 event(s)", s.urgent.ID}, nil},
		{"playground one event", "/playground?if=" + url.QueryEscape(`event.action?.priority == "Low"`) + "&event=" + s.low.ID, 200,
			[]string{"matched 1 of 1 event(s)"}, nil},
		{"playground runtime error", "/playground?if=" + url.QueryEscape(`event.action.title > 3`) + "&type=action_created", 200,
			[]string{"error(s)", "o-error"}, nil},
		{"playground syntax error", "/playground?if=" + url.QueryEscape("event.action?.priority ==\n  && true"), 200,
			[]string{"The condition does not compile", "Line 2, column", "  &amp;&amp; true\n  ^"}, nil},
		{"playground unknown event", "/playground?if=true&event=nope", 404, nil, nil},
	}
	c := e.client()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.get(c, tc.path)
			if code != tc.code {
				t.Fatalf("GET %s: got status %d, want %d\n%s", tc.path, code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s: got a page without %q", tc.path, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("GET %s: got a page with %q, want it left out", tc.path, w)
				}
			}
		})
	}
}

func TestUIPaging(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	older := regexp.MustCompile(`href="([^"]+)" rel="next"`)

	for _, start := range []string{"/executions?rule=page-urgent&limit=2", "/events?limit=4"} {
		t.Run(start, func(t *testing.T) {
			seen := map[string]bool{}
			idRE := regexp.MustCompile(`href="/(?:executions|events)/([A-Za-z0-9_-]{16,})"`)
			path := start
			pages := 0
			for path != "" {
				pages++
				if pages > 10 {
					t.Fatal("paging does not end")
				}
				_, body := e.get(c, path)
				var ids []string
				for _, m := range idRE.FindAllStringSubmatch(strings.SplitN(body, `<nav class="pager"`, 2)[0], -1) {
					ids = append(ids, m[1])
				}
				for _, id := range ids {
					if strings.HasPrefix(start, "/executions") && seen[id] {
						t.Errorf("page %d repeats %s", pages, id)
					}
					seen[id] = true
				}
				path = ""
				if m := older.FindStringSubmatch(body); m != nil {
					path = strings.ReplaceAll(m[1], "&amp;", "&")
					if !strings.Contains(path, "before=") {
						t.Fatalf("got Older link %q without a cursor", path)
					}
				}
			}
			if pages < 2 {
				t.Errorf("got %d page(s), want at least 2", pages)
			}
			want := []string{s.failed.ID, s.queued[0].ID, s.queued[2].ID}
			if strings.HasPrefix(start, "/events") {
				want = []string{s.urgent.ID, s.pending.ID, s.updated.ID}
			}
			for _, id := range want {
				if !seen[id] {
					t.Errorf("got no page listing %s", id)
				}
			}
		})
	}
}

// TestUIRefreshCarriesThePager: a list that refreshes itself gets its
// pager from the same fragment as its rows, so that once new rows have come
// in, "Older" starts right after the last row shown and no row ends up on
// neither page.
func TestUIRefreshCarriesThePager(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	e.seed()
	c := e.client()
	refreshRE := regexp.MustCompile(`data-refresh="([^"]+)"`)
	olderRE := regexp.MustCompile(`href="([^"]+)" rel="next"`)
	tests := []struct {
		name, path string
		idRE       *regexp.Regexp
		add        func()
	}{
		{"events", "/events?limit=3", regexp.MustCompile(`href="/events/([A-Za-z0-9_-]{16,})"`),
			func() { e.save(uiLowPayload, time.Now()) }},
		{"executions", "/executions?limit=2", regexp.MustCompile(`href="/executions/([A-Za-z0-9_-]{16,})"`),
			func() { e.ingest(uiUrgentPayload, time.Now()) }},
	}
	unescape := func(s string) string { return strings.ReplaceAll(s, "&amp;", "&") }
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids := func(body string) (out []string) {
				for _, m := range tc.idRE.FindAllStringSubmatch(body, -1) {
					out = append(out, m[1])
				}
				return out
			}
			_, page := e.get(c, tc.path)
			m := refreshRE.FindStringSubmatch(page)
			if m == nil {
				t.Fatalf("GET %s: got a first page without data-refresh", tc.path)
			}
			first := ids(page)
			tc.add()
			tc.add()
			_, frag := e.get(c, unescape(m[1]))
			rows := ids(frag)
			if len(rows) == 0 {
				t.Fatalf("got a refreshed list without rows:\n%s", frag)
			}
			o := olderRE.FindStringSubmatch(frag)
			if o == nil {
				t.Fatalf("got a refreshed list without its Older link:\n%s", frag)
			}
			older := unescape(o[1])
			if want := "before=" + rows[len(rows)-1]; !strings.Contains(older, want) {
				t.Errorf("got Older link %q, want it to start after the last row shown (%s)", older, want)
			}
			if strings.Contains(older, "partial") {
				t.Errorf("got Older link %q, want a whole page", older)
			}
			_, next := e.get(c, older)
			shown := map[string]bool{}
			for _, id := range append(rows, ids(next)...) {
				shown[id] = true
			}
			for _, id := range first {
				if !shown[id] {
					t.Errorf("got %s on neither the refreshed list nor the page after it", id)
				}
			}
		})
	}
}

// TestUIDashboardCountsLinkToWhatTheyCount: each rule's "N hits" and "N
// failures" lead to a list of exactly N events: the events it matched
// (steps or not), and those its condition failed on or an execution of it
// failed for, each counted and listed in the hour it happened, once per
// hour. That holds for an event received before the 24 hours and matched
// (a backlog) or failed in them, and for an event whose execution failed
// more than once (replays).
func TestUIDashboardCountsLinkToWhatTheyCount(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	created := []string{s.xss.ID, s.queued[2].EventID, s.queued[1].EventID, s.queued[0].EventID, s.low.ID, s.urgent.ID}
	tests := []struct {
		name string
		want []string
	}{
		// No steps: it has hits, and no execution to show for them.
		{"record-created matched", created},
		{"record-created failure", nil},
		{"page-urgent matched", []string{s.xss.ID, s.queued[2].EventID, s.queued[1].EventID, s.queued[0].EventID, s.urgent.ID}},
		// A failed execution.
		{"page-urgent failure", []string{s.urgent.ID}},
		// Condition errors, and no hit.
		{"title-check matched", nil},
		{"title-check failure", created},
		{"status-done matched", []string{s.done.ID}},
		{"status-done failure", nil},
	}
	got := dashboardLists(t, e, c)
	for _, tc := range tests {
		ids, ok := got[tc.name]
		if !ok {
			t.Errorf("%s: got no link on the dashboard", tc.name)
			continue
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got events %v, want %v", tc.name, ids, tc.want)
		}
	}
	// The failures list says why for each event.
	_, body := e.get(c, "/events?rule=page-urgent&outcome=failure")
	if want := `<a href="/executions/` + s.failed.ID + `"><span class="badge s-failed">failed</span></a>`; !strings.Contains(body, want) {
		t.Errorf("got a failures list without the failed execution %q", want)
	}
	_, body = e.get(c, "/events?rule=title-check&outcome=failure")
	if !strings.Contains(body, `<span class="badge o-error">error</span> <span class="err">`) {
		t.Error("got a failures list without the condition's error")
	}

	// A day and more later, every event above was received before the
	// dashboard's 24 hours. In them: a backlog event is matched, a queued
	// execution fails, and the failed one is replayed three times, twice
	// failing in one hour and once in another.
	later := e.now.Add(30 * time.Hour)
	e.admin.Now = func() time.Time { return later }
	hour1 := later.Truncate(time.Hour).Add(-3*time.Hour + 5*time.Minute)
	hour2 := later.Truncate(time.Hour).Add(-time.Hour + 5*time.Minute)
	fail := func(ex *alorules.Execution, at time.Time) {
		t.Helper()
		ex.Status, ex.UpdatedAt = alorules.StatusFailed, at
		if err := e.st.UpdateExecution(context.Background(), ex); err != nil {
			t.Fatal(err)
		}
	}
	backlog := e.save(uiUrgentPayload, e.now)
	e.match(backlog, hour1)
	fail(s.queued[0], hour2)
	for _, at := range []time.Time{hour1, hour1.Add(10 * time.Minute), hour2} {
		replay := &alorules.Execution{EventID: s.urgent.ID, Rule: "page-urgent", RuleSetHash: s.failed.RuleSetHash, Replay: true, CreatedAt: at}
		if err := e.st.AddExecutions(context.Background(), []*alorules.Execution{replay}); err != nil {
			t.Fatal(err)
		}
		fail(replay, at.Add(time.Minute))
	}
	tests = []struct {
		name string
		want []string
	}{
		{"record-created matched", []string{backlog.ID}},
		{"page-urgent matched", []string{backlog.ID}},
		// Newest hour first; in an hour, newest event first.
		{"page-urgent failure", []string{s.queued[0].EventID, s.urgent.ID, s.urgent.ID}},
		{"title-check failure", []string{backlog.ID}},
		{"status-done matched", nil},
	}
	got = dashboardLists(t, e, c)
	for _, tc := range tests {
		if ids := got[tc.name]; fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("a day later, %s: got events %v, want %v", tc.name, ids, tc.want)
		}
	}
}

// dashboardLists follows each rule's hits and failures links on the
// dashboard, checks that each list is as long as its link says, and
// returns the events listed by "rule outcome".
func dashboardLists(t *testing.T, e *uiEnv, c *http.Client) map[string][]string {
	t.Helper()
	_, dash := e.get(c, "/")
	linkRE := regexp.MustCompile(`<a href="(/events\?rule=([^&"]+)&amp;outcome=(matched|failure)&amp;since=[^"]+)"[^>]*>(\d+) (?:hits?|failures?)</a>`)
	rowRE := regexp.MustCompile(`class="c-first"><a href="/events/([^"]+)"`)
	got := map[string][]string{}
	for _, m := range linkRE.FindAllStringSubmatch(dash, -1) {
		path := strings.ReplaceAll(m[1], "&amp;", "&")
		code, body := e.get(c, path)
		if code != 200 {
			t.Fatalf("GET %s: got %d, want 200", path, code)
		}
		var ids []string
		for _, r := range rowRE.FindAllStringSubmatch(body, -1) {
			ids = append(ids, r[1])
		}
		if n, _ := strconv.Atoi(m[4]); len(ids) != n {
			t.Errorf("%s %s: the dashboard says %d, got %d events listed by %s", m[2], m[3], n, len(ids), path)
		}
		got[m[2]+" "+m[3]] = ids
	}
	if len(got) == 0 {
		t.Fatal("got no hits or failures links on the dashboard")
	}
	return got
}

func TestUIHeaders(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	for _, path := range []string{"/", "/executions", "/executions/" + s.failed.ID, "/events", "/events/" + s.urgent.ID,
		"/events/fields", "/playground", "/events/nope"} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
			"Cache-Control":           "no-store",
			"Content-Type":            "text/html; charset=UTF-8",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("GET %s: got %s %q, want %q", path, k, got, want)
			}
		}
	}

	// Assets: long cache with the current version, revalidate without.
	for _, tc := range []struct{ path, cache, ctype string }{
		{assets.CSS, "public, max-age=31536000, immutable", "text/css; charset=utf-8"},
		{assets.JS, "public, max-age=31536000, immutable", "text/javascript; charset=utf-8"},
		{"/static/app.js", "no-cache", "text/javascript; charset=utf-8"},
	} {
		resp, err := http.Get(e.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != tc.cache || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("GET %s: got %d, Cache-Control %q, Content-Type %q; want 200, %q, %q", tc.path, resp.StatusCode,
				resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"), tc.cache, tc.ctype)
		}
	}
	resp, err := http.Get(e.srv.URL + "/static/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /static/nope.js: got %d, want 404", resp.StatusCode)
	}
}

func TestUIPostsNeedCSRF(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	tok := e.token(c)
	posts := []struct {
		path string
		form url.Values
	}{
		{"/ui/reload", url.Values{}},
		{"/executions/" + s.failed.ID + "/retry", url.Values{}},
		{"/events/" + s.urgent.ID + "/replay", url.Values{"confirm": {"yes"}}},
		{"/playground", url.Values{"mode": {"rules"}, "rules": {"name: x\n"}}},
	}
	for _, p := range posts {
		t.Run(p.path, func(t *testing.T) {
			cases := []struct {
				name   string
				client func() *http.Client
				token  string
				hdr    map[string]string
			}{
				{"no token", func() *http.Client { return c }, "", nil},
				{"wrong token", func() *http.Client { return c }, strings.Repeat("A", 43), nil},
				{"no cookie", func() *http.Client { return e.client() }, tok, nil},
				{"cross-site", func() *http.Client { return c }, tok, map[string]string{"Sec-Fetch-Site": "cross-site"}},
				{"same-site subdomain", func() *http.Client { return c }, tok, map[string]string{"Sec-Fetch-Site": "same-site"}},
				{"foreign origin", func() *http.Client { return c }, tok, map[string]string{"Origin": "https://evil.example"}},
			}
			for _, tc := range cases {
				form := url.Values{}
				for k, v := range p.form {
					form[k] = v
				}
				if tc.token != "" {
					form.Set("csrf", tc.token)
				}
				resp := e.post(tc.client(), p.path, form, tc.hdr)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("%s: got status %d, want 403", tc.name, resp.StatusCode)
				}
			}
		})
	}
	if got := e.hits.Load(); got != 0 {
		t.Errorf("got %d requests to the target, want none", got)
	}
	ex, err := e.st.Execution(context.Background(), s.failed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != alorules.StatusFailed {
		t.Errorf("got status %s after refused retries, want failed", ex.Status)
	}

	// With the token from the same origin, each form goes through.
	for _, p := range posts {
		form := url.Values{"csrf": {tok}}
		for k, v := range p.form {
			form[k] = v
		}
		resp := e.post(c, p.path, form, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": e.srv.URL})
		if p.path == "/playground" {
			if resp.StatusCode != 200 {
				t.Errorf("POST %s with token: got %d, want 200", p.path, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("POST %s with token: got %d, want 303", p.path, resp.StatusCode)
		}
	}
}

func TestCrossOriginGuardOnAPI(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"machine client", nil, http.StatusOK},
		{"same origin browser", map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"cross-site browser", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"foreign origin", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/events/"+s.urgent.ID+"/replay?dry_run=true", nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("got status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestUIRetry(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	tok := e.token(c)
	resp := e.post(c, "/executions/"+s.failed.ID+"/retry", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/executions/"+s.failed.ID {
		t.Fatalf("got %d to %q, want 303 to the execution", resp.StatusCode, resp.Header.Get("Location"))
	}
	ex, err := e.st.Execution(context.Background(), s.failed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != alorules.StatusQueued {
		t.Errorf("got status %s, want queued", ex.Status)
	}
	_, body := e.get(c, "/executions/"+s.failed.ID)
	if !strings.Contains(body, "Retry queued") || strings.Contains(body, "Retry</button>") {
		t.Errorf("got a page without the flash or with a Retry button:\n%s", body)
	}
	// Its time is a <time> like the others: UTC as sent, local with the
	// script.
	ex, err = e.st.Execution(context.Background(), s.failed.ID)
	if err != nil {
		t.Fatal(err)
	}
	at := ex.NextAttemptAt.UTC()
	if want := `Retry queued at <time datetime="` + at.Format(time.RFC3339) + `">` + at.Format("2006-01-02 15:04:05") +
		` UTC</time>: failed steps run again`; !strings.Contains(body, want) {
		t.Errorf("got a flash without %q:\n%s", want, body)
	}
	// The flash shows once.
	if _, body = e.get(c, "/executions/"+s.failed.ID); strings.Contains(body, "Retry queued") {
		t.Error("got the flash again on the next page")
	}
	// Retrying what is not failed says so.
	e.post(c, "/executions/"+s.succeeded.ID+"/retry", url.Values{"csrf": {tok}}, nil)
	if _, body = e.get(c, "/executions/"+s.succeeded.ID); !strings.Contains(body, "Only a failed execution can be retried") {
		t.Error("got no explanation after retrying a succeeded execution")
	}
	if resp := e.post(c, "/executions/nope/retry", url.Values{"csrf": {tok}}, nil); resp.StatusCode != 404 {
		t.Errorf("retry of an unknown execution: got %d, want 404", resp.StatusCode)
	}
}

func TestUIReplay(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	tok := e.token(c)
	ctx := context.Background()
	before, _ := e.st.EventExecutions(ctx, s.urgent.ID)

	// Without confirm=yes it goes back to the confirmation page.
	resp := e.post(c, "/events/"+s.urgent.ID+"/replay", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/events/"+s.urgent.ID+"/replay" {
		t.Fatalf("unconfirmed replay: got %d to %q, want 303 to the confirmation page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if after, _ := e.st.EventExecutions(ctx, s.urgent.ID); len(after) != len(before) {
		t.Fatalf("unconfirmed replay: got %d executions, want %d", len(after), len(before))
	}

	resp = e.post(c, "/events/"+s.urgent.ID+"/replay", url.Values{"csrf": {tok}, "confirm": {"yes"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/events/"+s.urgent.ID {
		t.Fatalf("replay: got %d to %q, want 303 to the event", resp.StatusCode, resp.Header.Get("Location"))
	}
	after, _ := e.st.EventExecutions(ctx, s.urgent.ID)
	if len(after) != len(before)+1 || !after[len(after)-1].Replay {
		t.Fatalf("got %d executions (last replay=%v), want %d with a replay", len(after), after[len(after)-1].Replay, len(before)+1)
	}
	_, body := e.get(c, "/events/"+s.urgent.ID)
	if !strings.Contains(body, "Replayed: 1 execution(s) queued") || !strings.Contains(body, after[len(after)-1].ID[:12]) {
		t.Error("got an event page without the replay flash or the new execution")
	}
	if e.hits.Load() != 0 {
		t.Error("a replay sent something before the runner ran")
	}
}

func TestUIReload(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	c := e.client()
	tok := e.token(c)

	resp := e.post(c, "/ui/reload", url.Values{"csrf": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := e.get(c, "/"); !strings.Contains(body, "Reloaded ") || strings.Contains(body, `class="banner"`) {
		t.Error("got no success flash, or a failure banner, after a good reload")
	}

	broken := "version: 1\nrules:\n  - name: a\n    if: event.action?.x ==\n  - name: b\n    on: [action_craeted]\n"
	if err := os.WriteFile(e.rulesPath, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	e.post(c, "/ui/reload", url.Values{"csrf": {tok}}, nil)
	_, body := e.get(c, "/")
	for _, want := range []string{"Reload failed with 2 problem(s)", `class="banner"`, "The last reload failed",
		`rule &#34;a&#34;: if:`, `did you mean action_created?`, "page-urgent"} {
		if !strings.Contains(body, want) {
			t.Errorf("got a dashboard without %q after a failed reload", want)
		}
	}
}

func TestUIPlaygroundRules(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	c := e.client()
	tok := e.token(c)
	tests := []struct {
		name  string
		rules string
		want  []string
	}{
		{"one rule with a step", "name: try\non: [action_created]\nif: event.action?.priority == \"Low\"\ndo:\n  - http: { connection: target, path: \"/x/{{ event.action?.id }}\" }\n",
			[]string{"<b>try</b> matched 2 of 9", "/x/act-2", "1 rendered step(s)", s.low.ID}},
		{"a list of rules", "- name: one\n  on: [action_updated]\n- name: two\n  if: type == \"action_status_updated\"\n",
			[]string{"<b>one</b> matched 1 of 9", "<b>two</b> matched 1 of 9"}},
		{"a whole file", "version: 1\nrules:\n  - name: whole\n    on: [action_created]\n",
			[]string{"<b>whole</b> matched 7 of 9"}},
		{"an error on the user's line", "name: bad\non: [action_created]\nif: event.action?.x ==\n",
			[]string{"The rules do not load", "Line 3", "if: event.action?.x =="}},
		// The engine counts columns inside the expression; the page counts
		// them on the line as pasted, and draws the caret there.
		{"a column on the user's line", "name: bad\non: [action_created]\nif: event.action?.x == && true\n",
			[]string{"Line 3, column 24: ", "if: event.action?.x == &amp;&amp; true\n" + strings.Repeat(" ", 23) + "^</pre>"}},
		{"a column in a list item", "- name: bad\n  if: event.action?.x == && true\n",
			[]string{"Line 2, column 26: ", "\n" + strings.Repeat(" ", 25) + "^</pre>"}},
		{"a column in a double-quoted condition", "name: bad\nif: \"event.action?.x == \\\"a\\\" && && true\"\n",
			[]string{"Line 2, column 34: ", "\n" + strings.Repeat(" ", 33) + "^</pre>"}},
		{"a column in a single-quoted condition", "name: bad\nif: 'event.action?.x == ''a'' && && true'\n",
			[]string{"Line 2, column 34: ", "\n" + strings.Repeat(" ", 33) + "^</pre>"}},
		{"a column in a literal block", "name: bad\nif: |\n  event.action?.x == 1\n    && && true\n",
			[]string{"Line 4, column 8: ", "\n" + strings.Repeat(" ", 7) + "^</pre>"}},
		{"a column in a whole file", "version: 1\nrules:\n  - name: bad\n    unless: x ==\n    after: 1h\n    if: event.action?.x == && true\n",
			[]string{"Line 4, column 16: ", "Line 6, column 28: ", "\n" + strings.Repeat(" ", 27) + "^</pre>"}},
		{"a folded condition keeps the expression's column", "name: bad\nif: >\n  event.action?.x ==\n  && true\n",
			[]string{"Line 3, column 20 of the expression: "}},
		{"the prefilled example", e.admin.exampleRule(),
			[]string{"<b>page-urgent</b> matched 5 of 9", "Freezer 3 alarm"}},
		{"an unknown connection", "name: bad\ndo:\n  - http: { connection: nowhere, path: /x }\n",
			[]string{"The rules do not load", "Line 3", "nowhere"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/playground",
				strings.NewReader(url.Values{"csrf": {tok}, "mode": {"rules"}, "rules": {tc.rules}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := uiReadBody(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("got status %d, want 200\n%s", resp.StatusCode, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("got a result without %q", w)
				}
			}
		})
	}
	if e.hits.Load() != 0 {
		t.Error("the playground sent a request")
	}
}

// TestUIAuth: with admin auth on, every route of the admin listener but
// the probes answers 401 without credentials, and the pages answer 200
// with them.
func TestUIAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	auths := []struct {
		name string
		auth *Auth
		set  func(*http.Request)
	}{
		{"token", &Auth{Token: "tok-123456"}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-123456") }},
		{"basic", &Auth{User: "ops", PasswordHash: hash}, func(r *http.Request) { r.SetBasicAuth("ops", "pw") }},
	}
	for _, a := range auths {
		t.Run(a.name, func(t *testing.T) {
			e := newUIEnv(t, uiOptions{auth: a.auth})
			s := e.seed()
			// Every route of the admin listener, read from its router, so
			// that a page added later is covered without editing a list;
			// then spellings that must not slip past auth on their way to
			// one.
			ids := map[string]string{"/executions/": s.failed.ID, "/events/": s.urgent.ID, "/static/": "app.js"}
			type req struct{ method, path string }
			var reqs []req
			routes := map[string]bool{}
			for _, r := range e.echo.Routes() {
				routes[r.Method+" "+r.Path] = true
				if r.Path == "/healthz" || r.Path == "/readyz" {
					continue // probes: open on purpose, and say nothing
				}
				reqs = append(reqs, req{r.Method, concretePath(r.Path, ids)})
			}
			for _, r := range []string{"GET /timers", "POST /timers/:id/cancel", "GET /events/fields", "GET /playground",
				"POST /api/v1/rules/test", "POST /-/reload", "GET /static/:name"} {
				if !routes[r] {
					t.Errorf("got no route %s among %d: the list is not what the router serves", r, len(routes))
				}
			}
			paths := []string{"/", "/executions", "/executions?partial=1", "/executions/" + s.failed.ID, "/events",
				"/events/" + s.urgent.ID, "/events/" + s.urgent.ID + "/replay", "/events/fields", "/playground",
				"/playground?if=true", "/static/app.js", assets.CSS, "/timers", "/events?rule=page-urgent&outcome=failure",
				"/%65vents", "/%65vents/" + s.urgent.ID, "/%74imers", "/executions/%2e%2e/", "/nope"}
			for _, p := range paths {
				reqs = append(reqs, req{http.MethodGet, p})
			}
			for _, r := range reqs {
				hreq, _ := http.NewRequest(r.method, e.srv.URL+r.path, strings.NewReader("confirm=yes"))
				hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := http.DefaultClient.Do(hreq)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s %s without credentials: got %d, want 401", r.method, r.path, resp.StatusCode)
				}
			}
			for _, p := range paths[:14] {
				req, _ := http.NewRequest(http.MethodGet, e.srv.URL+p, nil)
				a.set(req)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s with credentials: got %d, want 200", p, resp.StatusCode)
				}
			}
		})
	}
}

// concretePath fills a route's parameters: the id for the prefix before
// them if ids has one, else "x". Auth comes before routing to a handler,
// so any value is refused alike; known ones keep the request realistic.
func concretePath(route string, ids map[string]string) string {
	parts := strings.Split(route, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, ":") || p == "*" {
			v, ok := ids[strings.Join(parts[:i], "/")+"/"]
			if !ok {
				v = "x"
			}
			parts[i] = v
		}
	}
	return strings.Join(parts, "/")
}

func TestUIEscapesPayloads(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	hostileType := e.save(`{"type":`+uiJSONString(uiXSSValue)+`,"x":`+uiJSONString(uiXSSAttr)+`}`, e.now.Add(-time.Minute))
	e.match(hostileType, e.now)
	exs, err := e.st.EventExecutions(context.Background(), s.xss.ID)
	if err != nil || len(exs) == 0 {
		t.Fatalf("got %d executions of the hostile event (%v), want one", len(exs), err)
	}
	ex := exs[0]
	ex.Status = alorules.StatusFailed
	ex.Error = uiXSSValue + uiXSSAttr
	ex.Steps[0].Status = alorules.StatusFailed
	ex.Steps[0].Body = uiXSSValue + uiXSSAttr
	ex.Steps[0].Error = uiXSSAttr
	ex.Steps[0].Request = []byte(`{"json":{"title":` + uiJSONString(uiXSSValue) + `}}`)
	if err := e.st.UpdateExecution(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	tok := e.token(c)
	pages := []string{
		"/events", "/events/" + s.xss.ID, "/events/" + s.xss.ID + "/replay", "/events/fields",
		"/events/fields?type=" + url.QueryEscape(uiXSSValue), "/events/" + hostileType.ID,
		"/events?type=" + url.QueryEscape(uiXSSValue), "/executions", "/executions/" + ex.ID,
		"/executions?rule=" + url.QueryEscape(uiXSSAttr), "/playground?if=" + url.QueryEscape(`event.action?.title == "`+uiXSSValue+`"`),
		"/playground?if=" + url.QueryEscape(uiXSSAttr), "/playground?event=" + url.QueryEscape(uiXSSAttr) + "&if=true",
	}
	for _, p := range pages {
		code, body := e.get(c, p)
		if code >= 500 {
			t.Errorf("GET %s: got %d", p, code)
		}
		uiCheckInert(t, "GET "+p, body)
	}
	// The hostile strings are shown, escaped, where they belong.
	if _, body := e.get(c, "/events/"+s.xss.ID); !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") ||
		!strings.Contains(body, "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;") {
		t.Error("got an event page without the escaped payload")
	}
	// And in the playground's candidate rules and issues.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/playground", strings.NewReader(url.Values{
		"csrf": {tok}, "mode": {"rules"}, "rules": {"name: " + uiXSSAttr + "\nif: " + uiXSSValue + "\n"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	uiCheckInert(t, "POST /playground", uiReadBody(t, resp))
}

func uiCheckInert(t *testing.T, what, body string) {
	t.Helper()
	for _, bad := range []string{uiXSSValue, "<img src=x", "onerror=alert(1)>"} {
		if i := strings.Index(body, bad); i >= 0 {
			t.Errorf("%s: got %q unescaped: …%s…", what, bad, body[max(0, i-80):min(len(body), i+80)])
		}
	}
}

func uiReadBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFieldPaths(t *testing.T) {
	fc := newFieldCollector()
	fc.add([]byte(`{"type":"a","action":{"id":"1","list":[{"x":1},{"y":2}],"odd-key":true}}`))
	fc.add([]byte(`{"type":"a","action":{"id":"2","form":{"loc":"K"}},"extra":null}`))
	var got []string
	for _, f := range fc.fields() {
		got = append(got, f.Path+"="+strings.Join(f.Examples, "|")+"/"+strconv.Itoa(f.Count))
	}
	want := []string{
		`event.type="a"/2`,
		`event.action=/2`,
		`event.action?.id="1"|"2"/2`,
		`event.action?.list=/1`,
		`event.action?.list?.[0]=/1`,
		`event.action?.list?.[0]?.x=1/1`,
		`event.action?.["odd-key"]=true/1`,
		`event.action?.form=/1`,
		`event.action?.form?.loc="K"/1`,
		`event.extra=null/1`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got fields\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPrettyJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"\u003cb\u003e \u0026"}`, "{\n  \"a\": \"<b> &\"\n}"},
		{`{"a":"\\u003c"}`, "{\n  \"a\": \"\\\\u003c\"\n}"},
		{`not json`, `not json`},
		{``, ``},
	}
	for _, tc := range tests {
		if got := prettyJSON([]byte(tc.in)); got != tc.want {
			t.Errorf("prettyJSON(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestConditionFileLines(t *testing.T) {
	src, first := conditionFile("  event.action?.x == 1 &&\n   event.type ==  \n")
	e := newUIEnv(t, uiOptions{})
	res, err := e.admin.TestRules(context.Background(), RulesTestRequest{Rules: src, Event: []byte(`{"type":"action_created"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Issues) != 1 {
		t.Fatalf("got issues %v, want one", res.Issues)
	}
	if got := res.Issues[0].Line - first; got != 2 {
		t.Errorf("got the issue on condition line %d, want 2 (%v)", got, res.Issues[0])
	}
}

// TestBackupClientThatStopsReading: a backup client that stops reading
// must not hold the store's read transaction for good; the stream is cut
// after BackupStall and the store can close.
func TestBackupClientThatStopsReading(t *testing.T) {
	e := newUIEnv(t, uiOptions{noSync: true})
	e.admin.BackupStall = 200 * time.Millisecond
	big := strings.Repeat("x", 512<<10)
	for i := range 60 {
		e.save(fmt.Sprintf(`{"type":"action_updated","n":%d,"pad":%q}`, i, big), e.now)
	}
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/backup HTTP/1.1\r\nHost: x\r\n\r\n")
	// Read the first bytes, then stop reading with the rest (about
	// 30 MB, more than the socket buffers hold) still to come.
	if _, err := conn.Read(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.st.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the store could not close within 10 s while a backup client stalled")
	}
}

func TestCaret(t *testing.T) {
	tests := []struct {
		name, line string
		col        int
		want       string
	}{
		{"first column", "abc", 1, "^"},
		{"inside", "abc", 3, "  ^"},
		{"just past the end", "abc", 4, "   ^"},
		{"tabs kept", "\ta\tb", 4, "\t \t^"},
		{"a wide letter is one column", "é == x", 3, "  ^"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := caret(tc.line, tc.col); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUIDashboardRulesFileGone: a rules file deleted under the running
// service is not a failed reload, but the dashboard says it is gone and
// that the rules shown still run, until it is back.
func TestUIDashboardRulesFileGone(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := e.client()
	const banner = "The rules file is gone"
	if _, page := e.get(c, "/"); strings.Contains(page, banner) {
		t.Fatal("got the banner with the file in place")
	}
	src, err := os.ReadFile(e.rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	// The watcher starts with Run; a removal before it watches goes unseen.
	deadline := time.Now().Add(10 * time.Second)
	for e.eng.Status().FileGoneSince.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the removal was not seen within 10s")
		}
		os.Remove(e.rulesPath)
		time.Sleep(50 * time.Millisecond)
	}
	if _, page := e.get(c, "/"); !strings.Contains(page, banner) || !strings.Contains(page, "page-urgent") {
		t.Errorf("got a dashboard without the banner or the running rules:\n%s", page)
	}
	if err := os.WriteFile(e.rulesPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	for !e.eng.Status().FileGoneSince.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the file's return was not seen within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, page := e.get(c, "/"); strings.Contains(page, banner) {
		t.Error("got the banner after the file came back")
	}
}
