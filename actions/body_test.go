package actions

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"alorules"
)

// TestSecretAcrossBodyCap: a target echoes a secret where the kept body
// ends (across the MaxBody mark, beyond the margin read past it, or where
// the body stops arriving). For every step kind, neither the returned body
// nor the stored step shows any part of it.
func TestSecretAcrossBodyCap(t *testing.T) {
	const short = "SECRET-rule-value-0123456789"
	long := "SECRET-" + strings.Repeat("0123456789", 600) // longer than the margin
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	// answer writes a JSON body (so that slack-go reads all of it) with
	// secret starting at offset at, then either ends it or stalls.
	answer := func(secret string, at int, stall bool) func(w http.ResponseWriter, r *http.Request, n int) {
		return func(w http.ResponseWriter, r *http.Request, n int) {
			head := `{"ok":true,"pad":"`
			body := head + strings.Repeat("x", at-len(head)) + secret
			if stall {
				body = body[:at+len(secret)/2]
			} else {
				body += strings.Repeat("y", 100) + `"}`
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
			if stall {
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		}
	}
	tests := []struct {
		name     string
		secret   string
		handler  func(w http.ResponseWriter, r *http.Request, n int)
		replaced bool // the secret was read whole: <secret> shows where it was
	}{
		{"across the mark", short, answer(short, MaxBody-len(short)/2, false), true},
		{"ends at the mark", short, answer(short, MaxBody-len(short), false), true},
		{"starts at the mark", short, answer(short, MaxBody, false), false},
		{"longer than the margin", long, answer(long, MaxBody-100, false), false},
		{"body stops across the mark", short, answer(short, MaxBody-12, true), false},
		{"body stops in a short answer", short, answer(short, 40, true), false},
	}
	check := func(t *testing.T, where, body, secret string, replaced bool) {
		t.Helper()
		if len(body) > MaxBody {
			t.Errorf("%s: got %d bytes, want at most %d", where, len(body), MaxBody)
		}
		// Even a few characters of its beginning are a leak.
		if i := strings.Index(body, secret[:8]); i >= 0 {
			t.Errorf("%s: got part of the secret at %d: %q", where, i, body[i:])
		}
		if replaced && !strings.Contains(body, alorules.Redacted) {
			t.Errorf("%s: got no %s, want the secret replaced", where, alorules.Redacted)
		}
	}
	for _, kind := range stepKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				tg := newTarget(t, tt.handler)
				req := kind.build(tg.URL)
				req.Redact = alorules.NewRedactor(tt.secret)
				req.Timeout = 300 * time.Millisecond
				res, _ := Do(context.Background(), req, Env{})
				check(t, "Do", string(res.Body), tt.secret, tt.replaced)

				// The runner stores what Do kept.
				s, _ := newStore(t)
				rnd := &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){"r": {fixed(req)}}}
				ex := newExecution("r", "ev1", []string{req.Kind}, nil, alorules.RetryPolicy{Attempts: 1}, time.Time{})
				addExecutions(t, s, ex)
				_, stop := startRunner(t, RunnerConfig{Store: s, Renderer: rnd})
				got := waitExecution(t, s, ex.ID, func(ex *alorules.Execution) bool { return ex.Status.Final() })
				stop()
				check(t, "stored step", got.Steps[0].Body, tt.secret, tt.replaced)
				check(t, "stored error", got.Steps[0].Error, tt.secret, false)
			})
		}
	}
}
