// Package engine loads, validates and compiles rules files, matches stored
// events against the rules, records why every rule did or did not fire,
// creates executions for the matches, renders their steps for the runner,
// and reloads the rules when the file changes.
package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"alorules"
	"alorules/actions"
	"alorules/store"
)

// Store is what the engine needs from the store; *store.Store satisfies it.
type Store interface {
	PendingEvents(ctx context.Context, limit int) ([]*alorules.Event, error)
	SaveMatch(ctx context.Context, w store.MatchWrite) error
	ThrottledUntil(ctx context.Context, key string) (time.Time, error)
	Event(ctx context.Context, id string) (*alorules.Event, error)
	SaveRuleSet(ctx context.Context, hash string, source []byte) error
	RuleSet(ctx context.Context, hash string) ([]byte, error)
	// Rules over time: entity state, timers and digests.
	Entity(ctx context.Context, key string) (store.EntityState, error)
	DueTimers(ctx context.Context, now time.Time, limit int) ([]*store.Timer, error)
	NextTimerDue(ctx context.Context) (time.Time, bool, error)
	FireTimer(ctx context.Context, id string, ex *alorules.Execution) (bool, error)
	DueDigests(ctx context.Context, now time.Time, limit int) ([]*store.Digest, error)
	NextDigestDue(ctx context.Context) (time.Time, bool, error)
	FireDigest(ctx context.Context, id string, ex *alorules.Execution) (bool, error)
}

// Config configures an Engine.
type Config struct {
	Store Store
	// RulesPath is the rules file; "" runs with no rules (and no watch).
	RulesPath string
	// RuleSet, if set, is used instead of reading RulesPath (which then
	// only names it): for simulations of candidate rules.
	RuleSet *RuleSet
	// Getenv expands ${NAME} in the rules; os.Getenv if nil.
	Getenv func(string) string
	Logger *slog.Logger
	// Now is the clock; time.Now if nil. Tests and rule simulations
	// inject their own.
	Now func() time.Time
	// OnExecutions is called (it must not block) after a match created
	// executions, so that the runner wakes.
	OnExecutions func()
	// OnMatch, if set, is called after each event is matched and saved,
	// with how long evaluation took (for metrics).
	OnMatch func(ev *alorules.Event, eval Evaluation, took time.Duration)
	// Debounce is how long the file must be quiet before a reload
	// (default 150ms): editors and git write in bursts.
	Debounce time.Duration
	// Poll is how often pending events are looked for without a Notify
	// (default 5s), a safety net only.
	Poll time.Duration
	// Batch is how many pending events are read at once (default 100).
	Batch int
}

// Engine matches stored events against the current rule set, reloads the
// rules when the file changes, and renders steps for the runner.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	active atomic.Pointer[loaded]
	notify chan struct{}
	guard  *loopGuard

	reloadMu sync.Mutex // one reload at a time
	mu       sync.Mutex // guards the fields below
	lastErr  error
	lastFail string // what the last failure was about, to log it once
	lastAt   time.Time
	lastDur  time.Duration
	okN      uint64
	failN    uint64
	gone     time.Time           // when the watcher found the file missing; zero while it is there
	cache    map[string]*RuleSet // compiled rule sets by hash, for RenderStep
	order    []string            // cache keys, oldest first

	prev prevCache // decoded previous payloads of recent entities
}

// loaded is the current rule set and when it was swapped in.
type loaded struct {
	rs *RuleSet
	at time.Time
}

// cacheSize bounds the compiled rule sets kept for rendering executions
// that were matched under earlier versions of the file.
const cacheSize = 16

// New loads the rules file and saves its source under its hash, so that
// executions can always be rendered under the rules they were matched
// with. A rules file that does not load stops start-up (the error is a
// *LoadError listing every issue): there is no last good set to keep.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: no store")
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnExecutions == nil {
		cfg.OnExecutions = func() {}
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 150 * time.Millisecond
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	e := &Engine{
		cfg:    cfg,
		log:    cfg.Logger,
		notify: make(chan struct{}, 1),
		guard:  newLoopGuard(),
		cache:  map[string]*RuleSet{},
	}
	rs := cfg.RuleSet
	switch {
	case rs != nil:
	case cfg.RulesPath == "":
		rs = emptyRuleSet()
	default:
		src, err := os.ReadFile(cfg.RulesPath)
		if err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		var warns []Issue
		rs, warns, err = Parse(cfg.RulesPath, src, cfg.Getenv)
		if err != nil {
			return nil, err
		}
		for _, w := range warns {
			e.log.Warn("rules: " + w.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.Store.SaveRuleSet(ctx, rs.hash, rs.source); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.swap(rs)
	e.log.Info("rules loaded", "path", cfg.RulesPath, "rules", rs.Len(), "hash", rs.hash)
	return e, nil
}

func emptyRuleSet() *RuleSet {
	sum := sha256.Sum256(nil)
	rs := &RuleSet{
		Connections: map[string]*actions.Connection{},
		hash:        hex.EncodeToString(sum[:]),
		byName:      map[string]*rule{},
		byType:      map[string]*typeIndex{},
		anyType:     &typeIndex{},
		loop:        DefaultLoopLimit,
	}
	// Even with no rules, entities are remembered: rules added later
	// see the previous payloads of events that came before them.
	rs.entity.keySrc = DefaultEntityKey
	segs, _ := parseTemplate(DefaultEntityKey, false, func(s string) (string, error) { return s, nil })
	rs.entity.key = &tstring{segs: segs, want: reflect.String, fast: compileValue(segs[0].prog.prog.Node())}
	return rs
}

func (e *Engine) swap(rs *RuleSet) {
	if !rs.readsState {
		e.prev.reset() // nothing will read them
	}
	e.active.Store(&loaded{rs: rs, at: e.cfg.Now()})
	e.remember(rs)
}

// Current is the rule set new events are matched with.
func (e *Engine) Current() *RuleSet { return e.active.Load().rs }

// Notify wakes the matcher, typically after an event was stored. It never
// blocks; several calls before the matcher runs count as one.
func (e *Engine) Notify() {
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

// Run matches pending events until ctx ends, starting with those received
// while the engine was down, and watches the rules file for changes.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if e.cfg.RulesPath != "" && e.cfg.RuleSet == nil {
		w, err := e.watch()
		if err != nil {
			// Matching matters more than hot reload: SIGHUP and
			// POST /-/reload still work.
			e.log.Error("cannot watch the rules file; reload with SIGHUP or POST /-/reload", "path", e.cfg.RulesPath, "err", err)
		} else {
			wg.Go(func() { e.watchLoop(ctx, w) })
		}
	}
	err := e.matchLoop(ctx)
	wg.Wait()
	return err
}

func (e *Engine) matchLoop(ctx context.Context) error {
	backoff := time.Second
	for {
		n, err := e.MatchPending(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// Timers and digests are fired by the same goroutine that
		// matches, so that an event and a timer of its entity never
		// race: the event's "unless" sees the timer as it is.
		if err == nil {
			if _, ferr := e.FireDue(ctx); ferr != nil {
				err = ferr
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := e.untilDue(ctx, e.cfg.Poll)
		switch {
		case err != nil:
			e.log.Error("matching failed; will retry", "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(backoff*2, 30*time.Second)
		case n >= e.cfg.Batch:
			backoff = time.Second
			continue // more are waiting
		default:
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-e.notify:
		case <-t.C:
		}
		t.Stop()
	}
}

// MatchPending matches one batch (Config.Batch) of pending events, oldest
// first, each under exactly one rule set: the current one when it is
// taken from the queue. It reports how many it matched. Run calls it; rule
// simulations call it directly, with their own clock.
func (e *Engine) MatchPending(ctx context.Context) (int, error) {
	evs, err := e.cfg.Store.PendingEvents(ctx, e.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("pending events: %w", err)
	}
	for i, ev := range evs {
		if err := e.matchOne(ctx, ev); err != nil {
			return i, err
		}
	}
	return len(evs), nil
}

func (e *Engine) matchOne(ctx context.Context, ev *alorules.Event) error {
	rs := e.Current()
	now := e.cfg.Now()
	start := time.Now()
	eval, err := rs.evaluateWith(ctx, evalInput{ev: ev, now: now, thr: e.cfg.Store, guard: e.guard, recall: e.recall})
	if err != nil {
		return fmt.Errorf("match event %s: %w", ev.ID, err)
	}
	took := time.Since(start)
	m := &alorules.Match{EventID: ev.ID, RuleSetHash: rs.hash, MatchedAt: now, Results: eval.Results,
		Entity: eval.Entity, PreviousEventID: eval.PreviousEventID, Changed: eval.Changed, ChangedMore: eval.ChangedMore,
		Deferred: eval.Deferred}
	w := store.MatchWrite{Match: m, Executions: eval.Executions, Throttles: eval.Throttles,
		Timers: eval.Timers, CancelTimers: eval.CancelTimers, Digests: eval.Digests}
	keep := false
	if eval.Entity != "" {
		w.Entity = &store.EntityWrite{Key: eval.Entity, EventID: ev.ID, At: now}
		if keep = len(ev.Payload) <= store.MaxEntityPayload; keep {
			w.Entity.Payload = ev.Payload
		} else {
			e.log.Warn("payload too large to remember; the next event about this entity sees no previous",
				"event_id", ev.ID, "entity", eval.Entity, "bytes", len(ev.Payload), "limit", store.MaxEntityPayload)
		}
	}
	if err := e.cfg.Store.SaveMatch(ctx, w); err != nil {
		return fmt.Errorf("match event %s: %w", ev.ID, err)
	}
	if eval.ignored != "" {
		e.log.Warn("remembered payload does not decode; ignoring it", "event_id", ev.ID, "entity", eval.Entity,
			"previous_event_id", eval.ignored, "err", eval.ignoredErr)
	}
	if eval.Entity != "" {
		// Only rules that read the previous payload need it decoded:
		// for the others, keeping it would cost more in garbage
		// collection than it saves.
		if keep && rs.readsState {
			e.prev.put(eval.Entity, ev.ID, eval.payload)
		} else {
			e.prev.drop(eval.Entity)
		}
	}
	for _, d := range eval.Deferred {
		e.log.Debug("deferred", "event_id", ev.ID, "rule", d.Rule, "kind", d.Kind, "timer_id", d.TimerID, "entity", eval.Entity)
	}
	for _, r := range m.Results {
		switch r.Outcome {
		case alorules.OutcomeError:
			e.log.Warn("rule failed", "event_id", ev.ID, "rule", r.Rule, "err", r.Error)
		case alorules.OutcomeLoop:
			e.log.Warn("rule suspected of looping", "event_id", ev.ID, "rule", r.Rule, "err", r.Error)
		}
	}
	e.log.Debug("event matched", "event_id", ev.ID, "type", ev.Type, "executions", len(eval.Executions), "took", took)
	if e.cfg.OnMatch != nil {
		e.cfg.OnMatch(ev, eval, took)
	}
	if len(eval.Executions) > 0 {
		e.cfg.OnExecutions()
	}
	return nil
}

// Reload reads, parses and compiles the rules file and swaps it in; on any
// error the running rules stay, and the error (a *LoadError for rule
// problems) is returned and kept for Status. For SIGHUP and
// POST /-/reload; file changes reload on their own.
func (e *Engine) Reload() error { return e.reload(false) }

// reload is Reload; watched says the watcher asked, after the file
// changed on disk.
func (e *Engine) reload(watched bool) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if e.cfg.RulesPath == "" {
		return nil
	}
	start := time.Now()
	rs, failKey, err := e.load()
	took := time.Since(start)
	if watched && errors.Is(err, fs.ErrNotExist) {
		// git checkout and some editors delete the file before they
		// write it again: its absence is part of a change, not a
		// failure to alarm anyone with. The running rules stay, and
		// the file's return wakes the watcher again. Asked for by
		// hand (SIGHUP, POST /-/reload), a missing file is an error.
		// A file that stays gone is shown in Status (and on the
		// dashboard): the running rules then have no source on disk.
		e.mu.Lock()
		if e.gone.IsZero() {
			e.gone = e.cfg.Now()
			e.log.Info("rules file is gone; keeping the running rules until it is back", "path", e.cfg.RulesPath)
		}
		e.mu.Unlock()
		return nil
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if !errors.Is(err, fs.ErrNotExist) {
		e.gone = time.Time{}
	}
	e.lastAt, e.lastDur = e.cfg.Now(), took
	if err != nil {
		e.failN++
		e.lastErr = err
		if failKey != e.lastFail {
			e.lastFail = failKey
			e.log.Error("rules reload failed; keeping the running rules", "path", e.cfg.RulesPath, "hash", e.Current().hash, "err", err)
		}
		return err
	}
	e.okN++
	e.lastErr, e.lastFail = nil, ""
	if rs != nil {
		e.swap(rs)
		e.log.Info("rules reloaded", "path", e.cfg.RulesPath, "rules", rs.Len(), "hash", rs.hash, "took", took)
		for _, w := range rs.warnings {
			e.log.Warn("rules: " + w.String())
		}
	}
	return nil
}

// load builds the new rule set off to the side. It returns nil and no
// error when the file has not changed; failKey identifies a failure so
// that the same broken file is logged once.
func (e *Engine) load() (*RuleSet, string, error) {
	src, err := os.ReadFile(e.cfg.RulesPath)
	if err != nil {
		return nil, err.Error(), fmt.Errorf("load rules: %w", err)
	}
	sum := sha256.Sum256(src)
	hash := hex.EncodeToString(sum[:])
	if hash == e.Current().hash {
		return nil, "", nil
	}
	rs, _, err := Parse(e.cfg.RulesPath, src, e.cfg.Getenv)
	if err != nil {
		return nil, hash, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Saved before the swap: no execution may name a hash the store
	// cannot give back.
	if err := e.cfg.Store.SaveRuleSet(ctx, rs.hash, rs.source); err != nil {
		return nil, "save:" + hash, fmt.Errorf("load rules: %w", err)
	}
	return rs, "", nil
}

// Status is the state of the rules for GET /api/v1/rules, the dashboard
// and metrics.
type Status struct {
	Path     string     `json:"path"`
	Hash     string     `json:"hash"`
	LoadedAt time.Time  `json:"loaded_at"`
	Rules    []RuleInfo `json:"rules"`
	Entity   EntityInfo `json:"entity"`
	Warnings []Issue    `json:"warnings,omitempty"`
	// LastError is the last reload's failure, cleared by a good reload;
	// Issues lists every problem it found.
	LastError       string        `json:"last_error,omitempty"`
	LastErrorIssues []Issue       `json:"last_error_issues,omitempty"`
	LastReloadAt    time.Time     `json:"last_reload_at,omitzero"`
	LastReloadTook  time.Duration `json:"last_reload_took,omitempty"`
	ReloadsOK       uint64        `json:"reloads_ok"`
	ReloadsFailed   uint64        `json:"reloads_failed"`
	// FileGoneSince is when the watcher found the rules file deleted and
	// not yet back (a checkout in progress, or deleted for good); zero
	// while it is there. The running rules stay either way.
	FileGoneSince time.Time `json:"file_gone_since,omitzero"`
	// LoopsSuspected are the rules the loop guard has stopped, each for
	// one key.
	LoopsSuspected []LoopSuspension `json:"loops_suspected"`
}

// Status reports the loaded rules and the reload history.
func (e *Engine) Status() Status {
	l := e.active.Load()
	st := Status{
		Path:     e.cfg.RulesPath,
		Hash:     l.rs.hash,
		LoadedAt: l.at,
		Rules:    l.rs.Rules(),
		Entity:   l.rs.Entity(),
		Warnings: l.rs.Warnings(),
	}
	st.LoopsSuspected = e.guard.suspended(e.cfg.Now())
	if st.LoopsSuspected == nil {
		st.LoopsSuspected = []LoopSuspension{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st.LastReloadAt, st.LastReloadTook = e.lastAt, e.lastDur
	st.ReloadsOK, st.ReloadsFailed = e.okN, e.failN
	st.FileGoneSince = e.gone
	if e.lastErr != nil {
		st.LastError = e.lastErr.Error()
		var le *LoadError
		if errors.As(e.lastErr, &le) {
			st.LastErrorIssues = le.Issues
		} else {
			st.LastErrorIssues = []Issue{{File: e.cfg.RulesPath, Msg: e.lastErr.Error()}}
		}
	}
	return st
}

// watch watches the rules file's directory, not the file: editors replace
// the file by renaming over it, and git deletes and recreates it, which
// would end a watch on the file itself.
func (e *Engine) watch() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch rules: %w", err)
	}
	if err := w.Add(filepath.Dir(e.cfg.RulesPath)); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch rules: %w", err)
	}
	return w, nil
}

func (e *Engine) watchLoop(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	target := filepath.Clean(e.cfg.RulesPath)
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			// Kubernetes ConfigMaps swap a "..data" symlink instead.
			if filepath.Clean(ev.Name) != target && filepath.Base(ev.Name) != "..data" {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(e.cfg.Debounce)
			} else {
				timer.Reset(e.cfg.Debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			e.log.Error("watching the rules file", "path", e.cfg.RulesPath, "err", err)
		case <-fire:
			fire = nil
			_ = e.reload(true) // logged and kept for Status
		}
	}
}

// RenderStep renders step index of ex under the rule set ex was matched
// with (compiled sets are cached by hash; an older one is compiled again
// from the source saved in the store, with the current environment). The
// environment holds the event, the results of the execution's earlier
// steps as steps.<id>, and ex.Vars.
func (e *Engine) RenderStep(ctx context.Context, ex *alorules.Execution, index int) (actions.Request, error) {
	rs, err := e.ruleSet(ctx, ex.RuleSetHash)
	if err != nil {
		return actions.Request{}, fmt.Errorf("render %s: %w", ex.ID, err)
	}
	r := rs.byName[ex.Rule]
	if r == nil {
		return actions.Request{}, fmt.Errorf("render %s: rule %q is not in rule set %s", ex.ID, ex.Rule, short(rs.hash))
	}
	if index < 0 || index >= len(r.steps) {
		return actions.Request{}, fmt.Errorf("render %s: rule %q has no step %d", ex.ID, ex.Rule, index+1)
	}
	s := r.steps[index]
	ev, err := e.cfg.Store.Event(ctx, ex.EventID)
	if err != nil {
		return actions.Request{}, fmt.Errorf("render %s: %w", ex.ID, readFailure(err))
	}
	m, err := templateMachine(ev, ex.Vars, e.cfg.Now(), stepsEnv(ex.Steps[:min(index, len(ex.Steps))]))
	if err != nil {
		return actions.Request{}, fmt.Errorf("render %s: %w", ex.ID, err)
	}
	defer m.release()
	spec, err := rs.renderSpec(m, r, s)
	if err != nil {
		return actions.Request{}, errors.New(rs.Secrets.String(err.Error()))
	}
	timeout := s.timeout
	if t := specTimeout(spec); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			// The rendered text may hold a ${NAME} value, and
			// simulations show this error to admin API callers.
			return actions.Request{}, fmt.Errorf("rule %q: step %d (%s): timeout: bad duration %q", r.name, index+1, s.kind, rs.Secrets.String(t))
		}
		timeout = d
	}
	if timeout == 0 {
		timeout = ex.Timeout
	}
	if timeout == 0 {
		timeout = r.timeout
	}
	key := ev.ID + ":" + ex.Rule + ":" + strconv.Itoa(index)
	if ex.Replay {
		// A replay is a deliberate second delivery: a key of its own, or
		// the target would drop it as a duplicate.
		key += ":" + ex.ID
	}
	return actions.Request{
		ExecutionID:    ex.ID,
		Rule:           ex.Rule,
		Index:          index,
		Kind:           s.kind,
		Spec:           spec,
		Conn:           s.conn,
		IdempotencyKey: key,
		Timeout:        timeout,
		Redact:         rs.Secrets,
	}, nil
}

func specTimeout(spec actions.Spec) string {
	switch s := spec.(type) {
	case *actions.HTTP:
		return s.Timeout
	case *actions.Slack:
		return s.Timeout
	case *actions.ALO:
		return s.Timeout
	}
	return ""
}

func short(hash string) string { return hash[:min(12, len(hash))] }

// ruleSet returns the compiled rule set with hash: the current one, a
// cached one, or one compiled from the source saved in the store.
func (e *Engine) ruleSet(ctx context.Context, hash string) (*RuleSet, error) {
	if hash == "" {
		return nil, errors.New("execution names no rule set")
	}
	if rs := e.Current(); rs.hash == hash {
		return rs, nil
	}
	e.mu.Lock()
	rs := e.cache[hash]
	e.mu.Unlock()
	if rs != nil {
		return rs, nil
	}
	src, err := e.cfg.Store.RuleSet(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("rule set %s: %w", short(hash), readFailure(err))
	}
	rs, _, err = Parse(e.cfg.RulesPath, src, e.cfg.Getenv)
	if err != nil {
		return nil, fmt.Errorf("rule set %s no longer compiles: %w", short(hash), err)
	}
	if rs.hash != hash {
		return nil, fmt.Errorf("rule set %s: stored source hashes to %s", short(hash), short(rs.hash))
	}
	e.mu.Lock()
	e.remember(rs)
	e.mu.Unlock()
	return rs, nil
}

// readFailure marks a failed store read as alorules.ErrUnavailable unless
// the record is not there: a store that is closing or failing now may
// answer later, and a step must not fail for good for it, while a missing
// record stays missing.
func readFailure(err error) error {
	if errors.Is(err, alorules.ErrNotFound) || errors.Is(err, alorules.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", alorules.ErrUnavailable, err)
}

// remember caches rs by hash, dropping the oldest beyond cacheSize. The
// caller holds e.mu, or is New (before any concurrency).
func (e *Engine) remember(rs *RuleSet) {
	if _, ok := e.cache[rs.hash]; ok {
		return
	}
	e.cache[rs.hash] = rs
	e.order = append(e.order, rs.hash)
	if len(e.order) > cacheSize {
		delete(e.cache, e.order[0])
		e.order = e.order[1:]
	}
}
