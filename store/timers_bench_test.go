package store

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchTimers opens a store (no fsync: the figures are the index work, not
// the disk) holding n pending timers, one per entity, due over the next
// n minutes from base.
func benchTimers(b *testing.B, n int, base time.Time) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const chunk = 10000
	for start := 0; start < n; start += chunk {
		err := s.write(ctx, func(tx *bolt.Tx) error {
			for i := start; i < min(start+chunk, n); i++ {
				t := &Timer{ID: encodeID(unixNanos(base)+int64(i), uint32(i)), Rule: "stuck-urgent", Entity: fmt.Sprintf("act-%d", i),
					EventID: fmt.Sprintf("ev-%d", i), SetAt: base, Due: base.Add(time.Duration(i) * time.Minute)}
				if _, err := putTimer(tx, t); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkTimers measures timer scheduling with 1,000 and 100,000 timers
// pending: setting one more (in a transaction of its own), finding the
// due ones (the first 100 are due), the next due time, an entity's lookup
// (state and timers, once per event), and cancelling one. The due index
// makes each independent of the number pending.
func BenchmarkTimers(b *testing.B) {
	for _, pending := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) { benchTimerOps(b, pending) })
	}
}

func benchTimerOps(b *testing.B, pending int) {
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	s := benchTimers(b, pending, base)
	if n, _ := s.TimerCount(ctx); n != pending {
		b.Fatalf("got %d timers", n)
	}
	b.Run("set", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			t := &Timer{ID: encodeID(unixNanos(base.Add(time.Hour))+int64(i), 7), Rule: "other", Entity: fmt.Sprintf("new-%d", i),
				EventID: "ev", SetAt: base, Due: base.Add(time.Duration(i%pending) * time.Minute)}
			if err := s.write(ctx, func(tx *bolt.Tx) error { _, err := putTimer(tx, t); return err }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("due", func(b *testing.B) {
		for b.Loop() {
			ts, err := s.DueTimers(ctx, base.Add(99*time.Minute), 100)
			if err != nil || len(ts) < 100 {
				b.Fatalf("got %d due, %v", len(ts), err)
			}
		}
	})
	b.Run("next", func(b *testing.B) {
		for b.Loop() {
			if _, ok, err := s.NextTimerDue(ctx); err != nil || !ok {
				b.Fatal(err)
			}
		}
	})
	b.Run("entity", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			st, err := s.Entity(ctx, fmt.Sprintf("act-%d", i%pending))
			if err != nil || len(st.Timers) != 1 {
				b.Fatalf("got %v, %v", st.Timers, err)
			}
		}
	})
	b.Run("cancel", func(b *testing.B) {
		var timers []*Timer
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bTimers).ForEach(func(k, _ []byte) error {
				t, err := getTimer(tx, k)
				timers = append(timers, t)
				return err
			})
		})
		if err != nil {
			b.Fatal(err)
		}
		ids := make([][]byte, len(timers))
		for i, t := range timers {
			ids[i] = []byte(t.ID)
		}
		i := 0
		for b.Loop() {
			if i == len(ids) {
				// All cancelled: put them back, untimed, and go on.
				b.StopTimer()
				err := s.write(ctx, func(tx *bolt.Tx) error {
					for _, t := range timers {
						if _, err := putTimer(tx, t); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				i = 0
				b.StartTimer()
			}
			if _, err := s.CancelTimer(ctx, string(ids[i])); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
