package web

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"alorules/alo"
	"alorules/store"
)

// FuzzIngest drives the whole webhook handler, signature included, with
// arbitrary bodies, signed or not, at arbitrary clock skews. Whatever
// comes in, the answer is one of the documented ones, a 200 only for a
// signed body within the tolerance, and an event answered with an id is
// stored byte for byte.
func FuzzIngest(f *testing.F) {
	for _, b := range []string{
		`{"type":"action_created","action":{"id":"a1"}}`,
		`{"type":"webhook_url_verification","challenge":"c"}`,
		`{"type":1}`, `[]`, `{"type":"x","type":"y"}`, "\xff", `{"type":"x"} {}`, ``,
	} {
		f.Add([]byte(b), true, int64(0))
		f.Add([]byte(b), false, int64(0))
	}
	f.Add([]byte(`{"type":"action_created"}`), true, int64(301))
	st, err := store.Open(filepath.Join(f.TempDir(), "alorules.db"), store.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	const maxBody = 4096
	srv, err := New(Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Verifier: &alo.Verifier{Secrets: []string{testSecret}},
		MaxBody:  maxBody, Store: st,
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Public()
	f.Fuzz(func(t *testing.T, body []byte, sign bool, skew int64) {
		ts := time.Now().Unix() + skew%1000
		req := httptest.NewRequest(http.MethodPost, "/webhooks/alo", bytes.NewReader(body))
		if sign {
			req.Header.Set(alo.HeaderTimestamp, strconv.FormatInt(ts, 10))
			req.Header.Set(alo.HeaderSignature, alo.Sign(testSecret, ts, body))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		code := rec.Code
		switch code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("got status %d for %q, want 200, 400, 403 or 413", code, body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("got a body that is not JSON: %q", rec.Body.Bytes())
		}
		if code == http.StatusRequestEntityTooLarge && len(body) <= maxBody {
			t.Errorf("got 413 for %d bytes, under the %d cap", len(body), maxBody)
		}
		if code != http.StatusOK {
			return
		}
		if !sign || skew%1000 > 300 || skew%1000 < -300 {
			t.Fatalf("got 200 for an unsigned or stale body (sign %v, skew %d)", sign, skew%1000)
		}
		id, _ := out["id"].(string)
		if id == "" {
			if _, ok := out["challenge"]; !ok {
				t.Fatalf("got 200 %v, want an id or a challenge", out)
			}
			return
		}
		ev, err := st.Event(context.Background(), id)
		if err != nil {
			t.Fatalf("answered 200 with id %s, but: %v", id, err)
		}
		if !bytes.Equal(ev.Payload, body) {
			t.Errorf("stored %q, want %q byte for byte", ev.Payload, body)
		}
	})
}
