package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSendCommand(t *testing.T) {
	app := startApp(t, e2eRules, map[string]string{"SLACK_URL": "http://127.0.0.1:9/unused"})
	url := "http://" + app.public + "/webhooks/alo"
	event := filepath.Join(t.TempDir(), "ev.json")
	os.WriteFile(event, []byte(`{"type":"action_updated","action":{"id":"s1"}}`), 0o600)
	env := map[string]string{"ALO_SIGNING_SECRET": "rotated-out," + e2eSecret}
	wrongEnv := map[string]string{"ALO_SIGNING_SECRET": "not-the-secret"}
	tests := []struct {
		name     string
		args     []string
		stdin    string
		env      map[string]string
		wantCode int
		wantOut  string
	}{
		{"handshake", []string{"--challenge", url}, "", map[string]string{"ALO_SIGNING_SECRET": e2eSecret}, 0, `"challenge":`},
		{"file", []string{url, event}, "", map[string]string{"ALO_SIGNING_SECRET": e2eSecret}, 0, `"id":`},
		{"stdin", []string{url}, `{"type":"action_created","action":{"id":"s2"}}`, map[string]string{"ALO_SIGNING_SECRET": e2eSecret}, 0, `"id":`},
		{"duplicate", []string{url, event}, "", map[string]string{"ALO_SIGNING_SECRET": e2eSecret}, 0, `"duplicate":true`},
		{"first secret signs", []string{"--challenge", url}, "", env, 1, "403"},
		{"wrong secret", []string{url, event}, "", wrongEnv, 1, "403"},
		{"no secret", []string{url, event}, "", nil, 1, "ALO_SIGNING_SECRET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"send"}, tc.args...), strings.NewReader(tc.stdin), &out, &errb,
				func(k string) string { return tc.env[k] })
			if code != tc.wantCode {
				t.Fatalf("got exit %d, want %d: %s %s", code, tc.wantCode, out.String(), errb.String())
			}
			if all := out.String() + errb.String(); !strings.Contains(all, tc.wantOut) {
				t.Errorf("got %q, want it to contain %q", all, tc.wantOut)
			}
		})
	}
}

// TestTestAgainstServer runs a candidate rules file against the events a
// running service stored, through its admin API.
func TestTestAgainstServer(t *testing.T) {
	app := startApp(t, e2eRules, map[string]string{"SLACK_URL": "http://127.0.0.1:9/unused"})
	app.send(t, `{"type":"action_created","action":{"id":"c1","priority":"Low"}}`)
	app.send(t, `{"type":"action_updated","action":{"id":"c1","priority":"Low"}}`)
	// Not candidate.yaml: that is the name the server falls back to, and
	// the errors below must name the user's file.
	candidate := filepath.Join(t.TempDir(), "my-rules.yaml")
	os.WriteFile(candidate, []byte(`version: 1
rules:
  - name: low-priority
    on: [action_created]
    if: event.action?.priority == "Low"
`), 0o600)
	var out, errb bytes.Buffer
	code := run([]string{"test", "--json", "--rules", candidate, "--server", "http://" + app.admin, "--since", "1h"},
		nil, &out, &errb, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("got exit %d: %s %s", code, out.String(), errb.String())
	}
	var res struct {
		Results []struct {
			Type    string `json:"type"`
			Results []struct {
				Rule    string `json:"rule"`
				Outcome string `json:"outcome"`
			} `json:"results"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res.Results {
		got[r.Type] = r.Results[0].Outcome
	}
	want := map[string]string{"action_created": "matched", "action_updated": "skipped"}
	if len(got) != 2 || got["action_created"] != want["action_created"] || got["action_updated"] != want["action_updated"] {
		t.Errorf("got %v, want %v", got, want)
	}

	// A broken candidate reports its errors and exits 1.
	os.WriteFile(candidate, []byte("version: 1\nrules:\n  - name: x\n    if: event.(\n"), 0o600)
	out.Reset()
	code = run([]string{"test", "--rules", candidate, "--server", "http://" + app.admin}, nil, &out, &errb, func(string) string { return "" })
	if code != 1 || !strings.HasPrefix(out.String(), "my-rules.yaml:4:") {
		t.Errorf("got exit %d and %q, want exit 1 with the error's file and line", code, out.String())
	}
}

// TestSigningSecrets: the environment is comma-separated, a file is one
// secret per line, and a file's secret may hold a comma.
func TestSigningSecrets(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		env     string
		file    string
		want    []string
		wantErr string
	}{
		{"env, one", "s1", "", []string{"s1"}, ""},
		{"env, rotation", " old , new ", "", []string{"old", "new"}, ""},
		{"file, one per line", "ignored", file("two", "old\nnew\n"), []string{"old", "new"}, ""},
		{"file, CRLF and blank lines", "", file("crlf", "\r\nold\r\n\r\nnew\r\n"), []string{"old", "new"}, ""},
		{"file, comma kept", "", file("comma", "a,b\n"), []string{"a,b"}, ""},
		{"file, empty", "from-env", file("empty", "\n \n"), nil, "is empty"},
		{"file, missing", "", filepath.Join(dir, "nope"), nil, "signing secret file"},
		{"none", "", "", nil, "no signing secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := signingSecrets(func(k string) string {
				if k == "ALO_SIGNING_SECRET" {
					return tc.env
				}
				return ""
			}, tc.file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
