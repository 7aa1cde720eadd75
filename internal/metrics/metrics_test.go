package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/metrics"
	"github.com/fluxstream/fluxstream/internal/metrics/metricstest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readyz(t *testing.T, base string) (int, metrics.Readiness) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	var r metrics.Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the pipeline's state
	}
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// The recorded scenario replays into two file sinks, one of which cannot
// write (its directory is a regular file). Scraped over HTTP: the good
// sink delivered exactly what the source emitted; the stuck one holds all
// of it in its spool, with its age, retries and failed attempts; /readyz
// stays 200 until the sink has failed longer than unhealthy_after (the
// clock is moved on) and then names it; once the directory can be made,
// the spool drains to zero.
func TestStuckSinkScrapedAndReadiness(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good", "records.jsonl")
	g := coretest.Build(t, builtin.Registry(), fmt.Sprintf(`
data_dir: %[1]s/state
cluster: test
sources:
  journal: {type: replay, path: embedded:scenario, user_lookup: none}
sinks:
  good: {type: file, inputs: [journal], path: %[2]s}
  stuck:
    type: file
    inputs: [journal]
    path: %[3]s/records.jsonl
    retry: {initial_backoff: 5ms, max_backoff: 20ms}
`, dir, good, blocker))

	var offset atomic.Int64 // moves the health clock on
	m := metrics.New(metrics.Options{UnhealthyAfter: time.Hour, Logger: coretest.Quiet(),
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	if code, r := readyz(t, srv.URL); code != http.StatusServiceUnavailable || r.Phase != "none" || r.Ready {
		t.Errorf("before a pipeline: /readyz %d %+v", code, r)
	}
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	s0 := metricstest.Get(t, srv.URL+"/metrics")
	if v := s0.Must(t, "fluxstream_ready"); v != 0 {
		t.Errorf("fluxstream_ready = %v before a pipeline", v)
	}
	if _, ok := s0.Value("go_goroutines"); !ok {
		t.Error("no Go collector metrics")
	}
	if _, ok := s0.Value("process_resident_memory_bytes"); !ok {
		t.Error("no process collector metrics")
	}

	p := core.NewPipeline(g, core.RunOptions{Logger: coretest.Quiet(), ShutdownTimeout: time.Second})
	m.Attach(p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	var s1 metricstest.Scrape
	var emitted float64
	waitFor(t, "the replay finished, good delivered it all, stuck spooled it all and fails", func() bool {
		_, r := readyz(t, srv.URL)
		s1 = metricstest.Get(t, srv.URL+"/metrics")
		emitted = s1.Must(t, "fluxstream_node_records_out_total", "node", "journal")
		return len(r.Sources) == 1 && r.Sources[0].State == "finished" && emitted > 0 &&
			s1.Must(t, "fluxstream_node_records_out_total", "node", "good") == emitted &&
			s1.Must(t, "fluxstream_sink_spool_records", "sink", "stuck") == emitted &&
			s1.Must(t, "fluxstream_sink_retries_total", "sink", "stuck") > 0
	})
	if n := countLines(t, good); float64(n) != emitted {
		t.Errorf("good sink's file has %d lines, the source emitted %v", n, emitted)
	}
	for _, c := range []struct {
		name, label, node string
		want              float64
	}{
		{"fluxstream_node_records_in_total", "node", "good", emitted},
		{"fluxstream_node_records_in_total", "node", "stuck", emitted},
		{"fluxstream_node_records_out_total", "node", "stuck", 0},
		{"fluxstream_sink_spool_records", "sink", "good", 0},
		{"fluxstream_sink_in_flight_records", "sink", "good", 0},
		{"fluxstream_sink_oldest_undelivered_age_seconds", "sink", "good", 0},
		{"fluxstream_sink_failing_seconds", "sink", "good", 0},
		{"fluxstream_journal_in_backlog", "node", "journal", 0},
		{"fluxstream_journal_streams_total", "node", "journal", 1},
		{"fluxstream_ready", "", "", 1},
	} {
		var got float64
		if c.label == "" {
			got = s1.Must(t, c.name)
		} else {
			got = s1.Must(t, c.name, c.label, c.node)
		}
		if got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.node, got, c.want)
		}
	}
	if v := s1.Must(t, "fluxstream_sink_spool_bytes", "sink", "stuck"); v <= 0 {
		t.Errorf("stuck spool bytes = %v", v)
	}
	if v := s1.Must(t, "fluxstream_sink_in_flight_records", "sink", "stuck"); v <= 0 {
		t.Errorf("stuck in flight = %v", v)
	}
	// Every write of good succeeded at once: its batch sizes add up to
	// what it delivered.
	if n, sum, ok := s1.Histogram("fluxstream_sink_batch_records", "sink", "good"); !ok || sum != emitted || n == 0 {
		t.Errorf("good batch_records: count %d sum %v (%v), want sum %v", n, sum, ok, emitted)
	}
	if n, _, ok := s1.Histogram("fluxstream_sink_write_duration_seconds", "sink", "good", "result", "ok"); !ok || n == 0 {
		t.Errorf("good write_duration ok count = %d", n)
	}
	if _, _, ok := s1.Histogram("fluxstream_sink_write_duration_seconds", "sink", "good", "result", "error"); ok {
		t.Error("good has failed writes")
	}
	if n, _, ok := s1.Histogram("fluxstream_sink_write_duration_seconds", "sink", "stuck", "result", "error"); !ok || n == 0 {
		t.Errorf("stuck write_duration error count = %d", n)
	}
	age1 := s1.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "stuck")
	if age1 <= 0 {
		t.Errorf("stuck oldest age = %v", age1)
	}

	// Failing for less than unhealthy_after: still ready, the sink shown
	// failing with its error.
	// The source finished, so the pipeline drains (stopping): that is
	// ready while the sinks are.
	code, r := readyz(t, srv.URL)
	if code != http.StatusOK || !r.Ready || r.Phase != core.PhaseStopping || len(r.Sinks) != 2 {
		t.Fatalf("/readyz %d %+v", code, r)
	}
	for _, s := range r.Sinks {
		switch s.Node {
		case "good":
			if s.State != "ok" || !s.Ready {
				t.Errorf("good in /readyz: %+v", s)
			}
		case "stuck":
			if s.State != "failing" || !s.Ready || !strings.Contains(s.Error, "not a directory") {
				t.Errorf("stuck in /readyz: %+v", s)
			}
		}
	}

	// Two hours later the sink has failed longer than unhealthy_after.
	offset.Store(int64(2 * time.Hour))
	code, r = readyz(t, srv.URL)
	if code != http.StatusServiceUnavailable || r.Ready {
		t.Fatalf("after 2h failing: /readyz %d %+v", code, r)
	}
	for _, s := range r.Sinks {
		if ready := s.Node != "stuck"; s.Ready != ready {
			t.Errorf("%s ready = %v in %+v", s.Node, s.Ready, r)
		}
		if s.Node == "stuck" && (s.State != "failing" || s.ForSeconds < 7200) {
			t.Errorf("stuck in /readyz: %+v", s)
		}
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while a sink is unhealthy", code)
	}
	s2 := metricstest.Get(t, srv.URL+"/metrics")
	if age2 := s2.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "stuck"); age2 < age1+7200 {
		t.Errorf("stuck age went from %v to %v over 2h", age1, age2)
	}
	if v := s2.Must(t, "fluxstream_ready"); v != 0 {
		t.Errorf("fluxstream_ready = %v while /readyz is 503", v)
	}
	offset.Store(0)

	// The directory can be made now: the spool drains, and the pipeline
	// ends (its source was finite).
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s3 := metricstest.Get(t, srv.URL+"/metrics")
	for sink, want := range map[string]float64{"good": emitted, "stuck": emitted} {
		if v := s3.Must(t, "fluxstream_node_records_out_total", "node", sink); v != want {
			t.Errorf("%s out = %v, want %v", sink, v, want)
		}
		for _, name := range []string{"fluxstream_sink_spool_records", "fluxstream_sink_oldest_undelivered_age_seconds", "fluxstream_sink_failing_seconds", "fluxstream_sink_in_flight_records"} {
			if v := s3.Must(t, name, "sink", sink); v != 0 {
				t.Errorf("%s{sink=%q} = %v after the drain", name, sink, v)
			}
		}
	}
	if n := countLines(t, filepath.Join(blocker, "records.jsonl")); float64(n) != emitted {
		t.Errorf("stuck sink's file has %d lines after the drain, want %v", n, emitted)
	}
	if code, r := readyz(t, srv.URL); code != http.StatusServiceUnavailable || r.Phase != core.PhaseStopped {
		t.Errorf("after Run: /readyz %d %+v", code, r)
	}
}
