package web

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"alorules"
)

// The UI is server-rendered: one handler per page, templates embedded and
// parsed once at start, no build step. Every page reads without
// JavaScript; a small script only localises times and refreshes lists.

//go:embed templates/*.html
var templateFS embed.FS

// pageTemplates maps a page name to its template set (layout, shared
// partials and the page). A broken template stops the program at start,
// and every test, rather than a user's request.
var pageTemplates = mustParsePages(templateFS)

// pageNames are the files in templates/ besides layout.html and
// partials.html; each defines "content" (and may define fragments).
var pageNames = []string{
	"dashboard", "executions", "execution", "events", "event", "replay",
	"fields", "playground", "timers", "error",
}

func mustParsePages(fsys fs.FS) map[string]*template.Template {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t := template.New(name).Funcs(templateFuncs)
		t = template.Must(t.ParseFS(fsys, "templates/layout.html", "templates/partials.html", "templates/"+name+".html"))
		out[name] = t
	}
	return out
}

var templateFuncs = template.FuncMap{
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" },
	"utcHour": func(t time.Time) string { return t.UTC().Format("Jan 2 15:00") + " UTC" },
	"short":   shortHash,
	"dur":     formatDuration,
	"join":    strings.Join,
	"bytes":   formatBytes,
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	},
	"clip":   func(s string, n int) string { return clip(s, n) },
	"pretty": func(raw json.RawMessage) string { return prettyJSON(raw) },
	"pct": func(n, of int) int {
		if of == 0 {
			return 0
		}
		return n * 100 / of
	},
}

// UIRoutes registers the web UI on the admin listener: dashboard,
// executions, events, timers and digests, rule playground, static
// assets, and the form POSTs for reload, retry, replay and cancelling a
// timer.
//
// It also installs CrossOriginGuard on the whole admin echo: the JSON
// API's POSTs are meant for machines, but a browser that holds basic-auth
// credentials for this listener would send them along with a forged
// cross-site request, so every unsafe request from another origin is
// refused, API included.
func (a *Admin) UIRoutes(e *echo.Echo) {
	e.Use(CrossOriginGuard())

	e.GET("/", a.ui(a.dashboard))
	e.POST("/ui/reload", a.ui(a.csrf(a.reloadForm)))

	e.GET("/executions", a.ui(a.executionsPage))
	e.GET("/executions/:id", a.ui(a.executionPage))
	e.POST("/executions/:id/retry", a.ui(a.csrf(a.retryForm)))

	e.GET("/events", a.ui(a.eventsPage))
	e.GET("/events/fields", a.ui(a.fieldsPage))
	e.GET("/events/:id", a.ui(a.eventPage))
	e.GET("/events/:id/replay", a.ui(a.replayPage))
	e.POST("/events/:id/replay", a.ui(a.csrf(a.replayForm)))

	e.GET("/timers", a.ui(a.timersPage))
	e.POST("/timers/:id/cancel", a.ui(a.csrf(a.cancelTimerForm)))

	e.GET("/playground", a.ui(a.playgroundPage))
	e.POST("/playground", a.ui(a.csrf(a.playgroundPage)))

	e.GET("/static/:name", serveStatic)
	e.HEAD("/static/:name", serveStatic)
}

// contentSecurityPolicy allows nothing but this origin's own script,
// style and images: event payloads are attacker-controlled text, and even
// if one slipped past escaping it could not run or load anything.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// setPageHeaders sets the security headers of every UI response. Pages are
// never cached: they show live state and payloads that may be sensitive.
func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// ui wraps a page handler: security headers, and errors shown as an HTML
// page rather than the API's JSON, since a person is reading.
func (a *Admin) ui(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		setPageHeaders(c.Response().Header())
		err := h(c)
		if err == nil || c.Response().Committed {
			return err
		}
		return a.renderError(c, err)
	}
}

// errorData is the error page.
type errorData struct {
	Code    int
	Status  string
	Message string
}

func (a *Admin) renderError(c echo.Context, err error) error {
	code, msg := http.StatusInternalServerError, "Something went wrong; the log has the details."
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		code, msg = he.Code, fmt.Sprint(he.Message)
	case errors.Is(err, alorules.ErrNotFound):
		code, msg = http.StatusNotFound, "Nothing here by that id. It may never have existed, or retention removed it."
	case errors.Is(err, alorules.ErrConflict):
		code, msg = http.StatusConflict, err.Error()
	case errors.Is(err, alorules.ErrStoreClosed):
		code, msg = http.StatusServiceUnavailable, "The store is closed; the service is shutting down."
	default:
		orDiscard(a.Logger).Error("ui request failed", "path", c.Request().URL.Path, "err", err)
	}
	title := http.StatusText(code)
	return a.render(c, code, "error", title, "", errorData{Code: code, Status: title, Message: msg})
}

// page is what the layout needs besides the page's own data.
type page struct {
	Title   string
	Nav     string
	CSRF    string
	Flash   *flash
	Assets  assetURLs
	Version string
	Data    any
}

// render executes a page into a buffer first, so that a template error
// becomes a clean 500 rather than half a page.
func (a *Admin) render(c echo.Context, code int, name, title, nav string, data any) error {
	t, ok := pageTemplates[name]
	if !ok {
		return fmt.Errorf("render: no page %q", name)
	}
	p := page{Title: title, Nav: nav, CSRF: csrfToken(c), Flash: takeFlash(c), Assets: assets,
		Version: alorules.Version, Data: data}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return c.HTMLBlob(code, buf.Bytes())
}

// renderFragment executes one named fragment of a page (a list's rows) for
// the script that refreshes lists in place.
func (a *Admin) renderFragment(c echo.Context, name, fragment string, data any) error {
	var buf bytes.Buffer
	if err := pageTemplates[name].ExecuteTemplate(&buf, fragment, page{Data: data}); err != nil {
		return fmt.Errorf("render %s/%s: %w", name, fragment, err)
	}
	return c.HTMLBlob(http.StatusOK, buf.Bytes())
}

// flash is a one-time message shown on the page a form redirects to.
type flash struct {
	Kind string `json:"k"` // "ok" or "error"
	Msg  string `json:"m"`
	// At, if set, is shown after Msg as a <time>, like every other time
	// in the UI: UTC text that the script puts in the viewer's zone. After
	// is the text that follows it.
	At    time.Time `json:"t,omitzero"`
	After string    `json:"a,omitempty"`
}

const flashCookie = "alorules_flash"

// redirectWithFlash answers a form POST with 303 See Other, so that
// reloading the next page does not post again, and carries the outcome
// in a short-lived cookie.
func redirectWithFlash(c echo.Context, to, kind, msg string) error {
	return sendFlash(c, to, flash{Kind: kind, Msg: msg})
}

// redirectWithTimeFlash is redirectWithFlash with a time inside the
// message: before, then at, then after.
func redirectWithTimeFlash(c echo.Context, to, kind, before string, at time.Time, after string) error {
	return sendFlash(c, to, flash{Kind: kind, Msg: before, At: at.UTC(), After: after})
}

func sendFlash(c echo.Context, to string, f flash) error {
	f.Msg, f.After = clip(f.Msg, 1500), clip(f.After, 500)
	raw, _ := json.Marshal(f)
	c.SetCookie(&http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString(raw), Path: "/",
		MaxAge: 60, HttpOnly: true, Secure: isHTTPS(c), SameSite: http.SameSiteStrictMode})
	return c.Redirect(http.StatusSeeOther, to)
}

func takeFlash(c echo.Context) *flash {
	ck, err := c.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	c.SetCookie(&http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: isHTTPS(c), SameSite: http.SameSiteStrictMode})
	raw, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return nil
	}
	var f flash
	if json.Unmarshal(raw, &f) != nil || f.Msg == "" {
		return nil
	}
	if f.Kind != "ok" {
		f.Kind = "error"
	}
	return &f
}

func isHTTPS(c echo.Context) bool { return c.Scheme() == "https" }

// shortHash shows the first 12 characters of a hash or id.
func shortHash(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
