package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/store"
)

type timersData struct {
	Now         time.Time
	Timers      []timerRow
	TimerCount  int
	TimersLater string
	Digests     []*store.Digest
	DigestCount int
	DigestLater string
	FilterErr   string
}

type timerRow struct {
	*store.Timer
	Overdue bool
}

// timersPage is GET /timers: pending escalation timers (soonest due
// first, each with a Cancel button) and open digests. ?after= and
// ?dafter= page each list.
func (a *Admin) timersPage(c echo.Context) error {
	ctx := c.Request().Context()
	d := timersData{Now: a.now()}
	q := c.QueryParams()
	for _, p := range []string{"after", "dafter"} {
		if !validCursor(q.Get(p)) {
			return echo.NewHTTPError(http.StatusBadRequest, p+": want the cursor of an earlier page")
		}
	}
	ts, next, err := a.Store.Timers(ctx, store.DueFilter{After: q.Get("after")})
	if err != nil {
		return err
	}
	for _, t := range ts {
		d.Timers = append(d.Timers, timerRow{Timer: t, Overdue: !t.Due.After(d.Now)})
	}
	if next != "" {
		d.TimersLater = "/timers?" + withParam(q, "after", next)
	}
	if d.TimerCount, err = a.Store.TimerCount(ctx); err != nil {
		return err
	}
	if d.Digests, next, err = a.Store.Digests(ctx, store.DueFilter{After: q.Get("dafter")}); err != nil {
		return err
	}
	if next != "" {
		d.DigestLater = "/timers?" + withParam(q, "dafter", next)
	}
	if d.DigestCount, err = a.Store.DigestCount(ctx); err != nil {
		return err
	}
	return a.render(c, http.StatusOK, "timers", "Timers and digests", "timers", d)
}

// cancelTimerForm is POST /timers/{id}/cancel: the Cancel button.
func (a *Admin) cancelTimerForm(c echo.Context) error {
	back := "/timers"
	if ref := c.FormValue("back"); ref == "dashboard" {
		back = "/"
	}
	t, err := a.CancelTimer(c.Request().Context(), c.Param("id"))
	switch {
	case errors.Is(err, alorules.ErrNotFound):
		return redirectWithFlash(c, back, "error", "Not cancelled: the timer is no longer pending (it fired or was cancelled already).")
	case err != nil:
		return err
	}
	return redirectWithFlash(c, back, "ok", fmt.Sprintf("Cancelled the timer of %s for %s (due %s); its steps will not run.",
		t.Rule, t.Entity, t.Due.UTC().Format("2006-01-02 15:04 UTC")))
}

func validCursor(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return len(s)%2 == 0
}

// timerLink is where the UI shows a timer: its page, at the timer's row.
func timerLink(id string) string { return "/timers#t-" + url.PathEscape(id) }
