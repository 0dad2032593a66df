package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// HeaderIdempotencyKey carries Request.IdempotencyKey, stable across
// retries and restarts, so a target can drop a delivery it has seen.
const HeaderIdempotencyKey = "Idempotency-Key"

// doHTTP sends an http step: a connection's base_url plus path, or a full
// url.
func doHTTP(ctx context.Context, timeout time.Duration, req Request, spec *HTTP, env Env, sc secrets) (Result, *StepError) {
	hreq, err := buildHTTP(ctx, req, spec, env)
	if err != nil {
		return Result{}, permanent(fmt.Errorf("http: %w", err))
	}
	resp, err := env.client(req.Conn).Do(hreq)
	if err != nil {
		se := sendError(ctx, timeout, err)
		se.Err = fmt.Errorf("http: %w", se.Err)
		return Result{}, se
	}
	defer resp.Body.Close()
	// A body cut short (a timeout, a dropped connection) is kept as far
	// as it was read. After an expected status it is no error: the target
	// has acted, and sending the step again could make it act twice.
	raw, whole := readBody(resp.Body)
	body, truncated := keepBody(sc, raw, whole)
	res := Result{Code: resp.StatusCode, Body: body, JSON: decodeJSON(body, truncated)}
	if !expected(spec.Expect, resp.StatusCode) {
		// The excerpt comes from the kept body: redacted before it is
		// cut, so no secret is left half-shown.
		return res, statusError(resp.StatusCode, resp.Header, env.now(),
			fmt.Errorf("http: unexpected status %s%s", resp.Status, excerpt(body)))
	}
	return res, nil
}

func buildHTTP(ctx context.Context, req Request, spec *HTTP, env Env) (*http.Request, error) {
	target := spec.URL
	headers := map[string]string{}
	if spec.Connection != "" && (req.Conn == nil || req.Conn.HTTP == nil) {
		return nil, fmt.Errorf("connection %q is not an http connection", spec.Connection)
	}
	if req.Conn != nil && req.Conn.HTTP != nil {
		target = joinURL(req.Conn.HTTP.BaseURL, spec.Path)
		for k, v := range req.Conn.HTTP.Headers {
			headers[k] = v
		}
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("bad url: %w", unwrapURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("bad url: scheme %q is not http or https", u.Scheme)
	}
	if len(spec.Query) > 0 {
		q := u.Query()
		for k, v := range spec.Query {
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
	}

	var body io.Reader
	var contentType string
	switch {
	case spec.JSON != nil:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		// Text goes out as written ("<", not "\u003c"): the target
		// decodes both alike, and people reading it see what was sent.
		enc.SetEscapeHTML(false)
		if err := enc.Encode(spec.JSON); err != nil {
			return nil, fmt.Errorf("json body: %w", err)
		}
		body, contentType = bytes.NewReader(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), "application/json"
	case spec.Body != "":
		body = strings.NewReader(spec.Body)
	}
	method := strings.ToUpper(spec.Method)
	if method == "" {
		method = http.MethodGet
		if body != nil {
			method = http.MethodPost
		}
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, unwrapURLError(err)
	}
	for k, v := range spec.Headers {
		headers[k] = v
	}
	hreq.Header.Set("User-Agent", env.userAgent())
	if contentType != "" {
		hreq.Header.Set("Content-Type", contentType)
	}
	if req.IdempotencyKey != "" {
		hreq.Header.Set(HeaderIdempotencyKey, req.IdempotencyKey)
	}
	// The rule's headers come last: a rule may set its own Content-Type,
	// User-Agent or Idempotency-Key on purpose.
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			hreq.Host = v
			continue
		}
		hreq.Header.Set(k, v)
	}
	return hreq, nil
}

// joinURL appends path to base with exactly one slash between them, so
// that base_url "https://x/api/" and path "/issues" give https://x/api/issues.
func joinURL(base, path string) string {
	if path == "" {
		return base
	}
	return strings.TrimRight(base, "/") + "/" + strings.TrimLeft(path, "/")
}

// expected reports whether code is accepted: one of expect, or any 2xx.
func expected(expect []int, code int) bool {
	if len(expect) == 0 {
		return code >= 200 && code < 300
	}
	return slices.Contains(expect, code)
}

// excerpt is the start of a response body for an error message.
func excerpt(body []byte) string {
	const n = 200
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return ": " + s
}
