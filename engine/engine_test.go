package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/actions"
	"alorules/store"
)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ingestMatched stores the sample event name, wakes the engine and waits
// for its match record; it returns the event's id and the record.
func ingestMatched(t *testing.T, st *store.Store, e *Engine, name string) (string, *alorules.Match) {
	t.Helper()
	id := ingest(t, st, event(t, name))
	e.Notify()
	return id, waitMatch(t, st, id)
}

// newEngine starts an engine on a new store (closed with the test) and a
// rules file holding src, and returns all three.
func newEngine(t *testing.T, src string) (*store.Store, *Engine, string) {
	t.Helper()
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "alorules.db"))
	t.Cleanup(func() { st.Close() })
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, src)
	e, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	return st, e, rules
}

// testdataRules reads testdata/rules/NAME.yaml.
func testdataRules(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "rules", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run starts e.Run and returns a function that stops it and waits.
func run(t *testing.T, e *Engine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// ingest stores a sample event as the webhook handler would and returns
// its id.
func ingest(t *testing.T, st *store.Store, ev *alorules.Event) string {
	t.Helper()
	ev.ID = ""
	id, dup, err := st.SaveEvent(context.Background(), ev, nil)
	if err != nil || dup {
		t.Fatalf("save event: %v (duplicate %v)", err, dup)
	}
	return id
}

func waitMatch(t *testing.T, st *store.Store, id string) *alorules.Match {
	t.Helper()
	var m *alorules.Match
	waitFor(t, "event "+id+" to be matched", func() bool {
		var err error
		m, err = st.Match(context.Background(), id)
		return err == nil
	})
	return m
}

// clock is an injectable, settable time.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }

func TestEngineQueuesExecutions(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "alorules.db"))
	defer st.Close()
	src, _ := os.ReadFile(filepath.Join("testdata", "rules", "outcomes.yaml"))
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, string(src))

	// An event received while the engine was down is matched at start.
	early := ingest(t, st, event(t, "action_status_changed"))

	var woken, matched atomic.Int32
	e, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv,
		OnExecutions: func() { woken.Add(1) },
		OnMatch:      func(*alorules.Event, Evaluation, time.Duration) { matched.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, e)
	m := waitMatch(t, st, early)
	if got := outcomes(m.Results)["status-only"]; got != alorules.OutcomeMatched {
		t.Errorf("early event: got %s, want matched", got)
	}

	id, m := ingestMatched(t, st, e, "action_created")
	if m.RuleSetHash != hashOf(string(src)) {
		t.Errorf("got rule set hash %s, want the file's", m.RuleSetHash)
	}
	execs, err := st.EventExecutions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(execs) != 1 || execs[0].Rule != "urgent" || execs[0].ID == "" || execs[0].Status != alorules.StatusQueued {
		t.Fatalf("got executions %+v, want one queued for urgent", execs)
	}
	for _, r := range m.Results {
		if r.Rule == "urgent" && r.ExecutionID != execs[0].ID {
			t.Errorf("got result execution id %q, want %q", r.ExecutionID, execs[0].ID)
		}
	}
	if woken.Load() == 0 {
		t.Error("got no OnExecutions call, want the runner woken")
	}
	if got := matched.Load(); got != 2 {
		t.Errorf("got %d OnMatch calls, want 2", got)
	}
	// The source is saved under its hash for rendering after reloads.
	saved, err := st.RuleSet(context.Background(), m.RuleSetHash)
	if err != nil || string(saved) != string(src) {
		t.Errorf("got saved source %q, %v", saved, err)
	}
}

func TestEngineThrottleSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "alorules.db")
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, `version: 1
rules:
  - name: page
    on: [action_created]
    throttle: { key: "{{ event.action?.id }}", per: 10m }
    do:
      - http: { url: "https://example.com/page" }
`)
	clk := newClock(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC))
	start := func() (*store.Store, *Engine, func()) {
		st := openStore(t, db)
		e, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		return st, e, run(t, e)
	}
	match := func(st *store.Store, e *Engine) alorules.RuleResult {
		_, m := ingestMatched(t, st, e, "action_created")
		return m.Results[0]
	}

	st, e, stop := start()
	if got := match(st, e); got.Outcome != alorules.OutcomeMatched {
		t.Fatalf("first: got %+v, want matched", got)
	}
	stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	clk.set(clk.now().Add(time.Minute))
	st, e, stop = start()
	defer st.Close()
	defer stop()
	if got := match(st, e); got.Outcome != alorules.OutcomeThrottled {
		t.Errorf("after restart: got %+v, want throttled", got)
	}
	clk.set(clk.now().Add(10 * time.Minute))
	if got := match(st, e); got.Outcome != alorules.OutcomeMatched {
		t.Errorf("after the window: got %+v, want matched", got)
	}
}

func TestEngineRenderStep(t *testing.T) {
	st, e, rules := newEngine(t, testdataRules(t, "outcomes"))
	run(t, e)
	id, _ := ingestMatched(t, st, e, "action_created")
	execs, _ := st.EventExecutions(context.Background(), id)
	if len(execs) != 1 {
		t.Fatalf("got %d executions, want 1", len(execs))
	}
	ex := execs[0]
	ctx := context.Background()

	req, err := e.RenderStep(ctx, ex, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := req.Spec.(*actions.HTTP)
	if h.Path != "/urgent/act-1042" || req.Kind != "http" || req.Conn == nil || req.Conn.Name != "hooks" ||
		req.IdempotencyKey != id+":urgent:0" || req.Timeout != 3*time.Second || req.ExecutionID != ex.ID || req.Rule != "urgent" {
		t.Errorf("got request %+v with spec %+v", req, h)
	}

	// Step 3 reads steps.second.code from the recorded result of step 2.
	ex.Steps[1].Status, ex.Steps[1].Code, ex.Steps[1].Body = alorules.StatusSucceeded, 201, `{"id": 7}`
	req, err = e.RenderStep(ctx, ex, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Spec.(*actions.HTTP).JSON.(map[string]any)["code"]; got != json.Number("201") {
		t.Errorf("got code %#v, want 201 from the earlier step", got)
	}

	// After a reload that drops the rule, the execution still renders
	// under the rules it was matched with; a fresh engine compiles them
	// from the store.
	writeFile(t, rules, "version: 1\nrules:\n  - name: other\n")
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RenderStep(ctx, ex, 0); err != nil {
		t.Errorf("after reload: %v", err)
	}
	e2, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	if req, err := e2.RenderStep(ctx, ex, 0); err != nil || req.Spec.(*actions.HTTP).Path != "/urgent/act-1042" {
		t.Errorf("fresh engine: got %+v, %v", req, err)
	}
	if _, err := e2.RenderStep(ctx, ex, 7); err == nil {
		t.Error("got no error for a step that does not exist")
	}
	// A replay gets an idempotency key of its own.
	replay := *ex
	replay.ID, replay.Replay = "replay-1", true
	if req, _ := e2.RenderStep(ctx, &replay, 0); req.IdempotencyKey != id+":urgent:0:replay-1" {
		t.Errorf("got replay key %q", req.IdempotencyKey)
	}
}

// TestEngineRecordsRenderErrors: a step that cannot render at match time
// carries the error on the stored execution, naming rule and step, and
// the runner's render fails with the same words.
func TestEngineRecordsRenderErrors(t *testing.T) {
	st, e, _ := newEngine(t, testdataRules(t, "hostile"))
	run(t, e)
	id, _ := ingestMatched(t, st, e, "hostile")
	execs, err := st.EventExecutions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var ex *alorules.Execution
	for _, x := range execs {
		if x.Rule == "bad-render" {
			ex = x
		}
	}
	if ex == nil || len(ex.Steps) != 2 {
		t.Fatalf("got executions %+v, want one of bad-render with two steps", execs)
	}
	if st := ex.Steps[0]; st.Error != "" || st.Request == nil {
		t.Errorf("first step: got error %q and request %s, want it rendered", st.Error, st.Request)
	}
	want := `render: rule "bad-render": step 2 (http): {{ event.action.missing.deeper }}: `
	got := ex.Steps[1]
	if !strings.HasPrefix(got.Error, want) || got.Request != nil || got.Status != alorules.StatusQueued {
		t.Errorf("second step: got %s with error %q and request %s, want queued with an error starting %q", got.Status, got.Error, got.Request, want)
	}
	_, rerr := e.RenderStep(context.Background(), ex, 1)
	if rerr == nil || "render: "+rerr.Error() != got.Error {
		t.Errorf("got RenderStep error %v, want the recorded %q", rerr, got.Error)
	}
}

// TestEngineRenderStepFailures: RenderStep marks a failure that may pass
// (a store that cannot be read now) as alorules.ErrUnavailable, so that
// the runner retries it, and nothing else: a missing record or a template
// that fails on the event stays a failure for good.
func TestEngineRenderStepFailures(t *testing.T) {
	st, e, rules := newEngine(t, testdataRules(t, "hostile"))
	// A second engine runs other rules: it must read e's from the store.
	other := filepath.Join(filepath.Dir(rules), "other.yaml")
	writeFile(t, other, "version: 1\nrules:\n  - name: other\n")
	e2, err := New(Config{Store: st, RulesPath: other, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	id := ingest(t, st, event(t, "hostile"))
	exec := func(eventID string) *alorules.Execution {
		return &alorules.Execution{ID: "ex-1", EventID: eventID, Rule: "bad-render", RuleSetHash: e.Current().Hash(),
			Steps: []alorules.StepResult{{Index: 0, Kind: "http"}, {Index: 1, Kind: "http"}}}
	}
	tests := []struct {
		name        string
		e           *Engine
		ex          *alorules.Execution
		step        int
		closed      bool
		want        string
		unavailable bool
	}{
		{"renders", e, exec(id), 0, false, "", false},
		{"template fails on the event", e, exec(id), 1, false, "{{ event.action.missing.deeper }}", false},
		{"event gone", e, exec("ev-gone"), 0, false, "not found", false},
		{"event read, store closed", e, exec(id), 0, true, "store closed", true},
		{"rule set read, store closed", e2, exec(id), 0, true, "store closed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.closed {
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			_, err := tt.e.RenderStep(context.Background(), tt.ex, tt.step)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want == "":
				return
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if got := errors.Is(err, alorules.ErrUnavailable); got != tt.unavailable {
				t.Errorf("got errors.Is(%v, ErrUnavailable) %v, want %v", err, got, tt.unavailable)
			}
		})
	}
}

// TestEngineRenderStepHidesSecrets: a templated step timeout is checked
// only when rendered; its error must not show a ${NAME} value either.
func TestEngineRenderStepHidesSecrets(t *testing.T) {
	st, e, _ := newEngine(t, "version: 1\nrules:\n  - name: a\n    do:\n      - http: { url: \"https://example.com/x\", timeout: \"{{ event.type }}${ALO_API_KEY}\" }\n")
	id := ingest(t, st, event(t, "action_created"))
	ex := &alorules.Execution{ID: "ex-1", EventID: id, Rule: "a", RuleSetHash: e.Current().Hash(),
		Steps: []alorules.StepResult{{Index: 0, Kind: "http"}}}
	_, err := e.RenderStep(context.Background(), ex, 0)
	if err == nil || !strings.Contains(err.Error(), `bad duration "action_created<secret>"`) || strings.Contains(err.Error(), testEnv["ALO_API_KEY"]) {
		t.Errorf("got %v, want a bad duration with the secret redacted", err)
	}
}

func TestEngineHotReload(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "alorules.db"))
	defer st.Close()
	rules := filepath.Join(dir, "rules.yaml")
	version := func(n int) string {
		return "version: 1\nrules:\n  - name: rule-" + strings.Repeat("x", n) + "\n"
	}
	writeFile(t, rules, version(1))
	var logMu sync.Mutex
	var logs bytes.Buffer
	logged := func(msg string) bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Contains(logs.String(), msg)
	}
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	e, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv, Debounce: 30 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, e)
	waitHash := func(what, src string) {
		t.Helper()
		waitFor(t, what, func() bool { return e.Status().Hash == hashOf(src) })
	}
	// The watch starts with Run; give it a moment to be in place before
	// the first change, by rewriting until the change is seen.
	waitFor(t, "the watch to start", func() bool {
		writeFile(t, rules, version(2))
		for range 20 {
			if e.Status().Hash == hashOf(version(2)) {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	})

	t.Run("write in place", func(t *testing.T) {
		writeFile(t, rules, version(3))
		waitHash("in-place write", version(3))
	})
	t.Run("rename over", func(t *testing.T) {
		tmp := filepath.Join(dir, ".rules.yaml.swp")
		writeFile(t, tmp, version(4))
		if err := os.Rename(tmp, rules); err != nil {
			t.Fatal(err)
		}
		waitHash("rename over", version(4))
	})
	t.Run("delete and recreate", func(t *testing.T) {
		// git checkout deletes and recreates: no false alarm in between.
		failed := e.Status().ReloadsFailed
		if err := os.Remove(rules); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the removal to be seen on its own", func() bool {
			return logged("rules file is gone") || e.Status().ReloadsFailed > failed
		})
		s := e.Status()
		if s.Hash != hashOf(version(4)) {
			t.Errorf("got hash %s after delete, want the running rules kept", s.Hash)
		}
		if s.ReloadsFailed != failed || s.LastError != "" {
			t.Errorf("after delete: got %d failed reloads (want %d) and last error %q (want none)", s.ReloadsFailed, failed, s.LastError)
		}
		if s.FileGoneSince.IsZero() {
			t.Error("after delete: got no file_gone_since, want the time the file went")
		}
		writeFile(t, rules, version(5))
		waitHash("recreate", version(5))
		if s := e.Status(); s.ReloadsFailed != failed || s.LastError != "" || !s.FileGoneSince.IsZero() {
			t.Errorf("after recreate: got %d failed reloads (want %d), last error %q and file_gone_since %v (want none)",
				s.ReloadsFailed, failed, s.LastError, s.FileGoneSince)
		}
		// Asked for by hand, a missing file is an error all the same.
		if err := os.Remove(rules); err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("explicit reload of a missing file: got %v, want it to fail", err)
		}
		if s := e.Status(); s.ReloadsFailed != failed+1 || s.LastError == "" {
			t.Errorf("explicit reload of a missing file: got %d failed reloads and last error %q, want it counted", s.ReloadsFailed, s.LastError)
		}
		writeFile(t, rules, version(5))
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("broken file keeps the old rules", func(t *testing.T) {
		failed := e.Status().ReloadsFailed
		writeFile(t, rules, "version: 1\nrules:\n  - name: a\n    iff: true\n")
		waitFor(t, "the failed reload", func() bool { return e.Status().ReloadsFailed > failed })
		s := e.Status()
		if s.Hash != hashOf(version(5)) {
			t.Errorf("got hash %s, want the running rules kept", s.Hash)
		}
		if !strings.Contains(s.LastError, `unknown key "iff"`) || len(s.LastErrorIssues) != 1 {
			t.Errorf("got last error %q (%d issues), want the unknown key", s.LastError, len(s.LastErrorIssues))
		}
		if rs := e.Current(); rs.Len() != 1 || rs.Rules()[0].Name != "rule-xxxxx" {
			t.Errorf("got rules %+v, want the old set", rs.Rules())
		}
		writeFile(t, rules, version(6))
		waitHash("the fixed file", version(6))
		if s := e.Status(); s.LastError != "" || s.ReloadsOK == 0 || s.LastReloadAt.IsZero() {
			t.Errorf("got status %+v, want the error cleared after a good reload", s)
		}
	})
}

func TestEngineReloadReturnsLoadError(t *testing.T) {
	_, e, rules := newEngine(t, "version: 1\nrules:\n  - name: a\n")
	old := e.Status().Hash
	writeFile(t, rules, "version: 1\nrules:\n  - name: a\n    on: [action_creatd]\n  - name: a\n")
	err := e.Reload()
	var le *LoadError
	if !errors.As(err, &le) || len(le.Issues) != 2 {
		t.Fatalf("got %v, want a *LoadError with both issues", err)
	}
	if s := e.Status(); s.Hash != old || s.ReloadsFailed != 1 || len(s.LastErrorIssues) != 2 {
		t.Errorf("got status %+v", s)
	}
	// An unchanged file reloads without a swap.
	writeFile(t, rules, "version: 1\nrules:\n  - name: a\n")
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := e.Status(); s.Hash != old || s.LastError != "" || s.ReloadsOK != 1 {
		t.Errorf("got status %+v", s)
	}
}

func TestEngineNewRefusesBrokenRules(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "alorules.db"))
	defer st.Close()
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, "version: 1\nrules:\n  - name: a\n    if: evnt.x\n")
	_, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("got %v, want a *LoadError", err)
	}
	if want := rules + `:4: rule "a": if: unknown name "evnt", did you mean "event"? (column 1)`; le.Issues[0].String() != want {
		t.Errorf("got %q, want %q", le.Issues[0].String(), want)
	}
}

// TestEngineLoopGuard: a rule that keeps firing for one action (its own
// steps causing new events) is stopped for it, shown in the status, and
// let through again after a quiet minute.
func TestEngineLoopGuard(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "alorules.db"))
	defer st.Close()
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, `version: 1
defaults: { loop_limit: 2 }
rules:
  - name: echo
    on: [action_message_added]
    do:
      - http: { url: "https://example.com/echo" }
`)
	clk := newClock(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC))
	e, err := New(Config{Store: st, RulesPath: rules, Getenv: getenv, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	run(t, e)
	var got []alorules.Outcome
	for i := range 4 {
		if i == 3 {
			loops := e.Status().LoopsSuspected
			if len(loops) != 1 || loops[0].Rule != "echo" || loops[0].Key != "act-1042" {
				t.Errorf("status: got loops %+v, want echo for act-1042", loops)
			}
			clk.set(clk.now().Add(time.Minute))
		}
		_, m := ingestMatched(t, st, e, "action_message_added")
		got = append(got, m.Results[0].Outcome)
	}
	want := []alorules.Outcome{"matched", "matched", "loop_suspected", "matched"}
	if !equalOutcomes(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if loops := e.Status().LoopsSuspected; len(loops) != 0 {
		t.Errorf("status after a quiet minute: got loops %+v, want none", loops)
	}
}
