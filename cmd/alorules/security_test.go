package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"alorules"
)

// rawGet sends method path verbatim (no client-side cleaning of the
// path) to addr with the given headers, and returns status and body.
func rawRequest(t testing.TB, addr, method, path string, header http.Header) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n", method, path, addr)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

const (
	adminToken    = "admin-token-Zq8LxV2"
	adminUser     = "ops"
	adminPassword = "admin-password-Kp4Rw9"
)

func withAdminAuth(t testing.TB) func(c *serveConfig) {
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *serveConfig) {
		c.AdminToken, c.AdminUser, c.AdminPasswordHash = adminToken, adminUser, string(hash)
	}
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func basic(user, pass string) http.Header {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return http.Header{"Authorization": {r.Header.Get("Authorization")}}
}

// TestAdminRefusesWithoutCredentials asks for every kind of admin page
// and API, spelled plainly and through encoded or dotted paths, without
// credentials and with wrong ones: all 401, and nothing of the stored
// event shows. The right credentials work, and the public listener serves
// nothing of the admin side.
func TestAdminRefusesWithoutCredentials(t *testing.T) {
	app := startOps(t, "version: 1\nrules: []\n", setup{edit: withAdminAuth(t)})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created","marker":"stored-payload-7731"}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	paths := []struct{ method, path string }{
		{"GET", "/api/v1/events"},
		{"GET", "/%61pi/v1/events"},
		{"GET", "//api/v1/events"},
		{"GET", "/api/v1/../v1/events"},
		{"GET", "/api/v1/./events"},
		{"GET", "/api/v1/events/"},
		{"GET", "/API/v1/events"},
		{"GET", "/api/v1/events%2f"},
		{"GET", "/api%2fv1%2fevents"},
		{"GET", "/healthz/../api/v1/events"},
		{"GET", "/readyz/%2e%2e/api/v1/events"},
		{"GET", "/api/v1/events/" + id},
		{"GET", "/api/v1/executions"},
		{"GET", "/api/v1/rules"},
		{"GET", "/api/v1/backup"},
		{"HEAD", "/api/v1/backup"},
		{"GET", "/metrics"},
		{"GET", "/"},
		{"GET", "/events"},
		{"GET", "/events/" + id},
		{"GET", "/executions"},
		{"GET", "/playground"},
		{"GET", "/static/app.css"},
		{"GET", "/nothing-here"},
		{"POST", "/-/reload"},
		{"POST", "/api/v1/events/" + id + "/replay"},
		{"POST", "/api/v1/executions/" + id + "/retry"},
		{"POST", "/api/v1/rules/test"},
		{"POST", "/events/" + id + "/replay"},
		{"POST", "/executions/" + id + "/retry"},
	}
	creds := map[string]http.Header{
		"none":                    nil,
		"wrong token":             bearer("not-the-token"),
		"token with other case":   {"Authorization": {"bearer " + adminToken}},
		"token as basic password": basic(adminUser, adminToken),
		"wrong password":          basic(adminUser, "not-the-password"),
		"wrong user":              basic("root", adminPassword),
		"empty basic":             basic("", ""),
		"token in a cookie":       {"Cookie": {"token=" + adminToken}},
		"token in X-Auth header":  {"X-Auth-Token": {adminToken}},
	}
	names := make([]string, 0, len(creds))
	for n := range creds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, p := range paths {
		for _, name := range names {
			code, body := rawRequest(t, app.admin, p.method, p.path, creds[name])
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: got %d, want 401", p.method, p.path, name, code)
			}
			if bytes.Contains(body, []byte("stored-payload-7731")) || bytes.Contains(body, []byte(id)) {
				t.Errorf("%s %s with %s: the answer shows the stored event", p.method, p.path, name)
			}
		}
		// Same with the token in the query string.
		q := "?token=" + adminToken
		if strings.Contains(p.path, "?") {
			q = "&token=" + adminToken
		}
		if code, _ := rawRequest(t, app.admin, p.method, p.path+q, nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s with the token in the query: got %d, want 401", p.method, p.path, code)
		}
	}
	for name, h := range map[string]http.Header{"token": bearer(adminToken), "password": basic(adminUser, adminPassword)} {
		if code, body := rawRequest(t, app.admin, "GET", "/api/v1/events/"+id, h); code != 200 || !bytes.Contains(body, []byte("stored-payload-7731")) {
			t.Errorf("with the right %s: got %d, want 200 and the event", name, code)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := rawRequest(t, app.admin, "GET", p, nil); code != 200 {
			t.Errorf("probe %s: got %d, want 200 without credentials", p, code)
		}
	}
	// The public listener has no admin side at all, with or without credentials.
	for _, p := range []string{"/api/v1/events", "/metrics", "/", "/api/v1/backup", "/events/" + id, "/-/reload"} {
		for _, h := range []http.Header{nil, bearer(adminToken)} {
			if code, body := rawRequest(t, app.public, "GET", p, h); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
				t.Errorf("public listener GET %s: got %d %s, want 404", p, code, body)
			}
		}
	}
}

// TestCrossSiteRequestsRefused: a browser holding the admin's basic-auth
// credentials would send them with a forged cross-site request; every
// unsafe request that a browser marks as cross-site is refused, the JSON
// API's included, while the same request from a client that is not a
// browser (curl, `alorules test --server`) goes through.
func TestCrossSiteRequestsRefused(t *testing.T) {
	app := startOps(t, "version: 1\nrules: []\n", setup{edit: withAdminAuth(t)})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created"}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	auth := basic(adminUser, adminPassword)
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"cross-site fetch", http.Header{"Sec-Fetch-Site": {"cross-site"}}, 403},
		{"same-site but another origin", http.Header{"Sec-Fetch-Site": {"same-site"}}, 403},
		{"foreign Origin", http.Header{"Origin": {"https://evil.example"}}, 403},
		{"null Origin", http.Header{"Origin": {"null"}}, 403},
		{"not a browser", nil, 200},
		{"same origin", http.Header{"Sec-Fetch-Site": {"same-origin"}}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/v1/events/" + id + "/replay?dry_run=true", "/-/reload"} {
				h := http.Header{}
				for k, v := range auth {
					h[k] = v
				}
				for k, v := range tc.header {
					h[k] = v
				}
				if code, body := rawRequest(t, app.admin, "POST", path, h); code != tc.want {
					t.Errorf("POST %s: got %d %s, want %d", path, code, body, tc.want)
				}
			}
		})
	}
}

// TestXSSPayloadInert stores events whose every field is markup and
// script, lets a rule with such output run, and reads every page: the
// payloads appear only escaped, and each page carries the strict CSP.
func TestXSSPayloadInert(t *testing.T) {
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<script>alert("target")</script><img src=x onerror=alert(2)>`)
	})
	xss := `<script>alert(1)</script>`
	attr := `"><img src=x onerror=alert(1)>`
	rules := `version: 1
connections:
  t: { http: { base_url: "` + tg.srv.URL + `" }, allow_private: true }
rules:
  - name: echo
    description: "<b>description</b><script>alert(3)</script>"
    do: [ { http: { connection: t, method: POST, path: "/x", json: { title: "{{ event.action?.title }}" } } } ]
`
	app := startOps(t, rules, setup{})
	body, _ := json.Marshal(map[string]any{
		"type":               "action_created<script>alert(4)</script>",
		xss:                  attr,
		"action":             map[string]any{"id": attr, "title": xss, "url": "javascript:alert(1)"},
		"javascript:x":       "</textarea></pre></code>" + xss,
		"{{ event.action }}": "{{ 7*7 }}",
	})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, string(body))
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	waitFor(t, 10*time.Second, "the execution", func() bool {
		ok, err := settled(app.store)
		return err == nil && ok
	})
	exs := allExecutions(t, app.store)
	if len(exs) == 0 {
		t.Fatal("the rule did not run")
	}
	pages := []string{"/", "/events", "/events/" + id, "/events/" + id + "/replay", "/events/fields",
		"/executions", "/executions/" + exs[0].ID, "/playground", "/playground?event=" + id,
		"/events?type=" + "%3Cscript%3Ealert(5)%3C%2Fscript%3E", "/executions?rule=%3Cscript%3Ealert(6)%3C%2Fscript%3E",
		"/events/%3Cscript%3Ealert(7)%3C%2Fscript%3E"}
	for _, p := range pages {
		resp, err := http.Get("http://" + app.admin + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Errorf("%s: got %d", p, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: got CSP %q, want a strict one", p, csp)
		}
		for _, bad := range []string{"<script>alert", "<img src=x", "<b>description", `href="javascript:`, "</textarea></pre>"} {
			if bytes.Contains(b, []byte(bad)) {
				i := bytes.Index(b, []byte(bad))
				t.Errorf("%s: unescaped %q in the page: ...%s...", p, bad, b[max(0, i-60):min(len(b), i+60)])
			}
		}
	}
}

// TestOutboundGuardThroughService gives rules steps aimed at every kind of
// address the guard forbids, in several spellings and through every step
// kind, without allow_private: each execution fails at once with the
// guard's reason, and the live target on loopback receives nothing.
func TestOutboundGuardThroughService(t *testing.T) {
	tg := newTarget(t, nil)
	port := tg.srv.Listener.Addr().(*net.TCPAddr).Port
	urls := []string{
		fmt.Sprintf("http://127.0.0.1:%d/x", port),
		fmt.Sprintf("http://localhost:%d/x", port),
		fmt.Sprintf("http://[::1]:%d/x", port),
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/x", port),
		fmt.Sprintf("http://2130706433:%d/x", port),
		fmt.Sprintf("http://0x7f.1:%d/x", port),
		fmt.Sprintf("http://0177.0.0.1:%d/x", port),
		fmt.Sprintf("http://127.1:%d/x", port),
		fmt.Sprintf("http://0.0.0.0:%d/x", port),
		"http://10.0.0.1/x",
		"http://172.16.0.1/x",
		"http://192.168.1.1/x",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://[fe80::1]/x",
		"http://[fc00::1]/x",
		"http://100.64.0.1/x",
		"http://224.0.0.1/x",
		"http://255.255.255.255/x",
	}
	var b strings.Builder
	b.WriteString("version: 1\nconnections:\n")
	fmt.Fprintf(&b, "  hook: { slack: { webhook_url: \"http://127.0.0.1:%d/services/x\" } }\n", port)
	fmt.Fprintf(&b, "  alo: { alo: { api_key: k-123456, base_url: \"http://127.0.0.1:%d/v1\" } }\n", port)
	fmt.Fprintf(&b, "  tickets: { http: { base_url: \"http://localhost:%d\" } }\n", port)
	b.WriteString("defaults:\n  retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }\nrules:\n")
	for i, u := range urls {
		fmt.Fprintf(&b, "  - name: url-%d\n    do: [ { http: { url: %q, method: POST } } ]\n", i, u)
	}
	b.WriteString("  - name: slack-hook\n    do: [ { slack: { connection: hook, text: hi } } ]\n")
	b.WriteString("  - name: alo-api\n    do: [ { alo: { connection: alo, post_message: { channel_id: c, content: hi } } } ]\n")
	b.WriteString("  - name: http-conn\n    do: [ { http: { connection: tickets, method: POST, path: /x } } ]\n")

	app := startOps(t, b.String(), setup{})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created"}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	waitFor(t, 20*time.Second, "every execution final", func() bool {
		ok, err := settled(app.store)
		return err == nil && ok
	})
	exs := allExecutions(t, app.store)
	if want := len(urls) + 3; len(exs) != want {
		t.Fatalf("got %d executions, want %d", len(exs), want)
	}
	for _, ex := range exs {
		st := ex.Steps[0]
		if ex.Status != alorules.StatusFailed || st.Attempts != 1 || !strings.Contains(st.Error, "refused to connect") {
			t.Errorf("rule %s: got %s after %d attempts (%q), want failed at once by the guard", ex.Rule, ex.Status, st.Attempts, st.Error)
		}
	}
	if n := tg.count(); n != 0 {
		t.Errorf("the loopback target received %d requests, want none", n)
	}
}

// TestSecretsNeverShow sets a secret in every place one can be set (the
// signing secret, the admin token and password, and ${VARS} in a Slack
// webhook URL, a Slack bot token, an ALO API key and an HTTP header), runs
// a scenario in which a hostile target echoes every request back and a
// dead target turns the webhook URL into an error, and then searches the
// logs, every API answer, /metrics, every UI page, a backup and the raw
// bytes of the store file: no secret appears anywhere. Every log line
// about an execution names its event, rule and execution.
func TestSecretsNeverShow(t *testing.T) {
	secrets := map[string]string{
		"signing secret":       "signing-secret-5UxT0o",
		"admin token":          adminToken,
		"admin password":       adminPassword,
		"slack webhook secret": "hookpath-9fQ2mN7w",
		"slack token":          "xoxb-slack-token-3hJ8",
		"alo api key":          "alo-api-key-Wm5Gz1",
		"http header token":    "tickets-token-Bc7Yv4",
		"dead webhook secret":  "deadhook-Ls6Pe2",
	}
	// The target echoes what it got, the way an error page or a debug
	// endpoint might: URL, headers and body.
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		echo, _ := json.Marshal(map[string]any{"ok": true, "url": r.URL.String(), "headers": r.Header, "channel": "C1", "ts": "1.2"})
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusInternalServerError)
		}
		w.Write(echo)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	env := map[string]string{
		"SLACK_URL":      tg.srv.URL + "/services/T0/B0/" + secrets["slack webhook secret"],
		"DEAD_SLACK_URL": dead + "/services/T0/B0/" + secrets["dead webhook secret"],
		"SLACK_TOKEN":    secrets["slack token"],
		"ALO_KEY":        secrets["alo api key"],
		"TICKETS_TOKEN":  secrets["http header token"],
	}
	rules := `version: 1
connections:
  hook: { slack: { webhook_url: "${SLACK_URL}" }, allow_private: true }
  dead: { slack: { webhook_url: "${DEAD_SLACK_URL}" }, allow_private: true }
  bot: { slack: { token: "${SLACK_TOKEN}", channel: "#ops", api_url: "` + tg.srv.URL + `/api/" }, allow_private: true }
  alo: { alo: { api_key: "${ALO_KEY}", base_url: "` + tg.srv.URL + `/alo/v1" }, allow_private: true }
  tickets: { http: { base_url: "` + tg.srv.URL + `", headers: { Authorization: "Bearer ${TICKETS_TOKEN}" } }, allow_private: true }
defaults:
  retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }
rules:
  - name: every-kind
    do:
      - slack: { connection: hook, text: "hi {{ event.action?.title }}" }
      - slack: { connection: bot, text: "hi" }
      - alo: { connection: alo, post_message: { channel_id: "c1", content: "hi" } }
      - id: ticket
        http: { connection: tickets, method: POST, path: /echo, json: { a: 1 } }
      - http: { connection: tickets, method: POST, path: /next, json: { prev: "{{ steps.ticket.body }}" } }
  - name: dead-hook
    do: [ { slack: { connection: dead, text: "x" } } ]
  - name: failing-echo
    do: [ { http: { connection: tickets, method: POST, path: /fail } } ]
`
	dir := t.TempDir()
	logs, err := os.Create(filepath.Join(dir, "alorules.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	app := startOps(t, rules, setup{dir: dir, env: env, logs: logs, edit: func(c *serveConfig) {
		withAdminAuth(t)(c)
		c.SigningSecrets = []string{secrets["signing secret"]}
	}})
	code, out, err := post("http://"+app.public+"/webhooks/alo", secrets["signing secret"], `{"type":"action_created","action":{"title":"Freezer"}}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	// Wrong credentials and a bad signature get logged too.
	post("http://"+app.public+"/webhooks/alo", "not-"+secrets["signing secret"], `{"type":"action_created"}`)
	rawRequest(t, app.admin, "GET", "/api/v1/events", basic(adminUser, adminPassword+"x"))
	waitFor(t, 20*time.Second, "every execution final", func() bool {
		ok, err := settled(app.store)
		return err == nil && ok
	})
	if tg.count() < 6 {
		t.Fatalf("the target got %d requests; the scenario did not run", tg.count())
	}
	// The secrets really went on the wire (else the test proves nothing).
	var wire bytes.Buffer
	for _, r := range tg.requests() {
		fmt.Fprintln(&wire, r.Path, r.Header, string(r.Body))
	}
	for _, name := range []string{"slack webhook secret", "slack token", "alo api key", "http header token"} {
		if !bytes.Contains(wire.Bytes(), []byte(secrets[name])) {
			t.Fatalf("the %s never reached the target; the scenario is wrong", name)
		}
	}

	h := bearer(adminToken)
	get := func(path string) []byte {
		code, b := rawRequest(t, app.admin, "GET", path, h)
		if code != 200 {
			t.Errorf("GET %s: %d %s", path, code, b)
		}
		return b
	}
	var answers bytes.Buffer
	exs := allExecutions(t, app.store)
	if len(exs) != 3 {
		t.Fatalf("got %d executions, want 3", len(exs))
	}
	paths := []string{"/api/v1/events", "/api/v1/events/" + id, "/api/v1/executions", "/api/v1/rules", "/metrics",
		"/", "/events", "/events/" + id, "/events/" + id + "/replay", "/executions", "/playground", "/events/fields"}
	for _, ex := range exs {
		paths = append(paths, "/api/v1/executions/"+ex.ID, "/executions/"+ex.ID)
	}
	for _, p := range paths {
		answers.Write(get(p))
	}
	for _, p := range []string{"/api/v1/events/" + id + "/replay?dry_run=true", "/-/reload"} {
		code, b := rawRequest(t, app.admin, "POST", p, h)
		if code != 200 {
			t.Errorf("POST %s: %d %s", p, code, b)
		}
		answers.Write(b)
	}
	// A candidate rule file that uses every secret variable, rendered.
	cand, _ := json.Marshal(map[string]any{"rules": rules, "event_ids": []string{id}})
	req, _ := http.NewRequest("POST", "http://"+app.admin+"/api/v1/rules/test", bytes.NewReader(cand))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("rules/test: %d %s", resp.StatusCode, b)
	}
	answers.Write(b)
	mustContainNone(t, "the API, /metrics and UI", answers.Bytes(), secrets)

	backup := filepath.Join(dir, "backup.db")
	var so, se bytes.Buffer
	if code := run([]string{"backup", "--server", "http://" + app.admin, backup}, nil, &so, &se,
		func(k string) string { return map[string]string{"ALORULES_ADMIN_TOKEN": adminToken}[k] }); code != 0 {
		t.Fatalf("backup: %d %s", code, se.String())
	}
	mustContainNone(t, "the backup command's output", append(so.Bytes(), se.Bytes()...), secrets)
	app.stop(t)
	mustContainNone(t, "the backup file", readAll(t, backup), secrets)
	mustContainNone(t, "the store file", readAll(t, filepath.Join(dir, "alorules.db")), secrets)

	logText := readAll(t, logs.Name())
	mustContainNone(t, "the log", logText, secrets)
	lines, related := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(logText))
	for sc.Scan() {
		lines++
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
			continue
		}
		if _, ok := line["execution_id"]; ok || strings.HasPrefix(line["msg"].(string), "step ") || strings.HasPrefix(line["msg"].(string), "execution ") {
			related++
			for _, k := range []string{"execution_id", "event_id", "rule"} {
				if s, _ := line[k].(string); s == "" {
					t.Errorf("log line about an execution lacks %s: %s", k, sc.Text())
				}
			}
		}
		// Every line about a rule's work names the event it was for; only
		// a dropped digest stands for many events and names none.
		if _, ok := line["rule"]; ok && line["event_id"] == nil && line["msg"] != "digest dropped" {
			t.Errorf("log line names a rule but no event: %s", sc.Text())
		}
		switch line["msg"] {
		case "rule failed", "rule suspected of looping", "duplicate delivery", "answered url verification", "event accepted", "event matched":
			if s, _ := line["event_id"].(string); s == "" {
				t.Errorf("log line about an event lacks event_id: %s", sc.Text())
			}
		}
	}
	if related < 5 {
		t.Errorf("got %d log lines about executions in %d, want the steps and outcomes logged", related, lines)
	}
}
