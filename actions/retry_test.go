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

// stepKinds builds one request per step kind and operation against a
// test server's base URL, for tests that must hold for every kind.
var stepKinds = []struct {
	name  string
	build func(base string) Request
	// okBody is what a healthy target of this kind answers.
	okBody string
}{
	{"http", func(base string) Request {
		return request(KindHTTP, &HTTP{Connection: "target", Path: "/x", JSON: map[string]any{"a": 1}}, httpConn(base))
	}, `{}`},
	{"slack webhook", func(base string) Request {
		return request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, slackWebhookConn(base))
	}, "ok"},
	{"slack bot", func(base string) Request {
		return request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, slackBotConn(base))
	}, `{"ok":true,"channel":"C1","ts":"1.2"}`},
	{"alo post_message", func(base string) Request {
		return request(KindALO, &ALO{Connection: "alo", PostMessage: &ALOMessage{ChannelID: "c1", Content: "hi"}}, aloConn(base))
	}, `{"id":"m1"}`},
	{"alo post_direct_message", func(base string) Request {
		return request(KindALO, &ALO{Connection: "alo", PostDirectMessage: &ALOMessage{ChannelID: "c1", Content: "hi"}}, aloConn(base))
	}, `{"id":"m1"}`},
	{"alo request", func(base string) Request {
		return request(KindALO, &ALO{Connection: "alo", Request: &ALORequest{Method: "POST", Path: "/channels", JSON: map[string]any{"name": "x"}}}, aloConn(base))
	}, `{"id":"c1"}`},
}

// TestRetryTable is the shared retry table, run against every step kind:
// which answers fail, which retry, and after how long.
func TestRetryTable(t *testing.T) {
	policy := alorules.RetryPolicy{Attempts: 5, Backoff: 2 * time.Second, MaxBackoff: time.Minute}
	tests := []struct {
		name       string
		status     int // 0: no server answer (see mode)
		retryAfter string
		mode       string // "timeout" or "refused"
		wantErr    bool
		wantRetry  bool
		wantWait   time.Duration // exact delay; 0 means the backoff range
	}{
		{name: "200", status: 200},
		{name: "201", status: 201},
		{name: "204", status: 204},
		{name: "400", status: 400, wantErr: true},
		{name: "401", status: 401, wantErr: true},
		{name: "404", status: 404, wantErr: true},
		{name: "408", status: 408, wantErr: true, wantRetry: true},
		{name: "429", status: 429, wantErr: true, wantRetry: true},
		{name: "429 retry-after", status: 429, retryAfter: "17", wantErr: true, wantRetry: true, wantWait: 17 * time.Second},
		{name: "500", status: 500, wantErr: true, wantRetry: true},
		{name: "503", status: 503, wantErr: true, wantRetry: true},
		{name: "503 retry-after", status: 503, retryAfter: "4", wantErr: true, wantRetry: true, wantWait: 4 * time.Second},
		{name: "timeout", mode: "timeout", wantErr: true, wantRetry: true},
		{name: "connection refused", mode: "refused", wantErr: true, wantRetry: true},
	}
	for _, kind := range stepKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
					if tt.mode == "timeout" {
						select {
						case <-r.Context().Done():
						case <-time.After(5 * time.Second):
						}
						return
					}
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.status)
					if tt.status == 200 {
						io.WriteString(w, kind.okBody)
					} else if tt.status != 204 {
						io.WriteString(w, `{"status":`+http.StatusText(tt.status)+`}`)
					}
				})
				req := kind.build(tg.URL)
				if tt.mode == "refused" {
					tg.Close()
				}
				if tt.mode == "timeout" {
					req.Timeout = 100 * time.Millisecond
				}
				res, err := Do(context.Background(), req, Env{})
				if !tt.wantErr {
					if err != nil {
						t.Fatalf("got %v, want success", err)
					}
					if res.Code != tt.status {
						t.Errorf("got code %d, want %d", res.Code, tt.status)
					}
					return
				}
				se := stepErr(t, err)
				if se.Retryable != tt.wantRetry {
					t.Fatalf("got %q retryable %v, want retryable %v", se, se.Retryable, tt.wantRetry)
				}
				if tt.status != 0 && res.Code != tt.status {
					t.Errorf("got code %d, want %d recorded with the error", res.Code, tt.status)
				}
				if tt.mode == "timeout" && !strings.Contains(se.Error(), "timeout after 100ms") {
					t.Errorf("got %q, want it to name the timeout", se)
				}
				if !se.Retryable {
					return
				}
				for attempt := 1; attempt <= 3; attempt++ {
					d := Delay(policy, attempt, se.RetryAfter)
					if tt.wantWait > 0 {
						if d != tt.wantWait {
							t.Errorf("attempt %d: got delay %s, want %s", attempt, d, tt.wantWait)
						}
						continue
					}
					base := policy.Backoff << (attempt - 1)
					if d < base/2 || d > base {
						t.Errorf("attempt %d: got delay %s, want within [%s, %s]", attempt, d, base/2, base)
					}
				}
			})
		}
	}
}

func TestDelay(t *testing.T) {
	p := alorules.RetryPolicy{Attempts: 10, Backoff: time.Second, MaxBackoff: 10 * time.Second}
	tests := []struct {
		attempt  int
		lo, hi   time.Duration
		retryAft time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second, 0},
		{2, time.Second, 2 * time.Second, 0},
		{4, 4 * time.Second, 8 * time.Second, 0},
		{5, 5 * time.Second, 10 * time.Second, 0}, // capped by max_backoff
		{60, 5 * time.Second, 10 * time.Second, 0},
		{1, 30 * time.Second, 30 * time.Second, 30 * time.Second}, // Retry-After wins, even above max_backoff
		{1, MaxRetryAfter, MaxRetryAfter, 48 * time.Hour},
	}
	for _, tt := range tests {
		for range 50 {
			if d := Delay(p, tt.attempt, tt.retryAft); d < tt.lo || d > tt.hi {
				t.Fatalf("attempt %d retry-after %s: got %s, want within [%s, %s]", tt.attempt, tt.retryAft, d, tt.lo, tt.hi)
			}
		}
	}
	// Zero policy values fall back to the defaults.
	if d := Delay(alorules.RetryPolicy{}, 1, 0); d < DefaultBackoff/2 || d > DefaultBackoff {
		t.Errorf("zero policy: got %s, want within the default backoff", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"120", 2 * time.Minute},
		{" 3 ", 3 * time.Second},
		{"999999999999", MaxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"Mon, 02 Jan 2026 03:09:05 GMT", 5 * time.Minute}, // weekday wrong: Go accepts the date
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q): got %s, want %s", tt.in, got, tt.want)
		}
	}
}
