package host_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/crosscheck"
	"github.com/fluxstream/fluxstream/plugins/host"
)

// repoRoot is the module root, from this file's place in it.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// goBuild builds a Go program of this module into dir.
func goBuild(t testing.TB, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// pythonCmd is the interpreter for the Python plugins: $FXS_PYTHON
// (.ci/run points it at a venv with the SDK's dependencies), else python3.
func pythonCmd() string {
	if p := os.Getenv("FXS_PYTHON"); p != "" {
		return p
	}
	return "python3"
}

// needPython skips (fails in CI) unless Python can import the SDK.
func needPython(t testing.TB) string {
	t.Helper()
	py := pythonCmd()
	sdkDir := filepath.Join(repoRoot(t), "plugins", "sdk", "python")
	crosscheck.Need(t, "python3 with grpcio, protobuf and cryptography (pip install ./plugins/sdk/python)", func() error {
		cmd := exec.Command(py, "-c", "import fluxstream_plugin._serve, cryptography")
		cmd.Env = append(os.Environ(), "PYTHONPATH="+sdkDir)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", py, err, lastLine(b))
		}
		return nil
	})
	return py
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// script writes an executable shell script.
func script(t testing.TB, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// pythonPlugin writes a wrapper that runs a Python plugin script with the
// SDK from this checkout.
func pythonPlugin(t testing.TB, dir, name, scriptPath string) string {
	t.Helper()
	py := needPython(t)
	sdkDir := filepath.Join(repoRoot(t), "plugins", "sdk", "python")
	if p, err := exec.LookPath(py); err == nil {
		py = p
	}
	return script(t, dir, name, fmt.Sprintf("PYTHONPATH=%q exec %q %q \"$@\"\n", sdkDir, py, scriptPath))
}

func sha(t testing.TB, path string) string {
	t.Helper()
	s, err := host.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hook is a webhook endpoint that keeps what it was sent.
type hook struct {
	srv *httptest.Server
	mu  sync.Mutex
	// posts counts, per record id, the POSTs that carried it; okd the
	// answers that said it was delivered.
	posts, okd map[string]int
	requests   int
	// decide answers request n (from 1) carrying ids; nil: 200.
	decide func(n int, ids []string) (int, string)
	// hold, if set, blocks request n until the channel closes.
	hold func(n int) <-chan struct{}
}

func newHook(t testing.TB) *hook {
	h := &hook{posts: map[string]int{}, okd: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) URL() string { return h.srv.URL + "/hook" }

func (h *hook) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var ids []string
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var rec struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.ID == "" {
			http.Error(w, "not NDJSON records: "+err.Error(), http.StatusBadRequest)
			return
		}
		ids = append(ids, rec.ID)
	}
	h.mu.Lock()
	h.requests++
	n := h.requests
	for _, id := range ids {
		h.posts[id]++
	}
	decide, hold := h.decide, h.hold
	h.mu.Unlock()
	if hold != nil {
		if ch := hold(n); ch != nil {
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			}
		}
	}
	code, body := http.StatusOK, ""
	if decide != nil {
		code, body = decide(n, ids)
	}
	h.mu.Lock()
	switch {
	case code == http.StatusMultiStatus:
		failed := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			var item struct {
				ID     string `json:"id"`
				Status int    `json:"status"`
			}
			if json.Unmarshal([]byte(line), &item) == nil && (item.Status < 200 || item.Status > 299) {
				failed[item.ID] = true
			}
		}
		for _, id := range ids {
			if !failed[id] {
				h.okd[id]++
			}
		}
	case code >= 200 && code < 300:
		for _, id := range ids {
			h.okd[id]++
		}
	}
	h.mu.Unlock()
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func (h *hook) counts() (posts, okd map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	posts, okd = map[string]int{}, map[string]int{}
	for k, v := range h.posts {
		posts[k] = v
	}
	for k, v := range h.okd {
		okd[k] = v
	}
	return posts, okd
}

// gen is a source of n records with ids PREFIX:i, in batches, then done;
// with n = 0 it goes on (slowly) until stopped.
type gen struct {
	N      int    `yaml:"count"`
	Batch  int    `yaml:"batch"`
	Prefix string `yaml:"prefix"`
	Pace   time.Duration
}

func (g *gen) Run(ctx context.Context, out core.Emitter) error {
	for i := 0; g.N == 0 || i < g.N; {
		var recs []*core.Record
		for j := 0; j < g.Batch && (g.N == 0 || i < g.N); j++ {
			recs = append(recs, genRecord(g.Prefix, i))
			i++
		}
		if err := out.Emit(ctx, recs, func() {}); err != nil {
			return err
		}
		if g.Pace > 0 {
			select {
			case <-time.After(g.Pace):
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

func genRecord(prefix string, i int) *core.Record {
	id := uint64(1000 + i)
	return &core.Record{Kind: core.KindEvent, ID: fmt.Sprintf("%s:%d", prefix, i), Cluster: "test", Source: "gen",
		Event: &core.Event{Timestamp: 1.7e9 + float64(i), Name: "submit"},
		Job:   &core.Job{ID: id, JobID: fmt.Sprintf("f%d", id), UserID: 1000, State: "DEPEND", Name: "job", Queue: "batch"}}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s:%d", prefix, i)
	}
	return out
}

func registry() *core.Registry {
	r := core.NewRegistry()
	r.RegisterSource("gen", "test records", func(nc *core.NodeConfig) (core.Source, error) {
		g := &gen{Batch: 100, Prefix: "gen"}
		return g, nc.Decode(g)
	})
	host.Register(r)
	return r
}

// pipeline is one in-process run: a gen source into one plugin sink.
type pipeline struct {
	t       testing.TB
	dir     string
	log     *coretest.SyncBuffer
	graph   *core.Graph
	p       *core.Pipeline
	sink    *host.Sink
	done    chan error
	cancel  context.CancelFunc
	started bool
}

// sinkYAML is a plugin sink config; extra is indented YAML under it.
func sinkYAML(path, sum, url, extra string) string {
	return fmt.Sprintf(`
  out:
    type: plugin
    inputs: [gen]
    path: %s
    sha256: %s
    write_timeout: 2s
    restart: {initial_backoff: 10ms, max_backoff: 100ms}
    retry: {initial_backoff: 10ms, max_backoff: 100ms}
    batch: {max_records: 50}
    config:
      url: %s
%s`, path, sum, url, extra)
}

func newPipeline(t testing.TB, count int, sinks string) *pipeline {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
data_dir: %s
shutdown_timeout: 10s
sources:
  gen:
    type: gen
    count: %d
    batch: 100
sinks:%s`, dir, count, sinks)
	g := coretest.Build(t, registry(), yaml)
	pl := &pipeline{t: t, dir: dir, log: &coretest.SyncBuffer{}, graph: g, done: make(chan error, 1)}
	for _, n := range g.Sinks() {
		if s, ok := n.Impl.(*host.Sink); ok && n.Name == "out" {
			pl.sink = s
		}
	}
	logger := slog.New(slog.NewTextHandler(pl.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pl.p = core.NewPipeline(g, core.RunOptions{Logger: logger, DataDir: dir})
	return pl
}

func (pl *pipeline) start() {
	ctx, cancel := context.WithCancel(context.Background())
	pl.cancel = cancel
	pl.started = true
	go func() { pl.done <- pl.p.Run(ctx) }()
	pl.t.Cleanup(func() {
		cancel()
		select {
		case <-pl.done:
		case <-time.After(30 * time.Second):
		}
		if pl.t.Failed() {
			pl.t.Logf("pipeline log:\n%s", pl.log)
		}
	})
}

// wait waits for the run to end by itself (the source is finite).
func (pl *pipeline) wait(timeout time.Duration) error {
	pl.t.Helper()
	select {
	case err := <-pl.done:
		pl.done <- err
		return err
	case <-time.After(timeout):
		pl.t.Fatalf("the pipeline did not finish within %s; log:\n%s", timeout, pl.log)
	}
	return nil
}

// run runs to the end and returns Run's error.
func (pl *pipeline) run(timeout time.Duration) error {
	pl.start()
	return pl.wait(timeout)
}

// eventually polls cond until it holds.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deadLettered returns the ids in the sink's dead-letter file.
func deadLettered(t testing.TB, dir, sink string) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, "deadletter", sink+".jsonl"))
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("dead-letter line %q: %v", line, err)
		}
		id, reason := "", fmt.Sprint(l["error"])
		if rec, ok := l["record"].(map[string]any); ok {
			id, _ = rec["id"].(string)
		}
		out[id] = reason
	}
	return out
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
