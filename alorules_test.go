package alorules

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretNeverShowsItself(t *testing.T) {
	s := Secret("xoxb-very-secret-token")
	js, _ := json.Marshal(struct{ T Secret }{s})
	var back struct{ T string }
	json.Unmarshal(js, &back)
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("conn", "token", s)
	shown := map[string]string{
		"%s":    fmt.Sprintf("%s", s), //lint:ignore S1025 how %s prints a Secret is the point
		"%v":    fmt.Sprintf("%v", s),
		"%#v":   fmt.Sprintf("%#v", s),
		"%+v":   fmt.Sprintf("%+v", struct{ T Secret }{s}),
		"json":  back.T,
		"slog":  logged.String(),
		"error": fmt.Errorf("post: %v", s).Error(),
	}
	for how, out := range shown {
		if strings.Contains(out, "very-secret") {
			t.Errorf("%s: got %q, want the secret hidden", how, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s: got %q, want %s", how, out, Redacted)
		}
	}
	if s.Reveal() != "xoxb-very-secret-token" {
		t.Errorf("got %q from Reveal, want the value", s.Reveal())
	}
}

func TestRedactor(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"none", nil, "plain text", "plain text"},
		{"one", []string{"hunter22"}, "pw=hunter22&x=1", "pw=<secret>&x=1"},
		{"every occurrence", []string{"abcd1234"}, "abcd1234/abcd1234", "<secret>/<secret>"},
		{"longest first", []string{"token", "token-with-suffix"}, "token-with-suffix", "<secret>"},
		{"short values ignored", []string{"ab", ""}, "ab cd", "ab cd"},
		{"json-escaped echo", []string{"https://h.example/in?a=1&key=k3y"}, `{"url":"https:\/\/h.example\/in?a=1\u0026key=k3y"}`, `{"url":"<secret>"}`},
		{"json-escaped without html escaping", []string{"tok\"en&<x>"}, `"tok\"en&<x>"`, `"<secret>"`},
		{"url-encoded echo", []string{"a b&c=d"}, "q=a+b%26c%3Dd", "q=<secret>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewRedactor(tc.secrets...).String(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRedactorPartialEnd(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string // in[:PartialEnd(in)]
	}{
		{"no secrets", nil, "abc xoxb-12", "abc xoxb-12"},
		{"no part at the end", []string{"xoxb-1234"}, "abc xoxb-1234 done", "abc xoxb-1234 done"},
		{"half a secret", []string{"xoxb-1234"}, "abc xoxb-12", "abc "},
		{"one character", []string{"xoxb-1234"}, "abc x", "abc "},
		{"whole secret left to String", []string{"xoxb-1234"}, "abc xoxb-1234", "abc xoxb-1234"},
		{"whole secret then a part", []string{"xoxb-1234"}, "xoxb-1234xoxb", "xoxb-1234"},
		{"longest part wins", []string{"abab-secret"}, "zzabab", "zz"},
		{"of either secret", []string{"first-secret", "second-secret"}, "a sec", "a "},
		{"json-escaped spelling", []string{"a/b-secret"}, `{"k":"a\/b-se`, `{"k":"`},
		{"url-encoded spelling", []string{"a b&secret"}, "q=a+b%26sec", "q="},
		{"short values ignored", []string{"ab"}, "xa", "xa"},
		{"empty text", []string{"xoxb-1234"}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in[:NewRedactor(tc.secrets...).PartialEnd(tc.in)]; got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStatusFinal(t *testing.T) {
	for s, want := range map[Status]bool{StatusQueued: false, StatusRunning: false, StatusRetrying: false, StatusSucceeded: true, StatusFailed: true} {
		if s.Final() != want {
			t.Errorf("%s.Final(): got %v, want %v", s, !want, want)
		}
	}
}
