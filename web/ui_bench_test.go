package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/alo"
	"alorules/store"
)

// BenchmarkUIPages renders the UI's pages from a store holding a million
// events (ALORULES_BENCH_EVENTS overrides the count), to show that a page
// view reads a page of keys and never scans. Seeding takes a while and
// happens once, outside the timer. The handler is called directly, so the
// figures are server time without the network.
//
//	go test ./web -run '^$' -bench BenchmarkUIPages -benchtime 200x
func BenchmarkUIPages(b *testing.B) {
	total := 1_000_000
	if v := os.Getenv("ALORULES_BENCH_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("ALORULES_BENCH_EVENTS=%q: want a number of at least 1000", v)
		}
		total = n
	}
	e := newUIEnv(b, uiOptions{noSync: true})
	start := time.Now()
	probe := seedMany(b, e, total)
	b.Logf("seeded %d events in %s; store %s", total, time.Since(start).Round(time.Second), formatBytes(e.st.Size()))

	h := e.srv.Config.Handler

	// A cursor deep in the history, reached by paging the list.
	deep := ""
	for range 20 {
		_, next, err := e.st.Executions(context.Background(), store.ExecutionFilter{Limit: 500, Before: deep})
		if err != nil {
			b.Fatal(err)
		}
		deep = next
	}
	pages := []struct{ name, path string }{
		{"executions", "/executions"},
		{"executions rule+status", "/executions?rule=page-urgent&status=failed"},
		{"executions since 1h", "/executions?since=1h"},
		{"executions deep cursor", "/executions?before=" + deep},
		{"executions rows fragment", "/executions?partial=1"},
		{"event detail", "/events/" + probe},
		{"events", "/events"},
		{"events unmatched", "/events?unmatched=true"},
		{"events by type", "/events?type=action_updated"},
		{"events a rule matched", "/events?rule=page-urgent&outcome=matched"},
		{"events a rule failed on", "/events?rule=title-check&outcome=failure"},
		{"dashboard", "/"},
		{"fields 200", "/events/fields?type=action_created"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: got %d: %.300s", p.path, rec.Code, rec.Body.String())
				}
			}
		})
	}
}

// seedMany stores total events with 64 concurrent writers (group commit,
// no fsync): a quarter matched, an eighth with an execution of which a
// tenth failed. It returns the id of a matched event with an execution
// from the middle of the history.
func seedMany(b *testing.B, e *uiEnv, total int) string {
	b.Helper()
	ctx := context.Background()
	rs := e.eng.Current()
	hash := rs.Hash()
	first := time.Now().Add(-30 * 24 * time.Hour)
	step := 30 * 24 * time.Hour / time.Duration(total)
	var next atomic.Int64
	var probe atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= total; i = int(next.Add(1)) {
				at := first.Add(time.Duration(i) * step)
				payload := uiUrgentPayload
				typ := alo.TypeActionCreated
				if i%3 == 0 {
					payload, typ = uiUpdatedPayload, alo.TypeActionUpdated
				}
				ev := &alorules.Event{Type: typ, RawType: typ, ReceivedAt: at, Payload: []byte(payload),
					Headers: map[string]string{"User-Agent": "ALO-Webhooks/1.0"}, SignatureForm: "v0=hex"}
				id, _, err := e.st.SaveEvent(ctx, ev, nil)
				if err != nil {
					b.Error(err)
					return
				}
				if i%4 != 0 {
					continue
				}
				m := &alorules.Match{EventID: id, RuleSetHash: hash, MatchedAt: at, Results: []alorules.RuleResult{
					{Rule: "page-urgent", Outcome: alorules.OutcomeNotMatched},
					{Rule: "status-done", Outcome: alorules.OutcomeSkipped},
					{Rule: "title-check", Outcome: alorules.OutcomeError, Error: "if: invalid operation: string > int (column 20)"},
					{Rule: "record-created", Outcome: alorules.OutcomeSkipped},
				}}
				var exs []*alorules.Execution
				if i%8 == 0 {
					m.Results[0].Outcome = alorules.OutcomeMatched
					exs = []*alorules.Execution{{EventID: id, Rule: "page-urgent", RuleSetHash: hash, CreatedAt: at,
						Retry: alorules.RetryPolicy{Attempts: 1}, Timeout: 2 * time.Second,
						Steps: []alorules.StepResult{{Index: 0, ID: "page", Kind: "http", Status: alorules.StatusQueued}}}}
				}
				if err := e.st.SaveMatch(ctx, store.MatchWrite{Match: m, Executions: exs}); err != nil {
					b.Error(err)
					return
				}
				if len(exs) == 0 {
					continue
				}
				if i%80 == 0 {
					ex := exs[0]
					ex.Status = alorules.StatusFailed
					ex.Error = "http 400: target says no"
					ex.Steps[0] = alorules.StepResult{Index: 0, ID: "page", Kind: "http", Status: alorules.StatusFailed,
						Attempts: 1, Code: 400, Body: `{"error":"target says no"}`, Error: ex.Error, StartedAt: at,
						Duration: 40 * time.Millisecond, Request: []byte(`{"connection":"target","path":"/page"}`)}
					if err := e.st.UpdateExecution(ctx, ex); err != nil {
						b.Error(err)
						return
					}
				}
				if i == total/2/80*80 {
					probe.Store(id)
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	id, _ := probe.Load().(string)
	if id == "" {
		b.Fatalf("no probe event among %d", total)
	}
	return id
}
