package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alorules/store"
)

// benchChangedRules is benchRules with every condition also asking
// whether the status changed: the shape of a transition rule.
func benchChangedRules(n int) string {
	src := benchRules(n, true)
	src = strings.ReplaceAll(src, "if: 'event.action?.priority ==", `if: 'changed("action.status") && event.action?.priority ==`)
	return strings.ReplaceAll(src, "if: 'event.action?.priority == \"Urgent\"", `if: 'changed("action.status") && event.action?.priority == "Urgent"`)
}

// BenchmarkEvaluateState compares matching without entity state ("off",
// today's rules and code path) with matching that also finds the entity,
// sees a previous payload and lists the changed paths ("on"), and with
// every condition reading changed() as well ("changed"). The store is left
// out (BenchmarkMatchState has it); for rules that read it, the previous
// payload is the cached, decoded one, as in the engine for an entity seen
// recently.
func BenchmarkEvaluateState(b *testing.B) {
	ev := event(b, "large")
	prevBody := strings.Replace(string(ev.Payload), `"status": "Open"`, `"status": "Doing"`, 1)
	if prevBody == string(ev.Payload) {
		b.Fatal("the sample event has no status to change")
	}
	prev, err := decodePayload([]byte(prevBody))
	if err != nil {
		b.Fatal(err)
	}
	recall := func(_ context.Context, _ string, decoded bool) (recalled, error) {
		rec := recalled{eventID: "prev", raw: []byte(prevBody)}
		if decoded {
			rec.payload = prev // the engine's cache
		}
		return rec, nil
	}
	now := time.Now()
	for _, n := range []int{1, 100, 1000} {
		plain := parseString(b, benchRules(n, true))
		changed := parseString(b, benchChangedRules(n))
		for _, mode := range []string{"off", "on", "changed"} {
			b.Run(fmt.Sprintf("rules=%d/state=%s", n, mode), func(b *testing.B) {
				rs, in := plain, evalInput{ev: ev, now: now}
				if mode != "off" {
					in.recall = recall
				}
				if mode == "changed" {
					rs = changed
				}
				b.ReportAllocs()
				start := cpuTime()
				for b.Loop() {
					eval, err := rs.evaluateWith(context.Background(), in)
					if err != nil || len(eval.Results) != n || (mode != "off" && eval.PreviousEventID != "prev") {
						b.Fatalf("got %d results, previous %q, %v", len(eval.Results), eval.PreviousEventID, err)
					}
				}
				reportCPU(b, start)
			})
		}
	}
}

// BenchmarkMatchState is the matcher's whole path for one event, as the
// service runs it, with entity state off (entity.key "") and on: read the
// pending events, read the entity (its previous payload and timers),
// evaluate, list the changed paths, and save the match with the new state,
// on a real store without fsync. The events are stored before the clock
// starts (ingest does no state work). They are about 100 actions in turn,
// each event flipping its action's status between Open and Doing, so that
// with state on every event after the first hundred has a previous payload
// and one changed path. "changed" is "on" with every condition reading
// changed("action.status"), so that the previous payload is decoded (or
// found in the engine's cache) for the rules.
func BenchmarkMatchState(b *testing.B) {
	ev := event(b, "large")
	const entities = 100
	for _, n := range []int{1, 100, 1000} {
		for _, mode := range []string{"off", "on", "changed"} {
			b.Run(fmt.Sprintf("rules=%d/state=%s", n, mode), func(b *testing.B) {
				rules := benchRules(n, true)
				switch mode {
				case "off":
					rules = strings.Replace(rules, "defaults:", "entity: { key: \"\" }\ndefaults:", 1)
				case "changed":
					rules = benchChangedRules(n)
				}
				st, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				e, err := New(Config{Store: st, RuleSet: parseString(b, rules)})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				for i := range b.N {
					in := *ev
					in.ID = ""
					body := strings.Replace(string(ev.Payload), `"act-1042"`, fmt.Sprintf(`"act-%d"`, i%entities), 1)
					if (i/entities)%2 == 1 {
						body = strings.Replace(body, `"status": "Open"`, `"status": "Doing"`, 1)
					}
					in.Payload = []byte(body)
					if _, _, err := st.SaveEvent(ctx, &in, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := cpuTime()
				for done := 0; done < b.N; {
					k, err := e.MatchPending(ctx)
					if err != nil || k == 0 {
						b.Fatalf("matched %d of %d: %v", done+k, b.N, err)
					}
					done += k
				}
				reportCPU(b, start)
			})
		}
	}
}

// BenchmarkDiffPaths is the cost of listing what changed for the match
// record, on the 2 KB sample with one field changed.
func BenchmarkDiffPaths(b *testing.B) {
	ev := event(b, "large")
	prev, err := decodePayload([]byte(strings.Replace(string(ev.Payload), `"status": "Open"`, `"status": "Doing"`, 1)))
	if err != nil {
		b.Fatal(err)
	}
	cur, err := decodePayload(ev.Payload)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if paths, _ := diffPaths(prev, cur); len(paths) != 1 {
			b.Fatalf("got %q", paths)
		}
	}
	reportCPU(b, start)
}

// BenchmarkDiffRaw is BenchmarkDiffPaths on the JSON text, which needs no
// decoded previous payload.
func BenchmarkDiffRaw(b *testing.B) {
	ev := event(b, "large")
	prev := []byte(strings.Replace(string(ev.Payload), `"status": "Open"`, `"status": "Doing"`, 1))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if paths, _, err := diffRaw(prev, ev.Payload); err != nil || len(paths) != 1 {
			b.Fatalf("got %q, %v", paths, err)
		}
	}
	reportCPU(b, start)
}
