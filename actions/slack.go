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

// slackRateLimited are the error codes Slack uses, in an ok:false body,
// for "slow down"; they are retried like a 429.
var slackRateLimited = map[string]bool{"ratelimited": true, "rate_limited": true}

// doSlack posts a slack step through an incoming webhook or, with a bot
// token, chat.postMessage. The requests go through slack-go with our
// guarded client; a recorder keeps the raw answer for the step's record.
func doSlack(ctx context.Context, timeout time.Duration, req Request, spec *Slack, env Env) (Result, *StepError) {
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
	if url := conn.Slack.WebhookURL.Reveal(); url != "" {
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

	code, header, body, truncated := rec.last()
	res := Result{Code: code, Body: body, JSON: decodeJSON(body, truncated)}
	if err != nil {
		if se := slackError(ctx, timeout, err, code, header, body, env.now()); se != nil {
			return res, se
		}
	}
	return res, nil
}

// slackError turns what slack-go returned into a StepError, or nil if it
// was no failure after all. slack-go's
// messages may name the webhook URL, so only the parts we understand are
// kept; Do redacts the rest.
func slackError(ctx context.Context, timeout time.Duration, err error, code int, h http.Header, body []byte, now time.Time) *StepError {
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
		if slackRateLimited[api.Err] || (code != 0 && RetryableStatus(code)) {
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
	case code == http.StatusOK:
		// Slack answered 200 but slack-go could not read the body.
		return permanent(fmt.Errorf("slack: bad response: %w", unwrapURLError(err)))
	}
	se := sendError(ctx, timeout, err)
	se.Err = fmt.Errorf("slack: %w", se.Err)
	return se
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
