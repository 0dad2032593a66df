// Package alo speaks ALO's protocol: it verifies and signs webhook requests,
// names the webhook event types, and calls the ALO Platform API.
//
// It imports only the standard library so that it could be published on its
// own. Facts it relies on are restated in REFERENCE.md beside the design; where
// ALO has not published something (the signature's encoding, for one), the
// code says which guess it makes and why.
package alo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names ALO uses on webhook requests. http.Header canonicalises them
// (X-Alo-Signature); lookups are case-insensitive, so that does not matter.
const (
	HeaderSignature = "X-ALO-Signature"
	HeaderTimestamp = "X-ALO-Request-Timestamp"
)

// DefaultTolerance is how far a webhook's timestamp may be from the
// receiver's clock, in either direction, when Verifier.Tolerance is zero. It
// is the window of ALO's own example.
const DefaultTolerance = 300 * time.Second

// Signature forms that Verify reports, so operators can see which encoding
// ALO really sends and the unused ones can be dropped later.
const (
	FormV0Hex     = "v0=hex"    // "v0=" + lowercase hex: Slack's convention, which ALO's scheme copies
	FormHex       = "hex"       // lowercase hex without a prefix
	FormBase64    = "base64"    // standard base64 with padding
	FormBase64URL = "base64url" // URL-safe base64 without padding
)

// Reasons carried by VerifyError. They are stable words meant for metric
// labels and logs.
const (
	ReasonMissingSignature = "missing_signature"
	ReasonMissingTimestamp = "missing_timestamp"
	ReasonBadTimestamp     = "bad_timestamp"
	ReasonStaleTimestamp   = "stale_timestamp"
	ReasonBadSignature     = "bad_signature"
)

// VerifyError says why a webhook request failed verification. Reason is one
// of the Reason* constants; the message never contains a computed MAC, so it
// is safe to return to the caller or to log.
type VerifyError struct {
	Reason string
	msg    string
}

// Error describes the failure in plain words.
func (e *VerifyError) Error() string {
	msg := e.msg
	if msg == "" {
		msg = strings.ReplaceAll(e.Reason, "_", " ")
	}
	return "verify webhook: " + msg
}

func verifyErr(reason, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// Verifier checks the signature and age of webhook requests from ALO.
//
// The zero Tolerance means DefaultTolerance; a nil Now means time.Now. Several
// Secrets may be set at once so that a signing secret can be rotated without
// dropping requests; empty secrets are ignored, because an empty HMAC key
// would let anyone sign.
type Verifier struct {
	Secrets   []string
	Tolerance time.Duration
	Now       func() time.Time
}

// Verify checks one request: sig and ts are the values of the HeaderSignature
// and HeaderTimestamp headers, body the raw request body exactly as received.
//
// The MAC is HMAC-SHA256, keyed with a signing secret, over "v0:" + ts + ":" +
// body. ALO has not published how the header encodes it, so these forms are
// accepted and the one that matched is returned (see the Form* constants):
// "v0=" + lowercase hex, lowercase hex, standard base64 and unpadded URL-safe
// base64. Uppercase hex is rejected: both the design and the Slack scheme ALO
// follows say lowercase, ALO's Ruby example would produce lowercase, and every
// extra spelling is one more way to write the same MAC. Base64 is decoded
// strictly for the same reason. Because one MAC still has several accepted
// spellings, replay detection must key on the timestamp and body (or on
// Sign's output), never on the raw header value.
//
// The timestamp must be a whole number of seconds since the Unix epoch, and at
// most Tolerance away from now in either direction. The received MAC is
// compared in constant time with the MAC of every secret, without stopping at
// the first match, so timing does not tell which secret matched.
//
// Errors are *VerifyError.
func (v *Verifier) Verify(sig, ts string, body []byte) (form string, err error) {
	if sig == "" {
		return "", verifyErr(ReasonMissingSignature, "missing %s header", HeaderSignature)
	}
	if ts == "" {
		return "", verifyErr(ReasonMissingTimestamp, "missing %s header", HeaderTimestamp)
	}
	sec, ok := parseTimestamp(ts)
	if !ok {
		return "", verifyErr(ReasonBadTimestamp, "%s is not a whole number of seconds", HeaderTimestamp)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if skew, future := distance(now().Unix(), sec); skew > uint64(tol/time.Second) {
		when := "in the past"
		if future {
			when = "in the future"
		}
		return "", verifyErr(ReasonStaleTimestamp, "request timestamp is %s %s, beyond the %s tolerance",
			formatSeconds(skew), when, tol)
	}

	got, form := decodeSignature(sig)
	if got == nil {
		return "", verifyErr(ReasonBadSignature,
			"%s is not in an accepted form (v0=<lowercase hex>, lowercase hex or base64 of a SHA-256 HMAC)", HeaderSignature)
	}
	configured, matched := false, false
	for _, secret := range v.Secrets {
		if secret == "" {
			continue
		}
		configured = true
		// No break: every secret costs the same work whichever one matches.
		if hmac.Equal(got, computeMAC(secret, ts, body)) {
			matched = true
		}
	}
	if !configured {
		return "", verifyErr(ReasonBadSignature, "no signing secret is configured")
	}
	if !matched {
		return "", verifyErr(ReasonBadSignature, "signature does not match the request")
	}
	return form, nil
}

// parseTimestamp accepts only ASCII digits: no sign, spaces or fraction, since
// the header value goes into the signed string exactly as received.
func parseTimestamp(ts string) (int64, bool) {
	if len(ts) > 19 {
		return 0, false
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	return n, err == nil
}

// distance returns |ts-now| in seconds without overflowing, and whether ts is
// ahead of now.
func distance(now, ts int64) (uint64, bool) {
	if ts > now {
		return uint64(ts - now), true // wraps correctly: the true difference fits in uint64
	}
	return uint64(now - ts), false
}

func formatSeconds(s uint64) string {
	if s < 1<<40 {
		return (time.Duration(s) * time.Second).String()
	}
	return strconv.FormatUint(s, 10) + "s"
}

// decodeSignature turns the header value into the 32 raw MAC bytes and names
// its form, or returns nil if it is in none of the accepted forms.
func decodeSignature(sig string) ([]byte, string) {
	const macLen = sha256.Size
	if rest, ok := strings.CutPrefix(sig, "v0="); ok {
		if b := decodeLowerHex(rest); b != nil {
			return b, FormV0Hex
		}
		return nil, ""
	}
	switch len(sig) {
	case hex.EncodedLen(macLen):
		if b := decodeLowerHex(sig); b != nil {
			return b, FormHex
		}
	case base64.StdEncoding.EncodedLen(macLen):
		if b, err := base64.StdEncoding.Strict().DecodeString(sig); err == nil && len(b) == macLen {
			return b, FormBase64
		}
	case base64.RawURLEncoding.EncodedLen(macLen):
		if b, err := base64.RawURLEncoding.Strict().DecodeString(sig); err == nil && len(b) == macLen {
			return b, FormBase64URL
		}
	}
	return nil, ""
}

func decodeLowerHex(s string) []byte {
	if len(s) != hex.EncodedLen(sha256.Size) {
		return nil
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil
		}
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

func computeMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the signature ALO would send for body at Unix time ts, in the
// "v0=" + lowercase hex form. It is used by `alorules send` and by tests.
func Sign(secret string, ts int64, body []byte) string {
	return "v0=" + hex.EncodeToString(computeMAC(secret, strconv.FormatInt(ts, 10), body))
}

// SignRequest sets the signature and timestamp headers on req as ALO would,
// signing body at time now. body must be exactly the bytes req will send;
// SignRequest does not touch req.Body.
func SignRequest(req *http.Request, secret string, now time.Time, body []byte) {
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	ts := now.Unix()
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
}
