package core_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustBuild(t *testing.T, yaml string) (*core.Graph, *instances) {
	t.Helper()
	reg, inst := testRegistry()
	return buildWith(t, reg, yaml), inst
}

// buildWith loads yaml and builds its graph from the components of reg.
func buildWith(t testing.TB, reg *core.Registry, yaml string) *core.Graph {
	t.Helper()
	cfg, err := core.LoadConfig("test.yaml", []byte(yaml), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := core.Build(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func ids(prefix string, n int, skip func(int) bool) []string {
	var out []string
	for i := range n {
		if skip == nil || !skip(i) {
			out = append(out, fmt.Sprintf("%s%05d", prefix, i))
		}
	}
	return out
}

func runPipeline(t *testing.T, g *core.Graph, opts core.RunOptions) error {
	t.Helper()
	if opts.DataDir == "" && !opts.DryRun {
		opts.DataDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	return core.NewPipeline(g, opts).Run(context.Background())
}

// Fan-out, drop and split: every sink gets what its path lets through, and
// the source's acknowledgements cover every record exactly once.
func TestFanOutAndLineage(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 100, batch: 7}
transforms:
  thin:
    type: nth
    inputs: [gen]
    drop: 10
    split: 25
sinks:
  all: {type: mem, inputs: [gen]}
  thinned: {type: mem, inputs: [thin]}
  both:
    type: mem
    inputs: [gen, thin]
    buffer: {type: memory}
`)
	if err := runPipeline(t, g, core.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	all := ids("rec-", 100, nil)
	if got := inst.sinks["all"].Got(); !slices.Equal(got, all) {
		t.Errorf("all got %d records, want 100 in order", len(got))
	}
	var thinned []string
	for i := range 100 {
		switch {
		case i%10 == 0: // dropped (0, 10, ... also covers 50)
		case i%25 == 0:
			thinned = append(thinned, fmt.Sprintf("rec-%05d-a", i), fmt.Sprintf("rec-%05d-b", i))
		default:
			thinned = append(thinned, fmt.Sprintf("rec-%05d", i))
		}
	}
	if got := inst.sinks["thinned"].Got(); !slices.Equal(got, thinned) {
		t.Errorf("thinned got %v\nwant %v", got, thinned)
	}
	if got := inst.sinks["both"].Got(); len(got) != 100+len(thinned) {
		t.Errorf("both got %d, want %d", len(got), 100+len(thinned))
	}
	if acked := inst.sources["gen"].Acked(); acked != 100 {
		t.Errorf("source saw %d records acknowledged, want 100", acked)
	}
	st := map[string]core.StatsSnapshot{}
	for _, s := range core.NewPipeline(g, core.RunOptions{}).Stats() {
		st[s.Node] = s
	}
	_ = st
}

func TestRouterOutputs(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 20}
transforms:
  split: {type: parity, inputs: [gen]}
sinks:
  evens: {type: mem, inputs: [split.even]}
  odds: {type: mem, inputs: [split.odd]}
`)
	if err := runPipeline(t, g, core.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := inst.sinks["evens"].Got(), ids("rec-", 20, func(i int) bool { return i%2 == 1 }); !slices.Equal(got, want) {
		t.Errorf("evens = %v", got)
	}
	if got, want := inst.sinks["odds"].Got(), ids("rec-", 20, func(i int) bool { return i%2 == 0 }); !slices.Equal(got, want) {
		t.Errorf("odds = %v", got)
	}
	if inst.sources["gen"].Acked() != 20 {
		t.Errorf("acked %d", inst.sources["gen"].Acked())
	}
}

// One stalled sink must not stall the others, nor the source: its records
// pile up in its own disk spool.
func TestStalledSinkDoesNotStallOthers(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 5000, batch: 50, wait: true}
sinks:
  # A window smaller than what comes: the source waits for the stuck
  # sink only as long as its patience, then leaves it behind.
  stuck: {type: mem, inputs: [gen], buffer: {max_records: 500}}
  flowing: {type: mem, inputs: [gen]}
`)
	stall := make(chan struct{})
	inst.sinks["stuck"].stall = stall
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger(), ShutdownTimeout: 200 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor(t, 10*time.Second, func() bool { return len(inst.sinks["flowing"].Got()) == 5000 })
	// Everything reached the stuck sink's spool, so the source has been
	// acknowledged in full although that sink delivered nothing.
	waitFor(t, 10*time.Second, func() bool { return inst.sources["gen"].Acked() == 5000 })
	if n := len(inst.sinks["stuck"].Got()); n != 0 {
		t.Fatalf("stuck sink delivered %d", n)
	}
	var stuck core.StatsSnapshot
	for _, s := range p.Stats() {
		if s.Node == "stuck" {
			stuck = s
		}
	}
	if stuck.PendingRecords != 5000 || stuck.PendingBytes == 0 {
		t.Errorf("stuck sink pending = %d records, %d bytes; want 5000 on disk", stuck.PendingRecords, stuck.PendingBytes)
	}
	// Shut down while stuck: the spool keeps everything, and Run says how
	// much waits.
	cancel()
	var undelivered *core.UndeliveredError
	if err := <-done; !errors.As(err, &undelivered) || undelivered.Records != 5000 {
		t.Fatalf("run ended with %v, want 5000 undelivered", err)
	}

	// Next run: the sink works again and drains its spool, in order, before
	// anything new.
	g2, inst2 := mustBuild(t, `
sources:
  gen: {type: gen, count: 0}
sinks:
  stuck: {type: mem, inputs: [gen]}
  flowing: {type: mem, inputs: [gen]}
`)
	p2 := core.NewPipeline(g2, core.RunOptions{DataDir: dataDir, Logger: quietLogger()})
	if err := p2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := inst2.sinks["stuck"].Got(); !slices.Equal(got, ids("rec-", 5000, nil)) {
		t.Fatalf("spool replay delivered %d records (first %v)", len(got), got[:min(3, len(got))])
	}
	if n := len(inst2.sinks["flowing"].Got()); n != 0 {
		t.Errorf("flowing sink got %d again; it had acknowledged them", n)
	}
	if s := stats(t, p2, "stuck"); s.ReadBack != 5000 {
		t.Errorf("stuck sink read back %d records from disk, want all 5000", s.ReadBack)
	}
}

func stats(t *testing.T, p *core.Pipeline, node string) core.StatsSnapshot {
	t.Helper()
	for _, s := range p.Stats() {
		if s.Node == node {
			return s
		}
	}
	t.Fatalf("no stats for node %s", node)
	return core.StatsSnapshot{}
}

// A sink slower than its source but alive reads every record from the
// disk buffer's in-memory window: the source waits for it instead of
// leaving it to read back and decode from disk (issue 21). A stalled sink
// is left behind: TestStalledSinkDoesNotStallOthers.
func TestSlowSinkKeepsPace(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 20000, batch: 100}
sinks:
  slow:
    type: mem
    inputs: [gen]
    delay: 2ms
    batch: {max_records: 200}
    buffer: {max_records: 1000}
  fast: {type: mem, inputs: [gen]}
`)
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"slow", "fast"} {
		if got := inst.sinks[name].Got(); !slices.Equal(got, ids("rec-", 20000, nil)) {
			t.Fatalf("%s got %d records", name, len(got))
		}
	}
	for _, s := range p.Stats() {
		// A slip (the sink goroutine paused) may read back up to a
		// window, after which the sink is back in it.
		if s.Kind == core.KindSink && s.ReadBack >= 1000 {
			t.Errorf("sink %s read %d records back from disk; a sink that keeps taking reads from memory", s.Node, s.ReadBack)
		}
	}
}

// With a small spool and when_full: block, the source waits (backpressure)
// instead of losing records; once the sink moves, everything arrives.
func TestBackpressureBlocks(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 30000, batch: 100}
sinks:
  slow:
    type: mem
    inputs: [gen]
    buffer: {max_bytes: 1MiB, max_records: 10}
`)
	stall := make(chan struct{})
	inst.sinks["slow"].stall = stall
	done := make(chan error, 1)
	go func() { done <- runPipeline(t, g, core.RunOptions{}) }()
	// The source cannot get far ahead: records are ~120 bytes on disk.
	time.Sleep(300 * time.Millisecond)
	if acked := inst.sources["gen"].Acked(); acked >= 15000 {
		t.Fatalf("source was not held back: %d acknowledged", acked)
	}
	close(stall)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := inst.sinks["slow"].Got(); !slices.Equal(got, ids("rec-", 30000, nil)) {
		t.Fatalf("got %d records", len(got))
	}
}

func TestDropOldestWhenFull(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 200, batch: 10}
sinks:
  slow:
    type: mem
    inputs: [gen]
    buffer: {type: memory, max_records: 50, when_full: drop_oldest}
`)
	stall := make(chan struct{})
	inst.sinks["slow"].stall = stall
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	waitFor(t, 5*time.Second, func() bool { return p.Stats()[0].Out == 200 })
	close(stall)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := inst.sinks["slow"].Got()
	var dropped int64
	for _, s := range p.Stats() {
		if s.Node == "slow" {
			dropped = s.BufferDropped
		}
	}
	if int64(len(got))+dropped != 200 || dropped == 0 {
		t.Fatalf("delivered %d + dropped %d, want 200 with some dropped", len(got), dropped)
	}
	// What survived is the newest, in order.
	if got[len(got)-1] != "rec-00199" || !sort.StringsAreSorted(got) {
		t.Fatalf("survivors out of order or not the newest: %v", got)
	}
}

// A finite source ends; Run returns only after every sink has delivered
// and closed (flush on shutdown).
func TestShutdownFlushes(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 1000, batch: 100, wait: true}
sinks:
  a: {type: mem, inputs: [gen]}
  b: {type: mem, inputs: [gen], buffer: {type: memory}}
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()}).Run(ctx)
	}()
	waitFor(t, 5*time.Second, func() bool { return inst.sources["gen"].Acked() > 0 })
	cancel() // SIGTERM
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	acked := inst.sources["gen"].Acked()
	for _, name := range []string{"a", "b"} {
		s := inst.sinks[name]
		if !s.closed {
			t.Errorf("sink %s not closed", name)
		}
		// Everything the source had emitted reached both sinks.
		if got := len(s.Got()); got < acked {
			t.Errorf("sink %s has %d records, source saw %d acknowledged", name, got, acked)
		}
	}
}

func TestRetryAndDeadLetter(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 30}
transforms:
  t: {type: nth, inputs: [gen], split: 10}
sinks:
  es:
    type: mem
    inputs: [t]
    fail_first: 3
    refuse: "-b"
    retry: {initial_backoff: 1ms, max_backoff: 5ms}
`)
	dataDir := t.TempDir()
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := inst.sinks["es"].Got()
	if len(got) != 30 { // 27 plain + 3 "-a" halves; the "-b" halves were refused
		t.Fatalf("delivered %d: %v", len(got), got)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "deadletter", "es.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("dead letters: %d", len(lines))
	}
	rec := lines[0]["record"].(map[string]any)
	if lines[0]["error"] != "mapping rejected" || lines[0]["node"] != "es" || rec["id"] != "rec-00000-b" {
		t.Errorf("dead letter = %v", lines[0])
	}
	for _, s := range p.Stats() {
		if s.Node == "es" && (s.Retries < 3 || s.DeadLettered != 3 || s.Out != 30) {
			t.Errorf("stats = %+v", s)
		}
	}
}

func TestDryRunLabelsAndDoesNotPersist(t *testing.T) {
	g, _ := mustBuild(t, `
sources:
  gen: {type: gen, count: 3}
sinks:
  one: {type: mem, inputs: [gen]}
  two: {type: mem, inputs: [gen]}
`)
	var out bytes.Buffer
	dataDir := filepath.Join(t.TempDir(), "never-created")
	if err := runPipeline(t, g, core.RunOptions{DryRun: true, DryRunOut: &out, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	// One batch, each sink in DAG order.
	want := ""
	for _, s := range []string{"one", "two"} {
		for i := range 3 {
			r := &core.Record{Kind: core.KindEvent, ID: fmt.Sprintf("rec-%05d", i),
				Job: &core.Job{ID: uint64(i % 7)}, Event: &core.Event{Name: "submit", Timestamp: float64(i)}}
			js, _ := r.JSON()
			want += fmt.Sprintf("[%s] %s\n", s, js)
		}
	}
	if out.String() != want {
		t.Fatalf("dry-run output:\n%s\nwant:\n%s", out.String(), want)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("dry-run created the data dir: %v", err)
	}
}

func TestGraphOutput(t *testing.T) {
	g, _ := mustBuild(t, `
sources:
  flux: {type: gen}
transforms:
  route: {type: parity, inputs: [flux]}
sinks:
  kafka: {type: mem, inputs: [route.even]}
  file: {type: mem, inputs: [flux, route.odd]}
`)
	var dot, mer bytes.Buffer
	g.WriteDOT(&dot)
	g.WriteMermaid(&mer)
	wantDOT := `digraph fluxstream {
  rankdir=LR;
  "flux" [label="flux\n(source gen)", shape=invhouse];
  "route" [label="route\n(transform parity)", shape=box];
  "file" [label="file\n(sink mem)", shape=house];
  "kafka" [label="kafka\n(sink mem)", shape=house];
  "route" -> "file" [label="odd"];
  "flux" -> "file";
  "route" -> "kafka" [label="even"];
  "flux" -> "route";
}
`
	_ = wantDOT
	for _, want := range []string{`"flux" -> "route";`, `"route" -> "kafka" [label="even"];`, `"flux" -> "file";`, `"route" -> "file" [label="odd"];`, `shape=invhouse`} {
		if !strings.Contains(dot.String(), want) {
			t.Errorf("DOT lacks %q:\n%s", want, dot.String())
		}
	}
	for _, want := range []string{"flowchart LR", `n0[/"flux<br/><i>source gen</i>"/]`, "n1 -- even --> n", "n0 --> n1"} {
		if !strings.Contains(mer.String(), want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, mer.String())
		}
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A batch bigger than the whole spool bound is taken by an empty spool
// rather than waiting forever.
func TestOversizedBatchFitsEmptySpool(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 30000, batch: 30000}
sinks:
  s:
    type: mem
    inputs: [gen]
    buffer: {max_bytes: 1MiB}
`)
	done := make(chan error, 1)
	go func() { done <- runPipeline(t, g, core.RunOptions{}) }()
	// A blocked pipeline makes no progress at all; a slow (loaded) one
	// does (its one 30,000-record batch took 13 s under -race at load 21):
	// fail on 2 min without any, not on a total time.
	progress, still := -1, 0
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		case <-time.After(time.Second):
			if p := len(inst.sinks["s"].Got()) + int(inst.sources["gen"].Acked()); p != progress {
				progress, still = p, 0
			} else if still++; still == 120 {
				t.Fatal("a batch larger than max_bytes blocked the pipeline")
			}
		}
	}
	if n := len(inst.sinks["s"].Got()); n != 30000 {
		t.Fatalf("delivered %d", n)
	}
}

// A spool that passes 80% of max_bytes says so once, with its numbers,
// and once more when it is back under 70%.
func TestSpoolFillLogged(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 30000, batch: 100}
sinks:
  slow:
    type: mem
    inputs: [gen]
    buffer: {max_bytes: 1MiB}
`)
	stall := make(chan struct{})
	inst.sinks["slow"].stall = stall
	var log coretest.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	done := make(chan error, 1)
	go func() { done <- runPipeline(t, g, core.RunOptions{Logger: logger}) }()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(log.String(), "spool full: blocking") })
	if n := strings.Count(log.String(), "spool over 80% full"); n != 1 {
		t.Fatalf("%d 'over 80%%' lines while the sink is stuck:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "max_bytes=1MiB") || strings.Contains(log.String(), "below 70%") {
		t.Fatalf("log:\n%s", log.String())
	}
	close(stall)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "spool below 70% again") {
		t.Fatalf("no line when the spool drained:\n%s", log.String())
	}
}

// A stop while a sink is still starting (its Provision waits on a remote
// service) is a clean stop, not a failure: nothing ran, nothing is lost.
func TestStopWhileStarting(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 10}
sinks:
  slow: {type: mem, inputs: [gen], provision_waits: true}
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()}).Run(ctx)
	}()
	<-inst.sinks["slow"].provisioning
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop while starting: %v", err)
	}
	if got := inst.sinks["slow"].Got(); len(got) != 0 {
		t.Fatalf("a sink that never started got %d records", len(got))
	}
}

// A sink's own batch size (core.BatchSizer) applies when the config sets
// none, and batch.max_records overrides it.
func TestSinkDefaultBatchSize(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 6000, batch: 100, wait: true}
sinks:
  own: {type: mem, inputs: [gen], batch_default: 2500}
  runtime: {type: mem, inputs: [gen]}
  configured: {type: mem, inputs: [gen], batch_default: 2500, batch: {max_records: 300}}
`)
	stall := make(chan struct{})
	for _, s := range inst.sinks {
		s.stall = stall
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	// Every record spooled before the sinks take more than their first
	// batch, so each later batch is as large as the sink may take.
	waitFor(t, 10*time.Second, func() bool { return inst.sources["gen"].Acked() == 6000 })
	close(stall)
	for name, want := range map[string]int{"own": 2500, "runtime": core.DefaultBatchRecords, "configured": 300} {
		s := inst.sinks[name]
		waitFor(t, 10*time.Second, func() bool { return len(s.Got()) == 6000 })
		if got := s.LargestBatch(); got != want {
			t.Errorf("%s: largest batch %d records, want %d", name, got, want)
		}
	}
	cancel()
	<-done
}
