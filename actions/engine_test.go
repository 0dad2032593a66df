package actions_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"alorules"
	"alorules/actions"
	"alorules/engine"
	"alorules/store"
)

// TestALOResultReadByLaterStep is the example through the real
// engine (rules file, matching, rendering) and the real runner, against a
// test ALO: an alo request step (GET /users/{id}) with an id, and a later
// step that reads its answer as steps.<id>.json.
func TestALOResultReadByLaterStep(t *testing.T) {
	type call struct{ method, path, auth, body string }
	var (
		mu    sync.Mutex
		calls []call
	)
	fakeALO := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, call{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/users/usr-7":
			io.WriteString(w, `{"id":"usr-7","first_name":"Dana","teams":[{"name":"Kitchen"}],"on_call":true}`)
		default:
			io.WriteString(w, `{"id":"msg-1"}`)
		}
	}))
	t.Cleanup(fakeALO.Close)

	dir := t.TempDir()
	rules := `version: 1
connections:
  alo:
    allow_private: true
    alo: { api_key: "${ALO_API_KEY}", base_url: "${ALO_URL}" }
rules:
  - name: greet-assignee
    on: [action_assignment_changed]
    do:
      - id: assignee
        alo:
          connection: alo
          request:
            method: GET
            path: "/users/{{ event.action?.assignees?.[0]?.id }}"
      - alo:
          connection: alo
          post_direct_message:
            channel_id: "{{ event.action?.dm_channel_id }}"
            content: "Hi {{ steps.assignee.json?.first_name }} of {{ steps.assignee.json?.teams?.[0]?.name }} (HTTP {{ steps.assignee.code }}), {{ event.action?.title }} is yours"
            terse_push_notification: "{{ steps.assignee.json?.on_call }}"
`
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ALO_API_KEY": "alo-key-for-test-42", "ALO_URL": fakeALO.URL + "/v1"}
	st, err := store.Open(filepath.Join(dir, "alorules.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Config{Store: st, RulesPath: rulesPath, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	ev, err := engine.NewEvent([]byte(`{"type":"action_assignment_changed","action":{"id":"act-1","title":"Freezer 3 alarm",`+
		`"dm_channel_id":"chat.groupdm.9","assignees":[{"id":"usr-7"}]}}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.SaveEvent(ctx, ev, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := eng.MatchPending(ctx); err != nil || n != 1 {
		t.Fatalf("MatchPending: got %d, %v; want 1 event matched", n, err)
	}
	exs, err := st.EventExecutions(ctx, ev.ID)
	if err != nil || len(exs) != 1 {
		t.Fatalf("got %d executions (%v), want 1", len(exs), err)
	}

	runner := actions.NewRunner(actions.RunnerConfig{Store: st, Renderer: eng, Workers: 2})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	runner.Notify()

	var got *alorules.Execution
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got, err = st.Execution(ctx, exs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Final() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution still %s", got.Status)
		}
	}
	if got.Status != alorules.StatusSucceeded {
		t.Fatalf("got %s (%s), want succeeded", got.Status, got.Error)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("the fake ALO got %d requests, want 2: %+v", len(calls), calls)
	}
	if c := calls[0]; c.method != "GET" || c.path != "/v1/users/usr-7" || c.auth != "Bearer alo-key-for-test-42" {
		t.Errorf("first request: got %s %s (%s), want GET /v1/users/usr-7 with the key", c.method, c.path, c.auth)
	}
	c := calls[1]
	if c.method != "PUT" || c.path != "/v1/direct_message_channels/chat.groupdm.9/chat_messages" {
		t.Errorf("second request: got %s %s, want PUT to the DM channel", c.method, c.path)
	}
	var msg map[string]any
	if err := json.Unmarshal([]byte(c.body), &msg); err != nil {
		t.Fatalf("second request body %q: %v", c.body, err)
	}
	if want := "Hi Dana of Kitchen (HTTP 200), Freezer 3 alarm is yours"; msg["content"] != want {
		t.Errorf("got content %q, want %q", msg["content"], want)
	}
	if msg["terse_push_notification"] != true {
		t.Errorf("got terse_push_notification %v, want true read from steps.assignee.json.on_call", msg["terse_push_notification"])
	}
}
