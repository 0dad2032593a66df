package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/store"
)

// bodyExcerpt is how much of a step's response body the detail page shows.
const bodyExcerpt = 2 << 10

type executionsData struct {
	Filter    store.ExecutionFilter
	Since     string // as typed, to refill the form
	Until     string
	Rules     []string // loaded rule names, for the filter's suggestions
	Statuses  []alorules.Status
	Rows      []executionRow
	Older     string // URL of the next page, "" on the last
	Newest    string // URL of the first page, "" when on it
	Refresh   string // URL of this list's rows fragment, "" when paging
	FilterErr string
	Filtered  bool
}

type executionRow struct {
	*alorules.Execution
	StepsOK, StepsTotal int
	Attempts            int
}

func newExecutionRow(ex *alorules.Execution) executionRow {
	r := executionRow{Execution: ex, StepsTotal: len(ex.Steps)}
	for _, s := range ex.Steps {
		if s.Status == alorules.StatusSucceeded {
			r.StepsOK++
		}
		r.Attempts += s.Attempts
	}
	return r
}

// executionsPage is GET /executions: newest first, filtered by rule,
// status and time, paged by cursor. ?partial=1 returns the rows only.
func (a *Admin) executionsPage(c echo.Context) error {
	d := executionsData{Statuses: statusOrder, Since: c.QueryParam("since"), Until: c.QueryParam("until")}
	if rs := a.Rules.Current(); rs != nil {
		for _, r := range rs.Rules() {
			d.Rules = append(d.Rules, r.Name)
		}
	}
	f, err := ExecutionFilter(c)
	code := http.StatusOK
	if err != nil {
		// Show the form again with the problem rather than a bare 400.
		var he *echo.HTTPError
		if !errors.As(err, &he) {
			return err
		}
		code, d.FilterErr = he.Code, fmt.Sprint(he.Message)
		d.Filter = store.ExecutionFilter{Rule: c.QueryParam("rule"), Status: c.QueryParam("status"), EventID: c.QueryParam("event")}
		return a.render(c, code, "executions", "Executions", "executions", d)
	}
	d.Filter = f
	d.Filtered = f.Rule != "" || f.Status != "" || f.EventID != "" || d.Since != "" || d.Until != ""
	exs, next, err := a.Store.Executions(c.Request().Context(), f)
	if err != nil {
		return err
	}
	for _, ex := range exs {
		d.Rows = append(d.Rows, newExecutionRow(ex))
	}
	q := c.QueryParams()
	if next != "" {
		d.Older = "/executions?" + withParam(q, "before", next)
	}
	if f.Before != "" {
		d.Newest = "/executions?" + withParam(q, "before", "")
	} else {
		d.Refresh = "/executions?" + withParam(q, "partial", "1")
	}
	if c.QueryParam("partial") == "1" {
		return a.renderFragment(c, "executions", "rows", d)
	}
	return a.render(c, code, "executions", "Executions", "executions", d)
}

// withParam returns q encoded with name set to value (removed if "").
// Filters live in the query string so that a URL pasted into a chat shows
// the same list.
func withParam(q url.Values, name, value string) string {
	out := url.Values{}
	for k, v := range q {
		if k != "partial" && k != name {
			out[k] = v
		}
	}
	if value != "" {
		out.Set(name, value)
	}
	return out.Encode()
}

type executionData struct {
	Ex          *alorules.Execution
	Event       *alorules.Event // nil if retention removed it
	Steps       []stepView
	CanRetry    bool
	RuleLoaded  bool
	CurrentHash string
}

type stepView struct {
	alorules.StepResult
	Request   string // pretty JSON
	Body      string // the first bodyExcerpt bytes, pretty when JSON
	BodyLen   int
	BodyCut   bool
	NotRunYet bool
}

// executionPage is GET /executions/{id}.
func (a *Admin) executionPage(c echo.Context) error {
	ctx := c.Request().Context()
	ex, err := a.Store.Execution(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	d := executionData{Ex: ex, CanRetry: ex.Status == alorules.StatusFailed}
	if ev, err := a.Store.Event(ctx, ex.EventID); err == nil {
		d.Event = ev
	} else if !errors.Is(err, alorules.ErrNotFound) {
		return err
	}
	if rs := a.Rules.Current(); rs != nil {
		d.CurrentHash = rs.Hash()
		for _, r := range rs.Rules() {
			if r.Name == ex.Rule {
				d.RuleLoaded = true
			}
		}
	}
	for _, s := range ex.Steps {
		v := stepView{StepResult: s, Request: prettyJSON(s.Request), BodyLen: len(s.Body),
			NotRunYet: s.Attempts == 0 && s.Status != alorules.StatusFailed}
		body := s.Body
		if json.Valid([]byte(body)) {
			body = prettyJSON([]byte(body))
		}
		if len(body) > bodyExcerpt {
			body, v.BodyCut = clip(body, bodyExcerpt), true
		}
		v.Body = body
		d.Steps = append(d.Steps, v)
	}
	return a.render(c, http.StatusOK, "execution", "Execution "+shortHash(ex.ID), "executions", d)
}

// prettyJSON indents raw JSON for reading; anything else is shown as is.
// Go's encoder writes <, > and & as \u003c, \u003e and \u0026; they are
// turned back into the characters, which the template then escapes for
// HTML like any other text.
func prettyJSON(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return unescapeHTMLChars(buf.String())
}

// unescapeHTMLChars undoes JSON's HTML-safe escapes in JSON text, reading
// escapes left to right so that an escaped backslash followed by "u003c"
// stays as it was.
func unescapeHTMLChars(s string) string {
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'u' && i+6 <= len(s) {
			switch s[i+2 : i+6] {
			case "003c", "003C":
				b.WriteByte('<')
				i += 5
				continue
			case "003e", "003E":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		b.WriteString(s[i : i+2])
		i++
	}
	return b.String()
}

// retryForm is POST /executions/{id}/retry: the Retry button.
func (a *Admin) retryForm(c echo.Context) error {
	id := c.Param("id")
	back := "/executions/" + url.PathEscape(id)
	ex, err := a.Runner.Retry(c.Request().Context(), id)
	switch {
	case errors.Is(err, alorules.ErrConflict):
		return redirectWithFlash(c, back, "error", "Only a failed execution can be retried; this one is not failed (any more).")
	case err != nil:
		return err
	}
	return redirectWithTimeFlash(c, back, "ok", "Retry queued at ", ex.NextAttemptAt,
		": failed steps run again, succeeded steps are kept.")
}
