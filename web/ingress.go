package web

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/alo"
	"alorules/store"
)

// keptHeaders are the request headers stored with an event. The signature
// is kept only as a marker that it was there.
var keptHeaders = []string{
	"Content-Type", "User-Agent", alo.HeaderTimestamp, alo.HeaderSignature,
	"X-Forwarded-For", "X-Request-Id",
}

// ingest handles POST /webhooks/alo: cap, verify, check, dedupe, store, ack.
// Nothing is acknowledged before it is durably committed.
func (s *Server) ingest(c echo.Context) error {
	start := time.Now()
	req := c.Request()
	outcome := "error"
	evType := ""
	defer func() {
		s.metrics.ingest(evType, outcome, time.Since(start))
	}()

	body, err := io.ReadAll(io.LimitReader(req.Body, s.cfg.MaxBody+1))
	if err != nil {
		outcome = "bad_request"
		return s.reject(c, http.StatusBadRequest, "read_error", "could not read body")
	}
	if int64(len(body)) > s.cfg.MaxBody {
		outcome = "too_large"
		return s.reject(c, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("body is larger than %d bytes", s.cfg.MaxBody))
	}

	ts := req.Header.Get(alo.HeaderTimestamp)
	form, err := s.cfg.Verifier.Verify(req.Header.Get(alo.HeaderSignature), ts, body)
	if err != nil {
		outcome = "forbidden"
		reason := "bad_signature"
		var ve *alo.VerifyError
		if errors.As(err, &ve) {
			reason = ve.Reason
		}
		return s.reject(c, http.StatusForbidden, reason, err.Error())
	}

	env, err := checkBody(body)
	if err != nil {
		outcome = "bad_request"
		return s.reject(c, http.StatusBadRequest, "malformed", err.Error())
	}
	evType = alo.NormalizeType(env.Type)

	ev := &alorules.Event{
		Type:          evType,
		RawType:       env.Type,
		ReceivedAt:    start.UTC(),
		Payload:       body,
		Headers:       keepHeaders(req.Header),
		SignatureForm: form,
		Handshake:     alo.IsHandshake(env.Type),
	}

	id, dup, err := s.cfg.Store.SaveEvent(req.Context(), ev, s.dedupeKeys(ts, body, ev.Handshake))
	if err != nil {
		outcome = "unavailable"
		s.log.Error("store event", "err", err, "type", evType)
		return s.reject(c, http.StatusServiceUnavailable, "store", "event could not be stored; retry later")
	}
	if ev.Handshake {
		// A repeated handshake gets the very same answer as the first:
		// ALO may retry one it did not hear back from, and it checks
		// the challenge, not an id. Only the record is not written twice.
		outcome = "handshake"
		if dup {
			outcome = "duplicate"
		}
		s.log.Info("answered url verification", "event_id", id, "duplicate", dup)
		return c.JSON(http.StatusOK, map[string]string{"challenge": env.Challenge})
	}
	if dup {
		outcome = "duplicate"
		s.log.Info("duplicate delivery", "event_id", id, "type", evType)
		return c.JSON(http.StatusOK, map[string]any{"id": id, "duplicate": true})
	}
	outcome = "accepted"
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent()
	}
	s.log.Debug("event accepted", "event_id", id, "type", evType, "signature_form", form)
	return c.JSON(http.StatusOK, map[string]string{"id": id})
}

// dedupeKeys names the delivery twice: as a request (timestamp and body: a
// replay inside the tolerance window, however its MAC is spelled) and by
// its content (ALO sending the same event again with a fresh signature).
//
// A configured dedupe key that cannot be computed for a body (a field it
// reads is missing) falls back to the body's hash: an event is never
// refused for what the dedupe expression expected of it. A handshake always
// uses the body's hash: the expression is written for action events.
func (s *Server) dedupeKeys(ts string, body []byte, handshake bool) []store.DedupeKey {
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])
	keys := []store.DedupeKey{{Key: "req:" + ts + ":" + digest, TTL: 2 * s.cfg.Verifier.Tolerance}}
	if s.cfg.DedupeKey != nil && !handshake {
		k, err := s.cfg.DedupeKey(body)
		if err == nil && k != "" {
			return append(keys, store.DedupeKey{Key: "key:" + k, TTL: s.cfg.DedupeWindow})
		}
		s.log.Warn("dedupe key not computed; using the body hash", "err", err)
	}
	return append(keys, store.DedupeKey{Key: "body:" + digest, TTL: s.cfg.DedupeWindow})
}

// reject answers a refused webhook with a plain JSON error and counts why.
func (s *Server) reject(c echo.Context, code int, reason, msg string) error {
	s.metrics.rejected(reason)
	s.log.Warn("webhook rejected", "status", code, "reason", reason, "err", msg,
		"remote", c.RealIP())
	return c.JSON(code, map[string]string{"error": msg})
}

func keepHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(keptHeaders))
	for _, k := range keptHeaders {
		v := h.Get(k)
		if v == "" {
			continue
		}
		if k == alo.HeaderSignature {
			v = alorules.Redacted
		}
		out[k] = v
	}
	return out
}

// Ensure a slog.Logger is always present even for zero configs in tests.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
