package actions

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// BenchmarkRunner measures executions completed per second by the default
// worker pool: one http step each against a local target, on a real store
// file with fsync (sync) or without (nosync).
func BenchmarkRunner(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			s, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tg := newTarget(b, nil)
			rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){
				"bench": {fixed(Request{Kind: KindHTTP, Conn: httpConn(tg.URL), Spec: &HTTP{Connection: "t", Path: "/x", JSON: map[string]any{"a": 1}}})},
			}}
			for i := 0; i < b.N; i += 1000 {
				var exs []*alorules.Execution
				for j := i; j < min(i+1000, b.N); j++ {
					exs = append(exs, newExecution("bench", fmt.Sprint("ev", j), []string{KindHTTP}, nil, alorules.RetryPolicy{Attempts: 3}, time.Time{}))
				}
				addExecutions(b, s, exs...)
			}

			var finished atomic.Int64
			done := make(chan struct{})
			r := NewRunner(RunnerConfig{Store: s, Renderer: rnd, OnStep: func(ex *alorules.Execution, _ alorules.StepResult) {
				if ex.Status.Final() && finished.Add(1) == int64(b.N) {
					close(done)
				}
			}})
			ctx, cancel := context.WithCancel(context.Background())
			b.ResetTimer()
			start := time.Now()
			go r.Run(ctx)
			<-done
			elapsed := time.Since(start)
			b.StopTimer()
			cancel()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "executions/s")
		})
	}
}
