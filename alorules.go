// Package alorules holds the domain types shared by every part of the
// service: events received from ALO, the per-rule outcome of matching them,
// executions of matched rules and the results of their steps.
//
// It imports only the standard library so that every other package can speak
// these types without depending on each other.
package alorules

import (
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Version is the release of alorules; the build may override it with
// -ldflags "-X alorules.Version=...".
var Version = "0.1.0-dev"

// Sentinel errors shared across packages. Wrap them with context; compare
// with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrStoreClosed = errors.New("store closed")
	ErrConflict    = errors.New("conflict")
	// ErrUnavailable marks a failure that may pass on its own, such as a
	// store that cannot be read right now: try again later rather than
	// give up.
	ErrUnavailable = errors.New("temporarily unavailable")
)

// Event is one webhook delivery accepted from ALO, stored exactly as received.
type Event struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`     // normalised type (aliases folded)
	RawType    string    `json:"raw_type"` // the type string as ALO sent it
	ReceivedAt time.Time `json:"received_at"`
	// Payload is the body as received, byte for byte.
	Payload json.RawMessage `json:"payload"`
	// Headers are the request headers worth keeping, with the signature
	// redacted.
	Headers map[string]string `json:"headers,omitempty"`
	// SignatureForm records which accepted encoding of the MAC matched
	// ("v0=hex", "hex" or "base64"), so the real one can be pinned down.
	SignatureForm string `json:"signature_form,omitempty"`
	// Handshake marks URL verification requests: stored, never matched.
	Handshake bool `json:"handshake,omitempty"`
}

// Outcome is what happened when one rule met one event.
type Outcome string

// Rule outcomes; the same words are used in the store, the API, --json
// output and metric labels.
const (
	OutcomeMatched    Outcome = "matched"
	OutcomeNotMatched Outcome = "not_matched"
	OutcomeSkipped    Outcome = "skipped" // the event's type is not in the rule's "on"
	OutcomeThrottled  Outcome = "throttled"
	OutcomeError      Outcome = "error"
	// OutcomeLoop marks a rule stopped for a key because it fired too often
	// in a minute, most likely because its own steps trigger new events.
	OutcomeLoop Outcome = "loop_suspected"
)

// RuleResult is one rule's outcome for one event.
type RuleResult struct {
	Rule        string  `json:"rule"`
	Outcome     Outcome `json:"outcome"`
	Error       string  `json:"error,omitempty"`
	ExecutionID string  `json:"execution_id,omitempty"`
	// Stopped is set on the rule whose "stop: true" ended the walk.
	Stopped bool `json:"stopped,omitempty"`
}

// Match is the record of evaluating one event against one rule set.
type Match struct {
	EventID     string       `json:"event_id"`
	RuleSetHash string       `json:"ruleset_hash"`
	MatchedAt   time.Time    `json:"matched_at"`
	Results     []RuleResult `json:"results"`
	// Entity is the key of the thing the event is about (by default the
	// ALO action id); empty when the event named none.
	Entity string `json:"entity,omitempty"`
	// PreviousEventID is the entity's event before this one, whose payload
	// the rules saw as previous; empty when there was none.
	PreviousEventID string `json:"previous_event_id,omitempty"`
	// Changed lists the leaf paths (dot-separated, relative to the
	// payload) whose values differ from the previous payload, at most
	// MaxChanged of them; ChangedMore counts the rest.
	Changed     []string `json:"changed,omitempty"`
	ChangedMore int      `json:"changed_more,omitempty"`
	// Deferred is what the event did to escalation timers and digests.
	Deferred []Deferral `json:"deferred,omitempty"`
}

// MaxChanged caps Match.Changed: a payload rewritten wholesale would
// otherwise fill the record with every path it has.
const MaxChanged = 50

// DeferralKind says what an event did to a rule's timer or digest.
type DeferralKind string

// Deferral kinds, the same words in the store, the API and rule tests.
const (
	// TimerSet: the rule matched and a timer now runs for its entity.
	TimerSet DeferralKind = "timer_set"
	// TimerKept: the rule matched again while its timer was pending; the
	// first due time stays.
	TimerKept DeferralKind = "timer_kept"
	// TimerNotSet: the rule matched but its "unless" already held.
	TimerNotSet DeferralKind = "timer_not_set"
	// TimerCancelled: the event made a pending timer's "unless" true.
	TimerCancelled DeferralKind = "timer_cancelled"
	// DigestAdded: the rule matched and the event joined its digest.
	DigestAdded DeferralKind = "digest_added"
)

// Deferral is one change to a timer or a digest made by an event.
type Deferral struct {
	Rule string       `json:"rule"`
	Kind DeferralKind `json:"kind"`
	// TimerID names the timer set, kept or cancelled.
	TimerID string `json:"timer_id,omitempty"`
	// Due is when the timer fires or the digest closes.
	Due time.Time `json:"due,omitzero"`
	// Key is the digest's key.
	Key string `json:"key,omitempty"`
}

// Status is the state of an execution or of one of its steps.
type Status string

// Execution and step statuses.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusRetrying  Status = "retrying"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
)

// Final reports whether no more work is due for this status.
func (s Status) Final() bool { return s == StatusSucceeded || s == StatusFailed }

// RetryPolicy says how often and how patiently a failing step is retried.
type RetryPolicy struct {
	Attempts   int           `json:"attempts"`
	Backoff    time.Duration `json:"backoff"`
	MaxBackoff time.Duration `json:"max_backoff"`
}

// Execution is one run of a matched rule's steps for one event. It is a
// durable job: the store keeps it queued until a runner finishes it.
type Execution struct {
	ID          string    `json:"id"`
	EventID     string    `json:"event_id"`
	Rule        string    `json:"rule"`
	RuleSetHash string    `json:"ruleset_hash"`
	Status      Status    `json:"status"`
	Replay      bool      `json:"replay,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// NextAttemptAt is when a queued or retrying execution is due.
	NextAttemptAt time.Time     `json:"next_attempt_at,omitzero"`
	Retry         RetryPolicy   `json:"retry"`
	Timeout       time.Duration `json:"timeout"`
	Steps         []StepResult  `json:"steps"`
	Error         string        `json:"error,omitempty"`
	// Vars are extra names for the step templates' environment beyond the
	// event itself (for example a digest's "events"), kept so that a step
	// rendered after a restart sees what it would have seen before.
	Vars map[string]json.RawMessage `json:"vars,omitempty"`
}

// StepResult is the record of one step of an execution.
type StepResult struct {
	Index int    `json:"index"`
	ID    string `json:"id,omitempty"` // the step's "id:", for steps.<id>
	Kind  string `json:"kind"`         // slack, http or alo
	// ContinueOnError lets the next steps run after this one fails.
	ContinueOnError bool   `json:"continue_on_error,omitempty"`
	Status          Status `json:"status"`
	Attempts        int    `json:"attempts"`
	// Request is the rendered request, secrets redacted.
	Request   json.RawMessage `json:"request,omitempty"`
	StartedAt time.Time       `json:"started_at,omitzero"`
	Duration  time.Duration   `json:"duration"`
	Code      int             `json:"code,omitempty"`
	// Body is the response body, capped and redacted; later steps read it
	// as steps.<id>.body and, when it is JSON, steps.<id>.json.
	Body  string `json:"body,omitempty"`
	Error string `json:"error,omitempty"`
}

// Secret is a string that never shows itself: it prints, marshals and logs
// as <secret>. Use Reveal only where the value goes on the wire.
type Secret string

// Redacted is what a secret looks like wherever it is shown.
const Redacted = "<secret>"

// String implements fmt.Stringer.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer, so %#v does not leak either.
func (s Secret) GoString() string { return Redacted }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }

// MarshalText implements encoding.TextMarshaler (used by slog and YAML).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Reveal returns the secret's value, for use on the wire only.
func (s Secret) Reveal() string { return string(s) }

// Redactor replaces known secret values in text with <secret>.
// The zero value redacts nothing.
type Redactor struct {
	r     *strings.Replacer
	forms []string // every spelling looked for, longest first
}

// NewRedactor builds a redactor for the given secret values. Values shorter
// than four characters are ignored: redacting them would mangle ordinary
// text without protecting anything. Each secret is also looked for in the
// spellings a target may echo it back in: JSON-escaped (with and without
// HTML escaping, and with escaped slashes) and URL-encoded.
func NewRedactor(secrets ...string) Redactor {
	var forms []string
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		forms = append(forms, s, url.QueryEscape(s), url.PathEscape(s))
		for _, html := range []bool{true, false} {
			var b strings.Builder
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(html)
			if enc.Encode(s) == nil {
				quoted := strings.TrimSuffix(b.String(), "\n")
				inner := quoted[1 : len(quoted)-1]
				forms = append(forms, inner, strings.ReplaceAll(inner, "/", `\/`))
			}
		}
	}
	// Longest first, so a secret that contains another is replaced whole.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	var pairs, unique []string
	seen := map[string]bool{}
	for _, f := range forms {
		if seen[f] {
			continue
		}
		seen[f] = true
		pairs = append(pairs, f, Redacted)
		unique = append(unique, f)
	}
	if len(pairs) == 0 {
		return Redactor{}
	}
	return Redactor{r: strings.NewReplacer(pairs...), forms: unique}
}

// PartialEnd returns where a secret that s was cut in the middle of begins:
// the start of the longest end of s that is the beginning of a secret, in
// any spelling String looks for. It returns len(s) when s ends in no part
// of a secret. String cannot recognise half a secret, so a text that was
// cut (a response body kept up to a limit, or that stopped arriving) is
// cut again here before it is shown. Only a cut text needs it: a whole one
// that ends in text which happens to begin a secret shows no secret.
func (r Redactor) PartialEnd(s string) int {
	end := len(s)
	for _, f := range r.forms {
		// Only a proper prefix: a whole secret is String's to replace.
		for i := max(len(s)-len(f)+1, 0); i < end; i++ {
			if strings.HasPrefix(f, s[i:]) {
				end = i
				break
			}
		}
	}
	return end
}

// String returns s with every known secret replaced.
func (r Redactor) String(s string) string {
	if r.r == nil {
		return s
	}
	return r.r.Replace(s)
}
