package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/slack-go/slack"
)

// slackTemporary are the error codes of an ok:false body that say "not
// now" rather than "never": "slow down" (retried like a 429) and Slack's
// own failures, which its docs call transient (internal_error,
// service_unavailable) or which mean the request did not arrive whole
// (request_timeout: the POST data was missing or truncated). Slack says an
// internal_error or fatal_error may have done part of the work, so a retry
// can post twice; steps are at least once, and a page that arrives twice
// beats one that never arrives. Every other code (channel_not_found,
// invalid_auth, not_in_channel, msg_too_long, ...) fails at once.
var slackTemporary = map[string]bool{
	"ratelimited":         true,
	"rate_limited":        true,
	"internal_error":      true,
	"fatal_error":         true,
	"service_unavailable": true,
	"request_timeout":     true,
}

// doSlack posts a slack step through an incoming webhook or, with a bot
// token, chat.postMessage. The requests go through slack-go with our
// guarded client; a recorder keeps the raw answer for the step's record.
func doSlack(ctx context.Context, timeout time.Duration, req Request, spec *Slack, env Env, sc secrets) (Result, *StepError) {
	conn := req.Conn
	if conn == nil || conn.Slack == nil {
		return Result{}, permanent(errors.New("slack: needs a slack connection"))
	}
	var blocks *slack.Blocks
	if spec.Blocks != nil {
		b, err := json.Marshal(spec.Blocks)
		if err == nil {
			blocks = &slack.Blocks{}
			err = blocks.UnmarshalJSON(b)
		}
		if err != nil {
			return Result{}, permanent(fmt.Errorf("slack: blocks: %w", err))
		}
	}

	rec := &recorder{headers: map[string]string{
		"User-Agent":         env.userAgent(),
		HeaderIdempotencyKey: req.IdempotencyKey,
	}}
	client := withTransport(env.client(conn), func(next http.RoundTripper) http.RoundTripper {
		rec.next = next
		return rec
	})

	var err error
	url := conn.Slack.WebhookURL.Reveal()
	if url != "" {
		msg := &slack.WebhookMessage{Text: spec.Text, Blocks: blocks, ThreadTimestamp: spec.ThreadTS}
		err = slack.PostWebhookCustomHTTPContext(ctx, url, client, msg)
	} else {
		channel := spec.Channel
		if channel == "" {
			channel = conn.Slack.Channel
		}
		if channel == "" {
			return Result{}, permanent(errors.New("slack: a bot token needs a channel"))
		}
		opts := []slack.Option{slack.OptionHTTPClient(client)}
		if api := conn.Slack.APIURL; api != "" {
			if !strings.HasSuffix(api, "/") {
				api += "/"
			}
			opts = append(opts, slack.OptionAPIURL(api))
		}
		msgOpts := []slack.MsgOption{slack.MsgOptionText(spec.Text, false)}
		if blocks != nil {
			msgOpts = append(msgOpts, slack.MsgOptionBlocks(blocks.BlockSet...))
		}
		if spec.ThreadTS != "" {
			msgOpts = append(msgOpts, slack.MsgOptionTS(spec.ThreadTS))
		}
		_, _, err = slack.New(conn.Slack.Token.Reveal(), opts...).PostMessageContext(ctx, channel, msgOpts...)
	}

	code, header, raw, more, cut := rec.last()
	body, truncated := keepBody(sc, raw, !more && !cut)
	res := Result{Code: code, Body: body, JSON: decodeJSON(body, truncated)}
	if err != nil {
		if se := slackError(ctx, timeout, err, code, header, body, cut, url == "", env.now()); se != nil {
			return res, se
		}
	}
	return res, nil
}

// slackError turns what slack-go returned into a StepError, or nil if it
// was no failure after all. cut says the response body could not be read
// to the end; bot says the step went to chat.postMessage, not to an
// incoming webhook. slack-go's messages may name the webhook URL, so only
// the parts we understand are kept; Do redacts the rest.
func slackError(ctx context.Context, timeout time.Duration, err error, code int, h http.Header, body []byte, cut, bot bool, now time.Time) *StepError {
	var (
		rl  *slack.RateLimitedError
		api slack.SlackErrorResponse
		sc  slack.StatusCodeError
	)
	switch {
	case errors.As(err, &rl):
		return &StepError{Retryable: true, RetryAfter: min(rl.RetryAfter, MaxRetryAfter),
			Err: fmt.Errorf("slack: rate limited, retry after %s", rl.RetryAfter)}
	case errors.As(err, &api):
		se := &StepError{Err: fmt.Errorf("slack: %s", api.Err)}
		if slackTemporary[api.Err] || (code != 0 && RetryableStatus(code)) {
			se.Retryable = true
			se.RetryAfter = ParseRetryAfter(h.Get("Retry-After"), now)
		}
		return se
	case errors.As(err, &sc) && sc.Code >= 200 && sc.Code < 300:
		// slack-go wants exactly 200; any 2xx means Slack (or a proxy in
		// front of it) accepted the message, and retrying could post twice.
		return nil
	case errors.As(err, &sc):
		return statusError(sc.Code, h, now, fmt.Errorf("slack: %s", slackStatusText(sc.Code, body)))
	case code != 0 && code != http.StatusOK:
		// slack-go gave up on the response itself, e.g. a Retry-After
		// date it could not parse: judge the status we saw.
		return statusError(code, h, now, fmt.Errorf("slack: %s", slackStatusText(code, body)))
	case code == http.StatusOK && cut && (!bot || slackOK(body)):
		// Slack answered 200 and the body stopped short (a stall past
		// the timeout, a dropped connection): the message was posted,
		// as with an http or alo step, and posting it again would show
		// it twice. An incoming webhook says so with its status alone;
		// chat.postMessage answers 200 to failures too, so only a body
		// that got as far as "ok": true says it.
		return nil
	case code == http.StatusOK && cut:
		// chat.postMessage's 200 with a body that stopped before it said
		// ok: nobody knows whether it posted, and a message that shows
		// twice beats one that never shows.
		return &StepError{Retryable: true, Err: errors.New("slack: HTTP 200 with a response cut short before \"ok\": true")}
	case code == http.StatusOK:
		// Slack answered 200 with a whole body slack-go could not read:
		// nobody knows whether it posted, so it is not sent again.
		return permanent(fmt.Errorf("slack: bad response: %w", unwrapURLError(err)))
	}
	se := sendError(ctx, timeout, err)
	se.Err = fmt.Errorf("slack: %w", se.Err)
	return se
}

// slackOK reports whether a Web API answer, maybe cut short, begins
// {"ok":true (with any JSON whitespace), as Slack's successes do.
func slackOK(body []byte) bool {
	s := string(body)
	for _, tok := range []string{"{", `"ok"`, ":", "true"} {
		s = strings.TrimLeft(s, " \t\r\n")
		var ok bool
		if s, ok = strings.CutPrefix(s, tok); !ok {
			return false
		}
	}
	// "true" must end there: a cut right after it is as good as a comma.
	return s == "" || strings.ContainsAny(s[:1], " \t\r\n,}")
}

// slackStatusText describes a non-200 answer. Incoming webhooks put their
// error code in a short plain-text body ("channel_not_found", "no_text").
func slackStatusText(code int, body []byte) string {
	s := strings.TrimSpace(string(body))
	if s != "" && len(s) <= 100 && !strings.ContainsAny(s, " \n<{") {
		return fmt.Sprintf("%s (HTTP %d)", s, code)
	}
	return fmt.Sprintf("HTTP %d %s", code, http.StatusText(code))
}
