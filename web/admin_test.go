package web

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCandidateName(t *testing.T) {
	long := strings.Repeat("r", maxCandidateName+10) + ".yaml"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "candidate.yaml"},
		{"plain", "my-rules.yaml", "my-rules.yaml"},
		{"unicode", "règles-été.yaml", "règles-été.yaml"},
		{"unix path", "/etc/alorules/prod.yaml", "prod.yaml"},
		{"relative path", "../../secret/rules.yaml", "rules.yaml"},
		{"windows path", `C:\ops\rules\win.yaml`, "win.yaml"},
		{"directory only", "rules/", "candidate.yaml"},
		{"dot", ".", "candidate.yaml"},
		{"dot dot", "..", "candidate.yaml"},
		{"newline cannot forge a line", "a.yaml\nb.yaml:1: all good", "a.yamlb.yaml:1: all good"},
		{"control and bidi runes dropped", "x\x1b[31m\u202e.yaml", "x[31m.yaml"},
		{"invalid utf-8 dropped", "r\xffu.yaml", "ru.yaml"},
		{"nothing printable", "\x00\t", "candidate.yaml"},
		{"long name capped", long, long[:maxCandidateName]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := candidateName(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRulesTestNamesTheFile: issues of candidate rules sent to
// POST /api/v1/rules/test name the file the client sent, not a fixed name.
func TestRulesTestNamesTheFile(t *testing.T) {
	e := newUIEnv(t, uiOptions{})
	broken := "version: 1\nrules:\n  - name: x\n    if: event.(\n"
	tests := []struct {
		name, file, want string
	}{
		{"named", "my-rules.yaml", "my-rules.yaml:4: "},
		{"path sent", "/home/ops/rules/team.yaml", "team.yaml:4: "},
		{"unnamed", "", "candidate.yaml:4: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(RulesTestRequest{Rules: broken, File: tc.file, Event: []byte(`{"type":"action_created"}`)})
			resp, err := http.Post(e.srv.URL+"/api/v1/rules/test", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var res RulesTestResponse
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatalf("got %d %s, want a JSON answer", resp.StatusCode, raw)
			}
			if resp.StatusCode != http.StatusBadRequest || len(res.Issues) == 0 {
				t.Fatalf("got %d %s, want 400 with issues", resp.StatusCode, raw)
			}
			for _, is := range res.Issues {
				if got := is.String(); !strings.HasPrefix(got, tc.want) {
					t.Errorf("got issue %q, want it to start with %q", got, tc.want)
				}
			}
		})
	}
}
