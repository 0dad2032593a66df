package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"alorules"
)

// TestLoopGuardThroughService: a rule that keeps firing for one action is
// stopped for it after loop_limit firings; the API and the dashboard name
// the rule and the key, and no further execution is created for it.
func TestLoopGuardThroughService(t *testing.T) {
	slack := newSlackSink(t)
	app := startApp(t, `version: 1
defaults: { loop_limit: 3 }
connections:
  ops:
    slack: { webhook_url: "${SLACK_URL}" }
    allow_private: true
rules:
  - name: echo-comment
    on: [action_message_added]
    do:
      - slack: { connection: ops, text: "comment on {{ event.action?.id }}" }
`, map[string]string{"SLACK_URL": slack.srv.URL + "/services/T/B/X"})

	var last string
	for i := range 6 {
		ack := app.send(t, fmt.Sprintf(`{"type":"action_message_added","action":{"id":"act-loop"},"n":%d}`, i))
		last, _ = ack["id"].(string)
	}
	var detail struct {
		Match alorules.Match `json:"match"`
	}
	eventually(t, "the last event matched", func() bool {
		app.getJSON(t, "/api/v1/events/"+last, &detail)
		return len(detail.Match.Results) == 1
	})
	if r := detail.Match.Results[0]; r.Outcome != alorules.OutcomeLoop || !strings.Contains(r.Error, `"act-loop"`) {
		t.Errorf("last event: got %s %q, want loop_suspected naming the key", r.Outcome, r.Error)
	}
	var list struct {
		Executions []alorules.Execution `json:"executions"`
	}
	app.getJSON(t, "/api/v1/executions?rule=echo-comment", &list)
	if len(list.Executions) != 3 {
		t.Errorf("got %d executions, want 3 (the limit)", len(list.Executions))
	}

	var rules struct {
		Loops []struct {
			Rule, Key string
			Refused   int
		} `json:"loops_suspected"`
	}
	app.getJSON(t, "/api/v1/rules", &rules)
	if len(rules.Loops) != 1 || rules.Loops[0].Rule != "echo-comment" || rules.Loops[0].Key != "act-loop" || rules.Loops[0].Refused != 3 {
		t.Errorf("GET /api/v1/rules: got loops_suspected %+v, want echo-comment for act-loop with 3 refused", rules.Loops)
	}
	resp, err := http.Get("http://" + app.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"stopped by the loop guard", "echo-comment</a> for <code>act-loop</code>"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	if m := metricsText(t, app.admin, nil); !strings.Contains(m, `alorules_rule_outcomes_total{outcome="loop_suspected",rule="echo-comment"} 3`) {
		t.Errorf("/metrics lacks 3 loop_suspected outcomes of echo-comment")
	}
}
