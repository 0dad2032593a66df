package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"alorules/alo"
)

// benchRules generates n rules spread over the five event types. With
// matches, up to three rules (on action_created) match the sample event
// and render a Slack step each; the rest are ordinary conditions that do
// not match.
func benchRules(n int, matches bool) string {
	var b strings.Builder
	b.WriteString(`version: 1
connections:
  ops-slack:
    slack: { webhook_url: "${SLACK_URL}" }
defaults:
  loop_limit: 0
rules:
`)
	for i := range n {
		typ := alo.EventTypes[i%len(alo.EventTypes)]
		cond := fmt.Sprintf(`event.action?.priority == "P%d" && event.action?.status != "Completed"`, i)
		if matches && i%5 == 0 && i < 15 {
			cond = `event.action?.priority == "Urgent" && len(event.action?.tags ?? []) > 2`
		}
		fmt.Fprintf(&b, `  - name: rule-%d
    on: [%s]
    if: '%s'
    do:
      - slack:
          connection: ops-slack
          text: "Urgent: {{ event.action?.title }} (<{{ event.action?.url }}|open>) at {{ event.action?.form?.location }}"
`, i, typ, cond)
	}
	return b.String()
}

func BenchmarkEvaluate(b *testing.B) {
	ev := event(b, "large")
	if len(ev.Payload) < 2000 {
		b.Fatalf("sample event is %d bytes, want about 2 KB", len(ev.Payload))
	}
	now := time.Now()
	for _, matches := range []bool{false, true} {
		for _, n := range []int{1, 100, 1000} {
			name := fmt.Sprintf("rules=%d/matches=0", n)
			if matches {
				name = fmt.Sprintf("rules=%d/matches=%d", n, min(n, 3))
			}
			b.Run(name, func(b *testing.B) {
				rs := parseString(b, benchRules(n, matches))
				b.ReportAllocs()
				start := cpuTime()
				for b.Loop() {
					eval := rs.Evaluate(ev, now, nil)
					if len(eval.Results) != n {
						b.Fatalf("got %d results", len(eval.Results))
					}
				}
				reportCPU(b, start)
			})
		}
	}
}

// BenchmarkEvaluateParallel runs matching on every core at once, each
// goroutine with its own pooled VM.
func BenchmarkEvaluateParallel(b *testing.B) {
	ev := event(b, "large")
	rs := parseString(b, benchRules(1000, true))
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rs.Evaluate(ev, now, nil)
		}
	})
}

func BenchmarkDecodePayload(b *testing.B) {
	ev := event(b, "large")
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if _, err := decodePayload(ev.Payload); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkReload is a reload of a 1,000-rule file: parse, validate and
// compile the whole set. "cold" empties the program cache first (the
// first load, or a file where every expression changed); "warm" is the
// usual reload after editing some rules, where unchanged expressions are
// not compiled again.
func BenchmarkReload(b *testing.B) {
	src := []byte(benchRules(1000, true))
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			start := cpuTime()
			for b.Loop() {
				if !warm {
					programCache.Lock()
					clear(programCache.m)
					programCache.Unlock()
				}
				if _, _, err := Parse("rules.yaml", src, getenv); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start)
		})
	}
}

// reportCPU adds the process CPU time per operation (all threads, GC
// included) since start.
func reportCPU(b *testing.B, start time.Duration) {
	if used := cpuTime() - start; used > 0 && b.N > 0 {
		b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkNaiveBaseline is the approach the engine avoids, for scale on
// the machine at hand: encoding/json into a map, every rule's condition
// run with expr.Run (a new VM each time), no index by type.
func BenchmarkNaiveBaseline(b *testing.B) {
	ev := event(b, "large")
	rs := parseString(b, benchRules(1000, false))
	var progs []*vm.Program
	for _, r := range rs.rules {
		p, err := expr.Compile(r.ifSrc, expr.Env(condDecl), expr.AsBool(), expr.DisableBuiltin("type"), expr.DisableBuiltin("now"))
		if err != nil {
			b.Fatal(err)
		}
		progs = append(progs, p)
	}
	start := cpuTime()
	for b.Loop() {
		var payload map[string]any
		if err := json.Unmarshal(ev.Payload, &payload); err != nil {
			b.Fatal(err)
		}
		env := buildEnv(envInput{Event: ev, Payload: payload, Now: time.Now()})
		for _, p := range progs {
			if _, err := expr.Run(p, env); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportCPU(b, start)
}
