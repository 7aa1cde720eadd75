package metrics_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/metrics"
	"github.com/fluxstream/fluxstream/internal/metrics/metricstest"
)

// A reload attaches a new pipeline: its counters are reported from then
// on, the write histograms of a sink that is gone are dropped, those of a
// sink that stays go on.
func TestAttachNextPipeline(t *testing.T) {
	dir := t.TempDir()
	config := func(sinks ...string) *core.Graph {
		yaml := fmt.Sprintf("data_dir: %s/state\nsources:\n  journal: {type: replay, path: embedded:scenario, user_lookup: none}\nsinks:\n", dir)
		for _, s := range sinks {
			yaml += fmt.Sprintf("  %s: {type: file, inputs: [journal], path: %s}\n", s, filepath.Join(dir, s+".jsonl"))
		}
		return coretest.Build(t, builtin.Registry(), yaml)
	}
	m := metrics.New(metrics.Options{Logger: coretest.Quiet()})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	p1 := core.NewPipeline(config("kept", "removed"), core.RunOptions{Logger: coretest.Quiet(), ShutdownTimeout: time.Second})
	m.Attach(p1)
	if err := p1.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := metricstest.Get(t, srv.URL+"/metrics")
	emitted := s.Must(t, "fluxstream_node_records_out_total", "node", "journal")
	for _, sink := range []string{"kept", "removed"} {
		if _, sum, ok := s.Histogram("fluxstream_sink_batch_records", "sink", sink); !ok || sum != emitted {
			t.Errorf("%s batch_records sum %v, want %v", sink, sum, emitted)
		}
	}

	p2 := core.NewPipeline(config("kept"), core.RunOptions{Logger: coretest.Quiet()})
	m.Attach(p2)
	s = metricstest.Get(t, srv.URL+"/metrics")
	if _, _, ok := s.Histogram("fluxstream_sink_batch_records", "sink", "removed"); ok {
		t.Error("the removed sink's histogram is still reported")
	}
	if _, sum, ok := s.Histogram("fluxstream_sink_batch_records", "sink", "kept"); !ok || sum != emitted {
		t.Errorf("kept batch_records sum %v, want %v", sum, emitted)
	}
	if v := s.Must(t, "fluxstream_node_records_out_total", "node", "kept"); v != 0 {
		t.Errorf("the new pipeline's kept out = %v before it ran", v)
	}
	if s.Find("fluxstream_node_records_out_total", "node", "removed") != nil {
		t.Error("the removed sink's counters are still reported")
	}
}
