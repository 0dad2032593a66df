package web

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"alorules"
	"alorules/engine"
)

// Registerer is where the web package registers its collectors.
type Registerer = prometheus.Registerer

type ingressMetrics struct {
	events   *prometheus.CounterVec
	rejects  *prometheus.CounterVec
	duration prometheus.Histogram
}

func newIngressMetrics(reg Registerer) (*ingressMetrics, error) {
	m := &ingressMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_events_total",
			Help: "Webhook deliveries by normalised event type and outcome (accepted, duplicate, handshake, forbidden, bad_request, too_large, unavailable).",
		}, []string{"type", "outcome"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_webhook_rejections_total",
			Help: "Refused webhook deliveries by reason (signature failures carry the verifier's reason).",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alorules_ingest_duration_seconds",
			Help:    "Time from receiving a webhook to answering it, including the durable commit.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.events, m.rejects, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *ingressMetrics) ingest(evType, outcome string, d time.Duration) {
	if evType == "" {
		evType = "unknown"
	}
	m.events.WithLabelValues(evType, outcome).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *ingressMetrics) rejected(reason string) { m.rejects.WithLabelValues(reason).Inc() }

// ServiceMetrics are the engine's and runner's metrics: rule outcomes as
// events are matched, step outcomes as they run. Gauges read the store and
// the engine when scraped, so they cannot drift.
type ServiceMetrics struct {
	ruleOutcomes *prometheus.CounterVec
	matchTime    prometheus.Histogram
	steps        *prometheus.CounterVec
	stepTime     *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	deferred     *prometheus.CounterVec
}

// NewServiceMetrics registers the service's collectors. Gauges are read
// from src at scrape time.
func NewServiceMetrics(reg Registerer, src GaugeSource) (*ServiceMetrics, error) {
	m := &ServiceMetrics{
		ruleOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_rule_outcomes_total",
			Help: "Rule outcomes by rule and outcome (matched, not_matched, skipped, throttled, error, loop_suspected).",
		}, []string{"rule", "outcome"}),
		matchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alorules_match_duration_seconds",
			Help:    "Time to evaluate one event against the rule set.",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05},
		}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_step_attempts_total",
			Help: "Step attempts by kind and the step's status after the attempt (succeeded, retrying, failed).",
		}, []string{"kind", "status"}),
		stepTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alorules_step_duration_seconds",
			Help:    "Duration of one step attempt by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_step_retries_total",
			Help: "Step attempts that failed and were scheduled again, by kind.",
		}, []string{"kind"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alorules_step_deferred_total",
			Help: "Steps put back in the queue without an attempt, by kind and reason (target_busy: the target had --max-per-target requests in flight).",
		}, []string{"kind", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.ruleOutcomes, m.matchTime, m.steps, m.stepTime, m.retries, m.deferred, gaugeCollector{src}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Matched records one event's evaluation.
func (m *ServiceMetrics) Matched(results []alorules.RuleResult, took time.Duration) {
	for _, r := range results {
		m.ruleOutcomes.WithLabelValues(r.Rule, string(r.Outcome)).Inc()
	}
	m.matchTime.Observe(took.Seconds())
}

// Step records one step attempt.
func (m *ServiceMetrics) Step(step alorules.StepResult) {
	m.steps.WithLabelValues(step.Kind, string(step.Status)).Inc()
	m.stepTime.WithLabelValues(step.Kind).Observe(step.Duration.Seconds())
	if step.Status == alorules.StatusRetrying {
		m.retries.WithLabelValues(step.Kind).Inc()
	}
}

// Deferred records a step put back in the queue without an attempt.
func (m *ServiceMetrics) Deferred(step alorules.StepResult, reason string) {
	m.deferred.WithLabelValues(step.Kind, reason).Inc()
}

// ExposeDeferred makes the deferral series for kind and reason exist at 0
// before the first deferral, so that a rate over it reads 0, not nothing.
func (m *ServiceMetrics) ExposeDeferred(kind, reason string) {
	m.deferred.WithLabelValues(kind, reason)
}

// GaugeSource answers the gauges at scrape time.
type GaugeSource interface {
	CountByStatus(ctx context.Context) (map[alorules.Status]int, error)
	NextDue(ctx context.Context) (time.Time, bool, error)
	TimerCount(ctx context.Context) (int, error)
	DigestCount(ctx context.Context) (int, error)
	Size() int64
	RulesStatus() engine.Status
}

type gaugeCollector struct{ src GaugeSource }

var (
	descExecutions = prometheus.NewDesc("alorules_executions", "Executions by status.", []string{"status"}, nil)
	descQueueDepth = prometheus.NewDesc("alorules_queue_depth", "Executions waiting to run (queued or retrying).", nil, nil)
	descOldest     = prometheus.NewDesc("alorules_queue_oldest_due_age_seconds", "How long the most overdue queued execution has been due (0 when none is overdue).", nil, nil)
	descTimers     = prometheus.NewDesc("alorules_timers_pending", "Escalation timers waiting to fire.", nil, nil)
	descDigests    = prometheus.NewDesc("alorules_digests_open", "Digests collecting events until their window ends.", nil, nil)
	descStoreSize  = prometheus.NewDesc("alorules_store_size_bytes", "Size of the bbolt file.", nil, nil)
	descRules      = prometheus.NewDesc("alorules_rules_loaded", "Rules in the running rule set.", nil, nil)
	descReloads    = prometheus.NewDesc("alorules_rules_reloads_total", "Rules reloads by result.", []string{"result"}, nil)
	descReloadOK   = prometheus.NewDesc("alorules_rules_last_reload_success", "1 if the last reload succeeded (or none failed yet), 0 if it failed and older rules are running.", nil, nil)
	descReloadAt   = prometheus.NewDesc("alorules_rules_last_reload_timestamp_seconds", "When the rules were last reloaded, successfully or not.", nil, nil)
	descReloadTook = prometheus.NewDesc("alorules_rules_last_reload_duration_seconds", "How long the last reload took.", nil, nil)
)

func (g gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExecutions, descQueueDepth, descOldest, descTimers, descDigests, descStoreSize, descRules, descReloads, descReloadOK, descReloadAt, descReloadTook} {
		ch <- d
	}
}

func (g gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := g.src.CountByStatus(ctx); err == nil {
		for _, s := range []alorules.Status{alorules.StatusQueued, alorules.StatusRunning, alorules.StatusRetrying, alorules.StatusSucceeded, alorules.StatusFailed} {
			ch <- prometheus.MustNewConstMetric(descExecutions, prometheus.GaugeValue, float64(counts[s]), string(s))
		}
		ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(counts[alorules.StatusQueued]+counts[alorules.StatusRetrying]))
	}
	if due, ok, err := g.src.NextDue(ctx); err == nil {
		age := 0.0
		if ok && time.Since(due) > 0 {
			age = time.Since(due).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age)
	}
	if n, err := g.src.TimerCount(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descTimers, prometheus.GaugeValue, float64(n))
	}
	if n, err := g.src.DigestCount(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descDigests, prometheus.GaugeValue, float64(n))
	}
	ch <- prometheus.MustNewConstMetric(descStoreSize, prometheus.GaugeValue, float64(g.src.Size()))
	st := g.src.RulesStatus()
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(len(st.Rules)))
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsOK), "success")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsFailed), "failure")
	ok := 1.0
	if st.LastError != "" {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(descReloadOK, prometheus.GaugeValue, ok)
	if !st.LastReloadAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(descReloadAt, prometheus.GaugeValue, float64(st.LastReloadAt.UnixNano())/1e9)
		ch <- prometheus.MustNewConstMetric(descReloadTook, prometheus.GaugeValue, st.LastReloadTook.Seconds())
	}
}
