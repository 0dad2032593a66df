// Package web serves alorules over HTTP: the webhook ingress on the public
// listener, and the admin JSON API, metrics and UI on a separate one.
package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"alorules"
	"alorules/alo"
	"alorules/store"
)

// Store is what the web package reads and writes; *store.Store satisfies it.
type Store interface {
	SaveEvent(ctx context.Context, ev *alorules.Event, dedupe []store.DedupeKey) (string, bool, error)
	Event(ctx context.Context, id string) (*alorules.Event, error)
	Events(ctx context.Context, f store.EventFilter) ([]*alorules.Event, string, error)
	Match(ctx context.Context, eventID string) (*alorules.Match, error)
	EventExecutions(ctx context.Context, eventID string) ([]*alorules.Execution, error)
	Execution(ctx context.Context, id string) (*alorules.Execution, error)
	Executions(ctx context.Context, f store.ExecutionFilter) ([]*alorules.Execution, string, error)
}

// Config wires the server to the rest of the service.
type Config struct {
	// Addr serves only the webhook and /healthz; AdminAddr everything else.
	Addr, AdminAddr string
	Verifier        *alo.Verifier
	// MaxBody caps a webhook body; larger ones get 413.
	MaxBody int64
	// DedupeWindow is how long a delivered body (or dedupe key) is
	// remembered to answer redeliveries as duplicates.
	DedupeWindow time.Duration
	// DedupeKey, when set, computes the dedupe key from the body instead
	// of hashing it.
	DedupeKey func(body []byte) (string, error)
	Store     Store
	Auth      *Auth
	// OnEvent is called after an event is durably accepted (to wake the
	// engine). It must not block.
	OnEvent func()
	Logger  *slog.Logger
	// Admin adds the admin routes (API, UI) to the admin listener's echo.
	Admin func(e *echo.Echo)
	// Ready reports whether the service can do its work (for /readyz).
	Ready func(ctx context.Context) error
}

// Server is the pair of HTTP listeners.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *ingressMetrics
	public  *echo.Echo
	admin   *echo.Echo
	pubLn   net.Listener
	admLn   net.Listener
}

// New checks the configuration and builds both listeners' routes. It does
// not listen yet.
func New(cfg Config, reg Registerer) (*Server, error) {
	if cfg.Verifier == nil || len(cfg.Verifier.Secrets) == 0 {
		return nil, errors.New("no signing secret configured: set ALO_SIGNING_SECRET or --signing-secret-file")
	}
	if cfg.Verifier.Tolerance == 0 {
		cfg.Verifier.Tolerance = 300 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.DedupeWindow <= 0 {
		cfg.DedupeWindow = 24 * time.Hour
	}
	if cfg.Auth == nil {
		cfg.Auth = &Auth{}
	}
	if err := checkAdminExposure(cfg.AdminAddr, cfg.Auth); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: orDiscard(cfg.Logger)}
	m, err := newIngressMetrics(reg)
	if err != nil {
		return nil, err
	}
	s.metrics = m

	s.public = newEcho(s.log)
	s.public.POST("/webhooks/alo", s.ingest)
	s.public.GET("/healthz", healthz)

	s.admin = newEcho(s.log)
	s.admin.JSONSerializer = apiJSON{}
	s.admin.Use(noSniff)
	s.admin.GET("/healthz", healthz)
	s.admin.GET("/readyz", s.readyz)
	s.admin.Use(s.cfg.Auth.middleware())
	if cfg.Admin != nil {
		cfg.Admin(s.admin)
	}
	return s, nil
}

// Public is the ingress handler, for tests and for embedding.
func (s *Server) Public() http.Handler { return s.public }

// AdminHandler is the admin handler, for tests and for embedding.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// Listen binds both addresses, so that a taken port fails start-up before
// anything else runs.
func (s *Server) Listen() error {
	var err error
	if s.pubLn, err = net.Listen("tcp", s.cfg.Addr); err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	if s.admLn, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
		s.pubLn.Close()
		return fmt.Errorf("listen admin %s: %w", s.cfg.AdminAddr, err)
	}
	return nil
}

// Addrs returns the bound addresses (useful with port 0).
func (s *Server) Addrs() (public, admin string) {
	return s.pubLn.Addr().String(), s.admLn.Addr().String()
}

// Serve runs both listeners until ctx ends, then stops accepting and waits
// for in-flight requests to finish (bounded by a grace period).
func (s *Server) Serve(ctx context.Context) error {
	pub := &http.Server{Handler: s.public, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	adm := &http.Server{Handler: s.admin, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- pub.Serve(s.pubLn) }()
	go func() { errc <- adm.Serve(s.admLn) }()

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := errors.Join(pub.Shutdown(shut), adm.Shutdown(shut))
	if errors.Is(first, http.ErrServerClosed) {
		first = nil
	}
	return errors.Join(first, err)
}

func healthz(c echo.Context) error { return c.String(http.StatusOK, "ok\n") }

func (s *Server) readyz(c echo.Context) error {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(c.Request().Context()); err != nil {
			return c.String(http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
		}
	}
	return c.String(http.StatusOK, "ready\n")
}

// apiJSON is the admin listener's JSON encoding. Unlike echo's default it
// leaves <, > and & as they are instead of writing \u003c and the like:
// the API shows payloads, conditions and templates as written, and its
// answers are JSON, never HTML (noSniff keeps browsers to that).
type apiJSON struct{ echo.DefaultJSONSerializer }

// Serialize writes v as JSON without HTML escaping.
func (apiJSON) Serialize(c echo.Context, v any, indent string) error {
	enc := json.NewEncoder(c.Response())
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(v)
}

// marshalJSON is json.Marshal as apiJSON encodes, with the newline.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// noSniff stops browsers from guessing that an admin answer holding
// markup from a payload is HTML.
func noSniff(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("X-Content-Type-Options", "nosniff")
		return next(c)
	}
}

// newEcho builds an echo instance whose errors all become JSON in one place.
func newEcho(log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	// Trust only the peer address: X-Forwarded-For is whatever the sender
	// wrote, and it only goes into logs here.
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		code := http.StatusInternalServerError
		msg := "internal error"
		var he *echo.HTTPError
		switch {
		case errors.As(err, &he):
			code = he.Code
			msg = fmt.Sprint(he.Message)
		case errors.Is(err, alorules.ErrNotFound):
			code, msg = http.StatusNotFound, err.Error()
		case errors.Is(err, alorules.ErrConflict):
			code, msg = http.StatusConflict, err.Error()
		case errors.Is(err, alorules.ErrStoreClosed):
			code, msg = http.StatusServiceUnavailable, "store unavailable"
		default:
			log.Error("request failed", "path", c.Path(), "err", err)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(code)
			return
		}
		_ = c.JSON(code, map[string]string{"error": msg})
	}
	return e
}
