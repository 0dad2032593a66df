package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"alorules"
)

// received is one request as a test target saw it.
type received struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   string
}

// target is an httptest server that records requests and answers with
// handler (200 "{}" if nil).
type target struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []received
	handler func(w http.ResponseWriter, r *http.Request, n int)
}

func newTarget(t testing.TB, handler func(w http.ResponseWriter, r *http.Request, n int)) *target {
	t.Helper()
	tg := &target{handler: handler}
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b)) // handlers may read it too
		tg.mu.Lock()
		tg.reqs = append(tg.reqs, received{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)})
		n := len(tg.reqs)
		tg.mu.Unlock()
		if tg.handler == nil {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
			return
		}
		tg.handler(w, r, n)
	}))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) requests() []received {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]received(nil), tg.reqs...)
}

func (tg *target) only(t *testing.T) received {
	t.Helper()
	rs := tg.requests()
	if len(rs) != 1 {
		t.Fatalf("target got %d requests, want 1", len(rs))
	}
	return rs[0]
}

func httpConn(base string) *Connection {
	return &Connection{Name: "target", AllowPrivate: true, HTTP: &HTTPConn{BaseURL: base}}
}

func slackWebhookConn(base string) *Connection {
	return &Connection{Name: "slack", AllowPrivate: true, Slack: &SlackConn{WebhookURL: alorules.Secret(base + "/services/T000/B000/XXXXsecretXXXX")}}
}

func slackBotConn(base string) *Connection {
	return &Connection{Name: "slack", AllowPrivate: true, Slack: &SlackConn{Token: "xoxb-123-secret-token", Channel: "#ops", APIURL: base + "/api"}}
}

func aloConn(base string) *Connection {
	return &Connection{Name: "alo", AllowPrivate: true, ALO: &ALOConn{APIKey: "alo-key-secret-123", BaseURL: base + "/v1"}}
}

func request(kind string, spec Spec, conn *Connection) Request {
	return Request{
		ExecutionID: "ex1", Rule: "r", Index: 0, Kind: kind, Spec: spec, Conn: conn,
		IdempotencyKey: "ev1:r:0", Timeout: 2 * time.Second,
	}
}

func stepErr(t *testing.T, err error) *StepError {
	t.Helper()
	var se *StepError
	if !errors.As(err, &se) {
		t.Fatalf("got error %T %v, want *StepError", err, err)
	}
	return se
}

var userAgent = "alorules/" + alorules.Version

func TestHTTPStep(t *testing.T) {
	tests := []struct {
		name       string
		spec       *HTTP
		connHdr    map[string]string
		wantMethod string
		wantPath   string
		wantQuery  url.Values
		wantBody   string
		wantHeader map[string]string
	}{
		{
			name:       "json body defaults to POST",
			spec:       &HTTP{Connection: "target", Path: "/api/issues", JSON: map[string]any{"title": "Urgent <b>", "n": 2}},
			connHdr:    map[string]string{"Authorization": "Bearer tok"},
			wantMethod: "POST", wantPath: "/api/issues", wantBody: `{"n":2,"title":"Urgent <b>"}`,
			wantHeader: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer tok"},
		},
		{
			name:       "no body defaults to GET with query",
			spec:       &HTTP{Connection: "target", Path: "search", Query: map[string]string{"q": "a b&c", "n": "1"}},
			wantMethod: "GET", wantPath: "/search", wantQuery: url.Values{"q": {"a b&c"}, "n": {"1"}},
		},
		{
			name:       "raw body and explicit method and headers",
			spec:       &HTTP{Connection: "target", Path: "/x", Method: "put", Body: "plain text", Headers: map[string]string{"Content-Type": "text/plain", "X-Extra": "1"}},
			connHdr:    map[string]string{"X-Extra": "from-conn", "X-Conn": "c"},
			wantMethod: "PUT", wantPath: "/x", wantBody: "plain text",
			wantHeader: map[string]string{"Content-Type": "text/plain", "X-Extra": "1", "X-Conn": "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, `{"id":"T-1","n":3}`)
			})
			conn := httpConn(tg.URL)
			conn.HTTP.Headers = tt.connHdr
			res, err := Do(context.Background(), request(KindHTTP, tt.spec, conn), Env{})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			got := tg.only(t)
			if got.Method != tt.wantMethod || got.Path != tt.wantPath || got.Body != tt.wantBody {
				t.Errorf("got %s %s %q, want %s %s %q", got.Method, got.Path, got.Body, tt.wantMethod, tt.wantPath, tt.wantBody)
			}
			if tt.wantQuery != nil {
				if q, _ := url.ParseQuery(got.RawQuery); q.Encode() != tt.wantQuery.Encode() {
					t.Errorf("got query %q, want %q", q.Encode(), tt.wantQuery.Encode())
				}
			}
			want := map[string]string{"User-Agent": userAgent, "Idempotency-Key": "ev1:r:0"}
			for k, v := range tt.wantHeader {
				want[k] = v
			}
			for k, v := range want {
				if g := got.Header.Get(k); g != v {
					t.Errorf("got header %s %q, want %q", k, g, v)
				}
			}
			if res.Code != 201 || string(res.Body) != `{"id":"T-1","n":3}` {
				t.Errorf("got result %d %q, want 201 and the body", res.Code, res.Body)
			}
			if m, _ := res.JSON.(map[string]any); m["id"] != "T-1" {
				t.Errorf("got JSON %v, want id T-1", res.JSON)
			}
		})
	}
}

func TestHTTPStepFullURLAndExpect(t *testing.T) {
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "gone")
	})
	// A full url without a connection is strict: the test reaches the
	// loopback server only through the one-address hook.
	env := Env{Outbound: newOutbound(guard{allow: addrPort(t, tg.URL)})}
	spec := &HTTP{URL: tg.URL + "/hook?a=1", Expect: []int{404}}
	res, err := Do(context.Background(), request(KindHTTP, spec, nil), env)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := tg.only(t); got.Method != "GET" || got.Path != "/hook" || got.RawQuery != "a=1" {
		t.Errorf("got %s %s?%s, want GET /hook?a=1", got.Method, got.Path, got.RawQuery)
	}
	if res.Code != 404 || res.JSON != nil {
		t.Errorf("got %d %v, want 404 and no JSON", res.Code, res.JSON)
	}

	// Expecting 201 makes a 404 a permanent failure that names the body.
	spec.Expect = []int{201}
	_, err = Do(context.Background(), request(KindHTTP, spec, nil), env)
	se := stepErr(t, err)
	if se.Retryable || !strings.Contains(se.Error(), "unexpected status 404 Not Found: gone") {
		t.Errorf("got %v (retryable %v), want permanent unexpected status with body", se, se.Retryable)
	}
}

func TestHTTPStepBodyCap(t *testing.T) {
	big := strings.Repeat("x", MaxBody+100)
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { io.WriteString(w, `["`+big+`"]`) })
	res, err := Do(context.Background(), request(KindHTTP, &HTTP{Connection: "t"}, httpConn(tg.URL)), Env{})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(res.Body) != MaxBody || res.JSON != nil {
		t.Errorf("got body of %d bytes and JSON %T, want %d and none", len(res.Body), res.JSON, MaxBody)
	}
}

func TestSlackWebhookStep(t *testing.T) {
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { io.WriteString(w, "ok") })
	spec := &Slack{Connection: "slack", Text: "Urgent: <https://x|open> & more", ThreadTS: "123.456",
		Blocks: []any{map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": "*hi*"}}}}
	res, err := Do(context.Background(), request(KindSlack, spec, slackWebhookConn(tg.URL)), Env{})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	got := tg.only(t)
	if got.Method != "POST" || got.Path != "/services/T000/B000/XXXXsecretXXXX" {
		t.Errorf("got %s %s, want POST to the webhook path", got.Method, got.Path)
	}
	if got.Header.Get("User-Agent") != userAgent || got.Header.Get("Idempotency-Key") != "ev1:r:0" {
		t.Errorf("got User-Agent %q Idempotency-Key %q, want %q and ev1:r:0", got.Header.Get("User-Agent"), got.Header.Get("Idempotency-Key"), userAgent)
	}
	var msg struct {
		Text     string           `json:"text"`
		ThreadTS string           `json:"thread_ts"`
		Blocks   []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal([]byte(got.Body), &msg); err != nil {
		t.Fatalf("webhook body %q: %v", got.Body, err)
	}
	if msg.Text != spec.Text || msg.ThreadTS != "123.456" || len(msg.Blocks) != 1 || msg.Blocks[0]["type"] != "section" {
		t.Errorf("got message %+v, want text, thread_ts and one section block", msg)
	}
	if res.Code != 200 || string(res.Body) != "ok" {
		t.Errorf("got result %d %q, want 200 ok", res.Code, res.Body)
	}
}

func TestSlackBotStep(t *testing.T) {
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true,"channel":"C1","ts":"1700000000.000100","message":{"text":"hi"}}`)
	})
	spec := &Slack{Connection: "slack", Text: "hi", Channel: "#override",
		Blocks: []any{map[string]any{"type": "divider"}}}
	res, err := Do(context.Background(), request(KindSlack, spec, slackBotConn(tg.URL)), Env{})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	got := tg.only(t)
	form, _ := url.ParseQuery(got.Body)
	if got.Path != "/api/chat.postMessage" || form.Get("channel") != "#override" || form.Get("text") != "hi" ||
		form.Get("token") != "xoxb-123-secret-token" || form.Get("blocks") != `[{"type":"divider"}]` {
		t.Errorf("got %s %v, want chat.postMessage with channel, text, token and blocks", got.Path, form)
	}
	if got.Header.Get("User-Agent") != userAgent || got.Header.Get("Idempotency-Key") != "ev1:r:0" {
		t.Errorf("got User-Agent %q Idempotency-Key %q", got.Header.Get("User-Agent"), got.Header.Get("Idempotency-Key"))
	}
	if m, _ := res.JSON.(map[string]any); m["ts"] != "1700000000.000100" {
		t.Errorf("got JSON %v, want Slack's ts", res.JSON)
	}

	// Without a channel in the step, the connection's is used.
	spec.Channel = ""
	if _, err := Do(context.Background(), request(KindSlack, spec, slackBotConn(tg.URL)), Env{}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if form, _ := url.ParseQuery(tg.requests()[1].Body); form.Get("channel") != "#ops" {
		t.Errorf("got channel %q, want the connection's #ops", form.Get("channel"))
	}
}

func TestSlackErrors(t *testing.T) {
	tests := []struct {
		name          string
		bot           bool
		status        int
		header        map[string]string
		body          string
		wantErr       string
		wantRetry     bool
		wantRetryWait time.Duration
	}{
		{name: "ok false", bot: true, status: 200, body: `{"ok":false,"error":"channel_not_found"}`, wantErr: "slack: channel_not_found"},
		{name: "ok false rate limited", bot: true, status: 200, body: `{"ok":false,"error":"ratelimited"}`, wantErr: "slack: ratelimited", wantRetry: true},
		{name: "ok false rate_limited", bot: true, status: 200, body: `{"ok":false,"error":"rate_limited"}`, wantErr: "slack: rate_limited", wantRetry: true},
		{name: "ok false internal_error", bot: true, status: 200, body: `{"ok":false,"error":"internal_error"}`, wantErr: "slack: internal_error", wantRetry: true},
		{name: "ok false fatal_error", bot: true, status: 200, body: `{"ok":false,"error":"fatal_error"}`, wantErr: "slack: fatal_error", wantRetry: true},
		{name: "ok false service_unavailable", bot: true, status: 200, body: `{"ok":false,"error":"service_unavailable"}`, wantErr: "slack: service_unavailable", wantRetry: true},
		{name: "ok false request_timeout", bot: true, status: 200, body: `{"ok":false,"error":"request_timeout"}`, wantErr: "slack: request_timeout", wantRetry: true},
		{name: "ok false internal_error retry after", bot: true, status: 200, header: map[string]string{"Retry-After": "12"},
			body: `{"ok":false,"error":"internal_error"}`, wantErr: "slack: internal_error", wantRetry: true, wantRetryWait: 12 * time.Second},
		{name: "ok false invalid_auth", bot: true, status: 200, body: `{"ok":false,"error":"invalid_auth"}`, wantErr: "slack: invalid_auth"},
		{name: "ok false not_in_channel", bot: true, status: 200, body: `{"ok":false,"error":"not_in_channel"}`, wantErr: "slack: not_in_channel"},
		{name: "ok false is_archived", bot: true, status: 200, body: `{"ok":false,"error":"is_archived"}`, wantErr: "slack: is_archived"},
		{name: "ok false msg_too_long", bot: true, status: 200, body: `{"ok":false,"error":"msg_too_long"}`, wantErr: "slack: msg_too_long"},
		{name: "ok false unknown code", bot: true, status: 200, body: `{"ok":false,"error":"something_new"}`, wantErr: "slack: something_new"},
		{name: "bot 200 not JSON", bot: true, status: 200, body: `<html>captive portal</html>`, wantErr: "slack: bad response"},
		{name: "bot 429 retry after", bot: true, status: 429, header: map[string]string{"Retry-After": "30"}, body: `{"ok":false,"error":"ratelimited"}`,
			wantErr: "slack: rate limited, retry after 30s", wantRetry: true, wantRetryWait: 30 * time.Second},
		{name: "webhook 429 retry after", status: 429, header: map[string]string{"Retry-After": "7"}, wantErr: "rate limited", wantRetry: true, wantRetryWait: 7 * time.Second},
		{name: "webhook 429 retry after date", status: 429, header: map[string]string{"Retry-After": time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)},
			wantErr: "slack: HTTP 429", wantRetry: true, wantRetryWait: 89 * time.Second},
		{name: "webhook error code", status: 404, body: "channel_not_found", wantErr: "slack: channel_not_found (HTTP 404)"},
		{name: "webhook no_text", status: 400, body: "no_text", wantErr: "slack: no_text (HTTP 400)"},
		{name: "webhook 503", status: 503, body: "<html>down</html>", wantErr: "slack: HTTP 503 Service Unavailable", wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			conn := slackWebhookConn(tg.URL)
			if tt.bot {
				conn = slackBotConn(tg.URL)
			}
			_, err := Do(context.Background(), request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, conn), Env{})
			se := stepErr(t, err)
			if !strings.Contains(se.Error(), tt.wantErr) || se.Retryable != tt.wantRetry {
				t.Errorf("got %q retryable %v, want %q retryable %v", se.Error(), se.Retryable, tt.wantErr, tt.wantRetry)
			}
			// A date has whole seconds: the wait can be up to a second short.
			if tt.wantRetryWait > 0 && (se.RetryAfter < tt.wantRetryWait-time.Second || se.RetryAfter > tt.wantRetryWait+2*time.Second) {
				t.Errorf("got RetryAfter %s, want about %s", se.RetryAfter, tt.wantRetryWait)
			}
		})
	}
}

// TestSuccessWithCutBody: a target that answers and then stalls in its
// body is judged by its status, for every step kind. A 2xx has acted: the
// step succeeds with what was read (no JSON) instead of being sent again.
// A 4xx fails at once, however little of its body arrived; a 5xx, 408 or
// 429 is retried.
func TestSuccessWithCutBody(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	const part = `{"ok": true, "id": "T-`
	stall := func(code int) func(w http.ResponseWriter, r *http.Request, n int) {
		return func(w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}
	tests := []struct {
		code      int
		wantErr   bool
		wantRetry bool
	}{
		{code: 200},
		{code: 201},
		{code: 400, wantErr: true},
		{code: 401, wantErr: true},
		{code: 404, wantErr: true},
		{code: 422, wantErr: true},
		{code: 408, wantErr: true, wantRetry: true},
		{code: 429, wantErr: true, wantRetry: true},
		{code: 500, wantErr: true, wantRetry: true},
		{code: 503, wantErr: true, wantRetry: true},
	}
	for _, kind := range stepKinds {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%d", kind.name, tt.code), func(t *testing.T) {
				tg := newTarget(t, stall(tt.code))
				req := kind.build(tg.URL)
				req.Timeout = 100 * time.Millisecond
				res, err := Do(context.Background(), req, Env{})
				if res.Code != tt.code {
					t.Errorf("got code %d, want %d", res.Code, tt.code)
				}
				if n := len(tg.requests()); n != 1 {
					t.Errorf("target got %d requests, want 1", n)
				}
				if !tt.wantErr {
					if err != nil {
						t.Fatalf("got %v, want success", err)
					}
					// slack-go leaves the body of a 2xx other than 200
					// unread, so what was read may be less.
					if !strings.HasPrefix(part, string(res.Body)) || res.JSON != nil {
						t.Errorf("got body %q and JSON %v, want the part read and no JSON", res.Body, res.JSON)
					}
					return
				}
				se := stepErr(t, err)
				if se.Retryable != tt.wantRetry {
					t.Errorf("got %q retryable %v, want retryable %v", se, se.Retryable, tt.wantRetry)
				}
				if !strings.Contains(se.Error(), strconv.Itoa(tt.code)) {
					t.Errorf("got %q, want it to name the status %d", se, tt.code)
				}
			})
		}
	}
}

// TestSlackCutBody: a 200 whose body stops short is delivered on the
// incoming-webhook path, whatever was read, since the status says it all;
// on the bot path chat.postMessage answers 200 to failures too, so it is
// delivered only if what was read begins {"ok":true, and retried otherwise.
func TestSlackCutBody(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name      string
		bot       bool
		part      string
		wantRetry bool // else delivered
	}{
		{name: "webhook ok", part: "ok"},
		{name: "webhook nothing read", part: ""},
		{name: "webhook odd body", part: `{"ok":false`},
		{name: "bot ok", bot: true, part: `{"ok":true,"channel":"C1","ts":"1.`},
		{name: "bot ok with whitespace", bot: true, part: "\n{ \"ok\" :\ttrue ,\n \"channel\""},
		{name: "bot cut right after true", bot: true, part: `{"ok":true`},
		{name: "bot not ok", bot: true, part: `{"ok":false,"error":"channel_not_found"`, wantRetry: true},
		{name: "bot cut inside true", bot: true, part: `{"ok":tr`, wantRetry: true},
		{name: "bot cut before ok", bot: true, part: `{"o`, wantRetry: true},
		{name: "bot nothing read", bot: true, part: "", wantRetry: true},
		{name: "bot ok not first", bot: true, part: `{"channel":"C1","ok":true`, wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, tt.part)
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			conn := slackWebhookConn(tg.URL)
			if tt.bot {
				conn = slackBotConn(tg.URL)
			}
			req := request(KindSlack, &Slack{Connection: "slack", Text: "hi"}, conn)
			req.Timeout = 100 * time.Millisecond
			res, err := Do(context.Background(), req, Env{})
			if n := len(tg.requests()); n != 1 {
				t.Errorf("target got %d requests, want 1", n)
			}
			if res.Code != http.StatusOK {
				t.Errorf("got code %d, want 200", res.Code)
			}
			if !tt.wantRetry {
				if err != nil {
					t.Errorf("got %v, want delivered", err)
				}
				return
			}
			se := stepErr(t, err)
			if !se.Retryable {
				t.Errorf("got %q, not retryable, want a retry", se)
			}
		})
	}
}

func TestALOStep(t *testing.T) {
	tests := []struct {
		name      string
		spec      *ALO
		wantReq   string // method and path
		wantQuery string
		wantBody  map[string]any
	}{
		{
			name:     "post_message",
			spec:     &ALO{Connection: "alo", PostMessage: &ALOMessage{ChannelID: "chat.team.1", Content: "Ticket T-1 opened", UserID: "u1"}},
			wantReq:  "PUT /v1/channels/chat.team.1/chat_messages",
			wantBody: map[string]any{"content": "Ticket T-1 opened", "user_id": "u1"},
		},
		{
			name:     "post_direct_message",
			spec:     &ALO{Connection: "alo", PostDirectMessage: &ALOMessage{ChannelID: "chat.groupdm.2", Content: "hi", TersePushNotification: true}},
			wantReq:  "PUT /v1/direct_message_channels/chat.groupdm.2/chat_messages",
			wantBody: map[string]any{"content": "hi", "terse_push_notification": true},
		},
		{
			name:     "request",
			spec:     &ALO{Connection: "alo", Request: &ALORequest{Method: "post", Path: "/channels", JSON: map[string]any{"name": "ops"}}},
			wantReq:  "POST /v1/channels",
			wantBody: map[string]any{"name": "ops"},
		},
		{
			name:      "request GET with query",
			spec:      &ALO{Connection: "alo", Request: &ALORequest{Path: "/users", Query: map[string]string{"per_page": "100"}}},
			wantReq:   "GET /v1/users",
			wantQuery: "per_page=100",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { io.WriteString(w, `{"id":"m-1"}`) })
			res, err := Do(context.Background(), request(KindALO, tt.spec, aloConn(tg.URL)), Env{})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			got := tg.only(t)
			if g := got.Method + " " + got.Path; g != tt.wantReq || got.RawQuery != tt.wantQuery {
				t.Errorf("got %s?%s, want %s?%s", g, got.RawQuery, tt.wantReq, tt.wantQuery)
			}
			for k, want := range map[string]string{"Authorization": "Bearer alo-key-secret-123", "User-Agent": userAgent, "Idempotency-Key": "ev1:r:0"} {
				if g := got.Header.Get(k); g != want {
					t.Errorf("got %s %q, want %q", k, g, want)
				}
			}
			if tt.wantBody != nil {
				var body map[string]any
				if err := json.Unmarshal([]byte(got.Body), &body); err != nil {
					t.Fatalf("body %q: %v", got.Body, err)
				}
				gb, _ := json.Marshal(body)
				wb, _ := json.Marshal(tt.wantBody)
				if string(gb) != string(wb) {
					t.Errorf("got body %s, want %s", gb, wb)
				}
			}
			if m, _ := res.JSON.(map[string]any); res.Code != 200 || m["id"] != "m-1" {
				t.Errorf("got %d %v, want 200 with id m-1", res.Code, res.JSON)
			}
		})
	}
}

func TestALOErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantErr   string
		wantRetry bool
	}{
		{"message string", 422, `{"status":422,"message":"Validation failed: Name has already been taken"}`,
			"alo: alo api: status 422: Validation failed: Name has already been taken", false},
		{"message object", 422, `{"status":422,"message":{"error":"Invalid Channel User","invalid_user_id":"bogus-id"}}`,
			"alo: alo api: status 422: Invalid Channel User (invalid_user_id: bogus-id)", false},
		{"server error", 502, `<html>bad gateway</html>`, "alo: alo api: status 502", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			spec := &ALO{Connection: "alo", PostMessage: &ALOMessage{ChannelID: "c", Content: "x"}}
			res, err := Do(context.Background(), request(KindALO, spec, aloConn(tg.URL)), Env{})
			se := stepErr(t, err)
			if !strings.HasPrefix(se.Error(), tt.wantErr) || se.Retryable != tt.wantRetry {
				t.Errorf("got %q retryable %v, want %q retryable %v", se.Error(), se.Retryable, tt.wantErr, tt.wantRetry)
			}
			if res.Code != tt.status || string(res.Body) != tt.body {
				t.Errorf("got result %d %q, want %d and the body", res.Code, res.Body, tt.status)
			}
		})
	}

	// A path that leaves the API is refused before sending, for good.
	spec := &ALO{Connection: "alo", Request: &ALORequest{Path: "https://evil.example/x"}}
	_, err := Do(context.Background(), request(KindALO, spec, aloConn("http://127.0.0.1:1")), Env{})
	if se := stepErr(t, err); se.Retryable {
		t.Errorf("got retryable %v, want a permanent failure", se)
	}
}

func TestDoRejectsInvalidSpecs(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"unknown kind", Request{Kind: "fax", Spec: &HTTP{URL: "http://x"}}, `unknown step kind "fax"`},
		{"no spec", Request{Kind: KindHTTP}, "http: no spec"},
		{"wrong connection kind", request(KindSlack, &Slack{Connection: "t", Text: "x"}, httpConn("http://x")), "not a slack connection"},
		{"unresolved connection", request(KindHTTP, &HTTP{Connection: "tickets"}, nil), `connection "tickets" is not an http connection`},
		{"bad scheme", request(KindHTTP, &HTTP{URL: "file:///etc/passwd"}, nil), `scheme "file"`},
		{"bad blocks", request(KindSlack, &Slack{Connection: "s", Blocks: []any{map[string]any{"type": 3}}}, slackBotConn("http://x")), "slack: blocks"},
		{"bot without channel", request(KindSlack, &Slack{Connection: "s", Text: "x"}, &Connection{Slack: &SlackConn{Token: "xoxb-1"}}), "needs a channel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Do(context.Background(), tt.req, Env{})
			se := stepErr(t, err)
			if se.Retryable || !strings.Contains(se.Error(), tt.want) {
				t.Errorf("got %q retryable %v, want permanent %q", se.Error(), se.Retryable, tt.want)
			}
		})
	}
}

// TestRedactedJSONHidesSecretsJSONEscapes checks that a secret holding
// characters that JSON escapes (&, <, >, quote, backslash) is hidden in the
// recorded request too, not only in its plain spelling.
func TestRedactedJSONHidesSecretsJSONEscapes(t *testing.T) {
	tests := []struct{ name, secret string }{
		{"ampersand", "https://hooks.example.com/in?a=1&key=s3cr3t-amp"},
		{"angle brackets", "tok<s3cr3t-angle>"},
		{"quote and backslash", `tok"s3cr3t\quote`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{
				Kind:   "http",
				Spec:   &HTTP{URL: tt.secret, Method: "POST", JSON: map[string]any{"n": 1, "k": tt.secret}},
				Redact: alorules.NewRedactor(tt.secret),
			}
			got := req.RedactedJSON()
			if !json.Valid(got) {
				t.Fatalf("got invalid JSON %s", got)
			}
			if strings.Contains(string(got), "s3cr3t") {
				t.Errorf("got %s, want the secret redacted", got)
			}
			if !strings.Contains(string(got), alorules.Redacted) || !strings.Contains(string(got), `"n":1`) {
				t.Errorf("got %s, want the secret replaced by %s and other values kept", got, alorules.Redacted)
			}
		})
	}
}
