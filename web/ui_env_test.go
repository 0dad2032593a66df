package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/actions"
	"alorules/alo"
	"alorules/engine"
	"alorules/store"
)

// uiEnv is the admin listener wired to a real store, engine and runner,
// with an HTTP target standing in for the outside world.
type uiEnv struct {
	t         testing.TB
	st        *store.Store
	eng       *engine.Engine
	runner    *actions.Runner
	admin     *Admin
	echo      *echo.Echo // the admin listener's router, to list its routes
	srv       *httptest.Server
	target    *httptest.Server
	targetOK  atomic.Bool // false: the target answers 400
	hits      atomic.Int64
	rulesPath string
	now       time.Time
}

type uiOptions struct {
	auth   *Auth
	noSync bool
}

func newUIEnv(t testing.TB, opt uiOptions) *uiEnv {
	t.Helper()
	e := &uiEnv{t: t, now: time.Now().UTC()}
	e.target = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		if !e.targetOK.Load() {
			http.Error(w, `{"error":"target says no"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"T-1","ok":true}`)
	}))
	t.Cleanup(e.target.Close)

	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "alorules.db"), store.Options{NoSync: opt.noSync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st

	src, err := os.ReadFile("testdata/ui_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e.rulesPath = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(e.rulesPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "TARGET_URL" {
			return e.target.URL
		}
		return ""
	}
	e.eng, err = engine.New(engine.Config{Store: st, RulesPath: e.rulesPath, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	e.runner = actions.NewRunner(actions.RunnerConfig{Store: st, Renderer: e.eng, Workers: 2})
	e.admin = &Admin{Store: st, Rules: e.eng, Runner: e.runner, Getenv: getenv}
	srv, err := New(Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Verifier: &alo.Verifier{Secrets: []string{"s"}},
		Store:    st,
		Auth:     opt.auth,
		Admin:    func(ec *echo.Echo) { e.echo = ec; e.admin.Routes(ec); e.admin.UIRoutes(ec) },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(srv.AdminHandler())
	t.Cleanup(e.srv.Close)
	return e
}

// save stores an event received at at, without matching it.
func (e *uiEnv) save(payload string, at time.Time) *alorules.Event {
	e.t.Helper()
	ev, err := engine.NewEvent([]byte(payload), at)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.st.SaveEvent(context.Background(), ev, nil); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// ingest stores an event and matches it as the engine would, creating
// its executions at the event's time.
func (e *uiEnv) ingest(payload string, at time.Time) (*alorules.Event, []*alorules.Execution) {
	e.t.Helper()
	ev := e.save(payload, at)
	return ev, e.match(ev, at)
}

func (e *uiEnv) match(ev *alorules.Event, at time.Time) []*alorules.Execution {
	e.t.Helper()
	ctx := context.Background()
	rs := e.eng.Current()
	eval := rs.Evaluate(ev, at, e.st)
	for _, ex := range eval.Executions {
		ex.CreatedAt = at
	}
	err := e.st.SaveMatch(ctx, store.MatchWrite{
		Match:      &alorules.Match{EventID: ev.ID, RuleSetHash: rs.Hash(), MatchedAt: at, Results: eval.Results},
		Executions: eval.Executions, Throttles: eval.Throttles,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	exs, err := e.st.EventExecutions(ctx, ev.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return exs
}

// finish records an execution's one step as done with the given answer.
func (e *uiEnv) finish(ex *alorules.Execution, status alorules.Status, code int, body, errMsg string) {
	e.t.Helper()
	ex.Status = status
	ex.Error = errMsg
	ex.UpdatedAt = ex.CreatedAt.Add(time.Second)
	for i := range ex.Steps {
		ex.Steps[i].Status = status
		ex.Steps[i].Attempts = 1
		ex.Steps[i].Code = code
		ex.Steps[i].Body = body
		ex.Steps[i].Error = errMsg
		ex.Steps[i].StartedAt = ex.CreatedAt
		ex.Steps[i].Duration = 42 * time.Millisecond
		ex.Steps[i].Request = json.RawMessage(`{"connection":"target","method":"POST","path":"/page","json":{"title":"Freezer 3 alarm"}}`)
	}
	if err := e.st.UpdateExecution(context.Background(), ex); err != nil {
		e.t.Fatal(err)
	}
}

// client is a browser-like client: it keeps cookies and does not follow
// redirects, so tests can look at them.
func (e *uiEnv) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches path and returns the status and body.
func (e *uiEnv) get(c *http.Client, path string) (int, string) {
	e.t.Helper()
	if c == nil {
		c = e.client()
	}
	resp, err := c.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token loads the dashboard with c and returns the form token it carries.
func (e *uiEnv) token(c *http.Client) string {
	e.t.Helper()
	_, body := e.get(c, "/")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		e.t.Fatal("no csrf field on the dashboard")
	}
	return m[1]
}

// post sends a form like a browser on this origin would.
func (e *uiEnv) post(c *http.Client, path string, form url.Values, hdr map[string]string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// Sample payloads shaped like the illustrative ALO events.
const (
	uiUrgentPayload = `{"type":"action_created","action":{"id":"act-1","title":"Freezer 3 alarm","priority":"Urgent","status":"Open",` +
		`"form":{"location":"Kitchen B","temperature_c":-4.5},"assignees":[{"id":"usr-1","name":"Dana"}]}}`
	uiLowPayload = `{"type":"action_created","action":{"id":"act-2","title":"Squeaky door","priority":"Low","status":"Open",` +
		`"form":{"location":"Hall"}}}`
	uiDonePayload    = `{"type":"action_status_changed","action":{"id":"act-1","status":"Completed","priority":"Urgent"}}`
	uiUpdatedPayload = `{"type":"action_updated","action":{"id":"act-3","title":"Nothing listens","priority":"Low"}}`
	uiXSSValue       = `<script>alert(1)</script>`
	uiXSSAttr        = `"><img src=x onerror=alert(1)>`
)

// uiXSSPayload puts both hostile strings in keys and values, and in the
// field the rule's step renders.
var uiXSSPayload = `{"type":"action_created","action":{"priority":"Urgent","title":` + uiJSONString(uiXSSValue) +
	`,` + uiJSONString(uiXSSAttr) + `:` + uiJSONString(uiXSSAttr) + `,` + uiJSONString(uiXSSValue) + `:{"nested":` + uiJSONString(uiXSSAttr) + `}}}`

func uiJSONString(s string) string {
	b, _ := json.Marshal(s)
	// json.Marshal escapes < and > for HTML; keep them raw as an
	// attacker would send them.
	r := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&")
	return r.Replace(string(b))
}

// seed is the standard data set of the UI tests.
type uiSeed struct {
	urgent, low, done, updated, pending, xss *alorules.Event
	failed, succeeded, xssExec               *alorules.Execution
	queued                                   []*alorules.Execution
}

func (e *uiEnv) seed() uiSeed {
	e.t.Helper()
	var s uiSeed
	base := e.now.Add(-2 * time.Hour)
	var exs []*alorules.Execution
	s.urgent, exs = e.ingest(uiUrgentPayload, base)
	s.failed = exs[0]
	e.finish(s.failed, alorules.StatusFailed, 400, `{"error":"target says no"}`, "http 400: target says no")
	s.low, _ = e.ingest(uiLowPayload, base.Add(10*time.Minute))
	s.done, exs = e.ingest(uiDonePayload, base.Add(20*time.Minute))
	s.succeeded = exs[0]
	e.finish(s.succeeded, alorules.StatusSucceeded, 200, `{"id":"T-1","ok":true}`, "")
	s.updated, _ = e.ingest(uiUpdatedPayload, base.Add(30*time.Minute))
	for i := range 3 {
		_, exs = e.ingest(uiUrgentPayload, base.Add(time.Duration(40+i)*time.Minute))
		s.queued = append(s.queued, exs[0])
	}
	s.xss, exs = e.ingest(uiXSSPayload, base.Add(50*time.Minute))
	s.xssExec = exs[0]
	s.pending = e.save(uiLowPayload, base.Add(60*time.Minute))
	return s
}
