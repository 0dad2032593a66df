package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"alorules"
	"alorules/alo"
)

// TestWebhookInputs takes every case of DESIGN.md §3 through the running
// service (public listener, real store, matcher): what is accepted is
// stored byte for byte and matched; what is refused gets its status and
// leaves nothing behind.
func TestWebhookInputs(t *testing.T) {
	tg := newTarget(t, nil)
	rules := `version: 1
connections:
  t: { http: { base_url: "` + tg.srv.URL + `" }, allow_private: true }
rules:
  - name: any-type
    if: type == "action_teleported"
    do: [ { http: { connection: t, method: POST, path: /any } } ]
  - name: status-changed
    on: [action_status_changed]
    do: [ { http: { connection: t, method: POST, path: /changed } } ]
  - name: status-updated
    on: [action_status_updated]
    do: [ { http: { connection: t, method: POST, path: /updated } } ]
`
	const maxBody = 4096
	app := startOps(t, rules, setup{edit: func(c *serveConfig) {
		c.MaxBody = maxBody
		c.SigningSecrets = []string{"old-secret", e2eSecret}
	}})
	url := "http://" + app.public + "/webhooks/alo"

	// sign returns the headers for body, with the MAC spelled as form.
	sign := func(secret string, ts time.Time, body, form string) http.Header {
		mac := strings.TrimPrefix(alo.Sign(secret, ts.Unix(), []byte(body)), "v0=")
		switch form {
		case "hex":
		case "base64":
			raw, _ := hex.DecodeString(mac)
			mac = base64.StdEncoding.EncodeToString(raw)
		default:
			mac = "v0=" + mac
		}
		return hdr(alo.HeaderSignature, mac, alo.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	}
	now := time.Now()
	head, tail := `{"type":"action_created","pad":"`, `"}`
	atLimit := head + strings.Repeat("x", maxBody-len(head)-len(tail)) + tail
	deep := func(n int) string {
		return `{"type":"action_created","x":` + strings.Repeat(`[`, n-1) + strings.Repeat(`]`, n-1) + `}`
	}
	type req struct {
		method, body string
		header       http.Header
		chunked      bool
	}
	signed := func(body string) req { return req{"POST", body, sign(e2eSecret, now, body, "v0"), false} }
	tests := []struct {
		name    string
		req     req
		want    int
		wantErr string
	}{
		{"v0=hex", signed(`{"type":"action_created","n":1}`), 200, ""},
		{"bare hex", req{"POST", `{"type":"action_created","n":2}`, sign(e2eSecret, now, `{"type":"action_created","n":2}`, "hex"), false}, 200, ""},
		{"base64", req{"POST", `{"type":"action_created","n":3}`, sign(e2eSecret, now, `{"type":"action_created","n":3}`, "base64"), false}, 200, ""},
		{"second secret during rotation", req{"POST", `{"type":"action_created","n":4}`, sign("old-secret", now, `{"type":"action_created","n":4}`, "v0"), false}, 200, ""},
		{"unknown type", signed(`{"type":"action_teleported"}`), 200, ""},
		{"status_changed spelling", signed(`{"type":"action_status_changed","n":5}`), 200, ""},
		{"nested 64 deep", signed(deep(64)), 200, ""},
		{"exactly the size limit", signed(atLimit), 200, ""},
		{"one byte over the limit", signed(atLimit[:len(atLimit)-1] + ` }`), 413, "larger than"},
		{"chunked over the limit", req{"POST", `{"type":"action_created","p":"` + strings.Repeat("y", maxBody) + `"}`, nil, true}, 413, "larger than"},
		{"wrong secret", req{"POST", `{"type":"action_created","n":6}`, sign("nope", now, `{"type":"action_created","n":6}`, "v0"), false}, 403, "signature"},
		{"body changed after signing", req{"POST", `{"type":"action_created","n":7}`, sign(e2eSecret, now, `{"type":"action_created","n":8}`, "v0"), false}, 403, "signature"},
		{"no signature", req{"POST", `{"type":"action_created","n":9}`, hdr(alo.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10)), false}, 403, "signature"},
		{"no timestamp", req{"POST", `{"type":"action_created","n":10}`, hdr(alo.HeaderSignature, sign(e2eSecret, now, `{"type":"action_created","n":10}`, "v0").Get(alo.HeaderSignature)), false}, 403, "timestamp"},
		{"timestamp not a number", req{"POST", `{"type":"action_created","n":11}`, hdr(alo.HeaderSignature, "v0=00", alo.HeaderTimestamp, "yesterday"), false}, 403, "timestamp"},
		{"stale timestamp", req{"POST", `{"type":"action_created","n":12}`, sign(e2eSecret, now.Add(-10*time.Minute), `{"type":"action_created","n":12}`, "v0"), false}, 403, "timestamp"},
		{"future timestamp", req{"POST", `{"type":"action_created","n":13}`, sign(e2eSecret, now.Add(10*time.Minute), `{"type":"action_created","n":13}`, "v0"), false}, 403, "timestamp"},
		{"not JSON", signed(`type=action_created`), 400, "JSON"},
		{"empty", signed(``), 400, "empty"},
		{"array", signed(`[{"type":"action_created"}]`), 400, "object"},
		{"no type", signed(`{"action":{}}`), 400, "type"},
		{"type not a string", signed(`{"type":["action_created"]}`), 400, "string"},
		{"empty type", signed(`{"type":""}`), 400, "empty"},
		{"duplicate keys", signed(`{"type":"action_created","type":"action_updated"}`), 400, "duplicate"},
		{"duplicate nested keys", signed(`{"type":"action_created","a":{"b":1,"b":2}}`), 400, "duplicate"},
		{"nested 65 deep", signed(deep(65)), 400, "deeper than 64"},
		{"invalid UTF-8", signed("{\"type\":\"action_created\",\"s\":\"\xc3\x28\"}"), 400, "UTF-8"},
		{"trailing data", signed(`{"type":"action_created"}{}`), 400, "after"},
		{"GET", req{"GET", "", nil, false}, 405, ""},
	}
	before := len(allEvents(t, app.store))
	accepted := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.req.body)
			if tc.req.chunked {
				body = io.MultiReader(strings.NewReader(tc.req.body)) // no length: sent chunked
			}
			r, _ := http.NewRequest(tc.req.method, url, body)
			for k, v := range tc.req.header {
				r.Header[k] = v
			}
			if tc.req.chunked {
				alo.SignRequest(r, e2eSecret, now, []byte(tc.req.body))
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, raw, tc.want)
			}
			var out map[string]any
			json.Unmarshal(raw, &out)
			if tc.want != 200 {
				if msg, _ := out["error"].(string); !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.wantErr)) {
					t.Errorf("got error %q, want it to mention %q", msg, tc.wantErr)
				}
				return
			}
			accepted++
			id, _ := out["id"].(string)
			ev, err := app.store.Event(context.Background(), id)
			if err != nil {
				t.Fatalf("accepted but not stored: %v", err)
			}
			if string(ev.Payload) != tc.req.body {
				t.Errorf("stored %q, want the body byte for byte", ev.Payload)
			}
		})
	}
	if got := len(allEvents(t, app.store)) - before; got != accepted {
		t.Errorf("got %d events stored, want only the %d accepted", got, accepted)
	}

	t.Run("handshakes", func(t *testing.T) {
		for _, typ := range []string{alo.TypeURLVerification, alo.TypeURLValidation} {
			code, out, err := post(url, e2eSecret, `{"type":"`+typ+`","challenge":"ch-`+typ+`"}`)
			if err != nil || code != 200 || out["challenge"] != "ch-"+typ {
				t.Errorf("%s: got %d %v %v, want the challenge back", typ, code, out, err)
			}
		}
	})
	t.Run("replay and redelivery", func(t *testing.T) {
		body := `{"type":"action_created","n":"once"}`
		h := sign(e2eSecret, now, body, "v0")
		var ids []any
		for i, hdr := range []http.Header{h, h, sign(e2eSecret, now.Add(time.Second), body, "base64")} {
			r, _ := http.NewRequest("POST", url, strings.NewReader(body))
			r.Header = hdr
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != 200 || (i > 0 && out["duplicate"] != true) {
				t.Errorf("delivery %d: got %d %v, want 200 (a duplicate after the first)", i, resp.StatusCode, out)
			}
			ids = append(ids, out["id"])
		}
		if ids[0] != ids[1] || ids[0] != ids[2] {
			t.Errorf("got ids %v, want the original each time", ids)
		}
	})
	t.Run("matched", func(t *testing.T) {
		waitFor(t, 20*time.Second, "everything settled", func() bool {
			ok, err := settled(app.store)
			return err == nil && ok
		})
		runs := map[string]int{}
		for _, ex := range allExecutions(t, app.store) {
			if ex.Status != alorules.StatusSucceeded {
				t.Errorf("execution of %s: %s", ex.Rule, ex.Status)
			}
			runs[ex.Rule]++
		}
		want := map[string]int{"any-type": 1, "status-changed": 1, "status-updated": 1}
		if fmt.Sprint(runs) != fmt.Sprint(want) {
			t.Errorf("got executions per rule %v, want %v (unknown types matchable, both status spellings one type, handshakes never matched, a duplicate runs nothing)", runs, want)
		}
	})
}

// hdr builds a header from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestHostileRules: expressions that would eat the machine are refused by
// `alorules check` (and so by reload), and a payload that makes an
// accepted expression explode is cut short at run time: that rule's
// outcome is an error, the others still run, and the service goes on.
func TestHostileRules(t *testing.T) {
	for name, cond := range map[string]string{
		"deep nesting": strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + " != nil",
		"deep unary":   strings.Repeat("!", 100000) + "true",
		"huge range":   "len(1..1000000000) > 0",
	} {
		t.Run(name, func(t *testing.T) {
			path := t.TempDir() + "/rules.yaml"
			src := "version: 1\nrules:\n  - name: hostile\n    if: '" + cond + "'\n"
			if err := writeFile(path, src); err != nil {
				t.Fatal(err)
			}
			var out, errb strings.Builder
			if code := run([]string{"check", path}, nil, &out, &errb, func(string) string { return "" }); code != 1 {
				t.Errorf("got exit %d, want 1 (refused):\n%s%s", code, out.String(), errb.String())
			}
		})
	}
	tg := newTarget(t, nil)
	app := startOps(t, `version: 1
connections:
  t: { http: { base_url: "`+tg.srv.URL+`" }, allow_private: true }
rules:
  - name: range-from-payload
    if: len(1..event.n) > 0
    do: [ { http: { connection: t, method: POST, path: /hostile } } ]
  - name: innocent
    do: [ { http: { connection: t, method: POST, path: /innocent } } ]
`, setup{})
	code, out, err := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created","n":2000000000}`)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v %v", code, out, err)
	}
	id := out["id"].(string)
	var m *alorules.Match
	waitFor(t, 20*time.Second, "the match", func() bool {
		m, err = app.store.Match(context.Background(), id)
		return err == nil
	})
	got := map[string]alorules.Outcome{}
	for _, r := range m.Results {
		got[r.Rule] = r.Outcome
	}
	if got["range-from-payload"] != alorules.OutcomeError || got["innocent"] != alorules.OutcomeMatched {
		t.Errorf("got outcomes %v, want the hostile rule an error and the innocent one matched", got)
	}
	if code, _, _ := post("http://"+app.public+"/webhooks/alo", e2eSecret, `{"type":"action_created","n":1}`); code != 200 {
		t.Errorf("after a hostile payload: got %d, want the service still serving", code)
	}
}
