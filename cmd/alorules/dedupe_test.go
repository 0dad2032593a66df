package main

import (
	"strings"
	"testing"
)

func TestDedupeKeyFunc(t *testing.T) {
	key, err := dedupeKeyFunc(`event.action.id + ":" + event.action.updated_at`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		body    string
		want    string
		wantErr bool
	}{
		{`{"type":"action_updated","action":{"id":"a1","updated_at":"t1"}}`, "a1:t1", false},
		{`{"type":"action_updated","action":{"id":"a1","updated_at":"t1"},"noise":2}`, "a1:t1", false},
		{`{"type":"action_updated"}`, "", true}, // no action: the caller falls back to the body hash
	}
	for _, tc := range tests {
		got, err := key([]byte(tc.body))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q, error %v", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := dedupeKeyFunc(`event.(`); err == nil || !strings.Contains(err.Error(), "--dedupe-key") {
		t.Errorf("got %v, want a compile error naming the flag", err)
	}
}

// TestDedupeKeyThroughService: two bodies that differ only in fields the
// key ignores are one event; a body the key cannot read is still accepted.
func TestDedupeKeyThroughService(t *testing.T) {
	app := startOps(t, e2eRules, setup{
		env:  map[string]string{"SLACK_URL": "http://127.0.0.1:9/unused"},
		edit: func(c *serveConfig) { c.DedupeKey = `event.action.id + ":" + event.action.updated_at` },
	})
	first := app.send(t, `{"type":"action_updated","action":{"id":"d1","updated_at":"t1"},"delivery":1}`)
	again := app.send(t, `{"type":"action_updated","action":{"id":"d1","updated_at":"t1"},"delivery":2}`)
	if again["duplicate"] != true || again["id"] != first["id"] {
		t.Errorf("got %v, want a duplicate of %v", again, first["id"])
	}
	other := app.send(t, `{"type":"action_updated","action":{"id":"d1","updated_at":"t2"}}`)
	if other["duplicate"] == true {
		t.Errorf("got %v, want a new event for a new updated_at", other)
	}
	odd := app.send(t, `{"type":"action_updated"}`)
	if odd["id"] == nil || odd["duplicate"] == true {
		t.Errorf("got %v, want a body without the key's fields accepted", odd)
	}
}
