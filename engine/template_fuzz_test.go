package engine

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"alorules/actions"
)

// FuzzTemplateDestinations inserts one payload value into every kind of
// destination a template has: a URL path segment and query, a header, a
// json: body (as a string and inside a longer string), and raw text. Each
// must carry the value back exactly and add no structure: no extra path
// segment, no extra query parameter, no JSON outside its string, and no
// template evaluated from the payload.
func FuzzTemplateDestinations(f *testing.F) {
	for _, s := range []string{"../", "..", "a/b?c=d#e", `"}`, "{{ 1+1 }}", "%2e%2e", "x&y=z", "\x00", "é ü", " "} {
		f.Add(s)
	}
	rs, _, err := Parse("rules.yaml", []byte(`version: 1
rules:
  - name: a
    do:
      - http:
          url: "https://api.example.test/items/{{ event.v }}/notes"
          query: { q: "{{ event.v }}" }
          headers: { X-Value: "{{ event.v }}" }
          json: { exact: "{{ event.v }}", within: "before {{ event.v }} after", typed: "{{ event.n }}" }
          body: ""
`), nil)
	if err != nil {
		f.Fatal(err)
	}
	r := rs.byName["a"]
	f.Fuzz(func(t *testing.T, v string) {
		payload, err := json.Marshal(map[string]any{"type": "action_created", "v": v, "n": 7})
		if err != nil {
			t.Skip()
		}
		var want string // what the payload says, after JSON's own repair of invalid UTF-8
		if err := json.Unmarshal(payload, &struct{ V *string }{&want}); err != nil {
			t.Skip()
		}
		h := renderFirstStep(t, rs, r, payload).(*actions.HTTP)

		u, err := url.Parse(h.URL)
		if err != nil {
			t.Fatalf("got URL %q that does not parse: %v", h.URL, err)
		}
		if u.Host != "api.example.test" || u.RawQuery != "" || u.Fragment != "" {
			t.Errorf("got URL %q: the value changed its host, query or fragment", h.URL)
		}
		segs := strings.Split(u.EscapedPath(), "/")
		if len(segs) != 4 || segs[1] != "items" || segs[3] != "notes" {
			t.Fatalf("got path %q: the value added or removed segments", u.EscapedPath())
		}
		if got, err := url.PathUnescape(segs[2]); err != nil || got != want {
			t.Errorf("got path segment %q (%q, %v), want %q", segs[2], got, err, want)
		}
		if seg := segs[2]; seg != "" && strings.Trim(seg, ".") == "" {
			t.Errorf("got path segment %q: dots alone can climb", seg)
		}
		if got := h.Query["q"]; got != want {
			t.Errorf("got query value %q, want %q", got, want)
		}
		if got := h.Headers["X-Value"]; got != want {
			t.Errorf("got header %q, want %q", got, want)
		}

		body, err := json.Marshal(h.JSON)
		if err != nil {
			t.Fatalf("json body does not marshal: %v", err)
		}
		var back struct {
			Exact  string `json:"exact"`
			Within string `json:"within"`
			Typed  any    `json:"typed"`
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("got body %s: %v", body, err)
		}
		if back.Exact != want || back.Within != "before "+want+" after" {
			t.Errorf("got body %s, want the value %q carried as data", body, want)
		}
		if back.Typed != float64(7) {
			t.Errorf("got typed %v (%T), want the number 7", back.Typed, back.Typed)
		}
	})
}
