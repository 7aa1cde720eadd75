package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/metrics"
	"github.com/fluxstream/fluxstream/internal/metrics/metricstest"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

type httpProbe struct {
	t    *testing.T
	base string
	proc *process
}

func (h *httpProbe) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.base + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v\nlog:\n%s", path, err, h.proc.log)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *httpProbe) readyz() (int, metrics.Readiness) {
	h.t.Helper()
	code, body := h.get("/readyz")
	var r metrics.Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		h.t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, r
}

func (h *httpProbe) scrape() metricstest.Scrape { return metricstest.Get(h.t, h.base+"/metrics") }

// until polls cond (the process's state) for up to a minute.
func (h *httpProbe) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("not within a minute: %s\nlog:\n%s", what, h.proc.log)
		}
		time.Sleep(20 * time.Millisecond) // polling the process's state
	}
}

func (h *httpProbe) healthy() {
	h.t.Helper()
	if code, body := h.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		h.t.Errorf("/healthz %d %q", code, body)
	}
}

func (r sinkReadies) find(node string) metrics.SinkReady {
	for _, s := range r {
		if s.Node == node {
			return s
		}
	}
	return metrics.SinkReady{}
}

type sinkReadies []metrics.SinkReady

var listenLine = regexp.MustCompile(`metrics and health endpoint listening.* addr=(\S+)`)

// fluxstream runs as a process with a flux source (the test broker
// speaking the recorded wire protocol) and two file sinks, one of which
// cannot write (its directory is a regular file); scraped over TCP along
// the way:
//   - broker down: /readyz 503 naming the flux source, /healthz 200;
//   - broker up: /readyz 200;
//   - events arrive: the good sink's out count equals what the source
//     emitted (and its file's lines), while the stuck sink's spool records,
//     bytes and oldest age grow from one scrape to the next;
//   - after unhealthy_after: /readyz 503 naming the stuck sink;
//   - the directory can be made: the spool drains, /readyz 200 again.
func TestMetricsAndHealthEndpoints(t *testing.T) {
	b, in := fluxtest.StartScenario(t, testdata)
	b.Stop() // not reachable at first
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good", "records.jsonl")
	config := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %[1]s/state
cluster: test
shutdown_timeout: 5s
log: {level: info}
http: {listen: "127.0.0.1:0", unhealthy_after: 1s}
sources:
  flux:
    type: flux
    uri: %[2]s
    user_lookup: none
    reconnect: {initial_backoff: 20ms, max_backoff: 100ms}
sinks:
  good: {type: file, inputs: [flux], path: %[3]s}
  stuck:
    type: file
    inputs: [flux]
    path: %[4]s/records.jsonl
    retry: {initial_backoff: 10ms, max_backoff: 50ms}
`, dir, b.URI(), good, blocker))
	cmd := fluxstreamCmd(t, dir, "run", "-c", config)
	log := &coretest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	h := &httpProbe{t: t, proc: &process{t: t, cmd: cmd, log: log}}
	h.until("the listen line in the log", func() bool {
		m := listenLine.FindStringSubmatch(log.String())
		if m != nil {
			h.base = "http://" + m[1]
		}
		return m != nil
	})
	h.healthy()

	// The broker is down: not ready, and the body says which part.
	var r metrics.Readiness
	h.until("/readyz naming the disconnected source", func() bool {
		var code int
		code, r = h.readyz()
		return code == http.StatusServiceUnavailable && r.Phase == "running" && len(r.Sources) == 1 &&
			strings.HasPrefix(r.Sources[0].Detail, "disconnected from "+b.URI())
	})
	if s := r.Sources[0]; s.Node != "flux" || s.State != "connecting" || s.Ready {
		t.Errorf("source while the broker is down: %+v", s)
	}
	for _, s := range r.Sinks {
		if !s.Ready || s.State != "ok" {
			t.Errorf("sink %+v not ok while nothing flows", s)
		}
	}
	s := h.scrape()
	if v := s.Must(t, "fluxstream_flux_connected", "node", "flux"); v != 0 {
		t.Errorf("flux_connected = %v while the broker is down", v)
	}
	if v := s.Must(t, "fluxstream_ready"); v != 0 {
		t.Errorf("fluxstream_ready = %v while /readyz is 503", v)
	}
	h.healthy()

	// The broker comes back (with an empty backlog): ready.
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	h.until("/readyz 200 once connected", func() bool {
		code, r := h.readyz()
		return code == http.StatusOK && r.Ready && r.Sources[0].State == "connected"
	})
	s = h.scrape()
	if v := s.Must(t, "fluxstream_flux_connected", "node", "flux"); v != 1 {
		t.Errorf("flux_connected = %v once connected", v)
	}
	if v := s.Must(t, "fluxstream_flux_reconnects_total", "node", "flux"); v < 1 {
		t.Errorf("flux_reconnects = %v after failed connects", v)
	}
	if v := s.Must(t, "fluxstream_ready"); v != 1 {
		t.Errorf("fluxstream_ready = %v while /readyz is 200", v)
	}

	// settled scrapes until every event the broker sent so far (one record
	// each) went out through the good sink and into the stuck sink's
	// spool. (Waiting for the counts to agree alone passed on a moment
	// between two responses, 1 run in ~10 under load.)
	settled := func() (metricstest.Scrape, float64) {
		want := 0
		for _, it := range in.Items()[:in.Pos()] {
			if it.Response != nil {
				want += len(it.Response.Events)
			}
		}
		var s metricstest.Scrape
		h.until(fmt.Sprintf("%d records emitted, delivered by good and spooled by stuck", want), func() bool {
			s = h.scrape()
			emitted := s.Must(t, "fluxstream_node_records_out_total", "node", "flux")
			return emitted == float64(want) &&
				s.Must(t, "fluxstream_node_records_out_total", "node", "good") == emitted &&
				s.Must(t, "fluxstream_sink_spool_records", "sink", "stuck") == emitted
		})
		return s, float64(want)
	}
	in.Step(in.PosAfterResponses(60))
	s1, n1 := settled()
	in.Step(in.PosAfterResponses(200) - in.Pos())
	s2, n2 := settled()
	t.Logf("emitted %v then %v; stuck spool %v then %v records, age %.3fs then %.3fs", n1, n2,
		s1.Must(t, "fluxstream_sink_spool_records", "sink", "stuck"), s2.Must(t, "fluxstream_sink_spool_records", "sink", "stuck"),
		s1.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "stuck"), s2.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "stuck"))
	for _, name := range []string{"fluxstream_sink_spool_records", "fluxstream_sink_spool_bytes", "fluxstream_sink_oldest_undelivered_age_seconds"} {
		v1, v2 := s1.Must(t, name, "sink", "stuck"), s2.Must(t, name, "sink", "stuck")
		if !(v1 > 0 && v2 > v1) {
			t.Errorf("%s of the stuck sink: %v then %v, want it to grow", name, v1, v2)
		}
	}
	for _, s := range []metricstest.Scrape{s1, s2} {
		if v := s.Must(t, "fluxstream_node_records_out_total", "node", "stuck"); v != 0 {
			t.Errorf("stuck sink delivered %v", v)
		}
		if v := s.Must(t, "fluxstream_sink_spool_records", "sink", "good"); v != 0 {
			t.Errorf("good sink holds %v", v)
		}
	}
	if v := s2.Must(t, "fluxstream_flux_journal_lag_seconds", "node", "flux"); v <= 0 {
		t.Errorf("journal lag = %v (the recording is in the past)", v)
	}
	if n, _, ok := s2.Histogram("fluxstream_sink_write_duration_seconds", "sink", "stuck", "result", "error"); !ok || n == 0 {
		t.Errorf("stuck sink's failed writes: %d", n)
	}
	h.until("the good sink's file holds what it delivered", func() bool {
		b, _ := os.ReadFile(good)
		return float64(bytes.Count(b, []byte("\n"))) == n2
	})

	// Failing longer than unhealthy_after (1s): not ready, naming the sink.
	h.until("/readyz 503 naming the stuck sink", func() bool {
		var code int
		code, r = h.readyz()
		return code == http.StatusServiceUnavailable && !sinkReadies(r.Sinks).find("stuck").Ready
	})
	if st := sinkReadies(r.Sinks).find("stuck"); st.State != "failing" || st.ForSeconds < 1 || !strings.Contains(st.Error, "not a directory") {
		t.Errorf("stuck sink in /readyz: %+v", st)
	}
	if st := sinkReadies(r.Sinks).find("good"); !st.Ready || st.State != "ok" {
		t.Errorf("good sink in /readyz: %+v", st)
	}
	if src := r.Sources[0]; !src.Ready {
		t.Errorf("source in /readyz: %+v", src)
	}
	h.healthy()

	// The directory can be made: the spool drains, ready again.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	h.until("/readyz 200 after the stuck sink drained", func() bool {
		code, _ := h.readyz()
		s := h.scrape()
		return code == http.StatusOK && s.Must(t, "fluxstream_node_records_out_total", "node", "stuck") == n2 &&
			s.Must(t, "fluxstream_sink_spool_records", "sink", "stuck") == 0 &&
			s.Must(t, "fluxstream_sink_oldest_undelivered_age_seconds", "sink", "stuck") == 0
	})

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\nlog:\n%s", err, log)
	}
}

// An endpoint that cannot listen stops the start, naming the address.
func TestHTTPListenFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	config := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %s/state
http: {listen: "%s"}
sources:
  journal: {type: replay, path: embedded:scenario}
sinks:
  out: {type: file, inputs: [journal], path: %s/out.jsonl}
`, dir, ln.Addr(), dir))
	code, _, stderr := runCLI(t, "run", "-c", config)
	if code != exitFail || !strings.Contains(stderr, "http.listen "+ln.Addr().String()+": ") || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
		t.Error("the pipeline ran although its endpoint could not listen")
	}
}
