package web

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
