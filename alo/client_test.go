package alo_test

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
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"alorules/alo"
)

const testKey = "sk-live-7Hq2ZxSECRET"

// received is what the fake ALO saw of one request.
type received struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fakeALO records every request and answers with reply.
type fakeALO struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []received
	reply func(w http.ResponseWriter, r *http.Request)
}

func newFakeALO(t *testing.T, reply func(w http.ResponseWriter, r *http.Request)) *fakeALO {
	t.Helper()
	f := &fakeALO{reply: reply}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, received{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), body})
		f.mu.Unlock()
		if f.reply == nil {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg-1"}`)
			return
		}
		f.reply(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeALO) requests() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *fakeALO) client() *alo.Client {
	return &alo.Client{BaseURL: f.URL + "/v1", APIKey: testKey, HTTP: f.Client(), UserAgent: "alorules-test/1"}
}

func TestPostMessage(t *testing.T) {
	tests := []struct {
		name     string
		scheme   string
		direct   bool
		channel  string
		msg      alo.Message
		wantPath string
		wantAuth string
		wantBody string
	}{
		{
			name: "team channel, default scheme", channel: "chat.team.1b2c",
			msg:      alo.Message{Content: "Hello ĀLO <b>&", UserID: "u-1"},
			wantPath: "/v1/channels/chat.team.1b2c/chat_messages",
			wantAuth: "Bearer " + testKey,
			wantBody: `{"content":"Hello ĀLO <b>&","user_id":"u-1"}`,
		},
		{
			name: "direct channel, custom scheme, every field", scheme: "Token", direct: true, channel: "chat.groupdm.9f",
			msg:      alo.Message{Content: "hi", UserID: "u-2", ParentID: "m-0", TersePushNotification: true},
			wantPath: "/v1/direct_message_channels/chat.groupdm.9f/chat_messages",
			wantAuth: "Token " + testKey,
			wantBody: `{"content":"hi","user_id":"u-2","parent_id":"m-0","terse_push_notification":true}`,
		},
		{
			name: "empty message", channel: "c1",
			wantPath: "/v1/channels/c1/chat_messages",
			wantAuth: "Bearer " + testKey,
			wantBody: `{}`,
		},
		{
			name: "slash and question mark stay in the segment", channel: "a/b?c=d#e",
			wantPath: "/v1/channels/a%2Fb%3Fc=d%23e/chat_messages",
			wantAuth: "Bearer " + testKey,
			wantBody: `{}`,
		},
		{
			name: "percent and space are escaped", direct: true, channel: "50% off",
			wantPath: "/v1/direct_message_channels/50%25%20off/chat_messages",
			wantAuth: "Bearer " + testKey,
			wantBody: `{}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, nil)
			c := f.client()
			c.AuthScheme = tc.scheme
			post := c.PostMessage
			if tc.direct {
				post = c.PostDirectMessage
			}
			resp, err := post(context.Background(), tc.channel, tc.msg)
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if resp.StatusCode != 200 || string(resp.Body) != `{"id":"msg-1"}` || resp.Truncated {
				t.Errorf("got response %d %q truncated=%v, want 200 {\"id\":\"msg-1\"}", resp.StatusCode, resp.Body, resp.Truncated)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			checks := []struct{ what, got, want string }{
				{"method", r.Method, http.MethodPut},
				{"path", r.Path, tc.wantPath},
				{"query", r.Query, ""},
				{"Authorization", r.Header.Get("Authorization"), tc.wantAuth},
				{"Content-Type", r.Header.Get("Content-Type"), "application/json"},
				{"Accept", r.Header.Get("Accept"), "application/json"},
				{"User-Agent", r.Header.Get("User-Agent"), "alorules-test/1"},
				{"body", string(r.Body), tc.wantBody},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestPostMessageEmptyChannel(t *testing.T) {
	f := newFakeALO(t, nil)
	_, err := f.client().PostMessage(context.Background(), "", alo.Message{Content: "x"})
	if err == nil || !strings.Contains(err.Error(), "empty channel id") {
		t.Errorf("got %v, want an empty channel id error", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("got %d requests, want 0", n)
	}
}

func TestDo(t *testing.T) {
	tests := []struct {
		name      string
		base      string // appended to the server URL
		method    string
		path      string
		query     url.Values
		body      any
		wantPath  string
		wantQuery string
		wantBody  string
	}{
		{
			name: "get with query", base: "/v1", method: http.MethodGet, path: "/channels",
			query:     url.Values{"page": {"2"}, "name[]": {"a b", "c&d"}},
			wantPath:  "/v1/channels",
			wantQuery: "name%5B%5D=a+b&name%5B%5D=c%26d&page=2",
		},
		{
			name: "query in path merged with query", base: "/v1", method: http.MethodGet, path: "/channels?include_users=true&page=1",
			query:     url.Values{"page": {"3"}},
			wantPath:  "/v1/channels",
			wantQuery: "include_users=true&page=1&page=3",
		},
		{
			name: "post with marshalled body", base: "/v1", method: http.MethodPost, path: "/groups/g-1",
			body:     map[string]any{"name": "Ops <night>", "users": []map[string]string{{"id": "u1"}}},
			wantPath: "/v1/groups/g-1",
			wantBody: `{"name":"Ops <night>","users":[{"id":"u1"}]}`,
		},
		{
			name: "raw JSON body sent as is", base: "/v1", method: http.MethodPut, path: "/channels/c1/users",
			body:     json.RawMessage(`{"id": "u9"}`),
			wantPath: "/v1/channels/c1/users",
			wantBody: `{"id": "u9"}`,
		},
		{
			name: "byte slice body sent as is", base: "/v1", method: http.MethodPut, path: "/channels/c1/users",
			body:     []byte(`{"id":"u8"}`),
			wantPath: "/v1/channels/c1/users",
			wantBody: `{"id":"u8"}`,
		},
		{
			name: "trailing slash on base, relative path", base: "/v1/", method: http.MethodDelete, path: "groups/g-2",
			wantPath: "/v1/groups/g-2",
		},
		{
			name: "escaped segment kept", base: "/v1", method: http.MethodGet, path: "/periods/" + url.PathEscape("p/1") + "/actions",
			query:     url.Values{"form_fields": {`["department","budget"]`}},
			wantPath:  "/v1/periods/p%2F1/actions",
			wantQuery: "form_fields=%5B%22department%22%2C%22budget%22%5D",
		},
		{
			name: "base without a path", base: "", method: http.MethodGet, path: "/task_types",
			wantPath: "/task_types",
		},
		{
			name: "query on the base URL kept", base: "/v1?tenant=t1", method: http.MethodGet, path: "/users",
			query:     url.Values{"per_page": {"100"}},
			wantPath:  "/v1/users",
			wantQuery: "per_page=100&tenant=t1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, nil)
			c := f.client()
			c.BaseURL = f.URL + tc.base
			if _, err := c.Do(context.Background(), tc.method, tc.path, tc.query, tc.body); err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			wantCT := ""
			if tc.body != nil {
				wantCT = "application/json"
			}
			checks := []struct{ what, got, want string }{
				{"method", r.Method, tc.method},
				{"path", r.Path, tc.wantPath},
				{"query", r.Query, tc.wantQuery},
				{"body", string(r.Body), tc.wantBody},
				{"Content-Type", r.Header.Get("Content-Type"), wantCT},
				{"Authorization", r.Header.Get("Authorization"), "Bearer " + testKey},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestDoWithoutKeyOrUserAgent(t *testing.T) {
	f := newFakeALO(t, nil)
	c := &alo.Client{BaseURL: f.URL, HTTP: f.Client()}
	if _, err := c.Do(context.Background(), http.MethodGet, "/channels", nil, nil); err != nil {
		t.Fatalf("got error %v, want nil", err)
	}
	r := f.requests()[0]
	if got := r.Header.Get("Authorization"); got != "" {
		t.Errorf("Authorization: got %q, want none", got)
	}
	if got := r.Header.Get("User-Agent"); !strings.HasPrefix(got, "Go-http-client/") {
		t.Errorf("User-Agent: got %q, want Go's default", got)
	}
}

// roundTripFunc lets a test see the URL the client builds without a network.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDefaultBaseURL(t *testing.T) {
	var got string
	c := &alo.Client{APIKey: testKey, HTTP: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.URL.String()
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
	})}}
	if _, err := c.PostMessage(context.Background(), "chat.team.1", alo.Message{Content: "x"}); err != nil {
		t.Fatalf("got error %v, want nil", err)
	}
	if want := alo.DefaultBaseURL + "/channels/chat.team.1/chat_messages"; got != want {
		t.Errorf("got URL %q, want %q", got, want)
	}
}

func TestDoRefusesEscapingPaths(t *testing.T) {
	tests := []struct {
		name string
		call func(*alo.Client) error
		want string
	}{
		{"absolute https URL", doPath("https://evil.example/v1/channels"), "absolute URL"},
		{"absolute http URL with key-looking user", doPath("http://user:pw@evil.example/"), "absolute URL"},
		{"scheme-relative URL", doPath("//evil.example/channels"), "absolute URL"},
		{"other scheme", doPath("file:///etc/passwd"), "absolute URL"},
		{"dot dot segment", doPath("/channels/../../admin"), `".." segment`},
		{"bare dot dot", doPath(".."), `".." segment`},
		{"dot segment", doPath("/channels/./c1"), `"." segment`},
		{"escaped dot dot", doPath("/channels/%2e%2e/admin"), `".." segment`},
		{"dot dot hidden behind escaped slash", doPath("/channels/..%2Fadmin"), `".." segment`},
		{"backslash dot dot", doPath(`/channels\..\admin`), `".." segment`},
		{"fragment", doPath("/channels#x"), "fragment"},
		{"bad escape", doPath("/channels/%zz"), "invalid path"},
		{"control character", doPath("/channels/\n"), "invalid path"},
		{"channel id dot dot", postTo(".."), `".." segment`},
		{"channel id climbing out", postTo("../../admin"), `".." segment`},
		{"channel id dot", postTo("."), `"." segment`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, nil)
			err := tc.call(f.client())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("got %q, want it without the API key", err)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("got %d requests, want 0", n)
			}
		})
	}
}

func doPath(p string) func(*alo.Client) error {
	return func(c *alo.Client) error {
		_, err := c.Do(context.Background(), http.MethodGet, p, nil, nil)
		return err
	}
}

func postTo(channel string) func(*alo.Client) error {
	return func(c *alo.Client) error {
		_, err := c.PostMessage(context.Background(), channel, alo.Message{Content: "x"})
		return err
	}
}

func TestBadBaseURL(t *testing.T) {
	for _, base := range []string{"ftp://api.alo.ai/v1", "api.alo.ai/v1", "/v1", "https://", "http://a b/"} {
		c := &alo.Client{BaseURL: base, APIKey: testKey}
		_, err := c.Do(context.Background(), http.MethodGet, "/channels", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "base URL") {
			t.Errorf("base %q: got %v, want a base URL error", base, err)
		}
	}
}

func TestBadBody(t *testing.T) {
	f := newFakeALO(t, nil)
	c := f.client()
	for name, body := range map[string]any{
		"invalid raw JSON": json.RawMessage(`{"id":`),
		"invalid bytes":    []byte("not json"),
		"unmarshallable":   map[string]any{"f": func() {}},
	} {
		if _, err := c.Do(context.Background(), http.MethodPost, "/groups", nil, body); err == nil {
			t.Errorf("%s: got nil error, want one", name)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("got %d requests, want 0", n)
	}
}

func TestAPIError(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantMsg    string
		wantDetail map[string]any
		wantErr    string // exact Error(), when set
		wantRetry  [2]time.Duration
	}{
		{
			name: "string message", status: 422,
			body:    `{"status":422,"message":"Validation failed: Name has already been taken"}`,
			wantMsg: "Validation failed: Name has already been taken",
			wantErr: "alo api: status 422: Validation failed: Name has already been taken",
		},
		{
			name: "object message", status: 422,
			body:       `{"status":422,"message":{"error":"Invalid Channel User","invalid_user_id":"bogus-id"}}`,
			wantMsg:    "Invalid Channel User",
			wantDetail: map[string]any{"error": "Invalid Channel User", "invalid_user_id": "bogus-id"},
			wantErr:    "alo api: status 422: Invalid Channel User (invalid_user_id: bogus-id)",
		},
		{
			name: "object message without error key", status: 400,
			body:       `{"status":400,"message":{"period_id":["is invalid"],"code":7}}`,
			wantMsg:    "Bad Request",
			wantDetail: map[string]any{"period_id": []any{"is invalid"}, "code": float64(7)},
			wantErr:    `alo api: status 400: Bad Request (code: 7, period_id: ["is invalid"])`,
		},
		{
			name: "only error key", status: 404,
			body:    `{"error":"Not found"}`,
			wantMsg: "Not found",
		},
		{
			name: "not JSON", status: 502,
			body:    "<html>\n<body>Bad   gateway</body>\n</html>\n",
			wantMsg: "<html> <body>Bad gateway</body> </html>",
			wantErr: "alo api: status 502: <html> <body>Bad gateway</body> </html>",
		},
		{
			name: "JSON of another shape", status: 500,
			body:    `{"foo":1}`,
			wantMsg: `{"foo":1}`,
		},
		{
			name: "numeric message", status: 500,
			body:    `{"status":500,"message":42}`,
			wantMsg: `{"status":500,"message":42}`,
		},
		{
			name: "empty body", status: 404,
			wantMsg: "Not Found",
			wantErr: "alo api: status 404: Not Found",
		},
		{
			name: "retry after seconds", status: 429,
			header:    map[string]string{"Retry-After": "120"},
			body:      `{"status":429,"message":"Too many requests"}`,
			wantMsg:   "Too many requests",
			wantErr:   "alo api: status 429: Too many requests, retry after 2m0s",
			wantRetry: [2]time.Duration{120 * time.Second, 120 * time.Second},
		},
		{
			name: "retry after date", status: 503,
			header:    map[string]string{"Retry-After": time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)},
			wantMsg:   "Service Unavailable",
			wantRetry: [2]time.Duration{100 * time.Second, 120 * time.Second},
		},
		{
			name: "retry after date in the past", status: 503,
			header:  map[string]string{"Retry-After": time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)},
			wantMsg: "Service Unavailable",
		},
		{
			name: "retry after garbage", status: 503,
			header:  map[string]string{"Retry-After": "soon"},
			wantMsg: "Service Unavailable",
		},
		{
			name: "retry after negative", status: 429,
			header:  map[string]string{"Retry-After": "-5"},
			wantMsg: "Too Many Requests",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			resp, err := f.client().PostMessage(context.Background(), "c1", alo.Message{Content: "x"})
			var ae *alo.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got error %T %v, want *alo.APIError", err, err)
			}
			if resp == nil || resp.StatusCode != tc.status || string(resp.Body) != tc.body {
				t.Errorf("got response %+v, want status %d and the body alongside the error", resp, tc.status)
			}
			if ae.StatusCode != tc.status {
				t.Errorf("StatusCode: got %d, want %d", ae.StatusCode, tc.status)
			}
			if ae.Message != tc.wantMsg {
				t.Errorf("Message: got %q, want %q", ae.Message, tc.wantMsg)
			}
			if !reflect.DeepEqual(ae.Detail, tc.wantDetail) {
				t.Errorf("Detail: got %#v, want %#v", ae.Detail, tc.wantDetail)
			}
			if tc.wantErr != "" && ae.Error() != tc.wantErr {
				t.Errorf("Error(): got %q, want %q", ae.Error(), tc.wantErr)
			}
			if ae.RetryAfter < tc.wantRetry[0] || ae.RetryAfter > tc.wantRetry[1] {
				t.Errorf("RetryAfter: got %s, want between %s and %s", ae.RetryAfter, tc.wantRetry[0], tc.wantRetry[1])
			}
		})
	}
}

func TestLargeBodies(t *testing.T) {
	big := bytes.Repeat([]byte("x"), alo.MaxResponseBytes+10)
	tests := []struct {
		name   string
		status int
	}{
		{"success is kept, truncated", 200},
		{"error message is capped", 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write(big)
			})
			resp, err := f.client().Do(context.Background(), http.MethodGet, "/channels", nil, nil)
			if resp == nil {
				t.Fatalf("got no response (err %v), want one", err)
			}
			if len(resp.Body) != alo.MaxResponseBytes || !resp.Truncated {
				t.Errorf("got %d bytes, truncated=%v; want %d, true", len(resp.Body), resp.Truncated, alo.MaxResponseBytes)
			}
			if tc.status == 200 {
				if err != nil {
					t.Errorf("got error %v, want nil", err)
				}
				return
			}
			if err == nil || len(err.Error()) > 600 {
				t.Errorf("got error of %d bytes, want a short one", len(fmt.Sprint(err)))
			}
		})
	}
}

// TestKeyNeverInErrors covers every way an error is made, including a server
// that echoes the request's credentials back.
func TestKeyNeverInErrors(t *testing.T) {
	echo := func(shape string) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			w.WriteHeader(http.StatusUnauthorized)
			switch shape {
			case "string":
				json.NewEncoder(w).Encode(map[string]any{"status": 401, "message": "bad credentials: " + auth})
			case "across the cap":
				// The key crosses the 512-byte cap on the message.
				json.NewEncoder(w).Encode(map[string]any{"status": 401, "message": strings.Repeat("x", 495) + auth + strings.Repeat("y", 100)})
			case "object":
				json.NewEncoder(w).Encode(map[string]any{"status": 401, "message": map[string]any{
					"error": "bad key " + auth, "got": auth, "nested": []any{map[string]any{auth: auth}},
				}})
			default:
				io.WriteString(w, "denied for "+auth)
			}
		}
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name  string
		reply func(w http.ResponseWriter, r *http.Request)
		setup func(c *alo.Client)
	}{
		{name: "echo in string message", reply: echo("string")},
		{name: "echo in object message", reply: echo("object")},
		{name: "echo in plain text", reply: echo("text")},
		{name: "echo across the cap", reply: echo("across the cap")},
		{name: "connection refused", setup: func(c *alo.Client) { c.BaseURL = closed.URL }},
		{name: "key with a newline", setup: func(c *alo.Client) { c.APIKey = testKey + "\r\nX-Evil: 1" }},
		{name: "scheme with a newline", setup: func(c *alo.Client) { c.AuthScheme = "Bearer\n" }},
		{name: "bad base URL holding the key", setup: func(c *alo.Client) { c.BaseURL = "ftp://" + testKey + "@x/" }},
		{name: "cancelled", setup: func(c *alo.Client) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeALO(t, tc.reply)
			c := f.client()
			if tc.setup != nil {
				tc.setup(c)
			}
			ctx := context.Background()
			if tc.name == "cancelled" {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				cancel()
			}
			_, err := c.PostMessage(ctx, "c1", alo.Message{Content: "x"})
			if err == nil {
				t.Fatalf("got nil error, want one")
			}
			msgs := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
			var ae *alo.APIError
			if errors.As(err, &ae) {
				d, _ := json.Marshal(ae.Detail)
				msgs = append(msgs, ae.Message, string(d))
			}
			for _, m := range msgs {
				// Its beginning alone is a leak too.
				if strings.Contains(m, "SECRET") || strings.Contains(m, testKey[:8]) {
					t.Errorf("got %q, want it without the API key", m)
				}
			}
		})
	}
}

// TestCutBody: an answer whose body stops halfway (the server stalls past
// the caller's deadline) is judged by its status first. A 2xx was carried
// out and comes back with ErrIncompleteBody; any other status is the
// *APIError it would have been with its whole body, marked Incomplete.
func TestCutBody(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	const part = `{"status":4`
	for _, status := range []int{200, 201, 400, 401, 404, 408, 422, 429, 500, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			f := newFakeALO(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				io.WriteString(w, part)
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			resp, err := f.client().PostMessage(ctx, "c1", alo.Message{Content: "x"})
			if resp == nil || resp.StatusCode != status || string(resp.Body) != part || !resp.Truncated {
				t.Fatalf("got response %+v, want status %d with the part read, truncated", resp, status)
			}
			var ae *alo.APIError
			if status/100 == 2 {
				if !errors.Is(err, alo.ErrIncompleteBody) || errors.As(err, &ae) {
					t.Errorf("got %v, want ErrIncompleteBody", err)
				}
				return
			}
			if !errors.As(err, &ae) || errors.Is(err, alo.ErrIncompleteBody) {
				t.Fatalf("got %T %v, want *alo.APIError and not ErrIncompleteBody", err, err)
			}
			if ae.StatusCode != status || !ae.Incomplete || !strings.HasSuffix(ae.Error(), "(response body cut short)") {
				t.Errorf("got %q (status %d, incomplete %v), want status %d, incomplete", ae, ae.StatusCode, ae.Incomplete, status)
			}
			// Half a body is not shown as text: it may stop inside a secret.
			if ae.Message != http.StatusText(status) {
				t.Errorf("got message %q, want %q", ae.Message, http.StatusText(status))
			}
		})
	}
}

func TestContextCancel(t *testing.T) {
	f := newFakeALO(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.client().PostMessage(ctx, "c1", alo.Message{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func TestClientHidesKey(t *testing.T) {
	c := alo.Client{BaseURL: "https://api.example/v1", APIKey: testKey, AuthScheme: "Bearer"}
	//lint:ignore SA1026 HTTP is nil here, as in a logged config; the test proves the key is left out.
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(&c), string(j)} {
		if strings.Contains(s, testKey) {
			t.Errorf("got %q, want it without the API key", s)
		}
	}
	if got, want := c.String(), `alo.Client{BaseURL: "https://api.example/v1", APIKey: "<secret>", AuthScheme: "Bearer", UserAgent: ""}`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
