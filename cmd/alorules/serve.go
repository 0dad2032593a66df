package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"alorules"
	"alorules/actions"
	"alorules/alo"
	"alorules/engine"
	"alorules/store"
	"alorules/web"
)

// serveConfig is everything `alorules serve` can be told.
type serveConfig struct {
	Rules, DB         string
	Addr, AdminAddr   string
	SigningSecrets    []string
	Tolerance         time.Duration
	MaxBody           int64
	DedupeWindow      time.Duration
	DedupeKey         string
	Workers           int
	MaxPerTarget      int
	LogFormat         string
	LogLevel          string
	AdminUser         string
	AdminPasswordHash string
	AdminToken        string
	LockTimeout       time.Duration
	Retention         time.Duration
	MaxEvents         int
	PruneEvery        time.Duration
}

func parseServe(args []string, cio cmdIO) (serveConfig, error) {
	var c serveConfig
	f := newEnvFlags("serve", cio.getenv)
	f.fs.SetOutput(cio.stderr)
	rules := f.String("rules", "rules.yaml", "rules file, reloaded when it changes")
	db := f.String("db", "data/alorules.db", "bbolt store file")
	addr := f.String("addr", ":8080", "webhook listener (POST /webhooks/alo, GET /healthz)")
	admin := f.String("admin-addr", "127.0.0.1:8081", "admin listener (UI, API, /metrics); beyond loopback it needs admin auth")
	secretFile := f.String("signing-secret-file", "", "file with the webhook signing secrets, one per line (else ALO_SIGNING_SECRET, comma-separated)")
	tol := f.Duration("tolerance", 300*time.Second, "accepted clock skew of X-ALO-Request-Timestamp, both directions")
	maxBody := f.Int("max-body", 1<<20, "largest webhook body in bytes (larger: 413)")
	dedupe := f.Duration("dedupe-window", 24*time.Hour, "how long a delivered body is remembered to answer redeliveries as duplicates")
	dedupeKey := f.String("dedupe-key", "", "expr expression over event naming a delivery, e.g. event.action.id + \":\" + event.action.updated_at (default: the body's SHA-256)")
	workers := f.Int("workers", 8, "steps run at once")
	maxPerTarget := f.Int("max-per-target", 0, "requests in flight to one target (host:port) at once; a step to a target at the limit waits in the queue without holding a worker; 0 means half of --workers, at least 1")
	logFormat := f.String("log-format", "text", "log format: text or json")
	logLevel := f.String("log-level", "info", "log level: debug, info, warn or error")
	lock := f.Duration("lock-timeout", time.Second, "how long to wait for the store file's lock")
	retention := f.Duration("retention", 30*24*time.Hour, "delete events (with their executions) older than this; 0 keeps them")
	maxEvents := f.Int("max-events", 0, "keep at most this many events, deleting the oldest; 0 means no limit")
	pruneEvery := f.Duration("prune-interval", 10*time.Minute, "how often retention runs")
	if err := f.Parse(args); err != nil {
		return c, err
	}
	if f.fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(f.fs.Args(), " "))
	}
	if *maxPerTarget < 0 {
		return c, fmt.Errorf("--max-per-target %d: want 0 (half of --workers) or more", *maxPerTarget)
	}
	secrets, err := signingSecrets(cio.getenv, *secretFile)
	if err != nil {
		return c, err
	}
	c = serveConfig{
		Rules: *rules, DB: *db, Addr: *addr, AdminAddr: *admin,
		SigningSecrets: secrets, Tolerance: *tol, MaxBody: int64(*maxBody),
		DedupeWindow: *dedupe, DedupeKey: *dedupeKey, Workers: *workers, MaxPerTarget: *maxPerTarget, LogFormat: *logFormat, LogLevel: *logLevel,
		AdminUser:         cio.getenv("ALORULES_ADMIN_USER"),
		AdminPasswordHash: cio.getenv("ALORULES_ADMIN_PASSWORD_HASH"),
		AdminToken:        cio.getenv("ALORULES_ADMIN_TOKEN"),
		LockTimeout:       *lock,
		Retention:         *retention,
		MaxEvents:         *maxEvents,
		PruneEvery:        *pruneEvery,
	}
	return c, nil
}

func newLogger(format, level string, w *os.File) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

func cmdServe(ctx context.Context, args []string, cio cmdIO) int {
	cfg, err := parseServe(args, cio)
	if err != nil {
		return cio.errorf("%v", err)
	}
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, os.Stderr)
	if err != nil {
		return cio.errorf("%v", err)
	}
	app, err := NewApp(cfg, log, cio.getenv)
	if err != nil {
		return cio.errorf("%v", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			// Not logged here: the engine logs a failure once and keeps
			// it for the status and metrics, and a line per signal
			// would repeat the same broken file every time.
			_ = app.engine.Reload()
		}
	}()
	if err := app.Run(ctx); err != nil {
		return cio.errorf("%v", err)
	}
	return 0
}

// App is the whole service, started in-process by tests on 127.0.0.1:0.
type App struct {
	cfg    serveConfig
	log    *slog.Logger
	store  *store.Store
	engine *engine.Engine
	runner *actions.Runner
	web    *web.Server
	admin  *web.Admin
	reg    *prometheus.Registry
}

// gauges lets the metrics read the store and the engine at scrape time.
type gauges struct {
	*store.Store
	app *App
}

func (g gauges) RulesStatus() engine.Status { return g.app.engine.Status() }

func (a *App) adminRoutes(e *echo.Echo) {
	a.admin.Routes(e)
	a.admin.UIRoutes(e)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})))
}

// NewApp opens the store, loads the rules and binds both listeners. Any
// failure here stops start-up with a clear message, before anything runs.
func NewApp(cfg serveConfig, log *slog.Logger, getenv func(string) string) (*App, error) {
	a := &App{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	auth := &web.Auth{User: cfg.AdminUser, PasswordHash: []byte(cfg.AdminPasswordHash), Token: alorules.Secret(cfg.AdminToken)}

	var dedupeKey func([]byte) (string, error)
	if cfg.DedupeKey != "" {
		var err error
		if dedupeKey, err = dedupeKeyFunc(cfg.DedupeKey); err != nil {
			return nil, err
		}
	}

	st, err := store.Open(cfg.DB, store.Options{Timeout: cfg.LockTimeout})
	if err != nil {
		return nil, err
	}
	a.store = st

	metrics, err := web.NewServiceMetrics(a.reg, gauges{st, a})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.engine, err = engine.New(engine.Config{
		Store:     st,
		RulesPath: cfg.Rules,
		Getenv:    getenv,
		Logger:    log,
		// The runner is built next; the closure reads it when called.
		OnExecutions: func() { a.runner.Notify() },
		OnMatch: func(ev *alorules.Event, eval engine.Evaluation, took time.Duration) {
			metrics.Matched(eval.Results, took)
		},
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	for _, kind := range []string{actions.KindSlack, actions.KindHTTP, actions.KindALO} {
		metrics.ExposeDeferred(kind, actions.DeferTargetBusy)
	}
	a.runner = actions.NewRunner(actions.RunnerConfig{
		Store:        st,
		Renderer:     a.engine,
		Workers:      cfg.Workers,
		MaxPerTarget: cfg.MaxPerTarget,
		Logger:       log,
		OnStep: func(ex *alorules.Execution, step alorules.StepResult) {
			metrics.Step(step)
		},
		OnDefer: func(ex *alorules.Execution, step alorules.StepResult, reason string) {
			metrics.Deferred(step, reason)
		},
	})
	a.admin = &web.Admin{Store: st, Rules: a.engine, Runner: a.runner, Getenv: getenv, Logger: log}

	a.web, err = web.New(web.Config{
		Addr:         cfg.Addr,
		AdminAddr:    cfg.AdminAddr,
		Verifier:     &alo.Verifier{Secrets: cfg.SigningSecrets, Tolerance: cfg.Tolerance},
		MaxBody:      cfg.MaxBody,
		DedupeWindow: cfg.DedupeWindow,
		DedupeKey:    dedupeKey,
		Store:        st,
		Auth:         auth,
		OnEvent:      a.engine.Notify,
		Logger:       log,
		Admin:        a.adminRoutes,
		Ready:        a.ready,
	}, a.reg)
	if err == nil {
		err = a.web.Listen()
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// ready is /readyz: rules are loaded and the store answers and commits.
// Reading back the running rules' source by its hash checks the first two
// in one cheap read transaction: executions name that hash, and steps are
// rendered from it. The reasons are short and fixed, since /readyz is open to anyone.
func (a *App) ready(ctx context.Context) error {
	_, err := a.store.RuleSet(ctx, a.engine.Current().Hash())
	if err == nil {
		// Reads work; ingest needs commits too (a full or read-only
		// disk reads fine and answers every webhook 503).
		if a.store.Writable(ctx) != nil {
			return errors.New("store cannot commit")
		}
		return nil
	}
	switch {
	case errors.Is(err, alorules.ErrStoreClosed):
		return errors.New("store closed")
	case errors.Is(err, alorules.ErrNotFound):
		return errors.New("the running rules are not in the store")
	}
	return errors.New("store not answering")
}

// Run serves until ctx ends, then shuts down in order: stop accepting HTTP
// (finishing in-flight requests), stop matching, drain running steps, and
// close the store.
func (a *App) Run(ctx context.Context) error {
	pub, adm := a.web.Addrs()
	a.log.Info("alorules serving", "version", alorules.Version, "addr", pub, "admin_addr", adm,
		"rules", a.cfg.Rules, "db", a.cfg.DB)

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var engErr, runErr error
	wg.Go(func() { engErr = a.engine.Run(workCtx) })
	wg.Go(func() { runErr = a.runner.Run(workCtx) })
	wg.Go(func() { a.prune(workCtx) })

	webErr := a.web.Serve(ctx)
	stopWork()
	wg.Wait()
	err := errors.Join(webErr, engErr, runErr, a.store.Close())
	a.log.Info("alorules stopped", "err", err)
	return err
}

// prune applies retention now and then. The store deletes in small
// transactions, so ingest waits at most for one of them.
func (a *App) prune(ctx context.Context) {
	if a.cfg.Retention <= 0 && a.cfg.MaxEvents <= 0 {
		return
	}
	every := a.cfg.PruneEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var cutoff time.Time
		if a.cfg.Retention > 0 {
			cutoff = time.Now().Add(-a.cfg.Retention)
		}
		n, err := a.store.Prune(ctx, cutoff, a.cfg.MaxEvents)
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Error("retention", "err", err)
		case n > 0:
			a.log.Info("retention removed old events", "events", n)
		}
		t.Reset(every)
	}
}
