package engine

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"alorules"
	"alorules/actions"
)

// TestParseErrors loads one file per validation error from
// testdata/errors and checks the exact messages. Every error in a file is
// reported, not only the first.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"unknown_key.yaml", []string{`unknown_key.yaml:6: rule "a": unknown key "descripton", did you mean "description"?`}},
		{"unknown_root_key.yaml", []string{`unknown_root_key.yaml:2: unknown key "rule", did you mean "rules"?`}},
		{"unknown_step_key.yaml", []string{`unknown_step_key.yaml:10: rule "a": do[0].slack: unknown key "txt", did you mean "text"?`}},
		{"duplicate_key.yaml", []string{`duplicate_key.yaml:5: rule "a": if: duplicate key (first at line 4)`}},
		{"duplicate_rule_name.yaml", []string{`duplicate_rule_name.yaml:5: rule "page-oncall": name: duplicate rule name (first at line 3)`}},
		{"duplicate_step_id.yaml", []string{`duplicate_step_id.yaml:7: rule "a": do[1].id: duplicate step id "call" (first at line 5)`}},
		{"missing_name.yaml", []string{`missing_name.yaml:3: name: required`}},
		{"bad_rule_name.yaml", []string{`bad_rule_name.yaml:3: rule "page oncall: urgent": name: use letters, digits, '-', '_' and '.' (at most 100), starting with a letter or digit`}},
		{"event_type_typo.yaml", []string{`event_type_typo.yaml:4: rule "a": on: unknown event type "action_creatd", did you mean action_created?`}},
		{"handshake_type.yaml", []string{`handshake_type.yaml:4: rule "a": on: webhook_url_verification is the URL handshake, which is never matched`}},
		{"missing_env.yaml", []string{`missing_env.yaml:4: connections.ops-slack.slack.webhook_url: environment variable SLACK_MISSING is not set`}},
		{"bad_duration.yaml", []string{`bad_duration.yaml:4: rule "a": throttle.per: bad duration "10 minutes": want a positive duration such as 10s or 5m`}},
		{"empty_step.yaml", []string{`empty_step.yaml:5: rule "a": do[0]: empty step`}},
		{"step_no_kind.yaml", []string{`step_no_kind.yaml:5: rule "a": do[0]: a step needs one of slack, http or alo`}},
		{"step_two_kinds.yaml", []string{`step_two_kinds.yaml:8: rule "a": do[0]: a step takes exactly one of slack, http or alo, got slack and http`}},
		{"step_invalid_spec.yaml", []string{`step_invalid_spec.yaml:8: rule "a": do[0].slack: slack: needs text or blocks`}},
		{"unknown_connection.yaml", []string{`unknown_connection.yaml:9: rule "a": do[0].slack.connection: unknown connection "ops-slak", did you mean "ops-slack"?`}},
		{"templated_connection.yaml", []string{`templated_connection.yaml:8: rule "a": do[0].slack.connection: must be a literal connection name, not a template`}},
		{"connection_bad_url.yaml", []string{
			`connection_bad_url.yaml:4: connections.ops-slack: slack: webhook_url must start with https:// or http://`,
			`connection_bad_url.yaml:6: connections.tickets: http: base_url must start with https:// or http://`,
			`connection_bad_url.yaml:8: connections.alo: alo: base_url has no host`,
		}},
		// A connection that is defined but broken is reported once, not
		// again as "unknown" by every step that uses it.
		{"broken_connection_users.yaml", []string{
			`broken_connection_users.yaml:4: connections.ops-slack.slack.webhook_url: environment variable SLACK_MISSING is not set`,
			`broken_connection_users.yaml:6: connections.tickets: http: base_url must start with https:// or http://`,
			`broken_connection_users.yaml:15: rule "remind": do[1].slack.connection: unknown connection "ops-slak", did you mean "ops-slack"?`,
		}},
		{"connection_kind_mismatch.yaml", []string{`connection_kind_mismatch.yaml:8: rule "a": do[0].slack: slack: connection "tickets" is not a slack connection`}},
		{"step_ref_not_earlier.yaml", []string{`step_ref_not_earlier.yaml:7: rule "a": do[0].http.json.ticket: steps.ticket: no earlier step in this rule has id "ticket"`}},
		{"if_unknown_name.yaml", []string{`if_unknown_name.yaml:5: rule "page-oncall": if: unknown name "evnt", did you mean "event"? (column 1)`}},
		{"if_syntax.yaml", []string{`if_syntax.yaml:6: rule "a": if: unexpected token EOF (column 26)`}},
		{"if_not_bool.yaml", []string{`if_not_bool.yaml:4: rule "a": if: expected bool, but got int (column 1)`}},
		{"huge_range.yaml", []string{`huge_range.yaml:4: rule "a": if: range of 1000000000 elements is too large (limit 100000) (column 6)`}},
		{"template_syntax.yaml", []string{`template_syntax.yaml:6: rule "a": do[0].http.url: {{ event.action?.id + }}: unexpected token EOF (column 20)`}},
		{"wrong_type.yaml", []string{
			`wrong_type.yaml:4: rule "a": stop: want true or false, got "yes please"`,
			`wrong_type.yaml:6: rule "a": do[0].http.expect: want a list, got "200"`,
		}},
		{"alias.yaml", []string{`alias.yaml:6: aliases (*cond) are not supported; repeat the value`}},
		{"yaml_syntax.yaml", []string{`yaml_syntax.yaml:3: did not find expected ',' or ']'`}},
		{"bad_version.yaml", []string{`bad_version.yaml:1: version: unsupported version 2, want 1`}},
		{"empty.yaml", []string{`empty.yaml: file is empty`}},
		{"unless_without_after.yaml", []string{`unless_without_after.yaml:5: rule "a": unless: only a rule with after: has an unless (it cancels the timer)`}},
		{"after_and_digest.yaml", []string{`after_and_digest.yaml:5: rule "a": digest: a rule has after: or digest:, not both`}},
		{"throttle_with_after.yaml", []string{`throttle_with_after.yaml:5: rule "a": throttle: a rule with after: or digest: runs at most once per entity or window already; leave out throttle`}},
		{"digest_bad.yaml", []string{
			`digest_bad.yaml:4: rule "a": digest.window: required`,
			`digest_bad.yaml:4: rule "a": digest.max: want 1 to 1000, got 5000`,
		}},
		{"deferred_names.yaml", []string{
			`deferred_names.yaml:7: rule "a": do[0].http.json.n: events: only a rule with digest: has it`,
			`deferred_names.yaml:11: rule "b": do[0].http.json.due: timer: only a rule with after: has it`,
		}},
		{"entity_bad.yaml", []string{
			`entity_bad.yaml:3: entity.key: {{ event.action?.id + }}: unexpected token EOF (column 20)`,
			`entity_bad.yaml:5: entity.types.action_creatd: unknown event type "action_creatd", did you mean action_created?`,
		}},
		{"every_error.yaml", []string{
			`every_error.yaml:4: connections.ops-slack.slack.webhook_url: environment variable SLACK_MISSING is not set`,
			`every_error.yaml:6: defaults.timeout: bad duration "soon": want a positive duration such as 10s or 5m`,
			`every_error.yaml:9: rule "page-oncall": on: unknown event type "action_creatd", did you mean action_created?`,
			`every_error.yaml:10: rule "page-oncall": if: unknown name "evnt", did you mean "event"? (column 1)`,
			`every_error.yaml:11: rule "page-oncall": throttle.per: bad duration "10 minutes": want a positive duration such as 10s or 5m`,
			`every_error.yaml:13: rule "page-oncall": do[0].slack.connection: unknown connection "nowhere"`,
			`every_error.yaml:13: rule "page-oncall": do[0].slack.text: steps.later: no earlier step in this rule has id "later"`,
			`every_error.yaml:14: rule "page-oncall": do[1]: a step takes exactly one of slack, http or alo, got http and alo`,
			`every_error.yaml:17: rule "page-oncall": name: duplicate rule name (first at line 8)`,
			`every_error.yaml:18: rule "page-oncall": stop: want true or false, got "maybe"`,
		}},
	}
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) != len(tests) {
		t.Errorf("got %d files in testdata/errors, want a test case for each of them (%d)", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", "errors", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			rs, _, err := Parse(tt.file, src, getenv)
			if rs != nil {
				t.Errorf("got a rule set, want none")
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got error %v, want a *LoadError", err)
			}
			var got []string
			for _, is := range le.Issues {
				got = append(got, is.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if le.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("got Error() %q, want the issues one per line", le.Error())
			}
		})
	}
}

func TestParseWarnings(t *testing.T) {
	src := `rules:
  - name: a
    on: [action_archived]
`
	rs, warns, err := Parse("rules.yaml", []byte(src), getenv)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	want := []string{
		`rules.yaml:1: version: missing, assuming version: 1`,
		`rules.yaml:3: rule "a": on: unknown event type "action_archived" (the rule will see it if ALO sends it)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The unknown type is matchable.
	ev := rawEvent(t, `{"type":"action_archived"}`)
	if got := outcomes(rs.Evaluate(ev, time.Now(), nil).Results)["a"]; got != alorules.OutcomeMatched {
		t.Errorf("got outcome %s for the unknown type, want matched", got)
	}
}

// TestParseExample keeps the repository's example rules loadable.
func TestParseExample(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "rules.example.yaml"))
	if err != nil {
		t.Skip("no rules.example.yaml")
	}
	rs, warns, err := Parse("rules.example.yaml", src, func(string) string { return "https://example.com/placeholder" })
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("got warnings %v, want none", warns)
	}
	if rs.Len() == 0 {
		t.Error("got no rules")
	}
}

func TestParseRulesAndConnections(t *testing.T) {
	rs := mustParse(t, "basic.yaml")
	if got, want := rs.Len(), 4; got != want {
		t.Fatalf("got %d rules, want %d", got, want)
	}
	info := rs.Rules()
	if got, want := info[0].Name, "page-on-urgent"; got != want {
		t.Errorf("got first rule %q, want %q", got, want)
	}
	if got, want := info[0].Steps, []string{"slack", "http", "alo"}; !slices.Equal(got, want) {
		t.Errorf("got steps %v, want %v", got, want)
	}
	if info[0].Throttle == nil || info[0].Throttle.Per != "10m0s" {
		t.Errorf("got throttle %+v, want per 10m0s", info[0].Throttle)
	}
	tickets := rs.Connections["tickets"]
	if tickets == nil || tickets.Kind() != actions.KindHTTP {
		t.Fatalf("got tickets connection %+v, want an http connection", tickets)
	}
	if got, want := tickets.HTTP.Headers["Authorization"], "Bearer tickets-token-456"; got != want {
		t.Errorf("got header %q, want %q", got, want)
	}
	if !slices.Contains(tickets.Secrets, "tickets-token-456") {
		t.Errorf("got secrets %v, want the expanded token among them", tickets.Secrets)
	}
	if got := tickets.Redact.String("x tickets-token-456 y"); got != "x <secret> y" {
		t.Errorf("got connection redaction %q", got)
	}
	for _, secret := range []string{testEnv["SLACK_URL"], testEnv["ALO_API_KEY"], testEnv["TICKETS_TOKEN"]} {
		if got := rs.Secrets.String("a " + secret + " b"); got != "a <secret> b" {
			t.Errorf("got %q, want the rule set to redact %q", got, secret)
		}
	}
	// Retry and timeout: the rule's own over the file's defaults.
	r := rs.byName["page-on-urgent"]
	if want := (alorules.RetryPolicy{Attempts: 8, Backoff: 2 * time.Second, MaxBackoff: time.Minute}); r.retry != want {
		t.Errorf("got retry %+v, want %+v", r.retry, want)
	}
	if r.timeout != 5*time.Second {
		t.Errorf("got timeout %s, want 5s", r.timeout)
	}
	r = rs.byName["status-done"]
	if want := (alorules.RetryPolicy{Attempts: 3, Backoff: 2 * time.Second, MaxBackoff: time.Minute}); r.retry != want {
		t.Errorf("got retry %+v, want the defaults %+v", r.retry, want)
	}
	if r.timeout != 7*time.Second {
		t.Errorf("got timeout %s, want the default 7s", r.timeout)
	}
}

func TestParseHashIsOfSource(t *testing.T) {
	a := parseString(t, "version: 1\nrules: []\n")
	b := parseString(t, "version: 1\nrules: []\n# comment\n")
	if a.Hash() == b.Hash() {
		t.Error("got the same hash for different sources")
	}
	if got := string(a.Source()); got != "version: 1\nrules: []\n" {
		t.Errorf("got source %q", got)
	}
}

func TestParseDollarEscape(t *testing.T) {
	rs := parseString(t, `version: 1
rules:
  - name: a
    do:
      - http: { url: "https://example.com/x", body: "cost: $${PRICE}" }
`)
	res := Test(rs, rawEvent(t, `{"type":"action_created"}`), time.Now())
	if got := string(res.Results[0].Steps[0].Request); !strings.Contains(got, `"body":"cost: ${PRICE}"`) {
		t.Errorf("got %s, want the literal ${PRICE}", got)
	}
}

// TestParseErrorsHideSecrets: candidate rules sent to the admin API are
// expanded with the server's environment, so a load error that quoted an
// expanded value would hand a secret to the caller. Each case puts a
// secret where it could end up in an error; the error must say what is
// wrong, quoting the value as written, and never the value itself.
func TestParseErrorsHideSecrets(t *testing.T) {
	const secret = "s3cr3t-value"
	env := func(name string) string {
		switch name {
		case "LEAKY":
			return secret
		case "SHORT":
			return "k9" // too short for a redactor: only quoting as written hides it
		}
		return testEnv[name]
	}
	// step wraps one step of a rule that has a connection of each kind.
	step := func(s string) string {
		return `version: 1
connections:
  chat: { slack: { webhook_url: "https://hooks.slack.test/x" } }
  api: { http: { base_url: "https://api.example.com" } }
  alo: { alo: { api_key: "k" } }
rules:
  - name: a
    do:
      - ` + s + "\n"
	}
	conn := func(c string) string {
		return "version: 1\nconnections:\n  c: " + c + "\n"
	}
	tests := []struct {
		name, src, want string
	}{
		{"step connection", step(`slack: { connection: "${LEAKY}", text: hi }`), `unknown connection "${LEAKY}"`},
		{"step connection, short secret", step(`slack: { connection: "${SHORT}", text: hi }`), `unknown connection "${SHORT}"`},
		{"step connection, part", step(`http: { connection: "ap${LEAKY}", path: /x }`), `unknown connection "ap${LEAKY}"`},
		{"step connection, short secret in part", step(`http: { connection: "ap${SHORT}", path: /x }`), `unknown connection "ap${SHORT}"`},
		{"http timeout", step(`http: { connection: api, path: /x, timeout: "${LEAKY}" }`), `bad duration "${LEAKY}"`},
		{"slack timeout", step(`slack: { connection: chat, text: hi, timeout: "1${SHORT}" }`), `bad duration "1${SHORT}"`},
		{"alo timeout", step(`alo: { connection: alo, post_message: { channel_id: c, content: x }, timeout: "${LEAKY}" }`), `bad duration "${LEAKY}"`},
		{"step expect", step(`http: { connection: api, path: /x, expect: ["${LEAKY}"] }`), `want a whole number, got "${LEAKY}"`},
		{"step headers", step(`http: { connection: api, path: /x, headers: "${LEAKY}" }`), `want a mapping, got "${LEAKY}"`},
		{"step flag", step(`alo: { connection: alo, post_message: { channel_id: c, content: x, terse_push_notification: "${LEAKY}" } }`), `want true or false, got "${LEAKY}"`},
		{"step text template", step(`slack: { connection: chat, text: "${LEAKY} {{ event.x" }`), `unterminated {{ in "${LEAKY} {{ event.x"`},
		{"step text, missing variable", step(`slack: { connection: chat, text: "${LEAKY}${NOPE}" }`), `environment variable NOPE is not set`},
		{"step text, unterminated", step(`slack: { connection: chat, text: "${LEAKY} ${NOPE" }`), `unterminated ${ in " ${NOPE"`},
		{"slack webhook_url", conn(`{ slack: { webhook_url: "${LEAKY}" } }`), `webhook_url must start with https:// or http://`},
		{"slack api_url", conn(`{ slack: { token: t, api_url: "https:${LEAKY}" } }`), `api_url has no host`},
		{"slack both", conn(`{ slack: { webhook_url: "https://x.test/${LEAKY}", token: "${LEAKY}" } }`), `webhook_url and token are exclusive`},
		{"http base_url", conn(`{ http: { base_url: "${LEAKY}" } }`), `base_url must start with https:// or http://`},
		{"http headers", conn(`{ http: { base_url: "https://x.test", headers: "${LEAKY}" } }`), `want a mapping, got "${LEAKY}"`},
		{"alo base_url", conn(`{ alo: { api_key: "${LEAKY}", base_url: "ftp://${LEAKY}" } }`), `base_url must start with https:// or http://`},
		{"allow_private", conn(`{ allow_private: "${LEAKY}", http: { base_url: "https://x.test" } }`), `want true or false, got "${LEAKY}"`},
		{"throttle key", "version: 1\nrules:\n  - name: a\n    throttle: { key: \"${LEAKY}{{\", per: 1m }\n", `unterminated {{ in "${LEAKY}{{"`},
		{"entity key", "version: 1\nentity: { key: \"${LEAKY}{{ event.x + }}\" }\n", `{{ event.x + }}`},
		{"digest key", "version: 1\nrules:\n  - name: a\n    digest: { window: 1m, key: \"${LEAKY}{{\" }\n", `unterminated {{ in "${LEAKY}{{"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warns, err := Parse("rules.yaml", []byte(tt.src), env)
			if err == nil {
				t.Fatal("got no error, want one")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got\n%v\nwant an error containing %q", err, tt.want)
			}
			var all strings.Builder
			all.WriteString(err.Error())
			for _, w := range warns {
				all.WriteString("\n" + w.String())
			}
			for _, leak := range []string{secret, "k9", "apk9"} {
				if strings.Contains(all.String(), leak) {
					t.Errorf("got\n%s\nwhich holds the expanded value %q", all.String(), leak)
				}
			}
		})
	}
}
