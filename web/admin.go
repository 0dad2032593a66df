package web

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/alo"
	"alorules/engine"
	"alorules/store"
)

// AdminStore is what the admin API and UI read from the store beyond what
// ingress needs; *store.Store satisfies it.
type AdminStore interface {
	Store
	AddExecutions(ctx context.Context, execs []*alorules.Execution) error
	CountByStatus(ctx context.Context) (map[alorules.Status]int, error)
	RuleStats(ctx context.Context, since time.Time) (map[string]*store.RuleStats, error)
	EventCountSince(ctx context.Context, t time.Time) (int, error)
	Backup(w io.Writer) (int64, error)
	Size() int64
	// Rules over time: pending timers and open digests.
	Timers(ctx context.Context, f store.DueFilter) ([]*store.Timer, string, error)
	TimerCount(ctx context.Context) (int, error)
	CancelTimer(ctx context.Context, id string) (*store.Timer, error)
	Digests(ctx context.Context, f store.DueFilter) ([]*store.Digest, string, error)
	DigestCount(ctx context.Context) (int, error)
}

// Rules is the engine as the admin side sees it.
type Rules interface {
	Status() engine.Status
	Current() *engine.RuleSet
	Reload() error
}

// Runner is the step runner as the admin side sees it.
type Runner interface {
	Retry(ctx context.Context, id string) (*alorules.Execution, error)
	Notify()
}

// Admin serves the JSON API (and the UI) on the admin listener.
type Admin struct {
	Store  AdminStore
	Rules  Rules
	Runner Runner
	// Getenv expands ${NAME} in candidate rules sent to rules/test.
	Getenv func(string) string
	Logger *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// BackupStall bounds how long one write of a backup may wait for the
	// client to read; default 30 s. A backup holds a read transaction,
	// which keeps freed pages from reuse and the store from closing, so
	// a client that stops reading must not hold it for good.
	BackupStall time.Duration
}

func (a *Admin) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Routes registers the JSON API and POST /-/reload.
func (a *Admin) Routes(e *echo.Echo) {
	api := e.Group("/api/v1")
	api.GET("/events", a.listEvents)
	api.GET("/events/:id", a.getEvent)
	api.POST("/events/:id/replay", a.replayEvent)
	api.GET("/executions", a.listExecutions)
	api.GET("/executions/:id", a.getExecution)
	api.POST("/executions/:id/retry", a.retryExecution)
	api.GET("/timers", a.listTimers)
	api.POST("/timers/:id/cancel", a.cancelTimer)
	api.GET("/digests", a.listDigests)
	api.GET("/rules", a.getRules)
	api.POST("/rules/test", a.testRules)
	api.GET("/backup", a.backup)
	e.POST("/-/reload", a.reload)
}

// eventSummary is an event in a list: everything but the payload.
type eventSummary struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	RawType    string    `json:"raw_type"`
	ReceivedAt time.Time `json:"received_at"`
	Handshake  bool      `json:"handshake,omitempty"`
	Size       int       `json:"size"`
}

func summarize(ev *alorules.Event) eventSummary {
	return eventSummary{ID: ev.ID, Type: ev.Type, RawType: ev.RawType, ReceivedAt: ev.ReceivedAt,
		Handshake: ev.Handshake, Size: len(ev.Payload)}
}

func queryLimit(c echo.Context) (int, error) {
	v := c.QueryParam("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 500 {
		return 0, echo.NewHTTPError(http.StatusBadRequest, "limit: want a whole number from 1 to 500")
	}
	return n, nil
}

// storedType is the type a filter looks events up by: they are stored
// under the normalised type, so an alias (action_status_changed) would
// otherwise find nothing. What the user typed is shown as typed.
func storedType(t string) string { return alo.NormalizeType(t) }

// EventFilter reads the events list's query parameters, for the API and
// the page alike.
func EventFilter(c echo.Context) (store.EventFilter, error) {
	f := store.EventFilter{Type: storedType(c.QueryParam("type")), Before: c.QueryParam("before"),
		Unmatched: c.QueryParam("unmatched") == "true", Rule: c.QueryParam("rule"), Outcome: c.QueryParam("outcome")}
	var err error
	if f.Limit, err = queryLimit(c); err != nil {
		return f, err
	}
	if f.Since, err = parseTimeParam(c, "since"); err != nil {
		return f, err
	}
	// Outcome qualifies rule and is ignored without it, as the page's
	// form always sends one.
	switch f.Outcome {
	case "", store.RuleMatched, store.RuleFailed:
	default:
		return f, echo.NewHTTPError(http.StatusBadRequest, "outcome: want matched (the rule's hits) or failure (its failures)")
	}
	return f, nil
}

func (a *Admin) listEvents(c echo.Context) error {
	f, err := EventFilter(c)
	if err != nil {
		return err
	}
	evs, next, err := a.Store.Events(c.Request().Context(), f)
	if err != nil {
		return err
	}
	out := make([]eventSummary, len(evs))
	for i, ev := range evs {
		out[i] = summarize(ev)
	}
	return c.JSON(http.StatusOK, map[string]any{"events": out, "next": next})
}

// EventDetail is one event with what the rules made of it.
type EventDetail struct {
	*alorules.Event
	// Match is nil until the engine has matched the event.
	Match      *alorules.Match       `json:"match"`
	Executions []*alorules.Execution `json:"executions"`
}

// EventDetail loads an event with its match and executions.
func (a *Admin) EventDetail(ctx context.Context, id string) (*EventDetail, error) {
	ev, err := a.Store.Event(ctx, id)
	if err != nil {
		return nil, err
	}
	d := &EventDetail{Event: ev}
	if d.Match, err = a.Store.Match(ctx, id); err != nil && !errors.Is(err, alorules.ErrNotFound) {
		return nil, err
	}
	if d.Executions, err = a.Store.EventExecutions(ctx, id); err != nil {
		return nil, err
	}
	return d, nil
}

// eventDetailHead is an EventDetail without its payload: the outer field
// hides the embedded event's, and omitempty drops it.
type eventDetailHead struct {
	*EventDetail
	Payload *struct{} `json:"payload,omitempty"`
}

// getEvent answers with the payload exactly as received. encoding/json
// would compact a RawMessage, so the rest of the detail is encoded alone
// and the stored bytes (valid JSON: ingest checked them) are spliced in as
// its last member.
func (a *Admin) getEvent(c echo.Context) error {
	d, err := a.EventDetail(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	head, err := marshalJSON(eventDetailHead{EventDetail: d})
	if err != nil {
		return fmt.Errorf("encode event %s: %w", d.ID, err)
	}
	payload := []byte(d.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	// head is a non-empty object ("id" is always there): reopen it.
	out := bytes.TrimSuffix(bytes.TrimRight(head, "\n"), []byte("}"))
	out = append(out, `,"payload":`...)
	out = append(out, payload...)
	out = append(out, "}\n"...)
	return c.JSONBlob(http.StatusOK, out)
}

// Replay evaluates a stored event against the current rules again. A dry
// run only renders; otherwise the matched rules' executions are queued,
// marked as a replay. Throttles are not applied: a replay is deliberate.
func (a *Admin) Replay(ctx context.Context, id string, dryRun bool) (engine.TestResult, []*alorules.Execution, error) {
	ev, err := a.Store.Event(ctx, id)
	if err != nil {
		return engine.TestResult{}, nil, err
	}
	if ev.Handshake {
		return engine.TestResult{}, nil, echo.NewHTTPError(http.StatusBadRequest, "a URL verification handshake is not matched against rules")
	}
	rs := a.Rules.Current()
	if rs == nil {
		return engine.TestResult{}, nil, echo.NewHTTPError(http.StatusServiceUnavailable, "no rules loaded")
	}
	// The replay sees the previous payload the matcher saw, if that event
	// is still stored.
	prev, note, err := a.previousEvent(ctx, id)
	if err != nil {
		return engine.TestResult{}, nil, err
	}
	res := engine.TestAfter(rs, ev, prev, a.now())
	if res.Note == "" {
		res.Note = note
	}
	if dryRun {
		return res, nil, nil
	}
	// Timers and digests are left alone: a replay runs what would run
	// now, and only that.
	eval := rs.EvaluateAfter(ev, prev, a.now(), nil)
	for _, ex := range eval.Executions {
		ex.Replay = true
	}
	if len(eval.Executions) > 0 {
		if err := a.Store.AddExecutions(ctx, eval.Executions); err != nil {
			return res, nil, fmt.Errorf("queue replay of %s: %w", id, err)
		}
		a.Runner.Notify()
	}
	return res, eval.Executions, nil
}

// previousEvent is the event the matcher saw as previous for event id, nil
// if there was none (or the event is not matched yet) or it is gone; note
// then says that it is gone.
func (a *Admin) previousEvent(ctx context.Context, id string) (prev *alorules.Event, note string, err error) {
	m, err := a.Store.Match(ctx, id)
	if errors.Is(err, alorules.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil || m.PreviousEventID == "" {
		return nil, "", err
	}
	prev, err = a.Store.Event(ctx, m.PreviousEventID)
	if errors.Is(err, alorules.ErrNotFound) {
		return nil, fmt.Sprintf("the previous event the service compared this one with (%s) has been pruned: evaluated without it, so previous is nil and changed() is true for every path that has a value", m.PreviousEventID), nil
	}
	if err != nil {
		return nil, "", err
	}
	return prev, "", nil
}

func (a *Admin) replayEvent(c echo.Context) error {
	dry := c.QueryParam("dry_run") == "true"
	res, execs, err := a.Replay(c.Request().Context(), c.Param("id"), dry)
	if err != nil {
		return err
	}
	if execs == nil {
		execs = []*alorules.Execution{}
	}
	return c.JSON(http.StatusOK, map[string]any{"dry_run": dry, "result": res, "executions": execs})
}

func parseTimeParam(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		if d, derr := time.ParseDuration(v); derr == nil {
			return time.Now().Add(-d), nil
		}
		return time.Time{}, echo.NewHTTPError(http.StatusBadRequest, name+": want an RFC 3339 time or a duration such as 24h")
	}
	return t, nil
}

// ExecutionFilter reads the executions list's query parameters.
func ExecutionFilter(c echo.Context) (store.ExecutionFilter, error) {
	f := store.ExecutionFilter{Rule: c.QueryParam("rule"), Status: c.QueryParam("status"),
		EventID: c.QueryParam("event"), Before: c.QueryParam("before")}
	var err error
	if f.Limit, err = queryLimit(c); err != nil {
		return f, err
	}
	if f.Since, err = parseTimeParam(c, "since"); err != nil {
		return f, err
	}
	if f.Until, err = parseTimeParam(c, "until"); err != nil {
		return f, err
	}
	switch alorules.Status(f.Status) {
	case "", alorules.StatusQueued, alorules.StatusRunning, alorules.StatusRetrying, alorules.StatusSucceeded, alorules.StatusFailed:
	default:
		return f, echo.NewHTTPError(http.StatusBadRequest, "status: want queued, running, retrying, succeeded or failed")
	}
	return f, nil
}

func (a *Admin) listExecutions(c echo.Context) error {
	f, err := ExecutionFilter(c)
	if err != nil {
		return err
	}
	exs, next, err := a.Store.Executions(c.Request().Context(), f)
	if err != nil {
		return err
	}
	if exs == nil {
		exs = []*alorules.Execution{}
	}
	return c.JSON(http.StatusOK, map[string]any{"executions": exs, "next": next})
}

func (a *Admin) getExecution(c echo.Context) error {
	ex, err := a.Store.Execution(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ex)
}

func (a *Admin) retryExecution(c echo.Context) error {
	ex, err := a.Runner.Retry(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ex)
}

// TimerView is a pending timer in the API, with a link to its event.
type TimerView struct {
	*store.Timer
	Event string `json:"event"`
}

func dueFilter(c echo.Context) (store.DueFilter, error) {
	limit, err := queryLimit(c)
	if err != nil {
		return store.DueFilter{}, err
	}
	after := c.QueryParam("after")
	if _, err := hex.DecodeString(after); err != nil {
		return store.DueFilter{}, echo.NewHTTPError(http.StatusBadRequest, "after: want the next cursor of an earlier page")
	}
	return store.DueFilter{After: after, Limit: limit}, nil
}

// listTimers is GET /api/v1/timers: pending timers, soonest due first,
// paged with after=<next>.
func (a *Admin) listTimers(c echo.Context) error {
	f, err := dueFilter(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ts, next, err := a.Store.Timers(ctx, f)
	if err != nil {
		return err
	}
	n, err := a.Store.TimerCount(ctx)
	if err != nil {
		return err
	}
	out := make([]TimerView, len(ts))
	for i, t := range ts {
		out[i] = TimerView{Timer: t, Event: "/api/v1/events/" + t.EventID}
	}
	return c.JSON(http.StatusOK, map[string]any{"timers": out, "next": next, "count": n})
}

// CancelTimer drops a pending timer by hand; its steps never run.
func (a *Admin) CancelTimer(ctx context.Context, id string) (*store.Timer, error) {
	t, err := a.Store.CancelTimer(ctx, id)
	if err != nil {
		return nil, err
	}
	orDiscard(a.Logger).Info("timer cancelled by hand", "timer_id", t.ID, "rule", t.Rule, "entity", t.Entity, "event_id", t.EventID)
	return t, nil
}

func (a *Admin) cancelTimer(c echo.Context) error {
	t, err := a.CancelTimer(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"cancelled": TimerView{Timer: t, Event: "/api/v1/events/" + t.EventID}})
}

// listDigests is GET /api/v1/digests: open digests, soonest closing first.
func (a *Admin) listDigests(c echo.Context) error {
	f, err := dueFilter(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ds, next, err := a.Store.Digests(ctx, f)
	if err != nil {
		return err
	}
	n, err := a.Store.DigestCount(ctx)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []*store.Digest{}
	}
	return c.JSON(http.StatusOK, map[string]any{"digests": ds, "next": next, "count": n})
}

// RulesView is GET /api/v1/rules: the engine's status with hit counts.
type RulesView struct {
	engine.Status
	Stats map[string]*store.RuleStats `json:"stats"`
}

// statsHours is how many hourly buckets "the last 24 hours" of a rule's
// stats are: the current hour and the 23 before it.
const statsHours = 24

// statsSince is the start of the first of the statsHours buckets that end
// with now's hour. Counting from now-24h instead would start inside an
// hour and count a 25th bucket, most of it older than 24 hours.
func statsSince(now time.Time) time.Time {
	return now.UTC().Truncate(time.Hour).Add(-(statsHours - 1) * time.Hour)
}

// RulesView gathers the loaded rules and their last 24 hourly buckets.
func (a *Admin) RulesView(ctx context.Context) (RulesView, error) {
	st, err := a.Store.RuleStats(ctx, statsSince(a.now()))
	if err != nil {
		return RulesView{}, err
	}
	return RulesView{Status: a.Rules.Status(), Stats: st}, nil
}

func (a *Admin) getRules(c echo.Context) error {
	v, err := a.RulesView(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// RulesTestRequest is the body of POST /api/v1/rules/test: a candidate
// rules file, and either an event body or stored event ids.
type RulesTestRequest struct {
	Rules string `json:"rules"`
	// File is the candidate's file name, for issues to point at: only its
	// base name is used, and "candidate.yaml" when it is empty.
	File     string          `json:"file,omitempty"`
	Event    json.RawMessage `json:"event,omitempty"`
	EventIDs []string        `json:"event_ids,omitempty"`
}

// RulesTestResponse carries per-event outcomes, or every load issue.
type RulesTestResponse struct {
	Hash     string              `json:"hash,omitempty"`
	Issues   []engine.Issue      `json:"issues,omitempty"`
	Warnings []engine.Issue      `json:"warnings,omitempty"`
	Results  []engine.TestResult `json:"results"`
}

// TestRules parses candidate rules and evaluates events against them.
// Nothing is stored and nothing is sent. A stored event is evaluated with
// the previous payload the matcher saw for it, as a replay is, so that
// previous and changed() give the outcome they gave in the service; an
// event body sent inline has no previous payload (previous is nil).
func (a *Admin) TestRules(ctx context.Context, req RulesTestRequest) (RulesTestResponse, error) {
	var out RulesTestResponse
	getenv := a.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	rs, warns, err := engine.Parse(candidateName(req.File), []byte(req.Rules), getenv)
	out.Warnings = warns
	if err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			out.Issues = le.Issues
			return out, nil
		}
		return out, echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	out.Hash = rs.Hash()
	type testEvent struct {
		ev, prev *alorules.Event
		note     string
	}
	var events []testEvent
	if len(req.Event) > 0 {
		ev, err := engine.NewEvent(req.Event, a.now())
		if err != nil {
			return out, echo.NewHTTPError(http.StatusBadRequest, err.Error())
		}
		events = append(events, testEvent{ev: ev})
	}
	if len(req.EventIDs) > 500 {
		return out, echo.NewHTTPError(http.StatusBadRequest, "event_ids: at most 500")
	}
	for _, id := range req.EventIDs {
		ev, err := a.Store.Event(ctx, id)
		if err != nil {
			return out, fmt.Errorf("event %s: %w", id, err)
		}
		prev, note, err := a.previousEvent(ctx, id)
		if err != nil {
			return out, fmt.Errorf("event %s: %w", id, err)
		}
		events = append(events, testEvent{ev: ev, prev: prev, note: note})
	}
	if len(events) == 0 {
		return out, echo.NewHTTPError(http.StatusBadRequest, "give an event body or event_ids")
	}
	out.Results = make([]engine.TestResult, 0, len(events))
	for _, t := range events {
		res := engine.TestAfter(rs, t.ev, t.prev, a.now())
		if res.Note == "" {
			res.Note = t.note
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

// maxCandidateName caps the file name rules/test reports issues under.
const maxCandidateName = 128

// candidateName is the name issues of candidate rules are reported under:
// the base name the client sent, so that they point at the user's file.
// Directories are dropped (the client's layout means nothing here), and so
// are unprintable runes, so that a name cannot forge a line of output; a
// name with nothing left is "candidate.yaml".
func candidateName(name string) string {
	name = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, name)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if r := []rune(name); len(r) > maxCandidateName {
		name = string(r[:maxCandidateName])
	}
	if name == "" || name == "." || name == ".." {
		return "candidate.yaml"
	}
	return name
}

func (a *Admin) testRules(c echo.Context) error {
	var req RulesTestRequest
	if err := json.NewDecoder(io.LimitReader(c.Request().Body, 4<<20)).Decode(&req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "body: want JSON {rules, event | event_ids}: "+err.Error())
	}
	res, err := a.TestRules(c.Request().Context(), req)
	if err != nil {
		return err
	}
	code := http.StatusOK
	if len(res.Issues) > 0 {
		code = http.StatusBadRequest
	}
	return c.JSON(code, res)
}

func (a *Admin) reload(c echo.Context) error {
	if err := a.Rules.Reload(); err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			return c.JSON(http.StatusBadRequest, map[string]any{"error": "reload failed; the running rules stay", "issues": le.Issues})
		}
		return echo.NewHTTPError(http.StatusBadRequest, "reload failed; the running rules stay: "+err.Error())
	}
	st := a.Rules.Status()
	return c.JSON(http.StatusOK, map[string]any{"rules": len(st.Rules), "hash": st.Hash})
}

// stallWriter gives every write of a stream its own deadline and stops at
// once when the request ends.
type stallWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	ctx   context.Context
	stall time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.stall)); err != nil {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	return s.w.Write(p)
}

// backup streams a consistent copy of the store from one read
// transaction; ingest goes on meanwhile.
func (a *Admin) backup(c echo.Context) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="alorules-`+a.now().UTC().Format("20060102T150405Z")+`.db"`)
	c.Response().WriteHeader(http.StatusOK)
	stall := a.BackupStall
	if stall <= 0 {
		stall = 30 * time.Second
	}
	w := &stallWriter{w: c.Response(), rc: http.NewResponseController(c.Response()), ctx: c.Request().Context(), stall: stall}
	n, err := a.Store.Backup(w)
	if err != nil {
		// Headers are gone; all that is left is to cut the stream short
		// so the client sees a truncated file, and to say so in the log.
		orDiscard(a.Logger).Error("backup failed", "bytes", n, "err", err)
		return err
	}
	return nil
}
