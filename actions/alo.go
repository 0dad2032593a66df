package actions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"alorules/alo"
)

// doALO calls the ALO Platform API through alo.Client with our guarded
// HTTP client: one of post_message, post_direct_message or request.
func doALO(ctx context.Context, timeout time.Duration, req Request, spec *ALO, env Env, sc secrets) (Result, *StepError) {
	conn := req.Conn
	if conn == nil || conn.ALO == nil {
		return Result{}, permanent(errors.New("alo: needs an alo connection"))
	}
	rec := &recorder{headers: map[string]string{HeaderIdempotencyKey: req.IdempotencyKey}}
	client := &alo.Client{
		BaseURL:    conn.ALO.BaseURL,
		APIKey:     conn.ALO.APIKey.Reveal(),
		AuthScheme: conn.ALO.AuthScheme,
		UserAgent:  env.userAgent(),
		// Before ALO's error text is capped, so no secret is cut in two.
		Redact: sc.String,
		HTTP: withTransport(env.client(conn), func(next http.RoundTripper) http.RoundTripper {
			rec.next = next
			return rec
		}),
	}

	var (
		resp *alo.Response
		err  error
	)
	switch {
	case spec.PostMessage != nil:
		resp, err = client.PostMessage(ctx, spec.PostMessage.ChannelID, aloMessage(spec.PostMessage))
	case spec.PostDirectMessage != nil:
		resp, err = client.PostDirectMessage(ctx, spec.PostDirectMessage.ChannelID, aloMessage(spec.PostDirectMessage))
	case spec.Request != nil:
		r := spec.Request
		method := strings.ToUpper(r.Method)
		if method == "" {
			method = http.MethodGet
			if r.JSON != nil {
				method = http.MethodPost
			}
		}
		var q url.Values
		if len(r.Query) > 0 {
			q = url.Values{}
			for k, v := range r.Query {
				q.Set(k, v)
			}
		}
		resp, err = client.Do(ctx, method, r.Path, q, r.JSON)
	default:
		return Result{}, permanent(errors.New("alo: needs exactly one of post_message, post_direct_message or request"))
	}

	var res Result
	if resp != nil {
		raw, whole := resp.Body, !resp.Truncated
		if len(raw) > readLimit {
			raw, whole = raw[:readLimit], false
		}
		body, truncated := keepBody(sc, raw, whole)
		res = Result{Code: resp.StatusCode, Body: body, JSON: decodeJSON(body, truncated)}
	}
	if err == nil || (errors.Is(err, alo.ErrIncompleteBody) && resp.StatusCode/100 == 2) {
		// A 2xx whose body was cut short was still carried out; sending
		// it again would post the message twice.
		return res, nil
	}
	var apiErr *alo.APIError
	switch {
	case errors.As(err, &apiErr):
		se := &StepError{Retryable: RetryableStatus(apiErr.StatusCode), Err: fmt.Errorf("alo: %w", apiErr)}
		if se.Retryable {
			se.RetryAfter = min(apiErr.RetryAfter, MaxRetryAfter)
		}
		return res, se
	case resp == nil && rec.code == 0 && !isTransport(err):
		// The client refused the request before sending it (bad path,
		// body or key): no attempt can fix that.
		return res, permanent(fmt.Errorf("alo: %w", err))
	}
	se := sendError(ctx, timeout, err)
	se.Err = fmt.Errorf("alo: %w", se.Err)
	return res, se
}

func aloMessage(m *ALOMessage) alo.Message {
	return alo.Message{
		Content:               m.Content,
		UserID:                m.UserID,
		ParentID:              m.ParentID,
		TersePushNotification: m.TersePushNotification,
	}
}

// isTransport reports whether err came from sending (net/http wraps those
// in *url.Error), as opposed to the client refusing to build the request.
func isTransport(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
