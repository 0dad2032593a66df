package web

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/engine"
	"alorules/store"
)

// statusOrder is how statuses are listed everywhere: the life of an
// execution.
var statusOrder = []alorules.Status{
	alorules.StatusQueued, alorules.StatusRunning, alorules.StatusRetrying,
	alorules.StatusSucceeded, alorules.StatusFailed,
}

type dashboardData struct {
	Status      engine.Status
	Rules       []ruleRow
	Unloaded    []ruleRow // rules with stats that the current file no longer has
	Counts      []statusCount
	QueueDepth  int
	EventsToday int
	Today       time.Time
	StoreSize   string
	Now         time.Time
	// The soonest pending timers and open digests, and how many there are.
	Timers      []timerRow
	TimerCount  int
	Digests     []*store.Digest
	DigestCount int
}

// dashboardTimers is how many timers and digests the dashboard lists; the
// timers page has them all.
const dashboardTimers = 5

type statusCount struct {
	Status alorules.Status
	N      int
}

type ruleRow struct {
	engine.RuleInfo
	// Hits and Failures are the chart's totals, so that the numbers and
	// the bars tell the same story.
	Hits, Failures int
	LastHit        time.Time
	Chart          chart
}

// dashboard is GET /: the loaded rules with their last 24 hours, reload
// status and totals.
func (a *Admin) dashboard(c echo.Context) error {
	ctx := c.Request().Context()
	v, err := a.RulesView(ctx)
	if err != nil {
		return err
	}
	now := a.now()
	d := dashboardData{Status: v.Status, Now: now}
	d.Today = now.UTC().Truncate(24 * time.Hour)
	if d.EventsToday, err = a.Store.EventCountSince(ctx, d.Today); err != nil {
		return err
	}
	counts, err := a.Store.CountByStatus(ctx)
	if err != nil {
		return err
	}
	for _, s := range statusOrder {
		d.Counts = append(d.Counts, statusCount{Status: s, N: counts[s]})
	}
	d.QueueDepth = counts[alorules.StatusQueued] + counts[alorules.StatusRetrying]
	d.StoreSize = formatBytes(a.Store.Size())
	ts, _, err := a.Store.Timers(ctx, store.DueFilter{Limit: dashboardTimers})
	if err != nil {
		return err
	}
	for _, t := range ts {
		d.Timers = append(d.Timers, timerRow{Timer: t, Overdue: !t.Due.After(now)})
	}
	if d.TimerCount, err = a.Store.TimerCount(ctx); err != nil {
		return err
	}
	if d.Digests, _, err = a.Store.Digests(ctx, store.DueFilter{Limit: dashboardTimers}); err != nil {
		return err
	}
	if d.DigestCount, err = a.Store.DigestCount(ctx); err != nil {
		return err
	}

	seen := map[string]bool{}
	for _, r := range v.Status.Rules {
		seen[r.Name] = true
		d.Rules = append(d.Rules, newRuleRow(r, v.Stats[r.Name], now))
	}
	for name, st := range v.Stats {
		if !seen[name] {
			d.Unloaded = append(d.Unloaded, newRuleRow(engine.RuleInfo{Name: name}, st, now))
		}
	}
	slices.SortFunc(d.Unloaded, func(x, y ruleRow) int { return strings.Compare(x.Name, y.Name) })
	return a.render(c, http.StatusOK, "dashboard", "Dashboard", "dashboard", d)
}

func newRuleRow(info engine.RuleInfo, st *store.RuleStats, now time.Time) ruleRow {
	row := ruleRow{RuleInfo: info}
	var hourly []store.HourStat
	if st != nil {
		row.LastHit = st.LastHit
		hourly = st.Hourly
	}
	row.Chart = hourChart(hourly, now)
	row.Hits, row.Failures = row.Chart.Hits, row.Chart.Failures
	return row
}

// chart is a small bar chart of hits and failures per hour, drawn by the
// server as inline SVG: no script, no image request, and CSP-clean since
// sizes are SVG attributes, not inline styles.
type chart struct {
	W, H  int
	Base  int // y of the baseline
	Bars  []bar
	Label string
	// Since is the start of the first bar; Hits and Failures are the sums
	// of the bars.
	Since          time.Time
	Hits, Failures int
}

type bar struct {
	X, W       int
	HitY, HitH int
	FailY      int
	FailH      int
	// Hour is the start of the bar's hour; Counts says what it holds.
	Hour   time.Time
	Counts string
}

const (
	chartBarW   = 6
	chartGap    = 1
	chartHeight = 32
)

// hourChart draws statsHours bars, one per hour, the last for now's hour,
// whether or not the store had data for them; hours outside that window
// are left out of the bars and of the totals.
func hourChart(hourly []store.HourStat, now time.Time) chart {
	first := statsSince(now)
	var hours [statsHours]store.HourStat
	for i := range hours {
		hours[i].Hour = first.Add(time.Duration(i) * time.Hour)
	}
	for _, h := range hourly {
		d := h.Hour.Sub(first)
		if d < 0 || d%time.Hour != 0 || d >= statsHours*time.Hour {
			continue
		}
		i := int(d / time.Hour)
		hours[i].Hits += h.Hits
		hours[i].Failures += h.Failures
	}
	ch := chart{W: statsHours*(chartBarW+chartGap) - chartGap, H: chartHeight + 1, Base: chartHeight, Since: first}
	peak := 1
	for _, h := range hours {
		peak = max(peak, h.Hits, h.Failures)
		ch.Hits += h.Hits
		ch.Failures += h.Failures
	}
	ch.Label = fmt.Sprintf("%d hits and %d failures in the last 24 hours, per hour", ch.Hits, ch.Failures)
	for i, h := range hours {
		hh := scale(h.Hits, peak)
		fh := scale(h.Failures, peak)
		ch.Bars = append(ch.Bars, bar{
			X: i * (chartBarW + chartGap), W: chartBarW,
			HitY: chartHeight - hh, HitH: hh, FailY: chartHeight - fh, FailH: fh,
			Hour: h.Hour, Counts: fmt.Sprintf("%d hits, %d failures", h.Hits, h.Failures),
		})
	}
	return ch
}

// scale maps n in [0, peak] to a bar height, keeping any non-zero value
// visible.
func scale(n, peak int) int {
	if n <= 0 {
		return 0
	}
	return max(2, n*chartHeight/peak)
}

// reloadForm is POST /ui/reload: the dashboard's Reload button.
func (a *Admin) reloadForm(c echo.Context) error {
	if err := a.Rules.Reload(); err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			return redirectWithFlash(c, "/", "error",
				fmt.Sprintf("Reload failed with %d problem(s); the running rules stay. See the banner.", len(le.Issues)))
		}
		return redirectWithFlash(c, "/", "error", "Reload failed; the running rules stay: "+err.Error())
	}
	st := a.Rules.Status()
	return redirectWithFlash(c, "/", "ok", fmt.Sprintf("Reloaded %s: %d rules, hash %s.", st.Path, len(st.Rules), shortHash(st.Hash)))
}
