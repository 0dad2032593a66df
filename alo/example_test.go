package alo_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"alorules/alo"
)

func ExampleVerifier_Verify() {
	body := []byte(`{"type":"action_created"}`)
	now := time.Unix(1_700_000_000, 0)

	// What ALO sends: a timestamp and a MAC over "v0:<ts>:<body>".
	sig := alo.Sign("old-secret", now.Unix(), body)
	ts := strconv.FormatInt(now.Unix(), 10)

	// During a rotation both secrets are accepted.
	v := &alo.Verifier{Secrets: []string{"new-secret", "old-secret"}, Now: func() time.Time { return now }}
	form, err := v.Verify(sig, ts, body)
	fmt.Println(form, err)

	_, err = v.Verify(sig, ts, []byte(`{"type":"action_updated"}`))
	fmt.Println(err)
	// Output:
	// v0=hex <nil>
	// verify webhook: signature does not match the request
}

func ExampleSuggest() {
	for _, t := range []string{"action_creatd", "action_status_changed", "ticket_closed"} {
		fmt.Printf("%q -> %q\n", t, alo.Suggest(t))
	}
	// Output:
	// "action_creatd" -> "action_created"
	// "action_status_changed" -> ""
	// "ticket_closed" -> ""
}

func ExampleClient_PostMessage() {
	// A stand-in for the Platform API.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Println(r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), string(b))
		io.WriteString(w, `{"id":"m-1"}`)
	}))
	defer srv.Close()

	c := &alo.Client{BaseURL: srv.URL + "/v1", APIKey: "key-1"}
	resp, err := c.PostMessage(context.Background(), "chat.team.42", alo.Message{Content: "Ticket opened"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, string(resp.Body))
	// Output:
	// PUT /v1/channels/chat.team.42/chat_messages Bearer key-1 {"content":"Ticket opened"}
	// 200 {"id":"m-1"}
}
