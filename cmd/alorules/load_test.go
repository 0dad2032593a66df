package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestLoad sends signed, distinct events over loopback at a fixed rate for
// a fixed time while a local target answers the steps (one answer in
// twenty is a 503, retried). Afterwards every acknowledged event is
// stored once, every matched rule has exactly one execution, and every
// execution succeeded.
//
// make test runs it for 2 s at 200 events/s; make soak (ALORULES_SOAK=1)
// for 60 s at 300 events/s.
func TestLoad(t *testing.T) {
	rate, dur := 200, 2*time.Second
	if soak() {
		rate, dur = 300, 60*time.Second
	}
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 && rand.IntN(20) == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	})
	app := startOps(t, loadRules(tg.srv.URL), setup{edit: func(c *serveConfig) { c.Workers = 16; c.LogLevel = "info" }})
	url := "http://" + app.public + "/webhooks/alo"

	total := rate * int(dur/time.Second)
	l := newLedger()
	for seq := range total {
		l.bodies[seq] = loadBody(seq)
	}
	// A fixed schedule: event seq is due at start + seq/rate. Senders take
	// the next due event; if they fall behind, the achieved rate shows it.
	const senders = 32
	next := make(chan int)
	lat := make([][]time.Duration, senders)
	var wg sync.WaitGroup
	var errs []error
	var errMu sync.Mutex
	for w := range senders {
		wg.Go(func() {
			for seq := range next {
				t0 := time.Now()
				code, out, err := post(url, e2eSecret, l.bodies[seq])
				lat[w] = append(lat[w], time.Since(t0))
				if err == nil {
					err = l.record(seq, code, out)
				}
				if err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	for seq := range total {
		if d := time.Until(start.Add(time.Duration(seq) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		next <- seq
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	if held := float64(len(l.acked)) / elapsed.Seconds(); soak() && held < 0.95*float64(rate) {
		t.Errorf("held %.0f events/s, want the %d/s asked (within 5%%)", held, rate)
	}
	for _, err := range errs {
		t.Error(err)
	}
	if len(l.failed) > 0 {
		t.Errorf("got non-200 answers %v, want none", l.failed)
	}

	waitFor(t, 5*time.Minute, "every event matched and every execution final", func() bool {
		ok, err := settled(app.store)
		return err == nil && ok
	})
	settledIn := time.Since(start)
	execs, redelivered := verifyLedger(t, app.store, l, tg)
	all := slices.Concat(lat...)
	slices.Sort(all)
	t.Logf("FIGURE load: %d events acknowledged in %s (%.0f events/s held, asked %d/s), %d executions all succeeded, "+
		"%d step deliveries repeated after a 503, all settled %s after the first event (%.0f executions/s), ack p50 %s p99 %s, "+
		"store %d bytes (%d per event with its executions)",
		len(l.acked), elapsed.Round(time.Millisecond), float64(len(l.acked))/elapsed.Seconds(), rate, execs, redelivered,
		settledIn.Round(time.Millisecond), float64(execs)/settledIn.Seconds(),
		all[len(all)/2].Round(time.Microsecond), all[len(all)*99/100].Round(time.Microsecond),
		app.store.Size(), app.store.Size()/int64(max(1, len(l.acked))))
}
