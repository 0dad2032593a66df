package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// retentionRules run every event's rule against the target; an event
// with "stuck": true gets an answer that keeps its execution retrying for
// an hour, so it is unfinished work that retention must keep.
func retentionRules(url string) string {
	return `version: 1
connections:
  t: { http: { base_url: "` + url + `" }, allow_private: true }
rules:
  - name: notify
    retry: { attempts: 50, backoff: 1h, max_backoff: 1h }
    do:
      - http: { connection: t, method: POST, path: "/{{ event.stuck == true ? 'stuck' : 'ok' }}" }
`
}

// TestRetention runs the retention loop through the service with a short
// prune interval: old events go with their match, executions, type index
// entries and dedupe records (a pruned body is accepted again as new),
// while an event with an unfinished execution is kept.
func TestRetention(t *testing.T) {
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/stuck" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	tests := []struct {
		name      string
		retention time.Duration
		maxEvents int
		send      int
		wantKept  int // besides the stuck one
	}{
		{"by count", 0, 5, 12, 4},
		{"by age", 300 * time.Millisecond, 0, 6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := startOps(t, retentionRules(tg.srv.URL), setup{edit: func(c *serveConfig) {
				c.Retention, c.MaxEvents, c.PruneEvery = tc.retention, tc.maxEvents, 50*time.Millisecond
			}})
			url := "http://" + app.public + "/webhooks/alo"
			stuckBody := `{"type":"action_created","stuck":true}`
			code, out, err := post(url, e2eSecret, stuckBody)
			if err != nil || code != 200 {
				t.Fatalf("got %d %v %v", code, out, err)
			}
			stuck := out["id"].(string)
			var ids []string
			body := func(i int) string { return fmt.Sprintf(`{"type":"action_created","n":%d}`, i) }
			for i := range tc.send {
				code, out, err := post(url, e2eSecret, body(i))
				if err != nil || code != 200 {
					t.Fatalf("got %d %v %v", code, out, err)
				}
				ids = append(ids, out["id"].(string))
			}
			waitFor(t, 15*time.Second, "retention to prune", func() bool {
				return len(allEvents(t, app.store)) == tc.wantKept+1
			})
			kept := map[string]bool{}
			for _, ev := range allEvents(t, app.store) {
				kept[ev.ID] = true
			}
			if !kept[stuck] {
				t.Fatalf("the event with an unfinished execution was pruned")
			}
			for i, id := range ids {
				if want := i >= len(ids)-tc.wantKept; kept[id] != want {
					t.Errorf("event %d: kept=%v, want %v", i, kept[id], want)
				}
			}
			ctx := context.Background()
			for _, ex := range allExecutions(t, app.store) {
				if !kept[ex.EventID] {
					t.Errorf("execution %s of pruned event %s is still stored", ex.ID, ex.EventID)
				}
			}
			byType, _, err := app.store.Events(ctx, store.EventFilter{Type: "action_created"})
			if err != nil || len(byType) != len(kept) {
				t.Errorf("type index lists %d events (%v), want %d", len(byType), err, len(kept))
			}
			for _, id := range ids {
				if kept[id] {
					continue
				}
				if _, err := app.store.Match(ctx, id); err == nil {
					t.Errorf("match record of pruned event %s is still stored", id)
				}
			}
			// The dedupe record went with the event: the same body is new.
			code, out, err = post(url, e2eSecret, body(0))
			if err != nil || code != 200 || out["duplicate"] == true || out["id"] == ids[0] {
				t.Errorf("resending a pruned body: got %d %v %v, want a new event", code, out, err)
			}
			// ... while a kept event's body is still a duplicate.
			code, out, _ = post(url, e2eSecret, stuckBody)
			if code != 200 || out["duplicate"] != true || out["id"] != stuck {
				t.Errorf("resending a kept body: got %d %v, want a duplicate of %s", code, out, stuck)
			}
		})
	}
}

// TestBackupUnderLoadAndRestore takes backups through `alorules backup`
// while events pour in, then restores one the way README.md says
// (stop, replace the file, start) and finds every event acknowledged
// before that backup began.
func TestBackupUnderLoadAndRestore(t *testing.T) {
	tg := newTarget(t, nil)
	dir := t.TempDir()
	app := startOps(t, loadRules(tg.srv.URL), setup{dir: dir, edit: func(c *serveConfig) { c.LogLevel = "info" }})
	url := "http://" + app.public + "/webhooks/alo"
	l := newLedger()
	var seq atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := int(seq.Add(1))
				code, out, err := post(url, e2eSecret, loadBody(s))
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.record(s, code, out); err != nil || code != 200 {
					t.Errorf("seq %d: got %d %v (%v)", s, code, out, err)
				}
			}
		})
	}
	var before map[int]string
	var file string
	for i := range 3 {
		time.Sleep(200 * time.Millisecond)
		l.mu.Lock()
		before = make(map[int]string, len(l.acked))
		for k, v := range l.acked {
			before[k] = v
		}
		l.mu.Unlock()
		file = filepath.Join(t.TempDir(), fmt.Sprintf("backup-%d.db", i))
		var outb, errb bytes.Buffer
		if code := run([]string{"backup", "--server", "http://" + app.admin, file}, nil, &outb, &errb, os.Getenv); code != 0 {
			t.Fatalf("backup %d: exit %d: %s", i, code, errb.String())
		}
		if !strings.Contains(outb.String(), "checked") {
			t.Errorf("backup %d: got %q, want it to say the copy was checked", i, outb.String())
		}
	}
	close(stop)
	wg.Wait()
	if len(before) == 0 {
		t.Fatal("no event was acknowledged before the last backup")
	}
	app.stop(t)

	// Restore: stop (done), replace the file, start.
	db := filepath.Join(dir, "alorules.db")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	restored := startOps(t, "", setup{dir: dir, edit: func(c *serveConfig) { c.LogLevel = "info" }})
	for s, id := range before {
		var ev alorules.Event
		restored.getJSON(t, "/api/v1/events/"+id, &ev)
		if string(ev.Payload) != loadBody(s) {
			t.Errorf("restored event %s: got payload %s, want %s", id, ev.Payload, loadBody(s))
		}
	}
	// The restored service works: new events go in and everything settles.
	if code, out, err := post("http://"+restored.public+"/webhooks/alo", e2eSecret, loadBody(-1)); err != nil || code != 200 {
		t.Fatalf("after restore: got %d %v %v", code, out, err)
	}
	waitFor(t, time.Minute, "the restored service to settle", func() bool {
		ok, err := settled(restored.store)
		return err == nil && ok
	})
	t.Logf("FIGURE backup: 3 backups taken while %d events were acknowledged; the last restored with all %d events acknowledged before it", len(l.acked), len(before))
}

// TestCompactAfterPrune fills a store, prunes most of it, and compacts the
// stopped file: the copy is smaller, opens, passes bbolt's check and holds
// the events that were kept. Compacting a store in use is refused.
func TestCompactAfterPrune(t *testing.T) {
	dir := t.TempDir()
	rules := "version: 1\nrules: []\n"
	app := startOps(t, rules, setup{dir: dir, edit: func(c *serveConfig) { c.LogLevel = "info" }})
	pad := strings.Repeat("x", 2000)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 400; i += 8 {
				if code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret,
					fmt.Sprintf(`{"type":"action_created","n":%d,"pad":%q}`, i, pad)); err != nil || code != 200 {
					t.Errorf("got %d %v %v", code, out, err)
					return
				}
			}
		})
	}
	wg.Wait()
	app.stop(t)

	pruned := startOps(t, "", setup{dir: dir, edit: func(c *serveConfig) { c.MaxEvents, c.PruneEvery = 20, 50*time.Millisecond }})
	waitFor(t, 15*time.Second, "retention to keep 20 events", func() bool { return len(allEvents(t, pruned.store)) == 20 })
	kept := map[string]string{}
	for _, ev := range allEvents(t, pruned.store) {
		kept[ev.ID] = string(ev.Payload)
	}
	src := filepath.Join(dir, "alorules.db")
	dst := filepath.Join(dir, "compact.db")
	var outb, errb bytes.Buffer
	if code := run([]string{"compact", src, dst}, nil, &outb, &errb, os.Getenv); code != 1 || !strings.Contains(errb.String(), "stop the service first") {
		t.Errorf("compact while running: got exit %d %q, want 1 and a hint to stop the service", code, errb.String())
	}
	pruned.stop(t)

	outb.Reset()
	errb.Reset()
	if code := run([]string{"compact", src, dst}, nil, &outb, &errb, os.Getenv); code != 0 {
		t.Fatalf("compact: exit %d: %s", code, errb.String())
	}
	before, _ := os.Stat(src)
	after, _ := os.Stat(dst)
	if after.Size() >= before.Size() {
		t.Errorf("compacted %d bytes into %d, want smaller", before.Size(), after.Size())
	}
	checkStore(t, dst)
	st, err := store.Open(dst, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs := allEvents(t, st)
	if len(evs) != len(kept) {
		t.Errorf("compacted store has %d events, want %d", len(evs), len(kept))
	}
	for _, ev := range evs {
		if kept[ev.ID] != string(ev.Payload) {
			t.Errorf("event %s differs after compaction", ev.ID)
		}
	}
	t.Logf("FIGURE compact: %d -> %d bytes after pruning 400 events to 20", before.Size(), after.Size())
}

// TestStepFaults runs one event through rules whose targets misbehave,
// through the whole service with short backoffs: down, slower than the
// timeout, 500 then recovering, 429 with Retry-After, and a 400. A slow
// target does not hold up the others. Then every metric family is on
// /metrics.
func TestStepFaults(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		case "/flaky":
			if n <= 2 {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
		case "/limited":
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
		case "/bad":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"no"}`)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	})
	rules := `version: 1
connections:
  t: { http: { base_url: "` + tg.srv.URL + `" }, allow_private: true }
  down: { http: { base_url: "` + down + `" }, allow_private: true }
defaults:
  retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }
rules:
  - name: down
    do: [ { http: { connection: down, method: POST, path: /x } } ]
  - name: slow
    timeout: 1s
    retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }
    do: [ { http: { connection: t, method: POST, path: /slow } } ]
  - name: flaky
    do: [ { http: { connection: t, method: POST, path: /flaky } } ]
  - name: limited
    do: [ { http: { connection: t, method: POST, path: /limited } } ]
  - name: bad-request
    do: [ { http: { connection: t, method: POST, path: /bad } } ]
  - name: fast
    do: [ { http: { connection: t, method: POST, path: /fast } } ]
`
	app := startOps(t, rules, setup{})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created","action":{"id":"f1"}}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	waitFor(t, 30*time.Second, "every execution final", func() bool {
		ok, err := settled(app.store)
		return err == nil && ok
	})
	exs, err := app.store.EventExecutions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	byRule := map[string]*alorules.Execution{}
	for _, ex := range exs {
		byRule[ex.Rule] = ex
	}
	tests := []struct {
		rule       string
		status     alorules.Status
		attempts   int
		deliveries int
		errPart    string
	}{
		{"down", alorules.StatusFailed, 3, 0, "connection refused"},
		{"slow", alorules.StatusFailed, 2, 2, "timeout"},
		{"flaky", alorules.StatusSucceeded, 3, 3, ""},
		{"limited", alorules.StatusSucceeded, 2, 2, ""},
		{"bad-request", alorules.StatusFailed, 1, 1, "400"},
		{"fast", alorules.StatusSucceeded, 1, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			ex := byRule[tc.rule]
			if ex == nil {
				t.Fatal("no execution")
			}
			st := ex.Steps[0]
			if ex.Status != tc.status || st.Attempts != tc.attempts {
				t.Errorf("got %s after %d attempts (%s), want %s after %d", ex.Status, st.Attempts, st.Error, tc.status, tc.attempts)
			}
			if !strings.Contains(strings.ToLower(st.Error), tc.errPart) {
				t.Errorf("got step error %q, want it to mention %q", st.Error, tc.errPart)
			}
			if got := tg.deliveries(id + ":" + tc.rule + ":0"); got != tc.deliveries {
				t.Errorf("target got %d deliveries, want %d", got, tc.deliveries)
			}
		})
	}
	if fast, slow := byRule["fast"], byRule["slow"]; fast != nil && slow != nil && !fast.UpdatedAt.Before(slow.UpdatedAt) {
		t.Errorf("the fast rule finished at %s, after the slow one (%s): a slow target held it up", fast.UpdatedAt, slow.UpdatedAt)
	}
	tg.mu.Lock()
	times := tg.times[id+":limited:0"]
	tg.mu.Unlock()
	if len(times) == 2 && times[1].Sub(times[0]) < 900*time.Millisecond {
		t.Errorf("retried %s after a 429 with Retry-After: 1, want the asked second honoured", times[1].Sub(times[0]))
	}

	t.Run("metrics", func(t *testing.T) {
		// A refused webhook and a reload, so that every family has a value.
		if code, _, _ := post("http://"+app.public+"/webhooks/alo", "wrong-secret", `{"type":"action_created"}`); code != 403 {
			t.Errorf("badly signed webhook: got %d, want 403", code)
		}
		resp, err := http.Post("http://"+app.admin+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		checkMetricFamilies(t, metricsText(t, app.admin, nil))
	})
}

// checkMetricFamilies asserts that every family of the Prometheus set is
// exposed, with the labels operators alert on.
func checkMetricFamilies(t *testing.T, text string) {
	t.Helper()
	for _, want := range []string{
		`alorules_events_total{outcome="accepted",type="action_created"}`,
		`alorules_events_total{outcome="forbidden",type="unknown"}`,
		`alorules_webhook_rejections_total{reason="bad_signature"}`,
		`alorules_ingest_duration_seconds_bucket{le=`,
		`alorules_rule_outcomes_total{outcome="matched",rule="flaky"}`,
		`alorules_match_duration_seconds_bucket{le=`,
		`alorules_step_attempts_total{kind="http",status="succeeded"}`,
		`alorules_step_attempts_total{kind="http",status="retrying"}`,
		`alorules_step_attempts_total{kind="http",status="failed"}`,
		`alorules_step_duration_seconds_bucket{kind="http",le=`,
		`alorules_step_retries_total{kind="http"}`,
		`alorules_step_deferred_total{kind="http",reason="target_busy"}`,
		`alorules_step_deferred_total{kind="slack",reason="target_busy"}`,
		`alorules_executions{status="failed"} 3`,
		`alorules_executions{status="succeeded"} 3`,
		`alorules_queue_depth 0`,
		`alorules_queue_oldest_due_age_seconds 0`,
		`alorules_store_size_bytes `,
		`alorules_rules_loaded 6`,
		`alorules_rules_reloads_total{result="success"} 1`,
		`alorules_rules_reloads_total{result="failure"} 0`,
		`alorules_rules_last_reload_success 1`,
		`alorules_rules_last_reload_timestamp_seconds `,
		`alorules_rules_last_reload_duration_seconds `,
		`alorules_timers_pending 0`,
		`alorules_digests_open 0`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestRulesReplacedByBrokenThenFixed replaces the rules file the way
// editors and git do (write aside, rename): a broken file leaves the old
// rules running and says why in /api/v1/rules and /metrics; the fixed one
// then loads.
func TestRulesReplacedByBrokenThenFixed(t *testing.T) {
	tg := newTarget(t, nil)
	rule := func(name string) string {
		return `version: 1
connections:
  t: { http: { base_url: "` + tg.srv.URL + `" }, allow_private: true }
rules:
  - name: ` + name + `
    do: [ { http: { connection: t, method: POST, path: /x } } ]
`
	}
	dir := t.TempDir()
	app := startOps(t, rule("first"), setup{dir: dir})
	replace := func(src string) {
		tmp := filepath.Join(dir, ".rules.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "rules.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	ruleOf := func() string {
		code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, fmt.Sprintf(`{"type":"action_created","t":%d}`, time.Now().UnixNano()))
		if err != nil || code != 200 {
			t.Fatalf("got %d %v %v", code, out, err)
		}
		var ex []*alorules.Execution
		waitFor(t, 10*time.Second, "an execution", func() bool {
			ex, _ = app.store.EventExecutions(context.Background(), out["id"].(string))
			return len(ex) == 1
		})
		return ex[0].Rule
	}
	type rulesView struct {
		Hash      string `json:"hash"`
		LastError string `json:"last_error"`
	}
	var first rulesView
	app.getJSON(t, "/api/v1/rules", &first)

	replace(rule("second") + "    iff: typo\n")
	var v rulesView
	waitFor(t, 10*time.Second, "the reload error to show", func() bool {
		v = rulesView{} // last_error is omitted when empty
		app.getJSON(t, "/api/v1/rules", &v)
		return v.LastError != ""
	})
	if v.Hash != first.Hash || !strings.Contains(v.LastError, "iff") {
		t.Errorf("got hash %s error %q, want the old hash %s kept and the error naming the key", v.Hash, v.LastError, first.Hash)
	}
	if got := ruleOf(); got != "first" {
		t.Errorf("with a broken file, got rule %q run, want the old rule", got)
	}
	if m := metricsText(t, app.admin, nil); !strings.Contains(m, "alorules_rules_last_reload_success 0") {
		t.Error("metrics do not show the failed reload")
	}
	resp, err := http.Post("http://"+app.admin+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !bytes.Contains(b, []byte("iff")) {
		t.Errorf("POST /-/reload with a broken file: got %d %s, want 400 naming the problem", resp.StatusCode, b)
	}

	replace(rule("second"))
	waitFor(t, 10*time.Second, "the fixed rules to load", func() bool {
		v = rulesView{}
		app.getJSON(t, "/api/v1/rules", &v)
		return v.LastError == "" && v.Hash != first.Hash
	})
	if got := ruleOf(); got != "second" {
		t.Errorf("after the fix, got rule %q run, want the new rule", got)
	}
}
