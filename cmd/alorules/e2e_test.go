package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alorules"
	"alorules/alo"
)

const e2eSecret = "e2e-signing-secret"

// slackSink is an httptest server standing in for a Slack incoming webhook.
type slackSink struct {
	mu   sync.Mutex
	msgs []map[string]any
	srv  *httptest.Server
}

func newSlackSink(t *testing.T) *slackSink {
	s := &slackSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *slackSink) messages() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.msgs...)
}

type testApp struct {
	*App
	public, admin string
	cancel        context.CancelFunc
	done          chan error
}

// startApp runs the whole service in-process with rules written to a temp
// dir; env adds to the environment the rules see.
func startApp(t testing.TB, rules string, env map[string]string) *testApp {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return env[k] }
	cfg := serveConfig{
		Rules: rulesPath, DB: filepath.Join(dir, "alorules.db"),
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		SigningSecrets: []string{e2eSecret}, Tolerance: 300 * time.Second,
		MaxBody: 1 << 20, DedupeWindow: time.Hour, Workers: 4, LockTimeout: time.Second,
	}
	app, err := NewApp(cfg, slog.New(slog.DiscardHandler), getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testApp{App: app, cancel: cancel, done: make(chan error, 1)}
	ta.public, ta.admin = app.web.Addrs()
	go func() { ta.done <- app.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

func (ta *testApp) stop(t testing.TB) {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	ta.cancel = nil
	select {
	case err := <-ta.done:
		if err != nil {
			t.Errorf("app stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("app did not stop within 20s")
	}
}

func (ta *testApp) send(t testing.TB, body string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+ta.public+"/webhooks/alo", strings.NewReader(body))
	alo.SignRequest(req, e2eSecret, time.Now(), []byte(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		t.Fatalf("webhook: got %d %v", resp.StatusCode, out)
	}
	return out
}

func (ta *testApp) getJSON(t testing.TB, path string, out any) {
	t.Helper()
	resp, err := http.Get("http://" + ta.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const e2eRules = `version: 1
connections:
  ops:
    slack: { webhook_url: "${SLACK_URL}" }
    allow_private: true
rules:
  - name: page-urgent
    on: [action_created]
    if: event.action?.priority == "Urgent"
    do:
      - slack:
          connection: ops
          text: "Urgent: {{ event.action?.title }}"
  - name: never
    on: [action_created]
    if: event.action?.priority == "Low"
    do:
      - slack: { connection: ops, text: "low" }
`

// TestEndToEnd sends a signed webhook to the whole program and follows it
// to the fake Slack and back through the admin API.
func TestEndToEnd(t *testing.T) {
	slack := newSlackSink(t)
	app := startApp(t, e2eRules, map[string]string{"SLACK_URL": slack.srv.URL + "/services/T000/B000/XXXX"})

	ack := app.send(t, `{"type":"action_created","action":{"id":"a1","priority":"Urgent","title":"Freezer <b>3</b> & co"}}`)
	id, _ := ack["id"].(string)
	if id == "" {
		t.Fatalf("got ack %v, want an id", ack)
	}
	eventually(t, "the slack message", func() bool { return len(slack.messages()) == 1 })
	if got, want := slack.messages()[0]["text"], "Urgent: Freezer &lt;b&gt;3&lt;/b&gt; &amp; co"; got != want {
		t.Errorf("got slack text %q, want %q", got, want)
	}

	var detail struct {
		Match      alorules.Match       `json:"match"`
		Executions []alorules.Execution `json:"executions"`
	}
	eventually(t, "a succeeded execution", func() bool {
		app.getJSON(t, "/api/v1/events/"+id, &detail)
		return len(detail.Executions) == 1 && detail.Executions[0].Status == alorules.StatusSucceeded
	})
	outcomes := map[string]alorules.Outcome{}
	for _, r := range detail.Match.Results {
		outcomes[r.Rule] = r.Outcome
	}
	if outcomes["page-urgent"] != alorules.OutcomeMatched || outcomes["never"] != alorules.OutcomeNotMatched {
		t.Errorf("got outcomes %v, want page-urgent matched and never not_matched", outcomes)
	}
	var list struct {
		Executions []alorules.Execution `json:"executions"`
	}
	app.getJSON(t, "/api/v1/executions?rule=page-urgent&status=succeeded", &list)
	if len(list.Executions) != 1 || list.Executions[0].EventID != id {
		t.Errorf("got executions %+v, want the one for event %s", list.Executions, id)
	}
	// The webhook URL is a secret: it shows nowhere in the API.
	resp, _ := http.Get("http://" + app.admin + "/api/v1/executions/" + list.Executions[0].ID)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(b, []byte("XXXX")) {
		t.Errorf("execution JSON leaks the webhook URL: %s", b)
	}

	// Metrics are served and count what happened.
	resp, _ = http.Get("http://" + app.admin + "/metrics")
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`alorules_events_total{outcome="accepted",type="action_created"} 1`,
		`alorules_rule_outcomes_total{outcome="matched",rule="page-urgent"} 1`,
		`alorules_step_attempts_total{kind="slack",status="succeeded"} 1`,
		`alorules_queue_depth 0`,
		`alorules_timers_pending 0`,
		`alorules_digests_open 0`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestStartupRefusesBadSetups covers the failures that must stop start-up
// with a clear message rather than run half-configured.
func TestStartupRefusesBadSetups(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte("version: 1\nrules: []\n"), 0o600)
	base := serveConfig{Rules: rules, DB: filepath.Join(dir, "a.db"), Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		SigningSecrets: []string{"s"}, LockTimeout: 200 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)

	first, err := NewApp(base, log, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer first.store.Close()

	tests := []struct {
		name string
		edit func(c *serveConfig)
		want string
	}{
		{"store locked by another process", func(c *serveConfig) {}, "locked by another process"},
		{"admin beyond loopback without auth", func(c *serveConfig) { c.DB = filepath.Join(dir, "b.db"); c.AdminAddr = "0.0.0.0:0" }, "no admin auth"},
		{"rules that do not load", func(c *serveConfig) {
			c.DB = filepath.Join(dir, "c.db")
			c.Rules = filepath.Join(dir, "bad.yaml")
			os.WriteFile(c.Rules, []byte("version: 1\nrules:\n  - name: x\n    iff: true\n"), 0o600)
		}, "iff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			app, err := NewApp(cfg, log, os.Getenv)
			if err == nil {
				app.store.Close()
				t.Fatal("got no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nrules:\n  - name: a\n    if: evnt.x == 1\n    do: []\n  - name: a\n    on: [action_creatd]\n    do: []\n"), 0o600)
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  []string
	}{
		{"example with secrets", []string{"../../rules.example.yaml"}, map[string]string{
			"SLACK_OPS_WEBHOOK": "https://hooks.slack.com/x", "ALO_API_KEY": "k", "TICKETS_URL": "https://t", "TICKETS_TOKEN": "t"},
			0, []string{"ok:", "rules"}},
		{"example without secrets", []string{"../../rules.example.yaml"}, nil, 1, []string{"SLACK_OPS_WEBHOOK"}},
		{"example with placeholders", []string{"--env-placeholders", "../../rules.example.yaml"}, nil, 0, []string{"ok:"}},
		{"every error at once", []string{bad}, nil, 1, []string{bad + ":4:", `rule "a"`, "evnt", bad + ":6:", "action_created"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"check"}, tc.args...), nil, &out, &errb, func(k string) string { return tc.env[k] })
			if code != tc.wantCode {
				t.Fatalf("got exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out.String(), errb.String())
			}
			all := out.String() + errb.String()
			for _, w := range tc.wantOut {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
		})
	}
}

func TestTestCommand(t *testing.T) {
	env := map[string]string{"SLACK_OPS_WEBHOOK": "https://hooks.slack.com/services/SECRETPART", "ALO_API_KEY": "alo-key-123",
		"TICKETS_URL": "https://tickets.example.com", "TICKETS_TOKEN": "tickets-token-456"}
	var out, errb bytes.Buffer
	code := run([]string{"test", "--rules", "../../rules.example.yaml", "../../testdata/events/action_created.json",
		"../../testdata/events/action_message_added.json"}, nil, &out, &errb, func(k string) string { return env[k] })
	if code != 0 {
		t.Fatalf("got exit %d: %s %s", code, out.String(), errb.String())
	}
	text := out.String()
	for _, want := range []string{"page-on-urgent-action", "matched", "escalate-from-chat", "Freezer 3", "2 event(s)"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	for _, secret := range []string{"SECRETPART", "alo-key-123", "tickets-token-456"} {
		if strings.Contains(text, secret) {
			t.Errorf("output leaks secret %q", secret)
		}
	}

	out.Reset()
	code = run([]string{"test", "--json", "--rules", "../../rules.example.yaml", "../../testdata/events/action_created.json"},
		nil, &out, &errb, func(k string) string { return env[k] })
	var res struct {
		Results []struct {
			Results []struct {
				Rule    string `json:"rule"`
				Outcome string `json:"outcome"`
			} `json:"results"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || code != 0 {
		t.Fatalf("got exit %d, json err %v: %s", code, err, out.String())
	}
	got := fmt.Sprint(res.Results[0].Results)
	if !strings.Contains(got, "{page-on-urgent-action matched}") {
		t.Errorf("got %s, want page-on-urgent-action matched", got)
	}

	// A handshake is never matched, in the service or here.
	out.Reset()
	code = run([]string{"test", "--rules", "../../rules.example.yaml", "../../testdata/events/webhook_url_verification.json"},
		nil, &out, &errb, func(k string) string { return env[k] })
	if text := out.String(); code != 0 || !strings.Contains(text, "never matches it against rules") || strings.Contains(text, "quiet-sandbox") {
		t.Errorf("handshake: got exit %d:\n%s\nwant exit 0, the note, and no rule matched", code, text)
	}
}

// TestRunTimeErrorRecordedAndCounted: a condition that fails at run time
// is the rule's outcome "error" with expr's message, in the event's record
// and in the metrics, and the other rules still run.
func TestRunTimeErrorRecordedAndCounted(t *testing.T) {
	app := startApp(t, `version: 1
rules:
  - name: strict
    if: event.action.priority == "Urgent"
  - name: lenient
    if: event.action?.priority == nil
`, nil)
	id, _ := app.send(t, `{"type":"action_created","ticket":{"id":"no action here"}}`)["id"].(string)
	var detail struct {
		Match *alorules.Match `json:"match"`
	}
	eventually(t, "the match record", func() bool {
		app.getJSON(t, "/api/v1/events/"+id, &detail)
		return detail.Match != nil
	})
	got := map[string]alorules.RuleResult{}
	for _, r := range detail.Match.Results {
		got[r.Rule] = r
	}
	if r := got["strict"]; r.Outcome != alorules.OutcomeError || !strings.Contains(r.Error, "priority") {
		t.Errorf("strict: got %q %q, want error naming the missing field", r.Outcome, r.Error)
	}
	if r := got["lenient"]; r.Outcome != alorules.OutcomeMatched {
		t.Errorf("lenient: got %q, want matched", r.Outcome)
	}
	m := metricsText(t, app.admin, nil)
	for _, want := range []string{
		`alorules_rule_outcomes_total{outcome="error",rule="strict"} 1`,
		`alorules_rule_outcomes_total{outcome="matched",rule="lenient"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
