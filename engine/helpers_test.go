package engine

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"alorules"
)

// testEnv is the environment rules files in testdata expand ${NAME} from.
var testEnv = map[string]string{
	"SLACK_URL":     "https://hooks.slack.test/services/T0/B0/slacksecret123",
	"TICKETS_TOKEN": "tickets-token-456",
	"ALO_API_KEY":   "alo-key-789",
	"TICKETS_URL":   "https://tickets.example.com",
	// A secret with characters JSON escapes must be redacted all the same.
	"WEIRD_TOKEN": "to\"ken&<secret>\\x\u2028y",
}

func getenv(name string) string { return testEnv[name] }

// mustParse parses a rules file from testdata/rules.
func mustParse(t testing.TB, name string) *RuleSet {
	t.Helper()
	rs, _, err := Load(filepath.Join("testdata", "rules", name), getenv)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return rs
}

// parseString parses rules given inline.
func parseString(t testing.TB, src string) *RuleSet {
	t.Helper()
	rs, _, err := Parse("rules.yaml", []byte(src), getenv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return rs
}

// event loads a sample event from testdata/events.
func event(t testing.TB, name string) *alorules.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "events", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvent(b, time.Date(2026, 11, 30, 8, 14, 3, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = "ev-" + name
	return ev
}

// rawEvent builds an event from a JSON body given inline.
func rawEvent(t testing.TB, body string) *alorules.Event {
	t.Helper()
	ev, err := NewEvent([]byte(body), time.Date(2026, 11, 30, 8, 14, 3, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = "ev-raw"
	return ev
}

// outcomes maps rule names to outcomes.
func outcomes(results []alorules.RuleResult) map[string]alorules.Outcome {
	m := map[string]alorules.Outcome{}
	for _, r := range results {
		m[r.Rule] = r.Outcome
	}
	return m
}
