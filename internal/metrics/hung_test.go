package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/metrics"
	"github.com/fluxstream/fluxstream/internal/metrics/metricstest"
)

// gate is a sink whose Write waits until the gate opens: a destination
// that takes a batch and never answers.
type gate struct{ open chan struct{} }

func (g *gate) Write(ctx context.Context, batch []*core.Record) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) Close(context.Context) error { return nil }

// A Write that never returns never fails, yet the sink is stuck: once it
// has run longer than unhealthy_after, /readyz says "hung".
func TestHungWriteIsNotReady(t *testing.T) {
	reg := builtin.Registry()
	gt := &gate{open: make(chan struct{})}
	reg.RegisterSink("gate", "waits", func(nc *core.NodeConfig) (core.Sink, error) { return gt, nc.Decode(&struct{}{}) })
	dir := t.TempDir()
	g := coretest.Build(t, reg, fmt.Sprintf(`
data_dir: %s/state
sources:
  journal: {type: replay, path: embedded:scenario, user_lookup: none}
sinks:
  slow: {type: gate, inputs: [journal], batch: {max_records: 50}}
`, dir))
	var offset atomic.Int64
	m := metrics.New(metrics.Options{UnhealthyAfter: time.Minute, Logger: coretest.Quiet(),
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	p := core.NewPipeline(g, core.RunOptions{Logger: coretest.Quiet(), ShutdownTimeout: time.Second})
	m.Attach(p)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()

	waitFor(t, "a write in flight", func() bool {
		return metricstest.Get(t, srv.URL+"/metrics").Must(t, "fluxstream_sink_in_flight_records", "sink", "slow") > 0
	})
	if code, r := readyz(t, srv.URL); code != http.StatusOK || r.Sinks[0].State != "ok" {
		t.Errorf("a write just started: /readyz %d %+v", code, r)
	}
	offset.Store(int64(2 * time.Minute))
	code, r := readyz(t, srv.URL)
	if s := r.Sinks[0]; code != http.StatusServiceUnavailable || s.State != "hung" || s.Ready || s.ForSeconds < 120 {
		t.Errorf("a write running 2 minutes: /readyz %d %+v", code, r)
	}
	s := metricstest.Get(t, srv.URL+"/metrics")
	if v := s.Must(t, "fluxstream_sink_failing_seconds", "sink", "slow"); v != 0 {
		t.Errorf("failing_seconds = %v for a write that did not fail", v)
	}
	if v := s.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "slow"); v < 120 {
		t.Errorf("oldest age = %v two minutes on", v)
	}
	close(gt.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s = metricstest.Get(t, srv.URL+"/metrics")
	if out, in := s.Must(t, "fluxstream_node_records_out_total", "node", "slow"), s.Must(t, "fluxstream_node_records_out_total", "node", "journal"); out != in || out == 0 {
		t.Errorf("delivered %v of %v", out, in)
	}
}
