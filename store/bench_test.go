package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules"
)

// benchBody is a webhook body of about 1 KiB, the size of a typical action
// event.
var benchBody = `{"type":"action_created","action":{"id":"a-%d","title":"Replace the pump seal on line 4",` +
	`"status":"Open","priority":"Urgent","assignee":{"id":"u-17","name":"Sam Doe"},"location":"Plant 2",` +
	`"description":"` + strings.Repeat("Leak observed near the coupling. ", 24) + `"}}`

func benchEvent(i int64) (*alorules.Event, []DedupeKey) {
	body := fmt.Sprintf(benchBody, i)
	sum := sha256.Sum256([]byte(body))
	ev := &alorules.Event{Type: "action_created", RawType: "action_created", ReceivedAt: time.Now(),
		Payload: json.RawMessage(body), Headers: map[string]string{"User-Agent": "ALO-Webhooks/1.0"}, SignatureForm: "v0=hex"}
	return ev, []DedupeKey{
		{Key: "body:" + hex.EncodeToString(sum[:]), TTL: 24 * time.Hour},
		{Key: fmt.Sprint("sig:", i), TTL: 5 * time.Minute},
	}
}

// BenchmarkSaveEvent measures durable ingest (fsync on every commit) with
// 1, 16 and 64 concurrent senders. events/commit shows the group commit
// at work.
func BenchmarkSaveEvent(b *testing.B) {
	for _, senders := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var n atomic.Int64
			save := func() {
				ev, keys := benchEvent(n.Add(1))
				if _, _, err := s.SaveEvent(ctx, ev, keys); err != nil {
					b.Error(err)
				}
			}
			commits := s.commits.Load()
			b.ResetTimer()
			if senders == 1 {
				for b.Loop() {
					save()
				}
			} else {
				// RunParallel starts parallelism × GOMAXPROCS goroutines.
				b.SetParallelism(max(1, senders/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						save()
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/float64(s.commits.Load()-commits), "events/commit")
		})
	}
}

// BenchmarkSaveEventBaseline runs the same writes without the committer,
// for comparison: one db.Update per event, and bbolt's db.Batch (which
// waits up to 10 ms to gather a batch).
func BenchmarkSaveEventBaseline(b *testing.B) {
	for _, mode := range []string{"update", "batch"} {
		for _, senders := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/senders=%d", mode, senders), func(b *testing.B) {
				s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var n atomic.Int64
				save := func() {
					w, err := s.newEventWrite(benchEvent(n.Add(1)))
					if err == nil && mode == "update" {
						err = s.db.Update(w.apply)
					} else if err == nil {
						err = s.db.Batch(w.apply)
					}
					if err != nil {
						b.Error(err)
					}
				}
				b.ResetTimer()
				if senders == 1 {
					for b.Loop() {
						save()
					}
				} else {
					b.SetParallelism(max(1, senders/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							save()
						}
					})
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// openBigStore returns a store with 100,000 events (a third of them of
// type action_updated, every tenth matched to no rule).
func openBigStore(b *testing.B) *Store {
	s, err := Open(filepath.Join(b.TempDir(), "big.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const total, workers = 100_000, 64
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				ev, keys := benchEvent(i)
				if i%3 == 0 {
					ev.Type = "action_updated"
				}
				id, _, err := s.SaveEvent(ctx, ev, keys)
				if err == nil && i%10 == 0 {
					err = s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: id}})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return s
}

// BenchmarkEvents measures listing a page of 50 from 100,000 events: the
// newest page, a page deep in the history by cursor, a type filter and the
// unmatched filter.
func BenchmarkEvents(b *testing.B) {
	s := openBigStore(b)
	// A cursor 90,000 events back, reached by paging.
	deep := ""
	for range 180 {
		_, next, err := s.Events(ctx, EventFilter{Limit: 500, Before: deep})
		if err != nil {
			b.Fatal(err)
		}
		deep = next
	}
	for _, bc := range []struct {
		name string
		f    EventFilter
	}{
		{"newest", EventFilter{}},
		{"deep cursor", EventFilter{Before: deep}},
		{"type", EventFilter{Type: "action_updated"}},
		{"type deep cursor", EventFilter{Type: "action_updated", Before: deep}},
		{"unmatched", EventFilter{Unmatched: true}},
		{"type and unmatched", EventFilter{Type: "action_updated", Unmatched: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				evs, _, err := s.Events(ctx, bc.f)
				if err != nil || len(evs) != defaultLimit {
					b.Fatalf("got %d events, %v; want a full page", len(evs), err)
				}
			}
		})
	}
	b.Run("count since 1h", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.EventCountSince(ctx, time.Now().Add(-time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
