package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alorules/alo"
)

// BenchmarkIngest is the load benchmark of `make bench`: signed, distinct
// events over loopback into the whole service (durable commits, matching
// running alongside), at several concurrencies. It reports accepted
// events/s and the p50 and p99 acknowledgement latency.
func BenchmarkIngest(b *testing.B) {
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) {
			app := startApp(b, e2eRules, map[string]string{"SLACK_URL": "http://127.0.0.1:9/unused"})
			url := "http://" + app.public + "/webhooks/alo"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
			var seq atomic.Int64
			lat := make([][]time.Duration, conc)
			var failed atomic.Int64
			commits0 := app.store.Commits()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := b.N / conc
			for w := range conc {
				n := per
				if w < b.N%conc {
					n++
				}
				wg.Go(func() {
					for range n {
						i := seq.Add(1)
						body := fmt.Sprintf(`{"type":"action_updated","action":{"id":"bench-%d","status":"Open","priority":"Normal","title":"load %d"}}`, i, i)
						req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
						alo.SignRequest(req, e2eSecret, time.Now(), []byte(body))
						t0 := time.Now()
						resp, err := client.Do(req)
						d := time.Since(t0)
						if err != nil || resp.StatusCode != 200 {
							failed.Add(1)
						}
						if resp != nil {
							// Drained, so that the connection is kept alive.
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						lat[w] = append(lat[w], d)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d of %d requests failed", f, b.N)
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(app.store.Commits()-commits0)/float64(b.N), "commits/event")
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			app.stop(b)
		})
	}
}

// BenchmarkEventToFirstStep measures the added latency from an event being
// acknowledged to its rule's first step reaching the target: matching,
// the durable execution, the runner's claim and the HTTP call.
func BenchmarkEventToFirstStep(b *testing.B) {
	arrived := make(chan time.Time, 1)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- time.Now()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()
	rules := `version: 1
connections:
  target:
    http: { base_url: "` + target.URL + `" }
    allow_private: true
rules:
  - name: forward
    on: [action_created]
    do:
      - http: { connection: target, method: POST, path: /hook, json: { id: "{{ event.action?.id }}" } }
`
	app := startApp(b, rules, nil)
	url := "http://" + app.public + "/webhooks/alo"
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		body := fmt.Sprintf(`{"type":"action_created","action":{"id":"lat-%d"}}`, i)
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		alo.SignRequest(req, e2eSecret, time.Now(), []byte(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("ingest: %v", err)
		}
		acked := time.Now()
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case at := <-arrived:
			lat = append(lat, at.Sub(acked))
		case <-time.After(10 * time.Second):
			b.Fatal("the step never reached the target")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	app.stop(b)
}
