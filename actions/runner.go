package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"alorules"
)

// Runner defaults.
const (
	DefaultWorkers = 8
	DefaultGrace   = 30 * time.Second
	// maxIdle bounds the scheduler's sleep so that a clock jump or a
	// missed notification delays work by at most this much.
	maxIdle = time.Minute
	// storeBackoff is the pause after the store failed to list or claim.
	storeBackoff = time.Second
	// maxWaiting bounds the steps that wait in memory for a slot of
	// their busy target, all targets together: each holds its execution.
	// Beyond it, a refused step goes back to the store's queue for about
	// as long as the line ahead of it takes (at most a step timeout).
	maxWaiting = 1024
	// minLineWait is the least a step waits in the store's queue when it
	// found its target busy and the line full.
	minLineWait = 100 * time.Millisecond
)

// DeferTargetBusy is the reason given to RunnerConfig.OnDefer for a step
// not sent because its target was at its cap.
const DeferTargetBusy = "target_busy"

// Store is the part of the store the runner uses; *store.Store satisfies
// it. Executions are durable jobs: every change of status is written
// before the runner acts on it.
type Store interface {
	// DueExecutions returns up to limit queued or retrying executions
	// whose NextAttemptAt is not after now, oldest due first.
	DueExecutions(ctx context.Context, now time.Time, limit int) ([]*alorules.Execution, error)
	// NextDue returns the earliest NextAttemptAt among queued and
	// retrying executions; false if there are none.
	NextDue(ctx context.Context) (time.Time, bool, error)
	// UpdateExecution writes ex durably.
	UpdateExecution(ctx context.Context, ex *alorules.Execution) error
	// ResetRunning turns executions left running by a crash back into
	// queued ones.
	ResetRunning(ctx context.Context) (int, error)
	// Execution reads one execution (alorules.ErrNotFound if unknown).
	Execution(ctx context.Context, id string) (*alorules.Execution, error)
}

// Renderer renders step index of an execution at run time, with the
// results of the earlier steps in its environment. The engine implements
// it.
type Renderer interface {
	RenderStep(ctx context.Context, ex *alorules.Execution, index int) (Request, error)
}

// RunnerConfig configures a Runner. Store and Renderer are required.
type RunnerConfig struct {
	Store    Store
	Renderer Renderer
	// Workers bounds the executions in flight; default DefaultWorkers.
	Workers int
	// MaxPerTarget bounds the requests in flight to one target (host and
	// port); default half of Workers, at least 1, so that one stalled
	// target never holds more than half the workers. A step whose target
	// is at the cap is not sent and not counted as an attempt: it waits
	// in memory, in line for that target (oldest due first), without a
	// worker and without a store write, and the worker takes other work.
	MaxPerTarget int
	Logger       *slog.Logger
	// Now is the clock for scheduling (due times, retry delays);
	// default time.Now. Durations of attempts are measured on the real
	// clock.
	Now func() time.Time
	// UserAgent is sent with every request; "" means alorules/<Version>.
	UserAgent string
	// Outbound holds the guarded HTTP clients; nil uses a shared default.
	Outbound *Outbound
	// Grace bounds how long Run waits for in-flight steps once its
	// context is done; after it, they are cancelled and their executions
	// queued again. Default DefaultGrace.
	Grace time.Duration
	// OnStep, if set, is called after every attempt of a step with the
	// execution as persisted and the step's result (for metrics).
	OnStep func(ex *alorules.Execution, step alorules.StepResult)
	// OnDefer, if set, is called when a step was refused without an
	// attempt and set to wait (for metrics); reason is DeferTargetBusy.
	OnDefer func(ex *alorules.Execution, step alorules.StepResult, reason string)
	// SaveTimeout bounds how long a worker keeps trying to write an
	// execution's state while the store fails (a full disk). After it,
	// an execution that stopped there (finished, waiting to retry) is
	// kept in memory and written by the scheduler once the store
	// recovers. Default 10 s.
	SaveTimeout time.Duration
}

// Runner runs due executions with a bounded pool of workers. Each
// execution's steps run in order; a failed attempt that may succeed later
// puts the execution back in the store's queue with its NextAttemptAt, so
// the schedule survives a restart. Delivery is at least once: a step
// interrupted by a crash runs again, with the same idempotency key, and
// that interrupted attempt does not count against the retry policy.
//
// An execution fails when a step without continue_on_error fails for good;
// the steps after it are not run and stay queued. A step with
// continue_on_error that fails is recorded as failed and the next steps
// run; once they have, the execution is failed all the same, wherever that
// step stands, so that it shows among the failures and Retry sends the
// failed steps again (and only them).
//
// Run must be called once; Notify and Retry may be called at any time.
type Runner struct {
	cfg    RunnerConfig
	log    *slog.Logger
	env    Env
	notify chan struct{}
	retry  sync.Mutex // serialises Retry calls

	// unsaved holds executions whose last state could not be written.
	// The store lists them as running, so nobody claims them; the
	// scheduler writes them when the store works again.
	mu      sync.Mutex
	unsaved map[string]*alorules.Execution

	// backoff is how long scheduling pauses after the store failed to
	// list or claim (storeBackoff; tests lengthen it to see a pause).
	backoff time.Duration

	// targets caps the requests in flight per target and keeps the
	// steps waiting for one.
	targets *targetGate
}

// NewRunner returns a runner; call Run to start it.
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxPerTarget <= 0 {
		cfg.MaxPerTarget = max(1, cfg.Workers/2)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.SaveTimeout <= 0 {
		cfg.SaveTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Runner{
		cfg:     cfg,
		log:     log,
		env:     Env{Outbound: cfg.Outbound, UserAgent: cfg.UserAgent, Now: cfg.Now},
		notify:  make(chan struct{}, 1),
		unsaved: map[string]*alorules.Execution{},
		backoff: storeBackoff,
		targets: newTargetGate(cfg.MaxPerTarget, maxWaiting),
	}
	// A step handed a slot needs a worker: the scheduler gives it one.
	r.targets.wake = r.Notify
	return r
}

// Notify wakes the scheduler to look for due executions, for instance
// after new ones were stored. It never blocks; notifications coalesce.
func (r *Runner) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Run first returns executions left running by a crash to the queue, then
// runs due executions until ctx is done. It then stops claiming work, waits
// up to the grace period for executions in flight, cancels what is still
// running (those executions are queued again), puts the executions waiting
// for a busy target back in the queue, and returns. It returns an error
// only if it could not start.
func (r *Runner) Run(ctx context.Context) error {
	n, err := r.cfg.Store.ResetRunning(ctx)
	if err != nil {
		return fmt.Errorf("reset running executions: %w", err)
	}
	if n > 0 {
		r.log.Info("requeued executions interrupted by a stop", "count", n)
	}

	// Work outlives ctx by the grace period, so it gets its own context.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	sc := &scheduler{
		inflight:  map[string]bool{},
		unclaimed: map[string]bool{},
		// Each worker sends at most one of each, so neither channel
		// ever blocks a worker, even after the loop has stopped reading.
		claimed:  make(chan claimResult, r.cfg.Workers),
		finished: make(chan string, r.cfg.Workers),
	}
	var wg sync.WaitGroup
	start := func(ex *alorules.Execution, step int, before alorules.StepResult) {
		wg.Go(func() {
			defer func() { sc.finished <- ex.ID }()
			err := r.cfg.Store.UpdateExecution(work, ex)
			sc.claimed <- claimResult{ex: ex, err: err}
			if err == nil {
				r.execute(work, ex, step, before, "")
			}
		})
	}
	// A step that waited for its target and was handed a slot: its
	// claim is written, so it goes straight to its attempt.
	resume := func(w *waiter) {
		wg.Go(func() {
			defer func() { sc.finished <- w.ex.ID }()
			w.ex.Steps[w.step].StartedAt = r.cfg.Now()
			r.execute(work, w.ex, w.step, w.before, w.key)
		})
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	var holdUntil time.Time // after a store error, pause scheduling
	rescan := false         // the timer fires at once for the first scan
	for ctx.Err() == nil {
		if rescan {
			rescan = false
			wait := maxIdle
			if r.saveUnsaved(ctx) > 0 {
				wait = r.backoff // try saving them again then
			}
			// Steps handed a slot of their target go first: they waited
			// in line, hold the slot, and need no store. One whose last
			// worker has not said it is done yet waits for that.
			if free := r.cfg.Workers - len(sc.inflight); free > 0 {
				for _, w := range r.targets.takeReady(free, func(w *waiter) bool { return sc.inflight[w.ex.ID] }) {
					sc.inflight[w.ex.ID] = true
					resume(w)
				}
			}
			if d := time.Until(holdUntil); d > 0 {
				wait = d
			} else if free := r.cfg.Workers - len(sc.inflight); free > 0 {
				w, storeFailed := r.schedule(ctx, sc, free, start)
				wait = min(wait, w)
				if storeFailed {
					holdUntil = time.Now().Add(r.backoff)
				}
			}
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
		case id := <-sc.finished:
			delete(sc.inflight, id)
			rescan = true
		case c := <-sc.claimed:
			delete(sc.unclaimed, c.ex.ID)
			if c.err != nil {
				if ctx.Err() == nil {
					r.log.Error("claim execution", "execution_id", c.ex.ID, "event_id", c.ex.EventID, "rule", c.ex.Rule, "err", c.err)
				}
				holdUntil = time.Now().Add(r.backoff)
			}
			// Only worth a look if the last one stopped at our own
			// claims (a claim frees no worker).
			rescan = c.err != nil || sc.awaitClaims
		case <-r.notify:
			rescan = true
		case <-timer.C:
			rescan = true
		}
	}

	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	if len(sc.inflight) > 0 {
		r.log.Info("draining executions in flight", "count", len(sc.inflight), "grace", r.cfg.Grace)
	}
	select {
	case <-drained:
	case <-time.After(r.cfg.Grace):
		r.log.Warn("grace period over, interrupting executions in flight")
		cancelWork()
		<-drained
	}
	if ws := r.targets.drain(); len(ws) > 0 {
		r.log.Info("putting executions waiting for a busy target back in the queue", "count", len(ws))
		r.requeue(context.WithoutCancel(ctx), ws)
	}
	if n := r.saveUnsaved(context.WithoutCancel(ctx)); n > 0 {
		r.log.Error("executions left running in the store; the next start queues them again", "count", n)
	}
	return nil
}

// keepUnsaved hands an execution whose state could not be written to the
// scheduler, which writes it once the store recovers. Its worker is done
// with it.
func (r *Runner) keepUnsaved(ex *alorules.Execution) {
	r.mu.Lock()
	r.unsaved[ex.ID] = ex
	r.mu.Unlock()
}

// saveUnsaved writes the executions kept by keepUnsaved and returns how
// many are still unsaved.
func (r *Runner) saveUnsaved(ctx context.Context) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ex := range r.unsaved {
		wctx, cancel := context.WithTimeout(ctx, storeBackoff)
		err := r.cfg.Store.UpdateExecution(wctx, ex)
		cancel()
		if err != nil {
			if errors.Is(err, alorules.ErrStoreClosed) {
				break
			}
			continue
		}
		delete(r.unsaved, id)
		r.log.Info("saved execution after the store recovered", "execution_id", id, "event_id", ex.EventID,
			"rule", ex.Rule, "status", ex.Status)
		if ex.Status == alorules.StatusQueued || ex.Status == alorules.StatusRetrying {
			r.Notify()
		}
	}
	return len(r.unsaved)
}

// scheduler is the state of Run's loop, owned by that one goroutine.
type scheduler struct {
	// inflight are the executions handed to a worker and not finished.
	inflight map[string]bool
	// unclaimed are those of inflight whose claim is not yet written:
	// the store still lists them as due, and they must not start twice.
	unclaimed map[string]bool
	claimed   chan claimResult
	finished  chan string
	// awaitClaims: the last scan found only its own unclaimed
	// executions due, so a claim should trigger the next scan.
	awaitClaims bool
}

type claimResult struct {
	ex  *alorules.Execution
	err error
}

// schedule hands up to free due executions to start and returns how long
// to sleep before looking again (at most maxIdle), and whether the store
// failed, which pauses scheduling for r.backoff.
//
// A claim is one durable write that marks the execution running and the
// attempt of its next step begun; the worker makes it before anything
// else, so a crash after it is seen at the next start. Claims are written
// by the workers rather than here so that they share the store's group
// commits with each other and with the workers' other writes, instead of
// paying one commit each in turn.
//
// An execution listed as due that is not (one of ours in flight, or a
// stale read that says running or final) is skipped, never started twice;
// it does not hold up the others.
func (r *Runner) schedule(ctx context.Context, sc *scheduler, free int, start func(ex *alorules.Execution, step int, before alorules.StepResult)) (wait time.Duration, storeFailed bool) {
	sc.awaitClaims = false
	now := r.cfg.Now()
	// Our executions in flight may be listed (a claim not yet written, a
	// worker that has put its execution back in the queue and not yet
	// said it is done): ask for enough to fill the free workers anyway.
	due, err := r.cfg.Store.DueExecutions(ctx, now, free+len(sc.inflight))
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("list due executions", "err", err)
		}
		return r.backoff, true
	}
	started, skipped := 0, false
	for _, ex := range due {
		switch {
		case started == free:
			return 0, false
		case sc.unclaimed[ex.ID]:
			continue // our claim is on its way
		case sc.inflight[ex.ID] || ex.Status.Final() || ex.Status == alorules.StatusRunning:
			// Not due for us: one of ours in flight whose state was put
			// back in the queue before its worker said it is done, or a
			// stale read. Never run it twice, and let the others go.
			skipped = true
			continue
		}
		ex.Status = alorules.StatusRunning
		ex.UpdatedAt = now
		step := nextStep(ex, 0)
		var before alorules.StepResult
		if step >= 0 {
			before = r.begin(ex, step, now)
		}
		sc.inflight[ex.ID] = true
		sc.unclaimed[ex.ID] = true
		start(ex, step, before)
		started++
	}
	next, ok, err := r.cfg.Store.NextDue(ctx)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.log.Error("next due execution", "err", err)
		}
		return r.backoff, true
	case !ok:
		return maxIdle, false
	}
	if d := next.Sub(r.cfg.Now()); d > 0 {
		return min(d, maxIdle), false
	}
	// Something due was not started here. Our claims on their way wake
	// the loop once written.
	sc.awaitClaims = len(sc.unclaimed) > 0
	switch {
	case skipped:
		// The same listing would come back at once: look again in a
		// while (a Notify, a claim or a finish still looks at once)
		// rather than spin. Nothing else waits for it.
		return r.backoff, false
	case sc.awaitClaims:
		return maxIdle, false
	}
	return 0, false
}

// nextStep returns the first step from index from on that is not done
// (succeeded, or failed with continue_on_error), or -1. Steps that are done
// are skipped: that is how an execution resumes after a retry delay, a
// restart or Runner.Retry.
func nextStep(ex *alorules.Execution, from int) int {
	for i := from; i < len(ex.Steps); i++ {
		if st := ex.Steps[i].Status; st != alorules.StatusSucceeded && st != alorules.StatusFailed {
			return i
		}
	}
	return -1
}

// begin marks an attempt of step i started; the caller persists it before
// the attempt is made, so that a crash can be told from a finished attempt.
// It returns the step as it was, which a deferred attempt restores.
func (r *Runner) begin(ex *alorules.Execution, i int, now time.Time) (before alorules.StepResult) {
	st := &ex.Steps[i]
	before = *st
	if st.Status == alorules.StatusRunning && st.Attempts > 0 {
		// A crash interrupted this step's last attempt: nobody knows
		// whether it was delivered, so it is made again, not counted.
		st.Attempts--
	}
	st.Status = alorules.StatusRunning
	st.Attempts++
	st.StartedAt = now
	st.Duration, st.Code, st.Body, st.Error = 0, 0, "", ""
	return before
}

// outcome of one attempt of a step.
type outcome int

const (
	stepSucceeded   outcome = iota
	stepFailed              // final failure
	stepRetrying            // wait in the queue, then try again
	stepInterrupted         // shutdown cut the attempt short; not counted
	stepDeferred            // not sent: the target was at its cap; not counted
)

// execute runs ex from step (whose attempt was begun and persisted by the
// claim; before is the step as it was) until a step must wait or fails.
// Each write after an attempt also begins the next step's attempt, so a
// step costs one write. handed is the target whose slot the gate handed
// this step while it waited, or "".
func (r *Runner) execute(ctx context.Context, ex *alorules.Execution, step int, before alorules.StepResult, handed string) {
	log := r.log.With("execution_id", ex.ID, "event_id", ex.EventID, "rule", ex.Rule)
	if step < 0 {
		if len(ex.Steps) == 0 {
			// The engine creates one StepResult per step; none means a
			// bug upstream, which must not pass for success.
			r.finish(ctx, log, ex, alorules.StatusFailed, "execution has no steps", -1)
		} else {
			r.done(ctx, log, ex, -1)
		}
		return
	}
	for i := step; ; {
		st := &ex.Steps[i]
		out, delay, busy := r.attempt(ctx, log, ex, i, handed)
		handed = ""
		switch {
		case out == stepFailed && !st.ContinueOnError:
			r.finish(ctx, log, ex, alorules.StatusFailed, "step "+stepLabel(*st)+": "+st.Error, i)
			return
		case out == stepRetrying:
			ex.Status = alorules.StatusRetrying
			ex.NextAttemptAt = r.cfg.Now().Add(delay)
			ex.Error = "step " + stepLabel(*st) + ": " + st.Error
			r.persistLast(ctx, log, ex, i)
			return
		case out == stepInterrupted:
			ex.Status = alorules.StatusQueued
			ex.NextAttemptAt = r.cfg.Now()
			r.persistLast(ctx, log, ex, i)
			return
		case out == stepDeferred:
			r.deferStep(ctx, log, ex, i, before, busy, delay)
			return
		}
		next := nextStep(ex, i+1)
		if next < 0 {
			r.done(ctx, log, ex, i)
			return
		}
		// One write records this step's result and begins the next
		// one: a crash before it repeats this step, after it the next.
		before = r.begin(ex, next, r.cfg.Now())
		r.persist(ctx, log, ex, i)
		i = next
	}
}

// deferStep sets ex, whose step i its busy target refused before anything
// was sent, to wait in line for a slot of that target (key). It waits as
// claimed: the store lists it as running, as after any claim, so nothing
// else runs it and a crash queues it again; no write is made, no attempt
// counted, and no worker held. The gate hands it the target's next free
// slot, oldest due first, and the scheduler a worker, which makes the
// attempt its claim began.
//
// Beyond maxWaiting steps in line, ex goes back to the store's queue
// instead, due after delay, with step i as it was (before): the memory of
// the line stays bounded, at the price of two writes per deferral.
func (r *Runner) deferStep(ctx context.Context, log *slog.Logger, ex *alorules.Execution, i int, before alorules.StepResult, key string, delay time.Duration) {
	// Reported before the line has ex: from then on a worker may have it.
	if r.cfg.OnDefer != nil {
		r.cfg.OnDefer(ex, notAttempted(before), DeferTargetBusy)
	}
	log = log.With("step", i, "kind", ex.Steps[i].Kind, "target", key, "max_per_target", r.targets.limit)
	if r.targets.wait(&waiter{key: key, ex: ex, step: i, before: before}) {
		log.Debug("step waits: target busy")
		return
	}
	log.Warn("step back in the queue: target busy and too many steps waiting", "max_waiting", r.targets.maxWaiting, "retry_in", delay)
	putBack(ex, i, before)
	ex.NextAttemptAt = r.cfg.Now().Add(delay)
	r.persistLast(ctx, log, ex, -1)
}

// notAttempted returns a step as it was before a claim (before), for a step
// that was not attempted: one left running by a crash was interrupted, not
// attempted, so it is queued as begin would have counted it.
func notAttempted(before alorules.StepResult) alorules.StepResult {
	st := before
	if st.Status == alorules.StatusRunning {
		st.Status = alorules.StatusQueued
		st.Attempts = max(st.Attempts-1, 0)
	}
	return st
}

// putBack undoes the claim of ex, whose step i was not attempted: the step
// is as it was before (see notAttempted), and the execution retrying if that
// step was, else queued. Its due time is left to the caller.
func putBack(ex *alorules.Execution, i int, before alorules.StepResult) {
	st := &ex.Steps[i]
	*st = notAttempted(before)
	ex.Status = alorules.StatusQueued
	if st.Status == alorules.StatusRetrying {
		ex.Status = alorules.StatusRetrying
	}
}

// requeue puts the executions that were waiting for a busy target when Run
// stopped back in the queue, each due when it was, so it keeps its place,
// and its step as before its claim. The writes run side by side, so that
// they share the store's commits.
func (r *Runner) requeue(ctx context.Context, ws []*waiter) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.Workers)
	for _, w := range ws {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			putBack(w.ex, w.step, w.before)
			r.persistLast(ctx, r.log.With("execution_id", w.ex.ID, "event_id", w.ex.EventID, "rule", w.ex.Rule), w.ex, -1)
		})
	}
	wg.Wait()
}

// done ends an execution none of whose steps is left to run: succeeded if
// every step succeeded, else failed with the first failed step's error (a
// step with continue_on_error let the others run, but it did fail). step is
// as for finish.
func (r *Runner) done(ctx context.Context, log *slog.Logger, ex *alorules.Execution, step int) {
	for _, st := range ex.Steps {
		if st.Status == alorules.StatusFailed {
			r.finish(ctx, log, ex, alorules.StatusFailed, "step "+stepLabel(st)+": "+st.Error, step)
			return
		}
	}
	r.finish(ctx, log, ex, alorules.StatusSucceeded, "", step)
}

// finish ends the execution with a final status; step is the step whose
// attempt this write also records, or -1.
func (r *Runner) finish(ctx context.Context, log *slog.Logger, ex *alorules.Execution, status alorules.Status, msg string, step int) {
	ex.Status = status
	ex.Error = msg
	ex.NextAttemptAt = time.Time{}
	r.persistLast(ctx, log, ex, step)
	if status == alorules.StatusFailed {
		log.Warn("execution failed", "err", msg)
	} else {
		log.Info("execution succeeded")
	}
}

// persist writes ex and reports the attempt of step i (if i >= 0) to
// OnStep. It writes even when ctx was cancelled by the end of the grace
// period: recording how far the execution got is what makes it resumable.
// It reports whether the write succeeded.
func (r *Runner) persist(ctx context.Context, log *slog.Logger, ex *alorules.Execution, i int) bool {
	ex.UpdatedAt = r.cfg.Now()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.SaveTimeout)
	defer cancel()
	// A full disk or a busy file is often over in moments: try again a
	// few times before giving up.
	pause := 100 * time.Millisecond
	saved := false
	for {
		err := r.cfg.Store.UpdateExecution(wctx, ex)
		if err == nil {
			saved = true
			break
		}
		if errors.Is(err, alorules.ErrStoreClosed) || wctx.Err() != nil {
			log.Error("save execution", "status", ex.Status, "err", err)
			break
		}
		log.Warn("save execution failed; trying again", "status", ex.Status, "err", err, "retry_in", pause)
		select {
		case <-wctx.Done():
		case <-time.After(pause):
		}
		pause = min(pause*2, 2*time.Second)
	}
	if i >= 0 && r.cfg.OnStep != nil {
		r.cfg.OnStep(ex, ex.Steps[i])
	}
	return saved
}

// persistLast is persist for the last write a worker makes of ex: if it
// fails, the scheduler keeps trying, so that the execution does not stay
// "running" in the store until the next start.
func (r *Runner) persistLast(ctx context.Context, log *slog.Logger, ex *alorules.Execution, i int) {
	if !r.persist(ctx, log, ex, i) {
		log.Warn("execution state not saved; it is kept in memory and saved when the store recovers", "status", ex.Status)
		r.keepUnsaved(ex)
	}
}

// attempt makes the attempt of step i that begin started and the caller
// persisted: render, send and record. It returns the outcome and, for
// stepRetrying, the delay before the next attempt; for stepDeferred, the
// busy target and how long to stay away should the step not wait in line.
// handed is the target whose slot the gate handed this step, or "".
func (r *Runner) attempt(ctx context.Context, log *slog.Logger, ex *alorules.Execution, i int, handed string) (out outcome, delay time.Duration, busy string) {
	st := &ex.Steps[i]
	start := time.Now()
	log = log.With("step", i, "attempt", st.Attempts)
	defer func() {
		// A bug in a renderer or a client must cost one step, not the
		// process and every execution in flight with it.
		if p := recover(); p != nil {
			st.Duration = time.Since(start)
			st.Status = alorules.StatusFailed
			st.Error = fmt.Sprintf("internal error: %v", p)
			log.Error("step panicked", "kind", st.Kind, "err", st.Error, "stack", string(debug.Stack()))
			out, delay, busy = stepFailed, 0, ""
		}
	}()
	// The guarded transport refuses the attempt's first request if its
	// target is at its cap (unless the gate handed this step a slot of
	// it); slots.done gives back what the attempt still holds, a handed
	// slot it did not use included, on every path: a render error, a
	// panic.
	slots := r.targets.newSlots()
	if handed != "" {
		slots = r.targets.handedSlots(handed)
	}
	defer slots.done()

	req, err := r.cfg.Renderer.RenderStep(ctx, ex, i)
	if err != nil {
		if ctx.Err() != nil {
			return r.interrupted(st), 0, ""
		}
		st.Duration = time.Since(start)
		st.Error = "render: " + err.Error()
		// A store that could not be read now may answer later: retry
		// under the rule's policy, as for a network error.
		if errors.Is(err, alorules.ErrUnavailable) && st.Attempts < max(ex.Retry.Attempts, 1) {
			st.Status = alorules.StatusRetrying
			delay := Delay(ex.Retry, st.Attempts, 0)
			log.Info("step will retry", "kind", st.Kind, "delay", delay, "err", st.Error)
			return stepRetrying, delay, ""
		}
		st.Status = alorules.StatusFailed
		log.Warn("step failed", "kind", st.Kind, "err", st.Error)
		return stepFailed, 0, ""
	}
	// One set of redactors for the whole attempt: the record of the
	// request, and the body and error that send redacts.
	sc := secretsFor(req)
	st.Request = req.redactedJSON(sc)
	if req.Timeout <= 0 {
		req.Timeout = StepTimeout(req, ex.Timeout)
	}

	res, err := send(withSlots(ctx, slots), req, r.env, sc)
	st.Duration = time.Since(start)
	if ctx.Err() != nil {
		return r.interrupted(st), 0, ""
	}
	// Read from the slots, not from err: slack-go and the ALO client wrap
	// transport errors in their own ways.
	if target := slots.deferred(); target != "" {
		// Only if the line is full. Come back about when the line ahead
		// has gone, at the pace the target gives slots back: a fast
		// target drains a full line in moments, a dead one takes a step
		// timeout per slot, so that is the most worth waiting.
		delay := r.targets.lineTime(target)
		if delay <= 0 || delay > req.Timeout {
			delay = req.Timeout
		}
		delay = max(delay, minLineWait)
		delay += rand.N(delay/2 + 1)
		return stepDeferred, delay, target
	}
	st.Code = res.Code
	st.Body = string(res.Body) // redacted by send, before it was cut
	if err == nil {
		st.Status = alorules.StatusSucceeded
		log.Debug("step succeeded", "kind", req.Kind, "code", st.Code, "duration", st.Duration)
		return stepSucceeded, 0, ""
	}
	var se *StepError
	if !errors.As(err, &se) {
		se = permanent(err)
	}
	st.Error = se.Error() // redacted by send
	attempts := max(ex.Retry.Attempts, 1)
	if se.Retryable && st.Attempts < attempts {
		st.Status = alorules.StatusRetrying
		delay := Delay(ex.Retry, st.Attempts, se.RetryAfter)
		log.Info("step will retry", "kind", req.Kind, "code", st.Code, "duration", st.Duration, "delay", delay, "err", st.Error)
		return stepRetrying, delay, ""
	}
	st.Status = alorules.StatusFailed
	log.Warn("step failed", "kind", req.Kind, "code", st.Code, "duration", st.Duration, "err", st.Error)
	return stepFailed, 0, ""
}

// interrupted records an attempt cut short by shutdown: the step is queued
// again and the attempt does not count against the retry policy.
func (r *Runner) interrupted(st *alorules.StepResult) outcome {
	st.Status = alorules.StatusQueued
	st.Attempts = max(st.Attempts-1, 0)
	st.Error = "interrupted by shutdown"
	return stepInterrupted
}

// stepLabel names a step in messages: its id, else its position.
func stepLabel(st alorules.StepResult) string {
	if st.ID != "" {
		return st.ID
	}
	return strconv.Itoa(st.Index)
}

// Retry makes a failed execution run again from its first failed step:
// every failed step is reset (attempts, result) and queued, steps that
// succeeded are kept and not sent again, and the execution is due now.
// It returns alorules.ErrConflict if the execution is not failed.
func (r *Runner) Retry(ctx context.Context, id string) (*alorules.Execution, error) {
	r.retry.Lock()
	defer r.retry.Unlock()
	ex, err := r.cfg.Store.Execution(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("retry execution %s: %w", id, err)
	}
	if ex.Status != alorules.StatusFailed {
		return nil, fmt.Errorf("retry execution %s: status is %s, not failed: %w", id, ex.Status, alorules.ErrConflict)
	}
	for i := range ex.Steps {
		st := &ex.Steps[i]
		if st.Status == alorules.StatusSucceeded {
			continue
		}
		*st = alorules.StepResult{Index: st.Index, ID: st.ID, Kind: st.Kind,
			ContinueOnError: st.ContinueOnError, Status: alorules.StatusQueued}
	}
	now := r.cfg.Now()
	ex.Status = alorules.StatusQueued
	ex.Error = ""
	ex.NextAttemptAt = now
	ex.UpdatedAt = now
	if err := r.cfg.Store.UpdateExecution(ctx, ex); err != nil {
		return nil, fmt.Errorf("retry execution %s: %w", id, err)
	}
	r.Notify()
	return ex, nil
}
