// Package metrics exports a running pipeline's state to Prometheus and
// answers health checks. Almost everything is read at scrape time from
// the pipeline's own counters (a custom Collector), so the record path
// pays nothing for metrics; only the write-latency and batch-size
// histograms are observed as writes happen, once per batch.
//
// A Metrics outlives pipelines: Attach the pipeline that runs now (a
// reload builds a new one). Counters are the pipeline's, so they start
// again from 0 after a reload; Prometheus' rate() takes that as a reset.
package metrics

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/host"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/journal"
	"github.com/fluxstream/fluxstream/sources/kafka"
)

// Options configure a Metrics.
type Options struct {
	// UnhealthyAfter is how long a sink may fail (or one Write take)
	// before readiness fails; 0: core.DefaultUnhealthyAfter.
	UnhealthyAfter time.Duration
	Logger         *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Metrics is the registry, the collector of the attached pipeline and the
// HTTP handlers.
type Metrics struct {
	opts         Options
	reg          *prometheus.Registry
	cur          atomic.Pointer[core.Pipeline]
	writeSeconds *prometheus.HistogramVec
	batchRecords *prometheus.HistogramVec
}

var _ core.SinkObserver = (*Metrics)(nil)

// New returns a Metrics with the Go and process collectors registered.
func New(opts Options) *Metrics {
	if opts.UnhealthyAfter <= 0 {
		opts.UnhealthyAfter = core.DefaultUnhealthyAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{opts: opts, reg: prometheus.NewRegistry()}
	m.writeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fluxstream_sink_write_duration_seconds",
		Help:    "Time of each Write attempt of a sink, by result (ok, error).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"sink", "result"})
	m.batchRecords = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fluxstream_sink_batch_records",
		Help:    "Records in each Write attempt of a sink.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65536
	}, []string{"sink"})
	m.reg.MustRegister(m.writeSeconds, m.batchRecords, (*collector)(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Attach makes p the pipeline that is reported (nil: none) and has it
// report its writes here. The histograms of sinks the previous pipeline
// had and p has not (removed by a reload) are dropped.
func (m *Metrics) Attach(p *core.Pipeline) {
	if p != nil {
		p.SetSinkObserver(m)
	}
	old := m.cur.Swap(p)
	if old == nil || old == p {
		return
	}
	old.SetSinkObserver(nil)
	keep := map[string]bool{}
	if p != nil {
		for _, s := range p.Stats() {
			keep[s.Node] = s.Kind == core.KindSink
		}
	}
	for _, s := range old.Stats() {
		if s.Kind == core.KindSink && !keep[s.Node] {
			m.writeSeconds.DeletePartialMatch(prometheus.Labels{"sink": s.Node})
			m.batchRecords.DeletePartialMatch(prometheus.Labels{"sink": s.Node})
		}
	}
}

// Pipeline is the attached pipeline, nil if none.
func (m *Metrics) Pipeline() *core.Pipeline { return m.cur.Load() }

// ObserveWrite records one Write attempt (core.SinkObserver).
func (m *Metrics) ObserveWrite(sink string, records int, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.writeSeconds.WithLabelValues(sink, result).Observe(took.Seconds())
	m.batchRecords.WithLabelValues(sink).Observe(float64(records))
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(m.opts.Logger.Handler(), slog.LevelWarn), Registry: m.reg}))
	mux.HandleFunc("GET /healthz", m.healthz)
	mux.HandleFunc("GET /readyz", m.readyz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("fluxstream: /metrics (Prometheus), /healthz (alive), /readyz (sources connected, sinks delivering)\n"))
	})
	return mux
}

// collector reads the attached pipeline at scrape time.
type collector Metrics

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	nodeIn      = desc("fluxstream_node_records_in_total", "Records a node received.", "node", "kind")
	nodeOut     = desc("fluxstream_node_records_out_total", "Records a node emitted (sources, transforms) or delivered (sinks).", "node", "kind")
	nodeDropped = desc("fluxstream_node_records_dropped_total", "Records a transform or router dropped on purpose.", "node", "kind")
	nodeDead    = desc("fluxstream_node_records_dead_lettered_total", "Records written to the node's dead-letter file.", "node", "kind")
	nodeErrors  = desc("fluxstream_node_errors_total", "Records that hit an error in the node.", "node", "kind")

	sinkRetries     = desc("fluxstream_sink_retries_total", "Failed Write attempts that were retried.", "sink")
	sinkBufDropped  = desc("fluxstream_sink_buffer_dropped_total", "Records given up by when_full: drop_oldest.", "sink")
	sinkReadBack    = desc("fluxstream_sink_spool_read_back_total", "Records the sink read back from its disk spool because it had fallen behind the in-memory window (0 while it keeps up or while the source waits for it).", "sink")
	sinkSpoolRecs   = desc("fluxstream_sink_spool_records", "Records in the sink's buffer not yet delivered (disk: the batch in flight included).", "sink")
	sinkSpoolBytes  = desc("fluxstream_sink_spool_bytes", "On-disk size of the sink's spool segments; delivered records leave it when their segment is removed (0 for a memory buffer).", "sink")
	sinkOldestAge   = desc("fluxstream_sink_oldest_undelivered_age_seconds", "Age of the oldest record not yet delivered by the sink (0: none waits).", "sink")
	sinkInFlight    = desc("fluxstream_sink_in_flight_records", "Records of the batch the sink is writing or retrying.", "sink")
	sinkFailingSecs = desc("fluxstream_sink_failing_seconds", "How long the sink's current batch has been failing (0: not failing).", "sink")

	pipelineReady = desc("fluxstream_ready", "1 when /readyz answers 200.")

	fluxConnected  = desc("fluxstream_flux_connected", "1 while the flux source is connected to its broker.", "node")
	fluxReconnects = desc("fluxstream_flux_reconnects_total", "Connections of the flux source that were lost and retried.", "node")
	fluxLag        = desc("fluxstream_flux_journal_lag_seconds", "Now minus the newest event time the flux source took in.", "node")

	journalInBacklog = desc("fluxstream_journal_in_backlog", "1 while the source reads a journal backlog (flux, replay).", "node")
	journalJobs      = desc("fluxstream_journal_backlog_jobs", "Jobs read so far from the current (or last) backlog.", "node")
	journalEvents    = desc("fluxstream_journal_backlog_events", "Events emitted from the current (or last) backlog.", "node")
	journalSkipped   = desc("fluxstream_journal_backlog_already_delivered", "Events of the current (or last) backlog the checkpoint already had.", "node")
	journalStreams   = desc("fluxstream_journal_streams_total", "Journal streams started (connections, or replayed files).", "node")

	kafkaLag = desc(kafka.LagMetric, "Records between the group's committed offset and the partition's high watermark.", "node", "topic", "partition")

	pluginRestarts = desc("fluxstream_plugin_restarts_total", "Times a sink plugin was started again (it exited, hung or failed to start).", "sink")
)

var allDescs = []*prometheus.Desc{nodeIn, nodeOut, nodeDropped, nodeDead, nodeErrors,
	sinkRetries, sinkBufDropped, sinkReadBack, sinkSpoolRecs, sinkSpoolBytes, sinkOldestAge, sinkInFlight, sinkFailingSecs,
	pipelineReady, fluxConnected, fluxReconnects, fluxLag,
	journalInBacklog, journalJobs, journalEvents, journalSkipped, journalStreams, kafkaLag, pluginRestarts}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	p := m.cur.Load()
	now := m.opts.Now()
	ready, _ := m.readiness(p, now)
	ch <- prometheus.MustNewConstMetric(pipelineReady, prometheus.GaugeValue, b2f(ready))
	if p == nil {
		return
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range p.Stats() {
		counter(nodeIn, s.In, s.Node, s.Kind)
		counter(nodeOut, s.Out, s.Node, s.Kind)
		counter(nodeDropped, s.Dropped, s.Node, s.Kind)
		counter(nodeDead, s.DeadLettered, s.Node, s.Kind)
		counter(nodeErrors, s.Errors, s.Node, s.Kind)
		impl := p.Node(s.Node)
		if s.Kind == core.KindSink {
			counter(sinkRetries, s.Retries, s.Node)
			counter(sinkBufDropped, s.BufferDropped, s.Node)
			counter(sinkReadBack, s.ReadBack, s.Node)
			gauge(sinkSpoolRecs, float64(s.PendingRecords), s.Node)
			gauge(sinkSpoolBytes, float64(s.PendingBytes), s.Node)
			gauge(sinkOldestAge, since(now, s.OldestPending), s.Node)
			gauge(sinkInFlight, float64(s.InFlight), s.Node)
			gauge(sinkFailingSecs, since(now, s.FailingSince), s.Node)
			if ps, ok := impl.(*host.Sink); ok {
				counter(pluginRestarts, int64(ps.Restarts()), s.Node)
			}
			continue
		}
		if fs, ok := impl.(*flux.Source); ok {
			st := fs.Status()
			gauge(fluxConnected, b2f(st.Connected), s.Node)
			counter(fluxReconnects, int64(st.Reconnects), s.Node)
			if js := fs.Stats(); js.Newest > 0 {
				gauge(fluxLag, max(float64(now.UnixNano())/1e9-js.Newest, 0), s.Node)
			}
		}
		if jr, ok := impl.(journal.StatsReporter); ok {
			js := jr.Stats()
			gauge(journalInBacklog, b2f(js.InBacklog), s.Node)
			gauge(journalJobs, float64(js.Backlog.Jobs), s.Node)
			gauge(journalEvents, float64(js.Backlog.Events), s.Node)
			gauge(journalSkipped, float64(js.Backlog.Skipped), s.Node)
			counter(journalStreams, int64(js.Streams), s.Node)
		}
		if ks, ok := impl.(*kafka.Source); ok {
			for _, l := range ks.ConsumerLag() {
				gauge(kafkaLag, float64(l.Lag), s.Node, l.Topic, strconv.Itoa(int(l.Partition)))
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// since is the seconds from t to now, 0 for the zero time.
func since(now, t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t).Seconds(), 0)
}
