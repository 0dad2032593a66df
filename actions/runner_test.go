package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// testRenderer stands in for the engine: for each rule, a list of step
// builders that get the execution (with earlier steps' results) and return
// the rendered Request. It fills the fields the engine owns: ids,
// index, kind and the idempotency key (event id + rule + step index).
type testRenderer struct {
	rules map[string][]func(ex *alorules.Execution) (Request, error)
}

func (tr *testRenderer) RenderStep(_ context.Context, ex *alorules.Execution, i int) (Request, error) {
	steps := tr.rules[ex.Rule]
	if i >= len(steps) {
		return Request{}, fmt.Errorf("rule %q has no step %d", ex.Rule, i)
	}
	req, err := steps[i](ex)
	if err != nil {
		return Request{}, err
	}
	req.ExecutionID, req.Rule, req.Index = ex.ID, ex.Rule, i
	req.IdempotencyKey = ex.EventID + ":" + ex.Rule + ":" + strconv.Itoa(i)
	return req, nil
}

func fixed(req Request) func(*alorules.Execution) (Request, error) {
	return func(*alorules.Execution) (Request, error) { return req, nil }
}

// testClock is a scheduling clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock { return &testClock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openStore(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB) (*store.Store, string) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	return openStore(t, path), path
}

// newExecution is an execution as the engine creates it: one queued
// StepResult per step.
func newExecution(rule, eventID string, kinds []string, coe map[int]bool, retry alorules.RetryPolicy, created time.Time) *alorules.Execution {
	ex := &alorules.Execution{EventID: eventID, Rule: rule, RuleSetHash: "h1", Status: alorules.StatusQueued,
		CreatedAt: created, Retry: retry, Timeout: 5 * time.Second}
	for i, k := range kinds {
		ex.Steps = append(ex.Steps, alorules.StepResult{Index: i, Kind: k, ContinueOnError: coe[i], Status: alorules.StatusQueued})
	}
	return ex
}

func addExecutions(t testing.TB, s *store.Store, exs ...*alorules.Execution) {
	t.Helper()
	if err := s.AddExecutions(context.Background(), exs); err != nil {
		t.Fatal(err)
	}
}

// startRunner runs a runner until the returned stop is called (or the test
// ends); stop waits for Run to return.
func startRunner(t testing.TB, cfg RunnerConfig) (*Runner, func()) {
	t.Helper()
	r := NewRunner(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// waitExecution polls until the stored execution satisfies ok.
func waitExecution(t testing.TB, s *store.Store, id string, ok func(*alorules.Execution) bool) *alorules.Execution {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ex, err := s.Execution(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ok(ex) {
			return ex
		}
		if time.Now().After(deadline) {
			j, _ := json.MarshalIndent(ex, "", " ")
			t.Fatalf("execution never reached the expected state: %s", j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasStatus(st alorules.Status) func(*alorules.Execution) bool {
	return func(ex *alorules.Execution) bool { return ex.Status == st }
}

func TestRunnerRunsStepsInOrder(t *testing.T) {
	s, _ := newStore(t)
	tickets := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(201)
		io.WriteString(w, `{"id":"T-42"}`)
	})
	aloSrv := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { io.WriteString(w, `{"id":"m-1"}`) })
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"page": {
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "tickets", Path: "/issues", JSON: map[string]any{"title": "t"}}, Conn: httpConn(tickets.URL)}),
			func(ex *alorules.Execution) (Request, error) {
				// A later step reads an earlier step's JSON, as steps.<id>.json.
				var prev struct{ ID string }
				if err := json.Unmarshal([]byte(ex.Steps[0].Body), &prev); err != nil {
					return Request{}, err
				}
				return Request{Kind: KindALO, Conn: aloConn(aloSrv.URL),
					Spec: &ALO{Connection: "alo", PostMessage: &ALOMessage{ChannelID: "c1", Content: "Ticket " + prev.ID + " opened"}}}, nil
			},
		},
	}}
	ex := newExecution("page", "ev1", []string{KindHTTP, KindALO}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	ex.Steps[0].ID = "ticket"
	addExecutions(t, s, ex)

	var steps atomic.Int32
	startRunner(t, RunnerConfig{Store: s, Renderer: rnd, OnStep: func(*alorules.Execution, alorules.StepResult) { steps.Add(1) }})
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))

	if a := aloSrv.only(t); !strings.Contains(a.Body, `"content":"Ticket T-42 opened"`) || a.Header.Get("Idempotency-Key") != "ev1:page:1" {
		t.Errorf("got ALO request %q key %q, want the ticket id from step 0 and key ev1:page:1", a.Body, a.Header.Get("Idempotency-Key"))
	}
	if k := tickets.only(t).Header.Get("Idempotency-Key"); k != "ev1:page:0" {
		t.Errorf("got Idempotency-Key %q, want ev1:page:0", k)
	}
	for i, st := range got.Steps {
		if st.Status != alorules.StatusSucceeded || st.Attempts != 1 || st.StartedAt.IsZero() || st.Duration <= 0 || len(st.Request) == 0 {
			t.Errorf("step %d: got %+v, want succeeded after 1 attempt with start, duration and request", i, st)
		}
	}
	if got.Steps[0].Code != 201 || got.Steps[0].Body != `{"id":"T-42"}` {
		t.Errorf("step 0: got %d %q, want 201 and the body", got.Steps[0].Code, got.Steps[0].Body)
	}
	if !strings.Contains(string(got.Steps[0].Request), `"path":"/issues"`) {
		t.Errorf("step 0: got request %s, want the rendered spec", got.Steps[0].Request)
	}
	if got.Error != "" || !got.NextAttemptAt.IsZero() {
		t.Errorf("got error %q next %s, want none", got.Error, got.NextAttemptAt)
	}
	// OnStep is called after the step's result is stored: the last call
	// may come a moment after the execution reads as succeeded.
	deadline := time.Now().Add(5 * time.Second)
	for steps.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := steps.Load(); n != 2 {
		t.Errorf("OnStep called %d times, want 2", n)
	}
}

// TestRunnerContinueOnError: a failed step with continue_on_error lets the
// next steps run, and the execution still ends failed, wherever the step
// stands; a retry sends the failed step again and nothing else.
func TestRunnerContinueOnError(t *testing.T) {
	s, _ := newStore(t)
	var broken atomic.Bool
	broken.Store(true)
	bad := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if broken.Load() {
			w.WriteHeader(400)
		}
	})
	good := newTarget(t, nil)
	badStep := fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "bad"}, Conn: httpConn(bad.URL)})
	goodStep := fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "good"}, Conn: httpConn(good.URL)})
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"bad-first": {badStep, goodStep},
		"bad-last":  {goodStep, badStep},
	}}
	const failure = "http: unexpected status 400 Bad Request"
	tests := []struct {
		name      string
		rule      string
		coe       map[int]bool
		wantSteps []alorules.Status
		wantErr   string
	}{
		{"continue_on_error on the first step", "bad-first", map[int]bool{0: true},
			[]alorules.Status{alorules.StatusFailed, alorules.StatusSucceeded}, "step 0: " + failure},
		{"continue_on_error on the last step", "bad-last", map[int]bool{1: true},
			[]alorules.Status{alorules.StatusSucceeded, alorules.StatusFailed}, "step 1: " + failure},
		{"without continue_on_error", "bad-first", nil,
			[]alorules.Status{alorules.StatusFailed, alorules.StatusQueued}, "step 0: " + failure},
	}
	r, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broken.Store(true)
			ex := newExecution(tt.rule, "ev-"+tt.name, []string{KindHTTP, KindHTTP}, tt.coe, alorules.RetryPolicy{Attempts: 3}, time.Time{})
			addExecutions(t, s, ex)
			r.Notify() // as the engine does after storing executions
			got := waitExecution(t, s, ex.ID, func(ex *alorules.Execution) bool { return ex.Status.Final() })
			if got.Status != alorules.StatusFailed || got.Error != tt.wantErr {
				t.Errorf("got %s with error %q, want failed with %q", got.Status, got.Error, tt.wantErr)
			}
			for i, want := range tt.wantSteps {
				if st := got.Steps[i]; st.Status != want {
					t.Errorf("step %d: got %s, want %s", i, st.Status, want)
				}
			}
			badIndex := slices.Index(tt.wantSteps, alorules.StatusFailed)
			if st := got.Steps[badIndex]; st.Attempts != 1 || st.Code != 400 {
				t.Errorf("failed step: got %d attempts code %d, want 1 attempt with 400", st.Attempts, st.Code)
			}

			// Retry sends the failed step again, not the ones that
			// succeeded.
			broken.Store(false)
			badBefore, goodBefore := len(bad.requests()), len(good.requests())
			if _, err := r.Retry(context.Background(), ex.ID); err != nil {
				t.Fatalf("Retry: %v", err)
			}
			got = waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
			wantGood := 0
			if tt.coe == nil {
				wantGood = 1 // it never ran before
			}
			if b, g := len(bad.requests())-badBefore, len(good.requests())-goodBefore; b != 1 || g != wantGood {
				t.Errorf("retry sent %d to the failed step's target and %d to the other, want 1 and %d", b, g, wantGood)
			}
			if got.Error != "" {
				t.Errorf("got error %q after the retry, want none", got.Error)
			}
		})
	}
}

func TestRunnerRenderErrorFailsStep(t *testing.T) {
	s, _ := newStore(t)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r":     {func(*alorules.Execution) (Request, error) { return Request{}, errors.New(`unknown name "evnt"`) }},
		"panic": {func(*alorules.Execution) (Request, error) { panic("renderer bug") }},
	}}
	ex := newExecution("r", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 5}, time.Time{})
	bug := newExecution("panic", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 5}, time.Time{})
	addExecutions(t, s, ex, bug)
	startRunner(t, RunnerConfig{Store: s, Renderer: rnd})
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusFailed))
	if st := got.Steps[0]; st.Error != `render: unknown name "evnt"` || st.Attempts != 1 {
		t.Errorf("got %q after %d attempts, want the render error after 1", st.Error, st.Attempts)
	}
	got = waitExecution(t, s, bug.ID, hasStatus(alorules.StatusFailed))
	if st := got.Steps[0]; st.Error != "internal error: renderer bug" {
		t.Errorf("got %q, want the panic recorded as the step's error", st.Error)
	}
}

// TestRunnerRetriesUnavailableRender: a render that failed because the
// store could not be read (alorules.ErrUnavailable) waits and tries again
// under the retry policy instead of failing the step for good.
func TestRunnerRetriesUnavailableRender(t *testing.T) {
	s, _ := newStore(t)
	clock := newClock()
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { io.WriteString(w, "{}") })
	var renders atomic.Int32
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {func(*alorules.Execution) (Request, error) {
			if renders.Add(1) == 1 {
				return Request{}, fmt.Errorf("render x: %w: event ev1: disk I/O error", alorules.ErrUnavailable)
			}
			return Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t", JSON: map[string]any{}}, Conn: httpConn(tg.URL)}, nil
		}},
	}}
	policy := alorules.RetryPolicy{Attempts: 3, Backoff: 10 * time.Second, MaxBackoff: time.Minute}
	ex := newExecution("r", "ev1", []string{KindHTTP}, nil, policy, clock.Now())
	addExecutions(t, s, ex)
	r, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Now: clock.Now})

	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusRetrying))
	want := "render: render x: temporarily unavailable: event ev1: disk I/O error"
	if st := got.Steps[0]; st.Status != alorules.StatusRetrying || st.Attempts != 1 || st.Error != want {
		t.Errorf("got step %s after %d attempts with %q, want retrying after 1 with %q", st.Status, st.Attempts, st.Error, want)
	}
	if wait := got.NextAttemptAt.Sub(clock.Now()); wait < 5*time.Second || wait > 10*time.Second {
		t.Errorf("got next attempt in %s, want within [5s, 10s] as the policy says", wait)
	}
	clock.Advance(10 * time.Second)
	r.Notify()
	got = waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if st := got.Steps[0]; st.Attempts != 2 || st.Error != "" || len(tg.requests()) != 1 {
		t.Errorf("got %d attempts, error %q, %d requests, want 2, none and 1", st.Attempts, st.Error, len(tg.requests()))
	}
}

// TestRunnerRetriesWaitInStore: a retry is a queued record with its due
// time, not a sleeping goroutine. The first runner records the retry and
// stops; a second runner on the reopened file makes the next attempt once
// the (test) clock reaches it, with the same idempotency key.
func TestRunnerRetriesWaitInStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	s := openStore(t, path)
	clock := newClock()
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "{}")
	})
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t", JSON: map[string]any{}}, Conn: httpConn(tg.URL)})},
	}}
	policy := alorules.RetryPolicy{Attempts: 3, Backoff: 10 * time.Second, MaxBackoff: time.Minute}
	ex := newExecution("r", "ev1", []string{KindHTTP}, nil, policy, clock.Now())
	addExecutions(t, s, ex)

	_, stop := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Now: clock.Now})
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusRetrying))
	stop()
	wait := got.NextAttemptAt.Sub(clock.Now())
	if wait < 5*time.Second || wait > 10*time.Second {
		t.Errorf("got next attempt in %s, want within [5s, 10s]", wait)
	}
	if st := got.Steps[0]; st.Status != alorules.StatusRetrying || st.Attempts != 1 || st.Code != 503 || !strings.Contains(got.Error, "503") {
		t.Errorf("got step %s attempts %d code %d error %q, want retrying after 1 attempt with 503", st.Status, st.Attempts, st.Code, got.Error)
	}
	if next, ok, _ := s.NextDue(context.Background()); !ok || !next.Equal(got.NextAttemptAt) {
		t.Errorf("got NextDue %s %v, want %s", next, ok, got.NextAttemptAt)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart on the same file. Before the due time nothing happens.
	s = openStore(t, path)
	r2, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Now: clock.Now})
	time.Sleep(50 * time.Millisecond)
	if n := len(tg.requests()); n != 1 {
		t.Fatalf("got %d requests before the retry was due, want 1", n)
	}
	clock.Advance(wait)
	r2.Notify()
	got = waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	reqs := tg.requests()
	if len(reqs) != 2 || reqs[0].Header.Get("Idempotency-Key") != "ev1:r:0" || reqs[1].Header.Get("Idempotency-Key") != "ev1:r:0" {
		t.Errorf("got %d requests, want 2 with Idempotency-Key ev1:r:0", len(reqs))
	}
	if st := got.Steps[0]; st.Attempts != 2 || st.Error != "" || got.Error != "" {
		t.Errorf("got %d attempts, errors %q %q, want 2 and none", st.Attempts, st.Error, got.Error)
	}
}

func TestRunnerGivesUpAfterAttempts(t *testing.T) {
	s, _ := newStore(t)
	clock := newClock()
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	})
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(tg.URL)})},
	}}
	ex := newExecution("r", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3, Backoff: time.Second}, clock.Now())
	addExecutions(t, s, ex)
	r, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Now: clock.Now})
	for attempt := 1; attempt < 3; attempt++ {
		got := waitExecution(t, s, ex.ID, func(ex *alorules.Execution) bool {
			return ex.Status == alorules.StatusRetrying && ex.Steps[0].Attempts == attempt
		})
		if d := got.NextAttemptAt.Sub(clock.Now()); d != 30*time.Second {
			t.Errorf("attempt %d: got delay %s, want Retry-After's 30s", attempt, d)
		}
		clock.Advance(30 * time.Second)
		r.Notify()
	}
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusFailed))
	if st := got.Steps[0]; st.Attempts != 3 || st.Status != alorules.StatusFailed || len(tg.requests()) != 3 {
		t.Errorf("got %d attempts (%s), %d requests, want 3 failed", st.Attempts, st.Status, len(tg.requests()))
	}
}

func TestRunnerRetryFailedExecution(t *testing.T) {
	s, _ := newStore(t)
	var broken atomic.Bool
	broken.Store(true)
	first := newTarget(t, nil)
	second := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if broken.Load() {
			w.WriteHeader(404)
			return
		}
		io.WriteString(w, "{}")
	})
	third := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "a"}, Conn: httpConn(first.URL)}),
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "b"}, Conn: httpConn(second.URL)}),
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "c"}, Conn: httpConn(third.URL)}),
		},
	}}
	ex := newExecution("r", "ev1", []string{KindHTTP, KindHTTP, KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{})
	addExecutions(t, s, ex)
	r, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd})
	waitExecution(t, s, ex.ID, hasStatus(alorules.StatusFailed))

	broken.Store(false)
	retried, err := r.Retry(context.Background(), ex.ID)
	if err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if retried.Status != alorules.StatusQueued || retried.Steps[0].Status != alorules.StatusSucceeded || retried.Steps[1].Attempts != 0 {
		t.Errorf("got %s with steps %s/%d, want queued from the failed step", retried.Status, retried.Steps[0].Status, retried.Steps[1].Attempts)
	}
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if len(first.requests()) != 1 || len(second.requests()) != 2 || len(third.requests()) != 1 {
		t.Errorf("got %d/%d/%d requests, want 1/2/1: the succeeded step is not sent again",
			len(first.requests()), len(second.requests()), len(third.requests()))
	}
	if st := got.Steps[1]; st.Attempts != 1 || st.Code != 200 {
		t.Errorf("retried step: got %d attempts code %d, want 1 and 200", st.Attempts, st.Code)
	}

	if _, err := r.Retry(context.Background(), ex.ID); !errors.Is(err, alorules.ErrConflict) {
		t.Errorf("retry of a succeeded execution: got %v, want ErrConflict", err)
	}
	if _, err := r.Retry(context.Background(), "nope"); !errors.Is(err, alorules.ErrNotFound) {
		t.Errorf("retry of an unknown execution: got %v, want ErrNotFound", err)
	}
}

// TestRunnerBoundsWorkers: never more executions in flight than workers,
// and a hanging target does not hold up the others.
func TestRunnerBoundsWorkers(t *testing.T) {
	s, _ := newStore(t)
	var inFlight, peak atomic.Int32
	fast := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		cur := inFlight.Add(1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		inFlight.Add(-1)
	})
	release := make(chan struct{})
	slow := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"fast": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "f"}, Conn: httpConn(fast.URL)})},
		"slow": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "s", Timeout: "1m"}, Conn: httpConn(slow.URL)})},
	}}
	slowEx := newExecution("slow", "ev-slow", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
	addExecutions(t, s, slowEx)
	var exs []*alorules.Execution
	for i := range 20 {
		exs = append(exs, newExecution("fast", fmt.Sprint("ev", i), []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{}))
	}
	addExecutions(t, s, exs...)

	r, _ := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Workers: 4, Grace: 100 * time.Millisecond})
	r.Notify()
	for _, ex := range exs {
		waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	}
	if p := peak.Load(); p > 3 {
		t.Errorf("got %d requests at once at the fast target, want at most 3 (4 workers, one held by the slow target)", p)
	}
	if n := len(fast.requests()); n != 20 {
		t.Errorf("got %d deliveries, want 20: each execution exactly once", n)
	}
	if ex, _ := s.Execution(context.Background(), slowEx.ID); ex.Status != alorules.StatusRunning {
		t.Errorf("slow execution: got %s, want still running", ex.Status)
	}
}

// TestRunnerSkipsDueExecutionInFlight: when the store lists as due an
// execution this runner has in flight (its state was put back in the queue
// while its step still runs), the scheduler skips it and goes on claiming
// the other due executions at once, instead of pausing as after a store
// error. The execution in flight is not started a second time.
func TestRunnerSkipsDueExecutionInFlight(t *testing.T) {
	s, _ := newStore(t)
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	slow := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	fast := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"slow": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "s", Timeout: "1m"}, Conn: httpConn(slow.URL)})},
		"fast": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "f"}, Conn: httpConn(fast.URL)})},
	}}
	inFlight := newExecution("slow", "ev-slow", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
	addExecutions(t, s, inFlight)

	r := NewRunner(RunnerConfig{Store: s, Renderer: rnd, Grace: 100 * time.Millisecond})
	// A pause after a store error lasts an hour here, so a pause shows as
	// executions that are never claimed.
	r.backoff = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(letGo)
	<-arrived

	listed, err := s.Execution(context.Background(), inFlight.ID)
	if err != nil {
		t.Fatal(err)
	}
	listed.Status, listed.NextAttemptAt = alorules.StatusQueued, time.Now()
	if err := s.UpdateExecution(context.Background(), listed); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ex := newExecution("fast", fmt.Sprint("ev-fast-", i), []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
		addExecutions(t, s, ex)
		r.Notify()
		waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	}
	letGo()
	got := waitExecution(t, s, inFlight.ID, hasStatus(alorules.StatusSucceeded))
	if n := len(slow.requests()); n != 1 || got.Steps[0].Attempts != 1 {
		t.Errorf("got %d requests and %d attempts for the execution in flight, want 1 and 1", n, got.Steps[0].Attempts)
	}
}

// TestRunnerDrainsOnShutdown: Run returns after the step in flight has
// finished; past the grace period, the step is cut and queued again
// without counting the attempt.
func TestRunnerDrainsOnShutdown(t *testing.T) {
	tests := []struct {
		name       string
		grace      time.Duration
		wantStatus alorules.Status
		wantAttmpt int
	}{
		{"step finishes within grace", 5 * time.Second, alorules.StatusSucceeded, 1},
		{"grace over", 50 * time.Millisecond, alorules.StatusQueued, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			arrived := make(chan struct{}, 1)
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
				arrived <- struct{}{}
				select {
				case <-time.After(300 * time.Millisecond):
				case <-r.Context().Done():
				}
			})
			rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
				"r": {fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t"}, Conn: httpConn(tg.URL)})},
			}}
			ex := newExecution("r", "ev1", []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
			addExecutions(t, s, ex)
			_, stop := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Grace: tt.grace})
			<-arrived
			stop()
			got, err := s.Execution(context.Background(), ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.wantStatus || got.Steps[0].Attempts != tt.wantAttmpt {
				t.Errorf("got %s after %d attempts, want %s after %d", got.Status, got.Steps[0].Attempts, tt.wantStatus, tt.wantAttmpt)
			}
		})
	}
}

// TestRunnerResumesAfterCrash: an execution left running (its step too)
// by a crash is queued again at start and its step is sent again; the
// interrupted attempt does not count.
func TestRunnerResumesAfterCrash(t *testing.T) {
	s, _ := newStore(t)
	tg := newTarget(t, nil)
	rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
		"r": {
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t", Path: "/0"}, Conn: httpConn(tg.URL)}),
			fixed(Request{Kind: KindHTTP, Spec: &HTTP{Connection: "t", Path: "/1"}, Conn: httpConn(tg.URL)}),
		},
	}}
	ex := newExecution("r", "ev1", []string{KindHTTP, KindHTTP}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
	ex.Status = alorules.StatusRunning
	ex.Steps[0].Status, ex.Steps[0].Attempts, ex.Steps[0].Code = alorules.StatusSucceeded, 1, 200
	ex.Steps[1].Status, ex.Steps[1].Attempts = alorules.StatusRunning, 1
	addExecutions(t, s, ex)
	startRunner(t, RunnerConfig{Store: s, Renderer: rnd})
	got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusSucceeded))
	if g := tg.only(t); g.Path != "/1" {
		t.Errorf("got %s, want only the interrupted step /1", g.Path)
	}
	if a := got.Steps[1].Attempts; a != 1 {
		t.Errorf("got %d attempts, want 1: the interrupted one is not counted", a)
	}
}

// TestNoSecretLeaks runs every step kind through the runner against
// targets that echo credentials back, and looks for the secrets in errors,
// log lines, stored step results and the marshalled execution.
func TestNoSecretLeaks(t *testing.T) {
	const ruleSecret = "rule-secret-from-env-123"
	echo := func(status int) func(w http.ResponseWriter, r *http.Request, n int) {
		return func(w http.ResponseWriter, r *http.Request, n int) {
			b, _ := io.ReadAll(r.Body)
			w.WriteHeader(status)
			fmt.Fprintf(w, "%s %s %v %s", r.URL.Path, r.URL.RawQuery, r.Header, b)
		}
	}
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, n int)
		closed  bool // the target is down: transport errors carry the URL
		build   func(base string) Request
		secrets []string
	}{
		{
			name:    "http",
			handler: echo(400),
			build: func(base string) Request {
				conn := httpConn(base)
				conn.HTTP.Headers = map[string]string{"Authorization": "Bearer http-conn-token-456"}
				return Request{Kind: KindHTTP, Conn: conn, Spec: &HTTP{Connection: "t", Path: "/x",
					Headers: map[string]string{"X-Api-Key": ruleSecret}, JSON: map[string]any{"k": ruleSecret}}}
			},
			secrets: []string{"http-conn-token-456", ruleSecret},
		},
		{
			name:   "http down",
			closed: true,
			build: func(base string) Request {
				return Request{Kind: KindHTTP, Conn: httpConn(base), Spec: &HTTP{Connection: "t", Path: "/" + ruleSecret}}
			},
			secrets: []string{ruleSecret},
		},
		{
			name:    "slack webhook",
			handler: func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(400); io.WriteString(w, r.URL.Path) },
			build: func(base string) Request {
				return Request{Kind: KindSlack, Conn: slackWebhookConn(base), Spec: &Slack{Connection: "s", Text: "x"}}
			},
			secrets: []string{"XXXXsecretXXXX"},
		},
		{
			name:   "slack webhook down",
			closed: true,
			build: func(base string) Request {
				return Request{Kind: KindSlack, Conn: slackWebhookConn(base), Spec: &Slack{Connection: "s", Text: "x"}}
			},
			secrets: []string{"XXXXsecretXXXX"},
		},
		{
			name: "slack bot",
			handler: func(w http.ResponseWriter, r *http.Request, n int) {
				r.ParseForm()
				fmt.Fprintf(w, `{"ok":false,"error":"invalid_auth:%s"}`, r.Form.Get("token"))
			},
			build: func(base string) Request {
				return Request{Kind: KindSlack, Conn: slackBotConn(base), Spec: &Slack{Connection: "s", Text: ruleSecret}}
			},
			secrets: []string{"xoxb-123-secret-token", ruleSecret},
		},
		{
			name: "alo",
			handler: func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(401)
				fmt.Fprintf(w, `{"status":401,"message":{"error":"bad key %s","echo":%q}}`, r.Header.Get("Authorization"), r.Header.Get("Authorization"))
			},
			build: func(base string) Request {
				return Request{Kind: KindALO, Conn: aloConn(base), Spec: &ALO{Connection: "a", PostMessage: &ALOMessage{ChannelID: "c", Content: ruleSecret}}}
			},
			secrets: []string{"alo-key-secret-123", ruleSecret},
		}, {
			name: "alo direct message",
			handler: func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(403)
				fmt.Fprintf(w, `{"status":403,"message":"key %s cannot post"}`, r.Header.Get("Authorization"))
			},
			build: func(base string) Request {
				return Request{Kind: KindALO, Conn: aloConn(base), Spec: &ALO{Connection: "a", PostDirectMessage: &ALOMessage{ChannelID: "dm", Content: ruleSecret}}}
			},
			secrets: []string{"alo-key-secret-123", ruleSecret},
		},
		{
			name: "alo message across the cap",
			handler: func(w http.ResponseWriter, r *http.Request, n int) {
				var m struct{ Content string }
				json.NewDecoder(r.Body).Decode(&m)
				w.WriteHeader(422)
				// The echoed secret crosses the 512-byte cap on ALO's message.
				fmt.Fprintf(w, `{"status":422,"message":%q}`, strings.Repeat("x", 497)+m.Content+strings.Repeat("y", 100))
			},
			build: func(base string) Request {
				return Request{Kind: KindALO, Conn: aloConn(base), Spec: &ALO{Connection: "a", PostMessage: &ALOMessage{ChannelID: "c", Content: ruleSecret}}}
			},
			secrets: []string{ruleSecret},
		},
		{
			name:    "alo request",
			handler: echo(422),
			build: func(base string) Request {
				return Request{Kind: KindALO, Conn: aloConn(base), Spec: &ALO{Connection: "a",
					Request: &ALORequest{Method: "PATCH", Path: "/actions/" + ruleSecret, Query: map[string]string{"k": ruleSecret}, JSON: map[string]any{"note": ruleSecret}}}}
			},
			secrets: []string{"alo-key-secret-123", ruleSecret},
		},
		{
			name:   "alo down",
			closed: true,
			build: func(base string) Request {
				return Request{Kind: KindALO, Conn: aloConn(base), Spec: &ALO{Connection: "a", Request: &ALORequest{Path: "/users/" + ruleSecret}}}
			},
			secrets: []string{ruleSecret},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			tg := newTarget(t, tt.handler)
			if tt.closed {
				tg.Close()
			}
			req := tt.build(tg.URL)
			req.Redact = alorules.NewRedactor(ruleSecret)
			rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){"r": {fixed(req)}}}
			ex := newExecution("r", "ev1", []string{req.Kind}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
			addExecutions(t, s, ex)

			var logs bytes.Buffer
			var mu sync.Mutex
			logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			_, stop := startRunner(t, RunnerConfig{Store: s, Renderer: rnd, Logger: logger})
			got := waitExecution(t, s, ex.ID, hasStatus(alorules.StatusFailed))
			stop()

			_, doErr := Do(context.Background(), req, Env{})
			if doErr == nil {
				t.Fatal("Do succeeded, want the failure this test is about")
			}
			marshalled, _ := json.Marshal(got)
			mu.Lock()
			logText := logs.String()
			mu.Unlock()
			places := map[string]string{
				"Do error":             doErr.Error(),
				"execution error":      got.Error,
				"step error":           got.Steps[0].Error,
				"step body":            got.Steps[0].Body,
				"step request":         string(got.Steps[0].Request),
				"marshalled execution": string(marshalled),
				"log":                  logText,
			}
			for _, secret := range tt.secrets {
				// Half a secret is a leak too (a message cut short).
				half := secret[:len(secret)/2]
				for where, text := range places {
					if strings.Contains(text, half) {
						t.Errorf("%s contains secret %q: %s", where, secret, text)
					}
				}
			}
			if got.Steps[0].Error == "" || !strings.Contains(logText, "step failed") {
				t.Errorf("got step error %q and logs %s, want the failure recorded and logged", got.Steps[0].Error, logText)
			}
		})
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
