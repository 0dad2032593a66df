// Package actions runs the steps of executions: Slack posts, HTTP calls and
// ALO Platform API calls, with one retry policy, an outbound address guard and
// a bounded, durable worker pool.
package actions

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"alorules"
)

// Step kinds. The mapping from a kind to its spec and its sender is one
// explicit switch in NewSpec and Do, so a grep for a kind finds all wiring.
const (
	KindSlack = "slack"
	KindHTTP  = "http"
	KindALO   = "alo"
)

// Kinds lists the step kinds in the order they are documented.
var Kinds = []string{KindSlack, KindHTTP, KindALO}

// Connection is a named target from the rules file's "connections". Exactly
// one of Slack, HTTP and ALO is set.
type Connection struct {
	Name string `yaml:"-" json:"name"`
	// AllowPrivate lets steps reach loopback, private and link-local
	// addresses (tests, on-premises targets).
	AllowPrivate bool              `yaml:"allow_private" json:"allow_private,omitempty"`
	Slack        *SlackConn        `yaml:"slack" json:"slack,omitempty"`
	HTTP         *HTTPConn         `yaml:"http" json:"http,omitempty"`
	ALO          *ALOConn          `yaml:"alo" json:"alo,omitempty"`
	Secrets      []string          `yaml:"-" json:"-"` // values that came from ${VAR}
	Redact       alorules.Redactor `yaml:"-" json:"-"`
}

// Kind returns the step kind this connection serves.
func (c *Connection) Kind() string {
	switch {
	case c.Slack != nil:
		return KindSlack
	case c.HTTP != nil:
		return KindHTTP
	case c.ALO != nil:
		return KindALO
	}
	return ""
}

// Validate checks that exactly one kind is configured and that it is
// complete.
func (c *Connection) Validate() error {
	n := 0
	for _, set := range []bool{c.Slack != nil, c.HTTP != nil, c.ALO != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("a connection needs exactly one of slack, http or alo, got %d", n)
	}
	switch {
	case c.Slack != nil:
		return c.Slack.validate()
	case c.HTTP != nil:
		return c.HTTP.validate()
	default:
		return c.ALO.validate()
	}
}

// SlackConn is an incoming-webhook URL, or a bot token used with
// chat.postMessage.
type SlackConn struct {
	WebhookURL alorules.Secret `yaml:"webhook_url" json:"webhook_url,omitempty"`
	Token      alorules.Secret `yaml:"token" json:"token,omitempty"`
	Channel    string          `yaml:"channel" json:"channel,omitempty"`
	// APIURL overrides Slack's Web API base (https://slack.com/api/), for
	// tests and proxies.
	APIURL string `yaml:"api_url" json:"api_url,omitempty"`
}

func (c *SlackConn) validate() error {
	switch {
	case c.WebhookURL == "" && c.Token == "":
		return errors.New("slack: needs webhook_url or token")
	case c.WebhookURL != "" && c.Token != "":
		return errors.New("slack: webhook_url and token are exclusive")
	}
	if c.WebhookURL != "" {
		if err := checkURL(string(c.WebhookURL)); err != nil {
			return fmt.Errorf("slack: webhook_url %w", err)
		}
	}
	if c.APIURL != "" {
		if err := checkURL(c.APIURL); err != nil {
			return fmt.Errorf("slack: api_url %w", err)
		}
	}
	return nil
}

// checkURL reports a URL that no step could send to. The URL itself is
// not repeated in the error: it may carry a secret (a Slack webhook URL
// is one).
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must start with https:// or http://")
	case u.Host == "":
		return errors.New("has no host")
	}
	return nil
}

// HTTPConn is a base URL with headers sent on every request.
type HTTPConn struct {
	BaseURL string            `yaml:"base_url" json:"base_url"`
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
}

func (c *HTTPConn) validate() error {
	if c.BaseURL == "" {
		return errors.New("http: needs base_url")
	}
	if err := checkURL(c.BaseURL); err != nil {
		return fmt.Errorf("http: base_url %w", err)
	}
	return nil
}

// ALOConn is the ALO Platform API with an API key.
type ALOConn struct {
	APIKey alorules.Secret `yaml:"api_key" json:"api_key"`
	// BaseURL defaults to https://api.alo.ai/v1.
	BaseURL string `yaml:"base_url" json:"base_url,omitempty"`
	// AuthScheme is the Authorization scheme; "Bearer" by default since
	// ALO's docs do not confirm one.
	AuthScheme string `yaml:"auth_scheme" json:"auth_scheme,omitempty"`
}

func (c *ALOConn) validate() error {
	if c.APIKey == "" {
		return errors.New("alo: needs api_key")
	}
	if c.BaseURL != "" {
		if err := checkURL(c.BaseURL); err != nil {
			return fmt.Errorf("alo: base_url %w", err)
		}
	}
	return nil
}

// HTTP is the spec of an http step after rendering.
type HTTP struct {
	Connection string            `yaml:"connection" json:"connection,omitempty"`
	URL        string            `yaml:"url" json:"url,omitempty"`
	Path       string            `yaml:"path" json:"path,omitempty"`
	Method     string            `yaml:"method" json:"method,omitempty"`
	Headers    map[string]string `yaml:"headers" json:"headers,omitempty"`
	Query      map[string]string `yaml:"query" json:"query,omitempty"`
	JSON       any               `yaml:"json" json:"json,omitempty"`
	Body       string            `yaml:"body" json:"body,omitempty"`
	Timeout    string            `yaml:"timeout" json:"timeout,omitempty"`
	// Expect lists the accepted status codes; empty means any 2xx.
	Expect []int `yaml:"expect" json:"expect,omitempty"`
}

// Slack is the spec of a slack step after rendering.
type Slack struct {
	Connection string `yaml:"connection" json:"connection"`
	Text       string `yaml:"text" json:"text,omitempty"`
	// Channel overrides the connection's channel (bot token only).
	Channel  string `yaml:"channel" json:"channel,omitempty"`
	Blocks   any    `yaml:"blocks" json:"blocks,omitempty"`
	ThreadTS string `yaml:"thread_ts" json:"thread_ts,omitempty"`
	Timeout  string `yaml:"timeout" json:"timeout,omitempty"`
}

// ALO is the spec of an alo step after rendering: exactly one operation.
type ALO struct {
	Connection        string      `yaml:"connection" json:"connection"`
	PostMessage       *ALOMessage `yaml:"post_message" json:"post_message,omitempty"`
	PostDirectMessage *ALOMessage `yaml:"post_direct_message" json:"post_direct_message,omitempty"`
	Request           *ALORequest `yaml:"request" json:"request,omitempty"`
	Timeout           string      `yaml:"timeout" json:"timeout,omitempty"`
}

// ALOMessage is a chat message for a team or direct-message channel.
type ALOMessage struct {
	ChannelID             string `yaml:"channel_id" json:"channel_id"`
	Content               string `yaml:"content" json:"content"`
	UserID                string `yaml:"user_id" json:"user_id,omitempty"`
	ParentID              string `yaml:"parent_id" json:"parent_id,omitempty"`
	TersePushNotification bool   `yaml:"terse_push_notification" json:"terse_push_notification,omitempty"`
}

// ALORequest is any other Platform API call.
type ALORequest struct {
	Method string            `yaml:"method" json:"method"`
	Path   string            `yaml:"path" json:"path"`
	Query  map[string]string `yaml:"query" json:"query,omitempty"`
	JSON   any               `yaml:"json" json:"json,omitempty"`
}

// Spec is the rendered configuration of one step kind.
type Spec interface {
	// ConnectionName is the connection the step uses, "" for none.
	ConnectionName() string
	// Validate checks the rendered spec against its connection (which may
	// be nil when ConnectionName is "").
	Validate(conn *Connection) error
}

// NewSpec returns an empty spec for kind, to decode a step into.
func NewSpec(kind string) (Spec, error) {
	switch kind {
	case KindSlack:
		return &Slack{}, nil
	case KindHTTP:
		return &HTTP{}, nil
	case KindALO:
		return &ALO{}, nil
	}
	return nil, fmt.Errorf("unknown step kind %q", kind)
}

// ConnectionName implements Spec.
func (s *HTTP) ConnectionName() string { return s.Connection }

// ConnectionName implements Spec.
func (s *Slack) ConnectionName() string { return s.Connection }

// ConnectionName implements Spec.
func (s *ALO) ConnectionName() string { return s.Connection }

// Request is one rendered step, ready to send.
type Request struct {
	ExecutionID string
	Rule        string
	Index       int
	Kind        string
	Spec        Spec
	Conn        *Connection // nil for an http step with a full url
	// IdempotencyKey is stable across retries and restarts: event id, rule
	// and step index.
	IdempotencyKey string
	Timeout        time.Duration
	// Redact hides the rule set's secrets in anything recorded.
	Redact alorules.Redactor
}

// Validate implements Spec.
func (s *HTTP) Validate(conn *Connection) error {
	switch {
	case s.URL == "" && s.Connection == "":
		return errors.New("http: needs url, or connection with path")
	case s.URL != "" && s.Connection != "":
		return errors.New("http: url and connection are exclusive")
	case s.JSON != nil && s.Body != "":
		return errors.New("http: json and body are exclusive")
	}
	if conn != nil && conn.HTTP == nil {
		return fmt.Errorf("http: connection %q is not an http connection", conn.Name)
	}
	return nil
}

// Validate implements Spec.
func (s *Slack) Validate(conn *Connection) error {
	if s.Connection == "" {
		return errors.New("slack: needs connection")
	}
	if conn != nil && conn.Slack == nil {
		return fmt.Errorf("slack: connection %q is not a slack connection", conn.Name)
	}
	if s.Text == "" && s.Blocks == nil {
		return errors.New("slack: needs text or blocks")
	}
	return nil
}

// Validate implements Spec.
func (s *ALO) Validate(conn *Connection) error {
	if s.Connection == "" {
		return errors.New("alo: needs connection")
	}
	if conn != nil && conn.ALO == nil {
		return fmt.Errorf("alo: connection %q is not an alo connection", conn.Name)
	}
	n := 0
	for _, set := range []bool{s.PostMessage != nil, s.PostDirectMessage != nil, s.Request != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("alo: needs exactly one of post_message, post_direct_message or request")
	}
	return nil
}
