package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"alorules"
	"alorules/alo"
	"alorules/store"
)

const testSecret = "test-signing-secret"

type ingressEnv struct {
	t     *testing.T
	store *store.Store
	srv   *Server
	http  *httptest.Server
	now   time.Time
}

// newIngressEnv serves the ingress on a real store; opts change the
// server's configuration before it is built.
func newIngressEnv(t *testing.T, opts ...func(*Config)) *ingressEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "alorules.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := &ingressEnv{t: t, store: st, now: time.Now()}
	cfg := Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Verifier: &alo.Verifier{Secrets: []string{"old-secret", testSecret}},
		MaxBody:  4096,
		Store:    st,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.srv = srv
	env.http = httptest.NewServer(srv.Public())
	t.Cleanup(env.http.Close)
	return env
}

// post sends body signed with secret at ts; an empty secret sends no
// signature headers at all.
func (e *ingressEnv) post(body []byte, secret string, ts time.Time) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/webhooks/alo", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		alo.SignRequest(req, secret, ts, body)
	}
	return e.do(req)
}

func (e *ingressEnv) do(req *http.Request) (int, map[string]any) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("response %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func TestIngressStatusCodes(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70)
	deep = `{"type":"action_created","x":` + deep + "}"
	// Exact ±300 s boundaries are tested in package alo with a fixed clock;
	// here the skews leave room for a slow test run.
	now := time.Now()
	tests := []struct {
		name      string
		body      string
		secret    string
		ts        time.Time
		want      int
		wantError string // substring of the error message
	}{
		{"accepted", `{"type":"action_created","action":{"id":"a1"}}`, testSecret, now, 200, ""},
		{"rotated secret accepted", `{"type":"action_updated","n":1}`, "old-secret", now, 200, ""},
		{"unknown type accepted", `{"type":"action_teleported"}`, testSecret, now, 200, ""},
		{"wrong secret", `{"type":"action_created","n":2}`, "not-the-secret", now, 403, "signature"},
		{"no signature", `{"type":"action_created","n":3}`, "", now, 403, "X-ALO-Signature"},
		{"stale timestamp", `{"type":"action_created","n":4}`, testSecret, now.Add(-310 * time.Second), 403, "timestamp"},
		{"future timestamp", `{"type":"action_created","n":5}`, testSecret, now.Add(310 * time.Second), 403, "timestamp"},
		{"too large", `{"type":"action_created","pad":"` + strings.Repeat("x", 5000) + `"}`, testSecret, now, 413, "larger than"},
		{"not json", `type=action_created`, testSecret, now, 400, "not valid JSON"},
		{"array", `[{"type":"action_created"}]`, testSecret, now, 400, "JSON object"},
		{"string", `"action_created"`, testSecret, now, 400, "JSON object"},
		{"empty", ``, testSecret, now, 400, "empty"},
		{"no type", `{"action":{}}`, testSecret, now, 400, `no "type"`},
		{"numeric type", `{"type":7}`, testSecret, now, 400, `must be a string`},
		{"object type", `{"type":{"a":1}}`, testSecret, now, 400, `must be a string`},
		{"empty type", `{"type":""}`, testSecret, now, 400, `empty`},
		{"duplicate keys", `{"type":"action_created","a":1,"a":2}`, testSecret, now, 400, `duplicate key "a"`},
		{"duplicate nested keys", `{"type":"action_created","a":{"b":1,"b":1}}`, testSecret, now, 400, `duplicate key "b"`},
		{"too deep", deep, testSecret, now, 400, "nested deeper than 64"},
		{"invalid utf-8", "{\"type\":\"action_created\",\"t\":\"\xff\xfe\"}", testSecret, now, 400, "UTF-8"},
		{"trailing data", `{"type":"action_created"} {"type":"x"}`, testSecret, now, 400, "after the JSON object"},
		{"truncated", `{"type":"action_created","a":[1,2`, testSecret, now, 400, "not valid JSON"},
	}
	env := newIngressEnv(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := env.post([]byte(tc.body), tc.secret, tc.ts)
			if code != tc.want {
				t.Fatalf("got status %d (%v), want %d", code, out, tc.want)
			}
			if tc.want == 200 {
				id, _ := out["id"].(string)
				if id == "" {
					t.Fatalf("got %v, want an id", out)
				}
				ev, err := env.store.Event(context.Background(), id)
				if err != nil {
					t.Fatalf("accepted event %s not in store: %v", id, err)
				}
				if string(ev.Payload) != tc.body {
					t.Errorf("stored payload %q, want %q", ev.Payload, tc.body)
				}
				return
			}
			msg, _ := out["error"].(string)
			if !strings.Contains(msg, tc.wantError) {
				t.Errorf("got error %q, want it to mention %q", msg, tc.wantError)
			}
		})
	}
}

func TestIngressErrorsNeverEchoTheMAC(t *testing.T) {
	env := newIngressEnv(t)
	body := []byte(`{"type":"action_created"}`)
	ts := time.Now()
	good := alo.Sign(testSecret, ts.Unix(), body)
	req, _ := http.NewRequest(http.MethodPost, env.http.URL+"/webhooks/alo", bytes.NewReader(body))
	req.Header.Set(alo.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(alo.HeaderSignature, "v0=00"+strings.Repeat("1", 62))
	code, out := env.do(req)
	if code != 403 {
		t.Fatalf("got %d, want 403", code)
	}
	if s := fmt.Sprint(out); strings.Contains(s, strings.TrimPrefix(good, "v0=")) {
		t.Fatalf("error %q contains the expected MAC", s)
	}
}

func TestIngressHandshake(t *testing.T) {
	for _, typ := range []string{alo.TypeURLVerification, alo.TypeURLValidation} {
		t.Run(typ, func(t *testing.T) {
			env := newIngressEnv(t)
			body := []byte(`{"challenge":"cad3d673-1d2b","type":"` + typ + `"}`)
			ts := time.Now()
			// The first handshake, the same signed request replayed, and
			// ALO retrying it with a fresh signature all get the challenge.
			for _, at := range []time.Time{ts, ts, ts.Add(time.Second)} {
				code, ct, raw := env.postRaw(body, testSecret, at)
				if code != 200 {
					t.Fatalf("got %d %s, want 200", code, raw)
				}
				if !strings.HasPrefix(ct, "application/json") {
					t.Errorf("got content type %q, want application/json", ct)
				}
				if got := strings.TrimSpace(string(raw)); got != `{"challenge":"cad3d673-1d2b"}` {
					t.Errorf("got body %s, want the challenge echoed", got)
				}
			}
			// Recorded once as an event, but never queued for matching.
			evs, _, err := env.store.Events(context.Background(), store.EventFilter{})
			if err != nil || len(evs) != 1 || !evs[0].Handshake {
				t.Fatalf("got %d events (err %v), want the handshake recorded once", len(evs), err)
			}
			pending, _ := env.store.PendingEvents(context.Background(), 10)
			if len(pending) != 0 {
				t.Errorf("got %d pending events, want the handshake not queued", len(pending))
			}
		})
	}
}

// postRaw is post for answers that are checked byte for byte.
func (e *ingressEnv) postRaw(body []byte, secret string, ts time.Time) (code int, contentType string, raw []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/webhooks/alo", bytes.NewReader(body))
	alo.SignRequest(req, secret, ts, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), raw
}

func TestIngressDuplicatesAndReplays(t *testing.T) {
	env := newIngressEnv(t)
	body := []byte(`{"type":"action_status_changed","action":{"id":"a9","status":"Completed"}}`)
	ts := time.Now()
	code, first := env.post(body, testSecret, ts)
	if code != 200 {
		t.Fatalf("first delivery: got %d %v", code, first)
	}
	id := first["id"]

	// The same request again (a replay) and the same body with a fresh
	// signature (a redelivery) both point at the original.
	for name, at := range map[string]time.Time{"replay": ts, "redelivery": ts.Add(2 * time.Second)} {
		code, out := env.post(body, testSecret, at)
		if code != 200 || out["duplicate"] != true || out["id"] != id {
			t.Errorf("%s: got %d %v, want 200 duplicate of %v", name, code, out, id)
		}
	}
	evs, _, _ := env.store.Events(context.Background(), store.EventFilter{})
	if len(evs) != 1 {
		t.Fatalf("got %d stored events, want 1", len(evs))
	}
	if evs[0].Type != alo.TypeActionStatusUpdated || evs[0].RawType != "action_status_changed" {
		t.Errorf("got type %q raw %q, want the normalised status type", evs[0].Type, evs[0].RawType)
	}
	if evs[0].Headers[alo.HeaderSignature] != alorules.Redacted {
		t.Errorf("got signature header %q stored, want it redacted", evs[0].Headers[alo.HeaderSignature])
	}
}

// TestIngressReplayOutlivesDedupeWindow catches a replay that only the
// request key can catch: the body's dedupe record has already expired (a
// window shorter than the timestamp tolerance), yet the same signed request
// is still inside the tolerance and must not be accepted again.
func TestIngressReplayOutlivesDedupeWindow(t *testing.T) {
	env := newIngressEnv(t, func(c *Config) { c.DedupeWindow = time.Nanosecond })
	body := []byte(`{"type":"action_updated","action":{"id":"a7"}}`)
	ts := time.Now()
	code, first := env.post(body, testSecret, ts)
	if code != 200 || first["id"] == nil {
		t.Fatalf("first delivery: got %d %v, want 200 with an id", code, first)
	}
	// In order: the redelivery proves the body record has expired, so the
	// replays after it are caught by the request key alone.
	steps := []struct {
		name    string
		at      time.Time
		wantDup bool
	}{
		{"redelivery after the window", ts.Add(time.Second), false},
		{"replay", ts, true},
		{"replay again", ts, true},
	}
	for _, st := range steps {
		code, out := env.post(body, testSecret, st.at)
		if got := out["duplicate"] == true; code != 200 || got != st.wantDup {
			t.Fatalf("%s: got %d %v, want 200 with duplicate=%v", st.name, code, out, st.wantDup)
		}
		if st.wantDup && out["id"] != first["id"] {
			t.Errorf("%s: got id %v, want the original %v", st.name, out["id"], first["id"])
		}
	}
	evs, _, _ := env.store.Events(context.Background(), store.EventFilter{})
	if len(evs) != 2 {
		t.Errorf("got %d stored events, want 2 (the first and the redelivery)", len(evs))
	}
}

func TestIngressClosedStoreAnswers503(t *testing.T) {
	env := newIngressEnv(t)
	env.store.Close()
	code, out := env.post([]byte(`{"type":"action_created"}`), testSecret, time.Now())
	if code != http.StatusServiceUnavailable {
		t.Fatalf("got %d %v, want 503", code, out)
	}
}

func TestIngressPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Verifier: &alo.Verifier{Secrets: []string{testSecret}}, Store: st}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Public())
	body := []byte(`{"type":"action_created","action":{"id":"persist"}}`)
	req, _ := http.NewRequest(http.MethodPost, h.URL+"/webhooks/alo", bytes.NewReader(body))
	alo.SignRequest(req, testSecret, time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	h.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ev, err := st2.Event(context.Background(), out["id"])
	if err != nil {
		t.Fatalf("event %q after reopen: %v", out["id"], err)
	}
	if !bytes.Equal(ev.Payload, body) {
		t.Errorf("got payload %s, want %s", ev.Payload, body)
	}
}

func TestAdminExposureNeedsAuth(t *testing.T) {
	tests := []struct {
		addr string
		auth *Auth
		ok   bool
	}{
		{"127.0.0.1:8081", &Auth{}, true},
		{"[::1]:8081", &Auth{}, true},
		{"localhost:8081", &Auth{}, true},
		{":8081", &Auth{}, false},
		{"0.0.0.0:8081", &Auth{}, false},
		{"10.1.2.3:8081", &Auth{}, false},
		{"0.0.0.0:8081", &Auth{Token: "t0ken-value"}, true},
		{"0.0.0.0:8081", &Auth{PasswordHash: []byte("$2a$...")}, false}, // no user
	}
	for _, tc := range tests {
		err := checkAdminExposure(tc.addr, tc.auth)
		if (err == nil) != tc.ok {
			t.Errorf("%s with %+v: got err %v, want ok=%v", tc.addr, tc.auth.Enabled(), err, tc.ok)
		}
	}
}

func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{
		`{"type":"action_created","action":{"id":"1","tags":["a","b"]}}`,
		`{"type":"x","a":{"b":[{"c":null}]}}`,
		`{"type":1}`, `[]`, `{"a":1,"a":2}`, `{"type":"a"}{}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := checkBody(body)
		if err != nil {
			return
		}
		// Anything accepted must be a JSON object with that string type.
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q but encoding/json says: %v", body, err)
		}
		if typ, _ := m["type"].(string); typ != env.Type || typ == "" {
			t.Fatalf("got type %q, json says %v", env.Type, m["type"])
		}
	})
}

// TestIngressAcceptedEventsListed follows events from the webhook to the
// admin API: each accepted one is listed newest first, and its detail
// names the signature form that matched.
func TestIngressAcceptedEventsListed(t *testing.T) {
	e := newIngressEnv(t, func(c *Config) {
		st := c.Store.(*store.Store)
		c.Admin = (&Admin{Store: st}).Routes
	})
	admin := httptest.NewServer(e.srv.AdminHandler())
	t.Cleanup(admin.Close)
	forms := []struct {
		form string
		sign func(mac []byte) string
	}{
		{alo.FormV0Hex, func(m []byte) string { return "v0=" + hex.EncodeToString(m) }},
		{alo.FormHex, func(m []byte) string { return hex.EncodeToString(m) }},
		{alo.FormBase64, func(m []byte) string { return base64.StdEncoding.EncodeToString(m) }},
		{alo.FormBase64URL, func(m []byte) string { return base64.RawURLEncoding.EncodeToString(m) }},
	}
	var ids []string
	for i, f := range forms {
		body := fmt.Appendf(nil, `{"type":"action_created","action":{"id":"listed-%d"}}`, i)
		ts := strconv.FormatInt(e.now.Unix(), 10)
		mac := hmac.New(sha256.New, []byte(testSecret))
		fmt.Fprintf(mac, "v0:%s:%s", ts, body)
		req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/webhooks/alo", bytes.NewReader(body))
		req.Header.Set(alo.HeaderTimestamp, ts)
		req.Header.Set(alo.HeaderSignature, f.sign(mac.Sum(nil)))
		code, out := e.do(req)
		if code != http.StatusOK {
			t.Fatalf("%s: got %d %v, want 200", f.form, code, out)
		}
		ids = append(ids, out["id"].(string))
	}

	var list struct {
		Events []struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		} `json:"events"`
	}
	getJSON(t, admin.URL+"/api/v1/events", &list)
	if len(list.Events) != len(ids) {
		t.Fatalf("got %d events listed, want %d", len(list.Events), len(ids))
	}
	for i, ev := range list.Events {
		if want := ids[len(ids)-1-i]; ev.ID != want || ev.Type != "action_created" {
			t.Errorf("listed[%d] = %s %s, want %s action_created", i, ev.ID, ev.Type, want)
		}
	}
	for i, f := range forms {
		var detail struct {
			SignatureForm string            `json:"signature_form"`
			Headers       map[string]string `json:"headers"`
		}
		getJSON(t, admin.URL+"/api/v1/events/"+ids[i], &detail)
		if detail.SignatureForm != f.form {
			t.Errorf("event %s: got signature_form %q, want %q", ids[i], detail.SignatureForm, f.form)
		}
		if got := detail.Headers[alo.HeaderSignature]; got != alorules.Redacted {
			t.Errorf("event %s: got signature header %q, want it redacted", ids[i], got)
		}
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: got %d %s, want 200", url, resp.StatusCode, raw)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
