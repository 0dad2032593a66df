package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"alorules"
)

// MaxBody is how much of a response body a step keeps: enough for the
// JSON that later steps read as steps.<id>.json, small enough to store
// with every execution.
const MaxBody = 64 << 10

// readLimit is how much of a response body a step reads: a little more
// than it keeps, so that a secret echoed across the MaxBody mark is read
// whole and replaced before the body is cut (keepBody).
const readLimit = MaxBody + 4<<10

// DefaultTimeout bounds one attempt of a step when neither the step nor
// the execution sets a timeout.
const DefaultTimeout = 10 * time.Second

// Result is what the target answered. Do fills it as far as the target
// answered, also when it returns an error, so that a failed attempt still
// records its status code and body.
type Result struct {
	Code int
	// Body is the response body, at most MaxBody bytes, with the
	// request's secrets replaced by <secret>.
	Body []byte
	// JSON is Body decoded, when Body is complete, valid JSON.
	JSON any
}

// Env is what sending a step needs from its surroundings.
type Env struct {
	// Outbound holds the guarded HTTP clients; nil uses a shared default.
	Outbound *Outbound
	// UserAgent is sent with every request; "" means alorules/<Version>.
	UserAgent string
	// Now reads the clock for Retry-After dates; nil means time.Now.
	Now func() time.Time
}

func (e Env) userAgent() string {
	if e.UserAgent != "" {
		return e.UserAgent
	}
	return "alorules/" + alorules.Version
}

func (e Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e Env) client(conn *Connection) *http.Client {
	return e.Outbound.Client(conn != nil && conn.AllowPrivate)
}

// Do sends one rendered step and waits for the answer, within the step's
// timeout. A failure is a *StepError that says whether to retry. No error
// message contains the rule set's or the connection's secrets.
func Do(ctx context.Context, req Request, env Env) (Result, error) {
	return send(ctx, req, env, secretsFor(req))
}

// send is Do with req's secrets (secretsFor) built by the caller, which
// uses them too: building them costs a replacer per attempt.
func send(ctx context.Context, req Request, env Env, sc secrets) (Result, error) {
	timeout := StepTimeout(req, 0)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		res Result
		se  *StepError
	)
	switch spec := req.Spec.(type) {
	case nil:
		se = permanent(fmt.Errorf("%s: no spec", req.Kind))
	case *HTTP:
		if se = checkSpec(req, KindHTTP); se == nil {
			res, se = doHTTP(ctx, timeout, req, spec, env, sc)
		}
	case *Slack:
		if se = checkSpec(req, KindSlack); se == nil {
			res, se = doSlack(ctx, timeout, req, spec, env, sc)
		}
	case *ALO:
		if se = checkSpec(req, KindALO); se == nil {
			res, se = doALO(ctx, timeout, req, spec, env, sc)
		}
	default:
		se = permanent(fmt.Errorf("unknown step kind %q", req.Kind))
	}
	if se == nil {
		return res, nil
	}
	se.Err = redactError(sc.String, se.Err)
	return res, se
}

// checkSpec validates req's spec, which is of kind, against its connection.
func checkSpec(req Request, kind string) *StepError {
	if req.Kind != kind {
		return permanent(fmt.Errorf("unknown step kind %q for a %s spec", req.Kind, kind))
	}
	if err := req.Spec.Validate(req.Conn); err != nil {
		return permanent(err)
	}
	return nil
}

// StepTimeout is the time one attempt of req may take: the step's own
// "timeout:", else the request's (set by the renderer from the rule's
// defaults), else fallback (the execution's), else DefaultTimeout.
func StepTimeout(req Request, fallback time.Duration) time.Duration {
	var s string
	switch sp := req.Spec.(type) {
	case *HTTP:
		s = sp.Timeout
	case *Slack:
		s = sp.Timeout
	case *ALO:
		s = sp.Timeout
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	switch {
	case req.Timeout > 0:
		return req.Timeout
	case fallback > 0:
		return fallback
	}
	return DefaultTimeout
}

// RedactedJSON is the rendered request as recorded in a StepResult: the
// spec as JSON with the rule set's and the connection's secrets replaced.
//
// Secrets are replaced in the decoded strings, not in the JSON text: JSON
// escapes &, <, >, quotes and backslashes, and a secret spelled that way
// would not be found by a redactor that knows it as written.
func (r Request) RedactedJSON() json.RawMessage {
	return r.redactedJSON(secretsFor(r))
}

// redactedJSON is RedactedJSON with r's secrets built by the caller.
func (r Request) redactedJSON(sc secrets) json.RawMessage {
	b, err := json.Marshal(r.Spec)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "marshal request: " + err.Error()})
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers stay as written
	var v any
	if err := dec.Decode(&v); err != nil {
		v = map[string]string{"error": "decode request: " + err.Error()}
	}
	v = redactValue(v, sc.String)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// No HTML escaping: the record is shown as text, escaped by the UI.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return json.RawMessage(`{"error":"encode request"}`)
	}
	return json.RawMessage(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// redactValue replaces secrets in every string of a decoded JSON value,
// object keys included.
func redactValue(v any, redact func(string) string) any {
	switch v := v.(type) {
	case string:
		return redact(v)
	case []any:
		for i := range v {
			v[i] = redactValue(v[i], redact)
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[redact(k)] = redactValue(x, redact)
		}
		return out
	}
	return v
}

// secrets are the redactors for everything one request may carry.
type secrets []alorules.Redactor

// String replaces every secret in s.
func (sc secrets) String(s string) string {
	for _, r := range sc {
		s = r.String(s)
	}
	return s
}

// partialEnd is alorules.Redactor.PartialEnd over all of them.
func (sc secrets) partialEnd(s string) int {
	end := len(s)
	for _, r := range sc {
		end = min(end, r.PartialEnd(s))
	}
	return end
}

// secretsFor lists the redactors that hide every secret req may carry: the
// rule set's, the connection's, and the connection's credentials (webhook
// URL, token, API key, credential-like headers) even if the renderer did
// not list them. It builds a replacer: build it once per attempt.
func secretsFor(req Request) secrets {
	var extra []string
	if c := req.Conn; c != nil {
		extra = append(extra, c.Secrets...)
		if c.Slack != nil {
			extra = append(extra, c.Slack.Token.Reveal())
			extra = append(extra, urlSecrets(c.Slack.WebhookURL.Reveal())...)
		}
		if c.ALO != nil {
			extra = append(extra, c.ALO.APIKey.Reveal())
		}
		if c.HTTP != nil {
			for k, v := range c.HTTP.Headers {
				if credentialHeader(k) {
					extra = append(extra, v)
					if _, tok, ok := strings.Cut(v, " "); ok {
						extra = append(extra, tok)
					}
				}
			}
		}
	}
	if h, ok := req.Spec.(*HTTP); ok {
		for k, v := range h.Headers {
			if credentialHeader(k) {
				extra = append(extra, v)
				if _, tok, ok := strings.Cut(v, " "); ok {
					extra = append(extra, tok)
				}
			}
		}
	}
	conn := alorules.Redactor{}
	if req.Conn != nil {
		conn = req.Conn.Redact
	}
	return secrets{req.Redact, conn, alorules.NewRedactor(extra...)}
}

// urlSecrets returns the spellings of a secret URL that may show up in
// messages: as written, as net/url prints it, and its path (a Slack
// webhook's secret is its path).
func urlSecrets(raw string) []string {
	if raw == "" {
		return nil
	}
	out := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		out = append(out, u.String())
		if len(u.Path) > 8 {
			out = append(out, u.Path, u.EscapedPath())
		}
		if u.RawQuery != "" {
			out = append(out, u.RawQuery)
		}
	}
	return out
}

// credentialHeader reports whether a header's value is likely a credential.
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"auth", "token", "key", "secret", "cookie", "signature", "password"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// redactError returns err with secrets hidden. It keeps err itself (and so
// errors.As on it) only when its message holds no secret.
func redactError(redact func(string) string, err error) error {
	msg := err.Error()
	if r := redact(msg); r != msg {
		return errors.New(r)
	}
	return err
}

// unwrapURLError drops net/url's "Post \"https://...\":" prefix: the URL
// may be a secret (a Slack webhook) and the step already says where it went.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// readBody reads at most readLimit bytes of a response body and reports
// whether that is all of it: false if there was more, or if reading failed
// (a timeout, a dropped connection).
func readBody(r io.Reader) (raw []byte, whole bool) {
	b, err := io.ReadAll(io.LimitReader(r, readLimit+1))
	if len(b) > readLimit {
		return b[:readLimit], false
	}
	return b, err == nil
}

// keepBody turns a response body as read (at most readLimit bytes; whole if
// that is all the target sent) into the part a step keeps: secrets
// replaced first, then cut to MaxBody. Cutting first would leave the
// beginning of a secret that crosses the mark, which no redactor knows.
// truncated says the result is not the whole body.
func keepBody(sc secrets, raw []byte, whole bool) (body []byte, truncated bool) {
	s := string(raw)
	if !whole {
		// The text stops here, maybe in the middle of a secret (one
		// longer than the margin past MaxBody, or a body that stopped
		// arriving); String cannot recognise that part, so it goes.
		s = s[:sc.partialEnd(s)]
	}
	s = sc.String(s)
	if len(s) > MaxBody {
		// No secret is left whole, and no part of one at the end: the
		// cut cannot make one.
		return []byte(s[:MaxBody]), true
	}
	return []byte(s), !whole
}

// decodeJSON returns body decoded, or nil if it is not complete JSON.
func decodeJSON(body []byte, truncated bool) any {
	body = bytes.TrimSpace(body)
	if truncated || len(body) == 0 || (body[0] != '{' && body[0] != '[') {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil
	}
	return v
}

// recorder is a RoundTripper for steps sent through third-party clients
// (slack-go, the ALO client): it adds our headers to every request and keeps
// the last response's status, headers and first readLimit bytes, which
// those clients do not always return.
type recorder struct {
	next    http.RoundTripper
	headers map[string]string // set when the client did not set them

	mu     sync.Mutex
	code   int
	header http.Header
	body   *cappedBuffer
	cut    *teeBody
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, v := range r.headers {
		if v != "" && req.Header.Get(k) == "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	buf := &cappedBuffer{}
	tee := &teeBody{ReadCloser: resp.Body, w: buf}
	r.mu.Lock()
	r.code, r.header, r.body, r.cut = resp.StatusCode, resp.Header, buf, tee
	r.mu.Unlock()
	resp.Body = tee
	return resp, nil
}

// last returns the last response seen; code 0 if none. cut says reading
// its body failed before the end (a timeout, a dropped connection).
func (r *recorder) last() (code int, h http.Header, body []byte, truncated, cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.body == nil {
		return r.code, r.header, nil, false, false
	}
	return r.code, r.header, r.body.Bytes(), r.body.truncated, r.cut.failed()
}

type cappedBuffer struct {
	bytes.Buffer
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := readLimit - c.Len(); len(p) > room {
		c.truncated = true
		c.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

// teeBody copies what is read of a response body to w and remembers
// whether a read failed with anything but io.EOF.
type teeBody struct {
	io.ReadCloser
	w io.Writer

	mu  sync.Mutex
	err error
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if n > 0 {
		t.w.Write(p[:n])
	}
	if err != nil && err != io.EOF {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	return n, err
}

func (t *teeBody) failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err != nil
}
