package actions

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"alorules"
	"alorules/alo"
)

// Retry policy values used where a policy leaves them at zero.
const (
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// MaxRetryAfter caps a target's Retry-After, so that a broken header
	// cannot park an execution for days.
	MaxRetryAfter = time.Hour
)

// StepError is the error of a failed step attempt. Retryable says whether
// another attempt may succeed; RetryAfter is the wait the target asked for
// (0 if it did not).
type StepError struct {
	Retryable  bool
	RetryAfter time.Duration
	Err        error
}

func (e *StepError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *StepError) Unwrap() error { return e.Err }

func permanent(err error) *StepError { return &StepError{Err: err} }

// RetryableStatus is the one place that decides which HTTP status codes are
// worth another attempt: server errors, request timeout and too many
// requests. Every other 4xx means the request itself is wrong.
func RetryableStatus(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// ParseRetryAfter reads a Retry-After value, either delay-seconds or an
// HTTP date, relative to now. It returns 0 for a missing, malformed or past
// value.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	return min(alo.ParseRetryAfter(v, now), MaxRetryAfter)
}

// statusError is the error for a response whose status was not accepted:
// retryable by RetryableStatus, with the target's Retry-After.
func statusError(code int, h http.Header, now time.Time, err error) *StepError {
	se := &StepError{Retryable: RetryableStatus(code), Err: err}
	if se.Retryable && h != nil {
		se.RetryAfter = ParseRetryAfter(h.Get("Retry-After"), now)
	}
	return se
}

// sendError classifies an error from sending a request that got no usable
// response: the guard's refusals, redirect loops and malformed requests are
// permanent; timeouts and network failures are retried.
func sendError(ctx context.Context, timeout time.Duration, err error) *StepError {
	switch {
	case refused(err):
		var re *RefusedError
		errors.As(err, &re)
		return permanent(re)
	case errors.Is(err, errTooManyRedirects):
		return permanent(errTooManyRedirects)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return &StepError{Retryable: true, Err: fmt.Errorf("timeout after %s", timeout)}
	case ctx.Err() != nil:
		return &StepError{Retryable: true, Err: fmt.Errorf("interrupted: %w", ctx.Err())}
	}
	return &StepError{Retryable: true, Err: unwrapURLError(err)}
}

// Delay returns how long to wait after the attempt-th failed attempt
// (counting from 1): exponential backoff from p.Backoff, doubled per
// attempt and capped at p.MaxBackoff, with equal jitter (half fixed, half
// random) so that executions failing together do not retry together but a
// retry never comes sooner than half the backoff. A positive retryAfter
// from the target wins over the backoff: the target said when it will be
// ready, and asking sooner only earns another refusal.
func Delay(p alorules.RetryPolicy, attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, MaxRetryAfter)
	}
	base, maxb := p.Backoff, p.MaxBackoff
	if base <= 0 {
		base = DefaultBackoff
	}
	if maxb <= 0 {
		maxb = DefaultMaxBackoff
	}
	maxb = max(maxb, base)
	d := base
	for i := 1; i < attempt && d < maxb; i++ {
		d *= 2
	}
	d = min(d, maxb)
	half := d / 2
	return half + rand.N(d-half+1)
}
