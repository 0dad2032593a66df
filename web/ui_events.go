package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/alo"
	"alorules/engine"
	"alorules/store"
)

type eventsData struct {
	Type      string
	Unmatched bool
	// Rule and Outcome list a rule's hits or failures (the dashboard's
	// counts); Since is as typed.
	Rule, Outcome string
	Since         string
	Rules         []string // loaded rule names, for the filter's suggestions
	Types         []string
	Rows          []eventRow
	Older         string
	Newest        string
	Refresh       string
	Filtered      bool
	FilterErr     string
}

type eventRow struct {
	*alorules.Event
	Size    int
	Pending bool     // not matched yet
	Matched []string // rules that matched
	// With a rule filter: what that rule made of the event, and its
	// executions for it (a failure may be one of them).
	Result *alorules.RuleResult
	Execs  []*alorules.Execution
}

// eventTypes are offered in the type filters: the known action types.
var eventTypes = alo.EventTypes

// eventsPage is GET /events: newest first, by type, "matched nothing", or
// a rule's hits or failures, paged by cursor. ?partial=1 returns the rows
// only.
func (a *Admin) eventsPage(c echo.Context) error {
	ctx := c.Request().Context()
	d := eventsData{Type: c.QueryParam("type"), Unmatched: c.QueryParam("unmatched") == "true", Types: eventTypes,
		Rule: c.QueryParam("rule"), Outcome: c.QueryParam("outcome"), Since: c.QueryParam("since")}
	if rs := a.Rules.Current(); rs != nil {
		for _, r := range rs.Rules() {
			d.Rules = append(d.Rules, r.Name)
		}
	}
	d.Filtered = d.Type != "" || d.Unmatched || d.Rule != "" || d.Since != ""
	f, err := EventFilter(c)
	if err != nil {
		var he *echo.HTTPError
		if !errors.As(err, &he) {
			return err
		}
		d.FilterErr = fmt.Sprint(he.Message)
		return a.render(c, he.Code, "events", "Events", "events", d)
	}
	if f.Rule != "" && f.Outcome == "" {
		d.Outcome = store.RuleMatched
	}
	evs, next, err := a.Store.Events(ctx, f)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		row := eventRow{Event: ev, Size: len(ev.Payload)}
		// One keyed read per row (at most a page): cheap, and it saves
		// opening each event to see whether anything fired.
		m, err := a.Store.Match(ctx, ev.ID)
		switch {
		case errors.Is(err, alorules.ErrNotFound):
			row.Pending = !ev.Handshake
		case err != nil:
			return err
		default:
			for i, r := range m.Results {
				if r.Outcome == alorules.OutcomeMatched {
					row.Matched = append(row.Matched, r.Rule)
				}
				if f.Rule != "" && r.Rule == f.Rule {
					row.Result = &m.Results[i]
				}
			}
		}
		if f.Rule != "" {
			// The rule's executions show which one failed, or that the
			// hit ran steps at all; one index read per row.
			exs, err := a.Store.EventExecutions(ctx, ev.ID)
			if err != nil {
				return err
			}
			for _, ex := range exs {
				if ex.Rule == f.Rule {
					row.Execs = append(row.Execs, ex)
				}
			}
		}
		d.Rows = append(d.Rows, row)
	}
	q := c.QueryParams()
	if next != "" {
		d.Older = "/events?" + withParam(q, "before", next)
	}
	if f.Before != "" {
		d.Newest = "/events?" + withParam(q, "before", "")
	} else {
		d.Refresh = "/events?" + withParam(q, "partial", "1")
	}
	if c.QueryParam("partial") == "1" {
		return a.renderFragment(c, "events", "rows", d)
	}
	return a.render(c, http.StatusOK, "events", "Events", "events", d)
}

type eventData struct {
	*EventDetail
	Tree        *jsonNode
	TreeErr     string
	Raw         string
	Headers     [][2]string
	Outcomes    []outcomeRow
	CurrentHash string
	// NotWalked are loaded rules missing from the match: added since, or
	// after a rule that stopped the walk.
	NotWalked []string
	Stopped   string
	// Previous is the entity's previous payload, indented; PreviousGone
	// says it was pruned since.
	Previous     string
	PreviousGone bool
}

type outcomeRow struct {
	alorules.RuleResult
	Why  string
	Exec *alorules.Execution
	// Deferred is what the event did to the rule's timer or digest.
	Deferred []deferralRow
}

type deferralRow struct {
	alorules.Deferral
	// Link is the pending timer's row on the timers page, if it may still
	// be pending.
	Link string
	Text string
}

func newDeferralRow(d alorules.Deferral) deferralRow {
	row := deferralRow{Deferral: d}
	switch d.Kind {
	case alorules.TimerSet:
		row.Text, row.Link = "timer set, due", timerLink(d.TimerID)
	case alorules.TimerKept:
		row.Text, row.Link = "timer already pending, still due", timerLink(d.TimerID)
	case alorules.TimerNotSet:
		row.Text = "no timer: unless already held"
	case alorules.TimerCancelled:
		row.Text = "timer cancelled: unless became true; it was due"
	case alorules.DigestAdded:
		row.Text, row.Link = "added to the digest", "/timers#digests"
	}
	return row
}

// eventPage is GET /events/{id}: the payload, and what every rule made of
// the event: the answer to "why did my rule not fire?".
func (a *Admin) eventPage(c echo.Context) error {
	det, err := a.EventDetail(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	d := eventData{EventDetail: det, Raw: indentJSON(det.Payload)}
	if d.Tree, err = parseTree(det.Payload); err != nil {
		d.TreeErr = err.Error()
	}
	for k, v := range det.Headers {
		d.Headers = append(d.Headers, [2]string{k, v})
	}
	slices.SortFunc(d.Headers, func(x, y [2]string) int { return strings.Compare(x[0], y[0]) })

	rules := map[string]engine.RuleInfo{}
	var order []string
	if rs := a.Rules.Current(); rs != nil {
		d.CurrentHash = rs.Hash()
		for _, r := range rs.Rules() {
			rules[r.Name] = r
			order = append(order, r.Name)
		}
	}
	execs := map[string]*alorules.Execution{}
	for _, ex := range det.Executions {
		execs[ex.ID] = ex
	}
	if det.Match != nil {
		walked := map[string]bool{}
		for _, res := range det.Match.Results {
			walked[res.Rule] = true
			if res.Stopped {
				d.Stopped = res.Rule
			}
			row := outcomeRow{RuleResult: res, Why: explain(res, det.Event, rules[res.Rule]), Exec: execs[res.ExecutionID]}
			for _, dd := range det.Match.Deferred {
				if dd.Rule == res.Rule {
					row.Deferred = append(row.Deferred, newDeferralRow(dd))
				}
			}
			d.Outcomes = append(d.Outcomes, row)
		}
		// A cancellation can concern a rule the walk did not reach (after
		// a stop); it is shown all the same.
		for _, dd := range det.Match.Deferred {
			if !walked[dd.Rule] {
				d.Outcomes = append(d.Outcomes, outcomeRow{RuleResult: alorules.RuleResult{Rule: dd.Rule, Outcome: alorules.OutcomeSkipped},
					Why: "Not walked for this event; its pending timer was checked all the same.", Deferred: []deferralRow{newDeferralRow(dd)}})
			}
		}
		for _, name := range order {
			if !walked[name] {
				d.NotWalked = append(d.NotWalked, name)
			}
		}
	}
	if det.Match != nil && det.Match.PreviousEventID != "" {
		prev, err := a.Store.Event(c.Request().Context(), det.Match.PreviousEventID)
		switch {
		case errors.Is(err, alorules.ErrNotFound):
			d.PreviousGone = true
		case err != nil:
			return err
		default:
			d.Previous = indentJSON(prev.Payload)
		}
	}
	return a.render(c, http.StatusOK, "event", "Event "+shortHash(det.ID), "events", d)
}

// explain says in words why a rule had its outcome for an event.
func explain(res alorules.RuleResult, ev *alorules.Event, rule engine.RuleInfo) string {
	switch res.Outcome {
	case alorules.OutcomeMatched:
		if rule.If == "" {
			return "No condition: every event of its types matches."
		}
		return "The condition was true."
	case alorules.OutcomeNotMatched:
		return "The condition was false for this payload."
	case alorules.OutcomeSkipped:
		if len(rule.On) > 0 {
			return fmt.Sprintf("The rule listens to %s; this event is %s.", strings.Join(rule.On, ", "), ev.Type)
		}
		return "This event's type is not in the rule's \"on\"."
	case alorules.OutcomeThrottled:
		return "It matched, but the rule's throttle window for this key was still open."
	case alorules.OutcomeError:
		return "The condition failed to evaluate: " + res.Error
	case alorules.OutcomeLoop:
		return "It matched, but the rule fired too often for this key within a minute, so it looks like a loop and was held back."
	}
	return res.Error
}

type replayData struct {
	Event  *alorules.Event
	Result engine.TestResult
	Hash   string
	Firing int // rules that would create an execution
}

// replayPage is GET /events/{id}/replay: a dry run (nothing is stored or
// sent) showing what replaying would do, with the form that confirms it.
func (a *Admin) replayPage(c echo.Context) error {
	ctx := c.Request().Context()
	ev, err := a.Store.Event(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	res, _, err := a.Replay(ctx, ev.ID, true)
	if err != nil {
		return err
	}
	d := replayData{Event: ev, Result: res, Hash: res.RuleSetHash}
	for _, r := range res.Results {
		if r.Outcome == alorules.OutcomeMatched && len(r.Steps) > 0 {
			d.Firing++
		}
	}
	return a.render(c, http.StatusOK, "replay", "Replay "+shortHash(ev.ID), "events", d)
}

// replayForm is POST /events/{id}/replay. It only replays with confirm=yes,
// which the confirmation page's button sends; anything else goes back to
// that page.
func (a *Admin) replayForm(c echo.Context) error {
	id := c.Param("id")
	back := "/events/" + url.PathEscape(id)
	if c.FormValue("confirm") != "yes" {
		return c.Redirect(http.StatusSeeOther, back+"/replay")
	}
	_, execs, err := a.Replay(c.Request().Context(), id, false)
	if err != nil {
		return err
	}
	if len(execs) == 0 {
		return redirectWithFlash(c, back, "ok", "Replayed: no rule with steps matched, so nothing was queued.")
	}
	return redirectWithFlash(c, back, "ok", fmt.Sprintf("Replayed: %d execution(s) queued; they are listed below.", len(execs)))
}

type fieldsData struct {
	Type    string
	Types   []string
	N       int
	Scanned int
	Fields  []fieldRow
}

type fieldRow struct {
	*fieldStat
	Pct int
}

const (
	defaultFieldSample = 200
	maxFieldSample     = 500 // the store's page limit: one read
)

// fieldsPage is GET /events/fields?type=...: the field paths seen in the
// last N events, with examples and how often each appears, to help write
// conditions.
func (a *Admin) fieldsPage(c echo.Context) error {
	d := fieldsData{Type: c.QueryParam("type"), Types: eventTypes, N: defaultFieldSample}
	if v := c.QueryParam("n"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFieldSample {
			return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("n: want a whole number from 1 to %d", maxFieldSample))
		}
		d.N = n
	}
	evs, _, err := a.Store.Events(c.Request().Context(), store.EventFilter{Type: storedType(d.Type), Limit: d.N})
	if err != nil {
		return err
	}
	fc := newFieldCollector()
	for _, ev := range evs {
		if ev.Handshake {
			continue
		}
		d.Scanned++
		fc.add(ev.Payload)
	}
	for _, st := range fc.fields() {
		d.Fields = append(d.Fields, fieldRow{fieldStat: st, Pct: st.Count * 100 / max(d.Scanned, 1)})
	}
	return a.render(c, http.StatusOK, "fields", "Fields", "fields", d)
}
