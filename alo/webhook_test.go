package alo_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"alorules/alo"
)

// mac computes the expected MAC independently of the package under test.
func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	return m.Sum(nil)
}

// spellings returns every encoding of a MAC that could leak into an error,
// accepted or not.
func spellings(b []byte) []string {
	h := hex.EncodeToString(b)
	return []string{
		h,
		strings.ToUpper(h),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
	}
}

// flipPaddingBit returns s, a padded std base64 of 32 bytes, with one of the
// unused low bits of its last data character set: the same bytes when decoded
// leniently, a different spelling.
func flipPaddingBit(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, s[42])
	return s[:42] + string(alphabet[i^1]) + s[43:]
}

func TestVerify(t *testing.T) {
	const (
		secret    = "s3cret"
		newSecret = "n3w-s3cret"
	)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"type":"action_created","action":{"id":"a1"}}`)
	at := func(offset int64) string { return strconv.FormatInt(now.Unix()+offset, 10) }
	ts := at(0)
	good := mac(secret, ts, body)
	hexMAC := hex.EncodeToString(good)
	b64 := base64.StdEncoding.EncodeToString(good)
	v0 := func(secret string, offset int64) string {
		return "v0=" + hex.EncodeToString(mac(secret, at(offset), body))
	}

	tests := []struct {
		name       string
		secrets    []string
		tolerance  time.Duration
		sig, ts    string
		body       []byte
		wantForm   string
		wantReason string
	}{
		{name: "v0 hex", sig: "v0=" + hexMAC, wantForm: alo.FormV0Hex},
		{name: "bare hex", sig: hexMAC, wantForm: alo.FormHex},
		{name: "std base64", sig: b64, wantForm: alo.FormBase64},
		{name: "raw url base64", sig: base64.RawURLEncoding.EncodeToString(good), wantForm: alo.FormBase64URL},
		{name: "uppercase hex rejected", sig: strings.ToUpper(hexMAC), wantReason: alo.ReasonBadSignature},
		{name: "uppercase hex with v0 rejected", sig: "v0=" + strings.ToUpper(hexMAC), wantReason: alo.ReasonBadSignature},
		{name: "uppercase prefix rejected", sig: "V0=" + hexMAC, wantReason: alo.ReasonBadSignature},
		{name: "v0 with base64 rejected", sig: "v0=" + b64, wantReason: alo.ReasonBadSignature},
		{name: "base64 with stray padding bits rejected", sig: flipPaddingBit(b64), wantReason: alo.ReasonBadSignature},
		{name: "truncated hex", sig: "v0=" + hexMAC[:62], wantReason: alo.ReasonBadSignature},
		{name: "hex with trailing space", sig: "v0=" + hexMAC + " ", wantReason: alo.ReasonBadSignature},
		{name: "garbage", sig: "not-a-signature", wantReason: alo.ReasonBadSignature},
		{name: "wrong secret", sig: v0("wrong", 0), wantReason: alo.ReasonBadSignature},
		{name: "tampered body", sig: "v0=" + hexMAC, body: []byte(`{"type":"action_created","action":{"id":"a2"}}`), wantReason: alo.ReasonBadSignature},
		{name: "tampered timestamp", sig: "v0=" + hexMAC, ts: at(1), wantReason: alo.ReasonBadSignature},
		{name: "missing signature", sig: "", wantReason: alo.ReasonMissingSignature},
		{name: "missing timestamp", sig: "v0=" + hexMAC, ts: "-", wantReason: alo.ReasonMissingTimestamp},
		{name: "fractional timestamp", sig: "v0=" + hexMAC, ts: ts + ".5", wantReason: alo.ReasonBadTimestamp},
		{name: "word timestamp", sig: "v0=" + hexMAC, ts: "yesterday", wantReason: alo.ReasonBadTimestamp},
		{name: "signed timestamp", sig: "v0=" + hexMAC, ts: "+" + ts, wantReason: alo.ReasonBadTimestamp},
		{name: "negative timestamp", sig: "v0=" + hexMAC, ts: "-" + ts, wantReason: alo.ReasonBadTimestamp},
		{name: "timestamp with space", sig: "v0=" + hexMAC, ts: " " + ts, wantReason: alo.ReasonBadTimestamp},
		{name: "exponent timestamp", sig: "v0=" + hexMAC, ts: "1.7e9", wantReason: alo.ReasonBadTimestamp},
		{name: "overflowing timestamp", sig: "v0=" + hexMAC, ts: "99999999999999999999", wantReason: alo.ReasonBadTimestamp},
		{name: "max int64 timestamp", sig: "v0=" + hexMAC, ts: "9223372036854775807", wantReason: alo.ReasonStaleTimestamp},
		{name: "zero timestamp", sig: "v0=" + hexMAC, ts: "0", wantReason: alo.ReasonStaleTimestamp},
		{name: "301s ahead", sig: v0(secret, 301), ts: at(301), wantReason: alo.ReasonStaleTimestamp},
		{name: "301s behind", sig: v0(secret, -301), ts: at(-301), wantReason: alo.ReasonStaleTimestamp},
		{name: "300s ahead", sig: v0(secret, 300), ts: at(300), wantForm: alo.FormV0Hex},
		{name: "300s behind", sig: v0(secret, -300), ts: at(-300), wantForm: alo.FormV0Hex},
		{name: "299s ahead", sig: v0(secret, 299), ts: at(299), wantForm: alo.FormV0Hex},
		{name: "299s behind", sig: v0(secret, -299), ts: at(-299), wantForm: alo.FormV0Hex},
		{name: "custom tolerance exceeded", tolerance: 10 * time.Second, sig: v0(secret, 11), ts: at(11), wantReason: alo.ReasonStaleTimestamp},
		{name: "custom tolerance kept", tolerance: 10 * time.Second, sig: v0(secret, -10), ts: at(-10), wantForm: alo.FormV0Hex},
		{name: "rotation: second secret", secrets: []string{secret, newSecret}, sig: v0(newSecret, 0), wantForm: alo.FormV0Hex},
		{name: "rotation: first secret", secrets: []string{secret, newSecret}, sig: v0(secret, 0), wantForm: alo.FormV0Hex},
		{name: "rotation: neither", secrets: []string{secret, newSecret}, sig: v0("old", 0), wantReason: alo.ReasonBadSignature},
		{name: "no secrets", secrets: []string{}, sig: "v0=" + hexMAC, wantReason: alo.ReasonBadSignature},
		{name: "empty secret never verifies", secrets: []string{""}, sig: v0("", 0), wantReason: alo.ReasonBadSignature},
		{name: "empty secret skipped in rotation", secrets: []string{"", secret}, sig: v0(secret, 0), wantForm: alo.FormV0Hex},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secrets := tc.secrets
			if secrets == nil {
				secrets = []string{secret}
			}
			reqTS := tc.ts
			switch reqTS {
			case "":
				reqTS = ts
			case "-":
				reqTS = ""
			}
			reqBody := tc.body
			if reqBody == nil {
				reqBody = body
			}
			v := &alo.Verifier{Secrets: secrets, Tolerance: tc.tolerance, Now: func() time.Time { return now }}
			form, err := v.Verify(tc.sig, reqTS, reqBody)

			gotReason := ""
			if err != nil {
				var ve *alo.VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("got error %T %q, want *alo.VerifyError", err, err)
				}
				gotReason = ve.Reason
			}
			if gotReason != tc.wantReason {
				t.Fatalf("got reason %q (err %v), want %q", gotReason, err, tc.wantReason)
			}
			if form != tc.wantForm {
				t.Errorf("got form %q, want %q", form, tc.wantForm)
			}
			if err == nil {
				return
			}
			// No computed MAC, for any secret and for either timestamp, may
			// show in the message.
			msg := err.Error()
			if !strings.HasPrefix(msg, "verify webhook: ") || len(msg) < len("verify webhook: ")+10 {
				t.Errorf("got message %q, want a plain explanation", msg)
			}
			for _, s := range append(secrets, secret, newSecret) {
				for _, when := range []string{ts, reqTS} {
					for _, spelled := range spellings(mac(s, when, reqBody)) {
						if strings.Contains(msg, spelled) {
							t.Errorf("got message %q, want it without the computed MAC %q", msg, spelled)
						}
					}
				}
			}
		})
	}
}

func TestVerifyErrorMessages(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	v := &alo.Verifier{Secrets: []string{"k"}, Now: func() time.Time { return now }}
	body := []byte("{}")
	tests := []struct {
		name, sig, ts, want string
	}{
		{"missing signature", "", "1", "verify webhook: missing X-ALO-Signature header"},
		{"missing timestamp", "v0=00", "", "verify webhook: missing X-ALO-Request-Timestamp header"},
		{"bad timestamp", "v0=00", "soon", "verify webhook: X-ALO-Request-Timestamp is not a whole number of seconds"},
		{"future", "v0=00", "1700000400", "verify webhook: request timestamp is 6m40s in the future, beyond the 5m0s tolerance"},
		{"past", "v0=00", "1699999000", "verify webhook: request timestamp is 16m40s in the past, beyond the 5m0s tolerance"},
		{"bad form", "v0=00", "1700000000", "verify webhook: X-ALO-Signature is not in an accepted form (v0=<lowercase hex>, lowercase hex or base64 of a SHA-256 HMAC)"},
		{"mismatch", alo.Sign("other", now.Unix(), body), "1700000000", "verify webhook: signature does not match the request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.sig, tc.ts, body)
			if err == nil {
				t.Fatalf("got nil error, want %q", tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSlackVector checks the HMAC construction against Slack's published v0
// example, which ALO's "v0:" scheme mirrors. The body's command is
// "/webhook-collect", as on Slack's page; copies that say "/webapi" do not
// produce the published signature.
func TestSlackVector(t *testing.T) {
	const (
		secret = "8f742231b10e8888abcd99yyyzzz85a5"
		ts     = int64(1531420618)
		body   = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
		want   = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
	)
	if got := alo.Sign(secret, ts, []byte(body)); got != want {
		t.Errorf("Sign: got %q, want %q", got, want)
	}
	v := &alo.Verifier{Secrets: []string{secret}, Now: func() time.Time { return time.Unix(ts+42, 0) }}
	form, err := v.Verify(want, strconv.FormatInt(ts, 10), []byte(body))
	if err != nil || form != alo.FormV0Hex {
		t.Errorf("Verify: got (%q, %v), want (%q, nil)", form, err, alo.FormV0Hex)
	}
}

func TestSign(t *testing.T) {
	tests := []struct {
		secret string
		ts     int64
		body   []byte
	}{
		{"s3cret", 1_700_000_000, []byte(`{"type":"action_created"}`)},
		{"s3cret", 0, nil},
		{"", 1, []byte("x")},
		{"ünïcode", 1_531_420_618, []byte{0, 0xff, '\n'}},
	}
	for _, tc := range tests {
		want := "v0=" + hex.EncodeToString(mac(tc.secret, strconv.FormatInt(tc.ts, 10), tc.body))
		if got := alo.Sign(tc.secret, tc.ts, tc.body); got != want {
			t.Errorf("Sign(%q, %d, %q): got %q, want %q", tc.secret, tc.ts, tc.body, got, want)
		}
	}
}

func TestSignRequest(t *testing.T) {
	now := time.Unix(1_700_000_123, 999_000_000)
	body := []byte(`{"type":"webhook_url_verification","challenge":"c"}`)
	req, err := http.NewRequest(http.MethodPost, "http://example.invalid/webhooks/alo", nil)
	if err != nil {
		t.Fatal(err)
	}
	alo.SignRequest(req, "s3cret", now, body)

	if got, want := req.Header.Get(alo.HeaderTimestamp), "1700000123"; got != want {
		t.Errorf("timestamp header: got %q, want %q", got, want)
	}
	if got, want := req.Header.Get(alo.HeaderSignature), alo.Sign("s3cret", 1_700_000_123, body); got != want {
		t.Errorf("signature header: got %q, want %q", got, want)
	}
	v := &alo.Verifier{Secrets: []string{"s3cret"}, Now: func() time.Time { return now }}
	if form, err := v.Verify(req.Header.Get(alo.HeaderSignature), req.Header.Get(alo.HeaderTimestamp), body); err != nil || form != alo.FormV0Hex {
		t.Errorf("Verify: got (%q, %v), want (%q, nil)", form, err, alo.FormV0Hex)
	}

	bare := &http.Request{} // no header map yet
	alo.SignRequest(bare, "s3cret", now, body)
	if got := bare.Header.Get(alo.HeaderSignature); got == "" {
		t.Errorf("got no signature on a request without headers, want one")
	}
}

func TestVerifyDefaultsToWallClock(t *testing.T) {
	body := []byte("{}")
	now := time.Now().Unix()
	v := &alo.Verifier{Secrets: []string{"k"}}
	if _, err := v.Verify(alo.Sign("k", now, body), strconv.FormatInt(now, 10), body); err != nil {
		t.Errorf("fresh request: got %v, want nil", err)
	}
	old := now - 3600
	_, err := v.Verify(alo.Sign("k", old, body), strconv.FormatInt(old, 10), body)
	var ve *alo.VerifyError
	if !errors.As(err, &ve) || ve.Reason != alo.ReasonStaleTimestamp {
		t.Errorf("hour-old request: got %v, want %s", err, alo.ReasonStaleTimestamp)
	}
}

func FuzzVerify(f *testing.F) {
	const now = int64(1_700_000_000)
	body := []byte(`{"type":"action_created"}`)
	good := mac("s3cret", "1700000000", body)
	f.Add("s3cret", now, alo.Sign("s3cret", now, body), "1700000000", body)
	f.Add("s3cret", now, hex.EncodeToString(good), "1700000000", body)
	f.Add("s3cret", now, base64.StdEncoding.EncodeToString(good), "1700000000", body)
	f.Add("s3cret", now, base64.RawURLEncoding.EncodeToString(good), "1700000000", body)
	f.Add("s3cret", now, strings.ToUpper(hex.EncodeToString(good)), "1700000000", body)
	f.Add("", int64(0), "", "", []byte(nil))
	f.Add("k", int64(-5), "v0=zz", "-1", []byte("x"))
	f.Add("k", int64(1)<<62, "v0=", "99999999999999999999", []byte{0xff})
	f.Add("k", now, "v0="+strings.Repeat("0", 64), "1700000301", body)
	f.Add("other", now, "====", "1699999699", []byte("{}"))

	f.Fuzz(func(t *testing.T, secret string, ts int64, sig, tsHeader string, body []byte) {
		secrets := []string{secret, "other"}
		v := &alo.Verifier{Secrets: secrets, Now: func() time.Time { return time.Unix(now, 0) }}
		form, err := v.Verify(sig, tsHeader, body)
		if err == nil {
			switch form {
			case alo.FormV0Hex, alo.FormHex, alo.FormBase64, alo.FormBase64URL:
			default:
				t.Fatalf("got form %q on success, want a known form", form)
			}
		} else {
			var ve *alo.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("got error %T, want *alo.VerifyError", err)
			}
			switch ve.Reason {
			case alo.ReasonMissingSignature, alo.ReasonMissingTimestamp, alo.ReasonBadTimestamp,
				alo.ReasonStaleTimestamp, alo.ReasonBadSignature:
			default:
				t.Fatalf("got reason %q, want a known reason", ve.Reason)
			}
			for _, s := range secrets {
				for _, spelled := range spellings(mac(s, tsHeader, body)) {
					if strings.Contains(err.Error(), spelled) {
						t.Fatalf("got message %q, want it without the MAC", err)
					}
				}
			}
		}

		// Whatever the inputs, a signature made by Sign verifies at its own
		// time, in every accepted spelling, unless the secret is empty.
		if ts < 0 {
			ts = -(ts + 1)
		}
		ts %= 100_000_000_000 // keep time.Unix in range
		tsText := strconv.FormatInt(ts, 10)
		signed := alo.Sign(secret, ts, body)
		raw := mac(secret, tsText, body)
		at := &alo.Verifier{Secrets: []string{"other", secret}, Now: func() time.Time { return time.Unix(ts, 0) }}
		for _, c := range []struct{ sig, form string }{
			{signed, alo.FormV0Hex},
			{hex.EncodeToString(raw), alo.FormHex},
			{base64.StdEncoding.EncodeToString(raw), alo.FormBase64},
			{base64.RawURLEncoding.EncodeToString(raw), alo.FormBase64URL},
		} {
			form, err := at.Verify(c.sig, tsText, body)
			if secret == "" {
				var ve *alo.VerifyError
				if !errors.As(err, &ve) || ve.Reason != alo.ReasonBadSignature {
					t.Fatalf("empty secret: got (%q, %v), want %s", form, err, alo.ReasonBadSignature)
				}
				continue
			}
			if err != nil || form != c.form {
				t.Fatalf("Verify(%q): got (%q, %v), want (%q, nil)", c.sig, form, err, c.form)
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	now := time.Unix(1_700_000_000, 0)
	body := []byte(strings.Repeat(`{"type":"action_updated","action":{"id":"a1","title":"Fix the door"}}`, 20))
	sig := alo.Sign("new", now.Unix(), body)
	v := &alo.Verifier{Secrets: []string{"old", "new"}, Now: func() time.Time { return now }}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := v.Verify(sig, "1700000000", body); err != nil {
			b.Fatal(err)
		}
	}
}
