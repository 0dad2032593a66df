package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"alorules"
)

// The browser test drives Debian's chromium through the UI as an on-call
// engineer would. It is skipped when no browser is installed, unless
// ALORULES_BROWSER_TESTS=1 demands it. ALORULES_SCREENSHOTS=1 rewrites the
// screenshots in testdata/screenshots/.

func uiBrowserPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("ALORULES_BROWSER_TESTS") == "1" {
		t.Fatal("ALORULES_BROWSER_TESTS=1 but no chromium found")
	}
	t.Skip("no chromium installed; set ALORULES_BROWSER_TESTS=1 to make this a failure")
	return ""
}

// uiFlagPayload is hostile like uiXSSPayload, but its scripts would set a
// flag the test can read, so that "inert" is checked by the browser itself.
var uiFlagPayload = `{"type":"action_created","action":{"priority":"Urgent","title":` +
	uiJSONString(`<script>window.__pwned=1</script>`) + `,` +
	uiJSONString(`"><img src=x onerror="window.__pwned=2">`) + `:` + uiJSONString(`'><svg onload=window.__pwned=3>`) + `}}`

type uiBrowser struct {
	t        *testing.T
	ctx      context.Context
	base     string
	shots    bool
	dialogs  atomic.Int64
	mu       sync.Mutex
	problems []string // console errors and exceptions
}

func newUIBrowser(t *testing.T, base string) *uiBrowser {
	path := uiBrowserPath(t)
	b := &uiBrowser{t: t, base: base, shots: os.Getenv("ALORULES_SCREENSHOTS") == "1"}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel(); cancel() })
	b.ctx = bctx
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start browser: %v", err)
	}
	if err := chromedp.Listen(bctx, func(ev any) {
		if _, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
			b.dialogs.Add(1)
			go chromedp.Call(bctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: false})
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for msg, err := range chromedp.Console(bctx) {
			if err != nil {
				return
			}
			if msg.Type == chromedp.ConsoleError || msg.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.problems = append(b.problems, string(msg.Type)+": "+msg.Text+" ("+msg.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *uiBrowser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *uiBrowser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
}

// follow clicks what sel finds and waits for the page it leads to.
func (b *uiBrowser) follow(sel string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.WaitEvent(cdppage.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
}

func (b *uiBrowser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *uiBrowser) eval(js string) bool {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

func (b *uiBrowser) location() string {
	b.t.Helper()
	l, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimPrefix(l, b.base)
}

func (b *uiBrowser) screenshot(name string) {
	b.t.Helper()
	if !b.shots {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join("testdata", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	uiBrowserPath(t)
	e := newUIEnv(t, uiOptions{})
	s := e.seed()
	flagEv, flagExecs := e.ingest(uiFlagPayload, e.now.Add(-30*time.Minute))

	// The real engine and runner: the seeded queued executions run (and
	// fail: the target refuses until told otherwise), retries run too.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.eng.Run(ctx) }()
	go func() { defer wg.Done(); e.runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	uiWaitIdle(t, e)

	b := newUIBrowser(t, e.srv.URL)

	// Dashboard: the rules, their charts, totals, and times localised by
	// the script.
	b.open("/")
	if got := b.text(".rules"); !strings.Contains(got, "page-urgent") || !strings.Contains(got, "record-created") {
		t.Errorf("got rules %q, want page-urgent and record-created", got)
	}
	if !b.eval(`document.querySelectorAll("svg.chart rect.hit").length > 0`) {
		t.Error("got no hit bars in the charts")
	}
	if !b.eval(`(function(){var t=document.querySelector("time");return t.title.endsWith("UTC") && t.textContent !== t.title})()`) {
		t.Error("got a <time> the script did not localise")
	}
	b.screenshot("dashboard")

	// From the rule to its executions, to a failed one.
	b.follow(`.rule h3 a[href="/executions?rule=page-urgent"]`)
	if got := b.location(); got != "/executions?rule=page-urgent" {
		t.Errorf("got location %q after following the rule", got)
	}
	if got := b.text("#list"); !strings.Contains(got, "failed") {
		t.Errorf("got executions %q, want failed ones", got)
	}
	b.screenshot("executions")
	exID := s.queued[0].ID // failed by now: the target refused it
	b.follow(`#list a[href="/executions/` + exID + `"]`)
	if got := b.text(".step"); !strings.Contains(got, "400") || !strings.Contains(got, "target says no") {
		t.Errorf("got step %q, want the 400 and the target's answer", got)
	}
	b.screenshot("execution")

	// Retry: the target now accepts; the execution is queued, then runs.
	e.targetOK.Store(true)
	b.follow(`form[action$="/retry"] button`)
	if got := b.text(".flash"); !strings.Contains(got, "Retry queued") {
		t.Errorf("got flash %q after Retry, want Retry queued", got)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b.open("/executions/" + exID)
		st := b.text(".actions-bar .badge")
		if st == string(alorules.StatusSucceeded) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution %s is %s after Retry, want succeeded", exID, st)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The event and what every rule made of it.
	b.open("/events/" + s.urgent.ID)
	outcomes := b.text("table.outcomes")
	for _, want := range []string{"page-urgent", "matched", "title-check", "error", "record-created", "The condition was true"} {
		if !strings.Contains(outcomes, want) {
			t.Errorf("got outcomes %q, want %q in them", outcomes, want)
		}
	}
	if !b.eval(`document.querySelector(".tree details[open]") !== null`) {
		t.Error("got a payload tree without open nodes")
	}
	b.screenshot("event")
	b.open("/events")
	b.screenshot("events")
	b.open("/events/fields?type=action_created")
	b.screenshot("fields")

	// The playground, typed into like a person would.
	b.open("/playground")
	b.do("type a condition", chromedp.SendKeys(chromedp.CSS("#pg-if"), `event.action?.priority == "Urgent"`))
	b.follow(`form[method="get"] button[type="submit"]`)
	if got := b.text(".summary"); !strings.Contains(got, "The condition matched 7 of 10 event(s)") {
		t.Errorf("got summary %q, want 7 of 10 matched", got)
	}
	b.screenshot("playground")
	b.open("/playground?if=" + strings.ReplaceAll(`event.action?.priority ==`, " ", "+"))
	if got := b.text(".banner"); !strings.Contains(got, "column") {
		t.Errorf("got %q, want an issue with its column", got)
	}

	// Hostile payloads stay text on every page that shows them.
	for _, p := range []string{"/events/" + flagEv.ID, "/events", "/events/fields", "/executions/" + flagExecs[0].ID,
		"/events/" + flagEv.ID + "/replay", "/playground?if=true&event=" + flagEv.ID} {
		b.open(p)
		if !b.eval(`typeof window.__pwned === "undefined"`) {
			t.Errorf("%s: a payload's script ran", p)
		}
	}
	b.open("/events/" + flagEv.ID)
	if got := b.text(".tree"); !strings.Contains(got, `<img src=x onerror="window.__pwned=2">`) || !strings.Contains(got, "<script>window.__pwned=1</script>") {
		t.Errorf("got payload %q, want the hostile text shown as text", got)
	}

	// The events list refreshes itself without a reload.
	b.open("/events")
	if !b.eval(`window.__marker = 1; true`) {
		t.Fatal("could not mark the page")
	}
	fresh := e.save(uiUpdatedPayload, time.Now())
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](`document.getElementById("list").textContent.includes("`+fresh.ID+`")`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the list did not show a new event by itself: %v", err)
	}
	if !b.eval(`window.__marker === 1`) {
		t.Error("the page reloaded instead of refreshing its list")
	}

	// A phone: nothing wider than the screen.
	b.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []struct{ path, name string }{
		{"/", "dashboard-phone"}, {"/events/" + s.urgent.ID, "event-phone"}, {"/executions", "executions-phone"},
	} {
		b.open(p.path)
		if !b.eval(`document.documentElement.scrollWidth <= window.innerWidth + 1`) {
			w, _ := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
			t.Errorf("%s on a phone: page is %dpx wide, want at most 390", p.path, w)
		}
		b.screenshot(p.name)
	}

	// Dark mode follows the system setting.
	b.do("desktop", chromedp.EmulateViewport(1280, 900))
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	b.open("/events/" + s.urgent.ID)
	if !b.eval(`getComputedStyle(document.body).backgroundColor === "rgb(17, 20, 24)"`) {
		t.Error("got a light page with prefers-color-scheme: dark")
	}
	b.screenshot("event-dark")

	if n := b.dialogs.Load(); n != 0 {
		t.Errorf("got %d dialog(s), want none", n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("console: %s", p)
	}
}

// TestBrowserTimers drives the rules-over-time pages: pending timers and
// open digests, Cancel, and a sequence in the playground.
func TestBrowserTimers(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	uiBrowserPath(t)
	e := timerEnv(t)
	e.send(uiUrgentPayload)
	e.send(uiLowPayload)
	b := newUIBrowser(t, e.srv.URL)

	b.open("/")
	b.follow(`nav a[href="/timers"]`)
	if got := b.text("#timers + .table-wrap"); !strings.Contains(got, "stuck-urgent") || !strings.Contains(got, "act-1") {
		t.Errorf("got timers %q, want stuck-urgent for act-1", got)
	}
	if got := b.text("#digests + .table-wrap"); !strings.Contains(got, "new-low") || !strings.Contains(got, "Hall") {
		t.Errorf("got digests %q, want new-low for Hall", got)
	}
	b.screenshot("timers")
	b.follow(`#timers + .table-wrap form[action$="/cancel"] button`)
	if got := b.text(".flash"); !strings.Contains(got, "Cancelled the timer of stuck-urgent for act-1") {
		t.Errorf("got flash %q after Cancel", got)
	}
	if ids := e.apiTimers(); len(ids) != 0 {
		t.Errorf("got %d timers after Cancel, want 0", len(ids))
	}

	b.open("/playground")
	seq := "- event: { type: action_created, action: { id: act-5, priority: Urgent, status: Open } }\n- advance: 4h\n"
	b.do("type a sequence", chromedp.SetValue(chromedp.CSS("#pg-seq"), seq))
	b.follow(`form[action="/playground#sequence"] button[type="submit"]`)
	if got := b.text("#sequence"); !strings.Contains(got, "timer of stuck-urgent fired for act-5") {
		t.Errorf("got sequence result %q, want the timer fired", got)
	}
	b.screenshot("playground-sequence")
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("console: %s", p)
	}
}

// uiWaitIdle waits until the runner has nothing queued, running or
// retrying.
func uiWaitIdle(t *testing.T, e *uiEnv) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := e.st.CountByStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c[alorules.StatusQueued]+c[alorules.StatusRunning]+c[alorules.StatusRetrying] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runner still busy: %v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserKeyboardAndZone: the UI is usable from the keyboard alone
// (skip link first, the main navigation next, focus always visible, Enter
// follows a link), and times read in the viewer's zone with a relative
// time, here Tokyo's (UTC+9, no daylight saving).
func TestBrowserKeyboardAndZone(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	uiBrowserPath(t)
	e := newUIEnv(t, uiOptions{})
	received := e.now.Add(-90 * time.Minute).Truncate(time.Second)
	ev := e.save(uiUpdatedPayload, received)
	b := newUIBrowser(t, e.srv.URL)
	if _, err := chromedp.Call(b.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Tokyo"}); err != nil {
		t.Fatalf("time zone: %v", err)
	}

	b.open("/events/" + ev.ID)
	shown, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("main time").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	tokyo := received.In(time.FixedZone("JST", 9*3600))
	h12 := tokyo.Hour() % 12
	if h12 == 0 {
		h12 = 12
	}
	clock24, clock12 := tokyo.Format("15:04:05"), fmt.Sprintf("%02d:%s", h12, tokyo.Format("04:05"))
	if !strings.Contains(shown, clock24) && !strings.Contains(shown, clock12) {
		t.Errorf("got time %q, want Tokyo's %s (or %s)", shown, clock24, clock12)
	}
	if !strings.Contains(shown, "ago") {
		t.Errorf("got time %q, want a relative time (\"… ago\")", shown)
	}

	// The keyboard: Tab from the top reaches the skip link, then the
	// navigation; focus is drawn; Enter follows the focused link.
	b.open("/")
	focused := func() string {
		s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(function(){var a=document.activeElement;
			return (a.className||"") + "|" + (a.getAttribute("href")||"") + "|" + getComputedStyle(a).outlineStyle})()`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b.do("tab", chromedp.KeyEvent(kb.Tab))
	if got := focused(); !strings.HasPrefix(got, "skip|#main|") {
		t.Errorf("got %q focused after the first Tab, want the skip link", got)
	}
	var got string
	for range 10 {
		b.do("tab", chromedp.KeyEvent(kb.Tab))
		if got = focused(); strings.Contains(got, "|/executions|") {
			break
		}
	}
	if !strings.Contains(got, "|/executions|") {
		t.Fatalf("got %q focused, want the Executions link within 10 Tabs", got)
	}
	if strings.HasSuffix(got, "|none") {
		t.Errorf("got %q: the focused link has no visible outline", got)
	}
	if _, err := chromedp.Run(b.ctx, chromedp.WaitEvent(cdppage.LoadEventFired, nil, chromedp.KeyEvent(kb.Enter))); err != nil {
		t.Fatalf("Enter: %v", err)
	}
	if loc := b.location(); loc != "/executions" {
		t.Errorf("got location %q after Enter on the link, want /executions", loc)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("console: %s", p)
	}
}
