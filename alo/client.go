package alo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultBaseURL is the root of the ALO Platform API. ALO's docs only show it
// in an example request URL, so Client.BaseURL can override it.
const DefaultBaseURL = "https://api.alo.ai/v1"

// MaxResponseBytes caps how much of a response body the client reads, so a
// misbehaving server cannot make it buffer without bound.
const MaxResponseBytes = 1 << 20

// defaultHTTPClient bounds a call even when the caller's context has no
// deadline; callers that need more (an outbound guard, other timeouts) set
// Client.HTTP.
var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// Client calls the ALO Platform API. The zero value talks to DefaultBaseURL
// without credentials; a Client is safe for concurrent use if its HTTP client
// is.
//
// ALO has not published how the Platform API authenticates; the client sends
// "Authorization: <AuthScheme> <APIKey>" with AuthScheme defaulting to
// "Bearer", the scheme of ALO's auth service, and lets configuration change
// it. The key never appears in an error, and String hides it so a logged
// Client does not leak it.
type Client struct {
	BaseURL    string
	APIKey     string `json:"-"`
	AuthScheme string
	HTTP       *http.Client
	UserAgent  string
	// Redact, if set, hides the caller's other secrets (say, values sent
	// in the request that ALO may echo) in an APIError's text. It runs
	// before the text is capped: a secret cut in two by the cap could no
	// longer be recognised.
	Redact func(string) string `json:"-"`
}

// String describes the client without its API key.
func (c Client) String() string {
	key := ""
	if c.APIKey != "" {
		key = redacted
	}
	return fmt.Sprintf("alo.Client{BaseURL: %q, APIKey: %q, AuthScheme: %q, UserAgent: %q}",
		c.BaseURL, key, c.AuthScheme, c.UserAgent)
}

// GoString is String, so that %#v hides the key too.
func (c Client) GoString() string { return c.String() }

const redacted = "<secret>"

// Message is the body of a chat message post. Every field is optional to ALO:
// without UserID the message shows as sent by "System User"; with ParentID it
// is a comment on that message; TersePushNotification shows only the text in
// push notifications. Empty fields are left out of the JSON.
type Message struct {
	Content               string `json:"content,omitempty"`
	UserID                string `json:"user_id,omitempty"`
	ParentID              string `json:"parent_id,omitempty"`
	TersePushNotification bool   `json:"terse_push_notification,omitempty"`
}

// ErrIncompleteBody is returned, with the Response as far as it was read,
// when the API answered with a 2xx status but its body could not be read to
// the end (a timeout, a dropped connection). The request was carried out:
// sending it again may repeat it. Any other status is an *APIError whatever
// became of its body (APIError.Incomplete says so).
var ErrIncompleteBody = errors.New("response body incomplete")

// Response is an answer from the API. Body holds at most MaxResponseBytes;
// Truncated says the server sent more. A truncated success is still a
// success: the request took effect, and retrying it could post twice.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	Truncated  bool
}

// APIError is a non-2xx answer. ALO's errors are JSON {"status", "message"}
// where message is either a string or an object such as
// {"error": "Invalid Channel User", "invalid_user_id": "bogus-id"}. For an
// object, Message is its "error" (or "message") string and Detail the whole
// object; a body of any other shape becomes Message as capped plain text.
// RetryAfter comes from the Retry-After header (seconds or an HTTP date), zero
// when absent. Incomplete says the body could not be read to the end (a
// timeout, a dropped connection): Message and Detail come from the part read
// if it was whole JSON, else Message is the status's name.
type APIError struct {
	StatusCode int
	Message    string
	Detail     map[string]any
	RetryAfter time.Duration
	Incomplete bool
}

// Error reads like "alo api: status 422: Invalid Channel User
// (invalid_user_id: bogus-id)".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "alo api: status %d", e.StatusCode)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if extra := e.detailText(); extra != "" {
		b.WriteString(" (")
		b.WriteString(extra)
		b.WriteString(")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Incomplete {
		b.WriteString(" (response body cut short)")
	}
	return b.String()
}

// detailText lists the Detail fields not already shown as Message.
func (e *APIError) detailText() string {
	keys := make([]string, 0, len(e.Detail))
	for k, v := range e.Detail {
		if s, ok := v.(string); ok && s == e.Message {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := e.Detail[k]
		s, ok := v.(string)
		if !ok {
			j, err := json.Marshal(v)
			if err != nil {
				continue
			}
			s = string(j)
		}
		parts = append(parts, k+": "+s)
	}
	return capText(strings.Join(parts, ", "), 256)
}

// PostMessage posts a chat message to a team channel:
// PUT /channels/{channel_id}/chat_messages. ALO answers 200 with the new
// message's id in the body.
func (c *Client) PostMessage(ctx context.Context, channelID string, m Message) (*Response, error) {
	return c.postMessage(ctx, "channels", channelID, m)
}

// PostDirectMessage posts a chat message to a direct message channel:
// PUT /direct_message_channels/{channel_id}/chat_messages.
func (c *Client) PostDirectMessage(ctx context.Context, channelID string, m Message) (*Response, error) {
	return c.postMessage(ctx, "direct_message_channels", channelID, m)
}

func (c *Client) postMessage(ctx context.Context, collection, channelID string, m Message) (*Response, error) {
	if channelID == "" {
		return nil, errors.New("alo api: post message: empty channel id")
	}
	// Escaping keeps a "/" or "?" in an id inside its path segment.
	return c.Do(ctx, http.MethodPut, "/"+collection+"/"+url.PathEscape(channelID)+"/chat_messages", nil, m)
}

// Do calls any endpoint. path is relative to the base URL, already escaped
// (use url.PathEscape on inserted values), and may carry a query that is
// merged with query. Absolute URLs, fragments and "." or ".." segments (also
// escaped ones such as %2e%2e or ..%2F) are refused, so a path rendered from
// event data cannot leave the API's host or base path.
//
// body, when not nil, is sent as JSON: json.RawMessage and []byte are sent as
// they are (they must be valid JSON), anything else is marshalled.
//
// On a 2xx answer Do returns the Response, with ErrIncompleteBody if its body
// was cut short. On any other status it returns the Response and an
// *APIError, so callers can both inspect the error and keep the body; the
// status decides, not whether the body arrived whole. Transport errors are wrapped and unwrap to the context's error on
// cancellation.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) (*Response, error) {
	u, err := c.endpoint(path, query)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := encodeJSON(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("alo api: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.APIKey != "" {
		scheme := c.AuthScheme
		if scheme == "" {
			scheme = "Bearer"
		}
		// Checked here so the error can say what is wrong without net/http
		// having to reject the header later.
		if !validHeaderValue(c.APIKey) || !validHeaderValue(scheme) {
			return nil, errors.New("alo api: API key or auth scheme contains characters not allowed in an HTTP header")
		}
		req.Header.Set("Authorization", scheme+" "+c.APIKey)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}

	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("alo api: %w", err)
	}
	defer resp.Body.Close()
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	r := &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: data}
	if len(data) > MaxResponseBytes {
		r.Body, r.Truncated = data[:MaxResponseBytes], true
	}
	if readErr != nil {
		r.Truncated = true
	}
	// The status decides first: a refusal stays a refusal (and a 503 a
	// 503) however much of its body arrived.
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return r, c.apiError(r, time.Now(), readErr != nil)
	}
	if readErr != nil {
		// The status line arrived, so the request was carried out as
		// far as it says; the caller decides what a cut body means.
		return r, fmt.Errorf("alo api: %s %s: read response: %w: %w", method, u.Path, ErrIncompleteBody, readErr)
	}
	return r, nil
}

// endpoint joins path and query onto the base URL, refusing anything that
// could point elsewhere.
func (c *Client) endpoint(path string, query url.Values) (*url.URL, error) {
	base := c.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	bu, err := url.Parse(base)
	if err != nil || (bu.Scheme != "http" && bu.Scheme != "https") || bu.Host == "" {
		// The base URL is not echoed: it could hold credentials.
		return nil, errors.New("alo api: base URL must be an absolute http or https URL")
	}
	ref, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("alo api: invalid path: %w", err)
	}
	if ref.Scheme != "" || ref.Host != "" || ref.User != nil || ref.Opaque != "" || strings.HasPrefix(path, "//") {
		return nil, fmt.Errorf("alo api: path %q is an absolute URL; give a path relative to the base URL", capText(path, 200))
	}
	if ref.Fragment != "" || strings.Contains(path, "#") {
		return nil, fmt.Errorf("alo api: path %q has a fragment; escape the value with url.PathEscape", capText(path, 200))
	}
	// ref.Path is unescaped, so ..%2F and %2e%2e show up here as segments.
	for _, seg := range strings.FieldsFunc(ref.Path, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("alo api: path %q has a %q segment", capText(path, 200), seg)
		}
	}

	escaped := bu.EscapedPath()
	if rel := strings.TrimLeft(ref.EscapedPath(), "/"); rel != "" {
		escaped = strings.TrimRight(escaped, "/") + "/" + rel
	}
	unescaped, err := url.PathUnescape(escaped)
	if err != nil {
		return nil, fmt.Errorf("alo api: invalid path %q", capText(path, 200))
	}
	u := &url.URL{Scheme: bu.Scheme, User: bu.User, Host: bu.Host, Path: unescaped, RawPath: escaped}

	q := bu.Query()
	for k, vs := range ref.Query() {
		q[k] = append(q[k], vs...)
	}
	for k, vs := range query {
		q[k] = append(q[k], vs...)
	}
	u.RawQuery = q.Encode()
	return u, nil
}

func encodeJSON(body any) ([]byte, error) {
	switch b := body.(type) {
	case json.RawMessage:
		return validJSON(b)
	case []byte:
		return validJSON(b)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Send text as written: ALO decodes \u003c and "<" alike, and people
	// reading the request in logs or a test server should see "<".
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return nil, fmt.Errorf("alo api: encode body: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func validJSON(b []byte) ([]byte, error) {
	if !json.Valid(b) {
		return nil, errors.New("alo api: body is not valid JSON")
	}
	return b, nil
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// apiError decodes ALO's error body; the API key is scrubbed from everything
// that ends up in the error, in case a server echoes the request's headers.
// incomplete says the body stopped before its end.
func (c *Client) apiError(r *Response, now time.Time, incomplete bool) *APIError {
	e := &APIError{
		StatusCode: r.StatusCode,
		RetryAfter: ParseRetryAfter(r.Header.Get("Retry-After"), now),
		Incomplete: incomplete,
	}
	e.Message, e.Detail = decodeErrorBody(r.Body)
	if e.Message == "" && e.Detail == nil && !incomplete {
		// Not shown as text when it stopped short: it may stop in the
		// middle of a secret, which no redaction would recognise.
		e.Message = strings.Join(strings.Fields(strings.ToValidUTF8(string(r.Body), "\uFFFD")), " ")
	}
	hide := func(s string) string {
		if c.APIKey != "" {
			s = strings.ReplaceAll(s, c.APIKey, redacted)
		}
		if c.Redact != nil {
			s = c.Redact(s)
		}
		return s
	}
	e.Message = hide(e.Message)
	if e.Detail != nil {
		e.Detail = scrub(e.Detail, hide).(map[string]any)
	}
	// Capped only now: a secret cut in two by the cap would not be found.
	e.Message = capText(e.Message, 512)
	if e.Message == "" {
		e.Message = http.StatusText(r.StatusCode)
	}
	return e
}

// decodeErrorBody reads {"status": ..., "message": "..." | {...}}; it also
// takes a top-level {"error": "..."}, which Rails-style APIs send. It returns
// zero values for any other shape. The message is not capped yet.
func decodeErrorBody(b []byte) (string, map[string]any) {
	var env map[string]json.RawMessage
	if json.Unmarshal(b, &env) != nil {
		return "", nil
	}
	if raw, ok := env["message"]; ok {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, nil
		}
		var m map[string]any
		if json.Unmarshal(raw, &m) == nil && m != nil {
			for _, k := range []string{"error", "message"} {
				if s, ok := m[k].(string); ok {
					return s, m
				}
			}
			return "", m
		}
	}
	if raw, ok := env["error"]; ok {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, nil
		}
	}
	return "", nil
}

func scrub(v any, hide func(string) string) any {
	switch x := v.(type) {
	case string:
		return hide(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[hide(k)] = scrub(val, hide)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = scrub(val, hide)
		}
		return out
	}
	return v
}

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// relative to now. Anything else, and a date in the past, is zero.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > math.MaxInt64/int64(time.Second) {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// capText shortens s to at most n bytes on a rune boundary.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
