package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alorules"
	"alorules/alo"
	"alorules/store"
)

// Helpers of the operations proof suite (ops_test.go, security_test.go,
// load_test.go, crash_test.go). They run the real service, in-process or
// as a subprocess, against real bbolt files and httptest targets.

// soak reports whether the long proof runs were asked for (make soak).
func soak() bool { return os.Getenv("ALORULES_SOAK") == "1" }

// setup is how startOps runs the service.
type setup struct {
	// dir holds rules.yaml and alorules.db; reuse it to restart on the
	// same store. Empty means a new temp dir.
	dir string
	// env is the environment the rules see (${VARS}).
	env map[string]string
	// edit changes the configuration before start.
	edit func(c *serveConfig)
	// logs, if set, receives the service's log lines through the same
	// logger constructor as `alorules serve` (format json unless edit
	// says otherwise; level debug).
	logs *os.File
}

// startOps starts the whole service in-process like startApp, with more
// control. rules == "" keeps the rules file already in s.dir.
func startOps(t testing.TB, rules string, s setup) *testApp {
	t.Helper()
	if s.dir == "" {
		s.dir = t.TempDir()
	}
	rulesPath := filepath.Join(s.dir, "rules.yaml")
	if rules != "" {
		if err := os.WriteFile(rulesPath, []byte(rules), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := serveConfig{
		Rules: rulesPath, DB: filepath.Join(s.dir, "alorules.db"),
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		SigningSecrets: []string{e2eSecret}, Tolerance: 300 * time.Second,
		MaxBody: 1 << 20, DedupeWindow: time.Hour, Workers: 4, LockTimeout: 5 * time.Second,
		LogFormat: "json", LogLevel: "debug",
	}
	if s.edit != nil {
		s.edit(&cfg)
	}
	out := s.logs
	if out == nil {
		f, err := os.Create(filepath.Join(t.TempDir(), "alorules.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		out = f
	}
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, out)
	if err != nil {
		t.Fatal(err)
	}
	env := s.env
	app, err := NewApp(cfg, log, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testApp{App: app, cancel: cancel, done: make(chan error, 1)}
	ta.public, ta.admin = app.web.Addrs()
	go func() { ta.done <- app.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

// post signs body with secret (none if empty) and posts it to url. It
// returns the status and decoded JSON answer; err is a transport error.
func post(url, secret, body string) (int, map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		alo.SignRequest(req, secret, time.Now(), []byte(body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, nil
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// target is a step target that counts deliveries by Idempotency-Key. Its
// answer is decided by respond, given the delivery number of this key
// (1 for the first); nil answers 200 {"ok":true}.
type target struct {
	srv     *httptest.Server
	respond func(w http.ResponseWriter, r *http.Request, n int)

	mu    sync.Mutex
	byKey map[string]int
	times map[string][]time.Time
	total int
	reqs  []recorded
}

type recorded struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

func newTarget(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, n int)) *target {
	tg := &target{respond: respond, byKey: map[string]int{}, times: map[string][]time.Time{}}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		tg.mu.Lock()
		tg.byKey[key]++
		n := tg.byKey[key]
		tg.times[key] = append(tg.times[key], time.Now())
		tg.total++
		tg.reqs = append(tg.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
		tg.mu.Unlock()
		if tg.respond != nil {
			tg.respond(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

// deliveries returns how often key was received.
func (tg *target) deliveries(key string) int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.byKey[key]
}

func (tg *target) count() int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.total
}

func (tg *target) requests() []recorded {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]recorded(nil), tg.reqs...)
}

// allEvents pages through every stored event, newest first.
func allEvents(t testing.TB, st *store.Store) []*alorules.Event {
	t.Helper()
	var out []*alorules.Event
	f := store.EventFilter{Limit: 500}
	for {
		evs, next, err := st.Events(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, evs...)
		if next == "" {
			return out
		}
		f.Before = next
	}
}

// allExecutions pages through every stored execution.
func allExecutions(t testing.TB, st *store.Store) []*alorules.Execution {
	t.Helper()
	var out []*alorules.Execution
	f := store.ExecutionFilter{Limit: 500}
	for {
		exs, next, err := st.Executions(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, exs...)
		if next == "" {
			return out
		}
		f.Before = next
	}
}

// settled reports whether every stored event has been matched and every
// execution is final.
func settled(st *store.Store) (bool, error) {
	ctx := context.Background()
	pending, err := st.PendingEvents(ctx, 1)
	if err != nil || len(pending) > 0 {
		return false, err
	}
	counts, err := st.CountByStatus(ctx)
	if err != nil {
		return false, err
	}
	return counts[alorules.StatusQueued]+counts[alorules.StatusRunning]+counts[alorules.StatusRetrying] == 0, nil
}

// ledger is what the senders of a load know: which event (by its seq)
// was acknowledged with which id.
type ledger struct {
	mu     sync.Mutex
	bodies map[int]string
	acked  map[int]string // seq -> id
	// failed counts answers that were neither 200 nor a transport error.
	failed map[int]int
}

func newLedger() *ledger {
	return &ledger{bodies: map[int]string{}, acked: map[int]string{}, failed: map[int]int{}}
}

// record notes the answer to one delivery of seq. It reports an error if
// a redelivery was acknowledged with an id other than the first one.
func (l *ledger) record(seq, code int, out map[string]any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if code != http.StatusOK {
		l.failed[code]++
		return nil
	}
	id, _ := out["id"].(string)
	if id == "" {
		return fmt.Errorf("seq %d: 200 without an id: %v", seq, out)
	}
	if prev, ok := l.acked[seq]; ok && prev != id {
		return fmt.Errorf("seq %d acknowledged as %s, earlier as %s", seq, id, prev)
	}
	l.acked[seq] = id
	return nil
}

// loadBody is the payload of load event seq: distinct, and matched by
// loadRules (every event by "every", one in three by "thirds").
func loadBody(seq int) string {
	return fmt.Sprintf(`{"type":"action_created","seq":%d,"action":{"id":"load-%d","priority":"Normal","title":"load %d"}}`, seq, seq, seq)
}

// loadRules send every event to the target in one step, and one event in
// three in two more steps; short backoffs so that retries settle quickly.
func loadRules(targetURL string) string {
	return `version: 1
connections:
  t:
    http: { base_url: "` + targetURL + `" }
    allow_private: true
defaults:
  retry: { attempts: 20, backoff: 10ms, max_backoff: 50ms }
  timeout: 5s
rules:
  - name: every
    on: [action_created]
    do:
      - http: { connection: t, method: POST, path: "/every", json: { seq: "{{ event.seq }}" } }
  - name: thirds
    on: [action_created]
    if: event.seq % 3 == 0
    do:
      - http: { connection: t, method: POST, path: "/thirds/0", json: { seq: "{{ event.seq }}" } }
      - http: { connection: t, method: POST, path: "/thirds/1", json: { seq: "{{ event.seq }}" } }
  - name: never
    on: [action_created]
    if: event.seq < 0
    do:
      - http: { connection: t, method: POST, path: "/never" }
`
}

// verifyLedger holds the store to the ledger: every acknowledged event is
// stored once with its body, nothing else is stored, every matched rule
// has exactly one execution, every execution succeeded, and every step
// reached the target at least once. It returns how many step deliveries
// the target saw more than once (at-least-once at work).
func verifyLedger(t testing.TB, st *store.Store, l *ledger, tg *target) (executions, redelivered int) {
	t.Helper()
	ctx := context.Background()
	l.mu.Lock()
	defer l.mu.Unlock()
	bySeq := map[int][]*alorules.Event{}
	for _, ev := range allEvents(t, st) {
		var p struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(ev.Payload, &p); err != nil || p.Seq == nil {
			t.Errorf("stored event %s is not one of ours: %s", ev.ID, ev.Payload)
			continue
		}
		bySeq[*p.Seq] = append(bySeq[*p.Seq], ev)
	}
	for seq, evs := range bySeq {
		if len(evs) > 1 {
			t.Errorf("seq %d stored %d times", seq, len(evs))
		}
		if _, ok := l.acked[seq]; !ok {
			t.Errorf("seq %d stored as %s but never acknowledged", seq, evs[0].ID)
		}
	}
	for seq, id := range l.acked {
		evs := bySeq[seq]
		if len(evs) == 0 {
			t.Errorf("seq %d acknowledged as %s but not stored: lost", seq, id)
			continue
		}
		if evs[0].ID != id {
			t.Errorf("seq %d acknowledged as %s but stored as %s", seq, id, evs[0].ID)
		}
		if string(evs[0].Payload) != l.bodies[seq] {
			t.Errorf("seq %d: stored payload %s, sent %s", seq, evs[0].Payload, l.bodies[seq])
		}
		m, err := st.Match(ctx, id)
		if err != nil {
			t.Errorf("seq %d (%s): no match record: %v", seq, id, err)
			continue
		}
		matched := map[string]bool{}
		for _, r := range m.Results {
			if r.Outcome == alorules.OutcomeMatched {
				matched[r.Rule] = true
			}
		}
		wantMatched := map[string]bool{"every": true, "thirds": seq%3 == 0}
		for rule, want := range wantMatched {
			if matched[rule] != want {
				t.Errorf("seq %d: rule %s matched=%v, want %v", seq, rule, matched[rule], want)
			}
		}
		exs, err := st.EventExecutions(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		perRule := map[string]int{}
		for _, ex := range exs {
			executions++
			perRule[ex.Rule]++
			if ex.Status != alorules.StatusSucceeded {
				t.Errorf("execution %s (seq %d, rule %s): status %s (%s), want succeeded", ex.ID, seq, ex.Rule, ex.Status, ex.Error)
			}
			for i := range ex.Steps {
				key := id + ":" + ex.Rule + ":" + fmt.Sprint(i)
				switch n := tg.deliveries(key); {
				case n == 0:
					t.Errorf("step %s never reached the target", key)
				case n > 1:
					redelivered++
				}
			}
		}
		for rule := range matched {
			if perRule[rule] != 1 {
				t.Errorf("seq %d: rule %s has %d executions, want exactly 1", seq, rule, perRule[rule])
			}
		}
		if len(exs) != len(matched) {
			t.Errorf("seq %d: %d executions for %d matched rules", seq, len(exs), len(matched))
		}
	}
	return executions, redelivered
}

// metricsText scrapes /metrics of an admin address.
func metricsText(t testing.TB, admin string, header http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/metrics", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// readAll reads a file that another process or goroutine may still write.
func readAll(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return b
}

// mustContainNone fails for every secret found in b.
func mustContainNone(t testing.TB, where string, b []byte, secrets map[string]string) {
	t.Helper()
	for name, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			i := bytes.Index(b, []byte(s))
			lo, hi := max(0, i-80), min(len(b), i+len(s)+40)
			t.Errorf("%s leaks the %s: ...%q...", where, name, b[lo:hi])
		}
	}
}

func writeFile(path, src string) error { return os.WriteFile(path, []byte(src), 0o600) }
