package flux_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

const testdata = "../../testdata/flux"

type harness struct {
	t       *testing.T
	in      *fluxtest.Instance
	broker  *fluxtest.Broker
	sink    *coretest.Collector
	dataDir string
	logs    *logRecorder // nil: logs dropped
	uri     string       // "": the broker's
	// reconnect is the source's reconnect config ("": 10ms..50ms).
	reconnect string
	cancel    context.CancelFunc
	done      chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	b, in := fluxtest.StartScenario(t, testdata)
	return &harness{t: t, in: in, broker: b, dataDir: t.TempDir()}
}

// start runs a pipeline flux -> collector with the given extra source
// config lines.
func (h *harness) start(extra string) {
	h.t.Helper()
	h.sink = &coretest.Collector{}
	reg := core.NewRegistry()
	flux.Register(reg)
	h.sink.Register(reg)
	yaml := fmt.Sprintf(`
cluster: test
sources:
  flux:
    type: flux
    uri: %s
    user_lookup: none
    reconnect: %s
%s
sinks:
  out:
    type: collect
    inputs: [flux]
    buffer: {sync_interval: 5ms}
`, h.sourceURI(), h.reconnectConfig(), indent(extra))
	g := coretest.Build(h.t, reg, yaml)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	logger := coretest.Quiet()
	if h.logs != nil {
		logger = slog.New(h.logs)
	}
	p := core.NewPipeline(g, core.RunOptions{DataDir: h.dataDir, Logger: logger, ShutdownTimeout: 2 * time.Second})
	go func() { h.done <- p.Run(ctx) }()
}

func (h *harness) reconnectConfig() string {
	if h.reconnect != "" {
		return h.reconnect
	}
	return "{initial_backoff: 10ms, max_backoff: 50ms}"
}

func (h *harness) sourceURI() string {
	if h.uri != "" {
		return h.uri
	}
	return h.broker.URI()
}

// waitStream waits until the source has a journal stream open.
func (h *harness) waitStream() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.broker.Streams() == 0 {
		if time.Now().After(deadline) {
			h.t.Fatal("source never opened a journal stream")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("pipeline did not stop")
	}
	return nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func (h *harness) waitRecords(n int) []*core.Record {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := h.sink.All()
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("got %d records, want %d", len(recs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countEvents counts the events of a recorded stream file.
func recordedEvents(t *testing.T, name string) (events []string, jobs map[uint64]bool) {
	t.Helper()
	items, err := fluxtest.LoadTimeline(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	jobs = map[uint64]bool{}
	for _, it := range items {
		if it.Response == nil {
			continue
		}
		for _, e := range it.Response.Events {
			events = append(events, core.EventID(uint64(it.Response.ID), e.Name, e.Timestamp))
			jobs[uint64(it.Response.ID)] = true
		}
	}
	return events, jobs
}

// A consumer present from the start gets every live event, in journal
// order, and a purge record per purged job.
func TestLiveScenario(t *testing.T) {
	h := newHarness(t)
	h.start("")
	h.waitStream()
	h.in.Step(h.in.Len())
	want, _ := recordedEvents(t, "journal-scenario-live-full.jsonl")
	if len(want) != 373 {
		t.Fatalf("fixture has %d events, README says 373", len(want))
	}
	recs := h.waitRecords(373 + 8)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	var events, purges []string
	for _, r := range recs {
		switch r.Kind {
		case core.KindEvent:
			events = append(events, r.ID)
			if r.Job.ID == 0 || r.Cluster != "test" || r.Source != "flux" {
				t.Fatalf("record %s lacks job, cluster or source: %+v", r.ID, r)
			}
		case core.KindPurge:
			purges = append(purges, r.ID)
			if r.Purge.Reason != "purge-event" {
				t.Errorf("purge reason %q", r.Purge.Reason)
			}
		}
	}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events differ from the journal (%d vs %d)", len(events), len(want))
	}
	if len(purges) != 8 || !strings.HasPrefix(purges[0], "349066756096:purge") { // the id may carry t_submit (issue 16, id reuse)
		t.Fatalf("purges = %v", purges)
	}
	if len(recs) != 381 {
		t.Fatalf("%d records, want 381 (no duplicates)", len(recs))
	}
}

// A consumer that connects late gets the backlog: each job's committed
// events (no annotations, no volatile memo), invalidated and purged jobs
// absent.
func TestLateConsumer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pos     func(in *fluxtest.Instance) int
		fixture string
	}{
		{"before purge", func(in *fluxtest.Instance) int { return in.PosAfterResponses(fluxtest.ScenarioPurgeAfter) }, "journal-backlog-full-before-purge.jsonl"},
		{"after purge", func(in *fluxtest.Instance) int { return in.PosAfterResponses(fluxtest.ScenarioPurgeAfter) + 1 }, "journal-backlog-full-after-purge.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.in.SeekTo(tc.pos(h.in))
			want, _ := recordedEvents(t, tc.fixture)
			h.start("")
			recs := h.waitRecords(len(want))
			time.Sleep(50 * time.Millisecond) // nothing more may come
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, r := range h.sink.All() {
				if got[r.ID] {
					t.Errorf("duplicate %s", r.ID)
				}
				got[r.ID] = true
			}
			for _, id := range want {
				if !got[id] {
					t.Errorf("missing %s", id)
				}
			}
			if len(got) != len(want) || len(recs) != len(want) {
				t.Fatalf("got %d records, want %d", len(got), len(want))
			}
		})
	}
}

// The broker drops the connection mid-stream, twice: the source reconnects,
// reads the backlog again and emits only what it had not emitted.
func TestReconnectEmitsOnlyNew(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(150)
	h.broker.CloseAfter(40) // each connection breaks after 40 responses
	h.start("")
	h.waitRecords(30)
	for range 6 {
		h.in.Step(40)
		time.Sleep(150 * time.Millisecond)
	}
	h.broker.CloseAfter(0)
	h.in.Step(h.in.Len())
	want, _ := recordedEvents(t, "journal-scenario-live-full.jsonl")
	// Live-only events that happened while disconnected are gone for good
	// (volatile by nature); every committed event arrives exactly once.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if n := len(h.sink.All()); n >= 300 {
			time.Sleep(200 * time.Millisecond)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range h.sink.All() {
		got[r.ID]++
	}
	for id, n := range got {
		if n > 1 {
			t.Errorf("%s emitted %d times", id, n)
		}
	}
	committed := h.committed()
	for _, id := range want {
		if committed[id] && got[id] == 0 {
			t.Errorf("committed event %s never emitted", id)
		}
	}
	conns := 0
	for _, r := range h.broker.Requests() {
		if r.Topic == "job-manager.events-journal" {
			conns++
		}
	}
	if conns < 3 {
		t.Fatalf("%d journal requests, want at least 3 (two reconnects)", conns)
	}
}

// committed is the set of events that reach the KVS eventlog: those of the
// before-purge backlog plus the committed events of later jobs.
func (h *harness) committed() map[string]bool {
	out := map[string]bool{}
	for _, r := range h.in.Backlog(h.in.Len(), true) {
		for _, e := range r.Events {
			out[core.EventID(uint64(r.ID), e.Name, e.Timestamp)] = true
		}
	}
	before, _ := fluxtest.LoadBacklog(filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl"))
	for _, r := range before {
		for _, e := range r.Events {
			out[core.EventID(uint64(r.ID), e.Name, e.Timestamp)] = true
		}
	}
	return out
}

func TestActiveOnly(t *testing.T) {
	h := newHarness(t)
	// Where the full:false capture was made: two active jobs.
	h.in.SeekTo(h.in.PosAfterEvent(1676228427776, "start"))
	h.start("full: false")
	recs := h.waitRecords(12)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	jobs := map[uint64]bool{}
	for _, r := range recs {
		jobs[r.JobID()] = true
	}
	if len(jobs) != 2 || !jobs[1671933460480] || !jobs[1676228427776] {
		t.Fatalf("jobs in an active-only backlog: %v", jobs)
	}
	if req := h.broker.Requests(); req[1].Payload != `{"full":false}` {
		t.Fatalf("request %q", req[1].Payload)
	}
}

// A user who is not the instance owner is refused, at connect (guests not
// allowed, the default) or by the journal (guests allowed): fluxstream stops
// and says why, instead of retrying forever.
func TestNotOwner(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse func(b *fluxtest.Broker)
		want   string
	}{
		{"at connect", func(b *fluxtest.Broker) { b.RejectConnections(syscall.EPERM) },
			"source flux: connect to flux at local://"},
		{"by the journal", func(b *fluxtest.Broker) { b.Refuse(syscall.EPERM, "Request requires owner credentials") },
			"source flux: job-manager.events-journal: Request requires owner credentials (EPERM): fluxstream must run as the Flux instance owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.refuse(h.broker)
			h.start("")
			var err error
			select {
			case err = <-h.done:
			case <-time.After(10 * time.Second):
				t.Fatal("source kept retrying a permission error")
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "must run as the Flux instance owner") {
				t.Fatalf("err = %v\nwant %s...", err, tc.want)
			}
		})
	}
}

// Unloading the job-manager ends the stream with ENODATA: reconnect.
func TestModuleUnloadReconnects(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(100)
	h.start("")
	h.waitRecords(50)
	h.broker.Unload()
	h.in.Step(50)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, r := range h.broker.Requests() {
			if r.Topic == "job-manager.events-journal" {
				n++
			}
		}
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reconnect after ENODATA")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	// Shutdown cancelled the stream politely.
	reqs := h.broker.Requests()
	if last := reqs[len(reqs)-1]; last.Topic != "job-manager.events-journal-cancel" || !strings.HasPrefix(last.Payload, `{"matchtag":`) {
		t.Fatalf("last request %+v, want a cancel", last)
	}
}

// A restart against the backlog emits only what the checkpoint does not
// hold; jobs purged meanwhile get a purge record.
func TestRestartUsesCheckpoint(t *testing.T) {
	h := newHarness(t)
	mid := 200
	h.in.SeekTo(mid)
	h.start("")
	first := len(h.waitRecords(1))
	time.Sleep(300 * time.Millisecond) // checkpoint flushed
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	firstIDs := map[string]bool{}
	for _, r := range h.sink.All() {
		firstIDs[r.ID] = true
	}
	_ = first
	h.in.SeekTo(h.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter) + 1) // after the purge
	h.start("")
	time.Sleep(500 * time.Millisecond)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	var purged []string
	for _, r := range h.sink.All() {
		if firstIDs[r.ID] {
			t.Errorf("%s emitted again after restart", r.ID)
		}
		if r.Kind == core.KindPurge {
			purged = append(purged, fmt.Sprintf("%d/%s", r.Purge.ID, r.Purge.Reason))
		}
	}
	sort.Strings(purged)
	// Jobs seen in the first run and purged while fluxstream was down.
	if len(purged) == 0 || !strings.HasSuffix(purged[0], "/missing-from-backlog") {
		t.Fatalf("purge records after restart: %v", purged)
	}
}

// allow and deny go to Flux as the journal filters; the records follow.
func TestAllowDeny(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(h.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	want, _ := recordedEvents(t, "journal-backlog-full-allow-submit-finish-clean.jsonl")
	h.start("allow: [submit, finish, clean]\ndeny: [memo]")
	recs := h.waitRecords(len(want))
	time.Sleep(50 * time.Millisecond)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if req := h.broker.Requests()[1]; req.Payload != `{"full":true,"allow":{"clean":1,"finish":1,"submit":1},"deny":{"memo":1}}` {
		t.Fatalf("journal request %s", req.Payload)
	}
	if len(h.sink.All()) != len(want) {
		t.Fatalf("%d records, want %d", len(h.sink.All()), len(want))
	}
	for _, r := range recs {
		if n := r.Event.Name; n != "submit" && n != "finish" && n != "clean" {
			t.Fatalf("event %s passed the filter", n)
		}
	}
}

// The broker goes down (socket gone) and comes back: the source retries
// with backoff, reconnects, and emits only what it had not.
func TestBrokerRestart(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(100)
	h.start("")
	h.waitStream()
	first := len(h.waitRecords(1))
	h.broker.Stop()
	h.in.Step(100) // the instance goes on while fluxstream cannot reach it
	time.Sleep(150 * time.Millisecond)
	if err := h.broker.Restart(); err != nil {
		t.Fatal(err)
	}
	h.waitStream()
	h.in.Step(h.in.Len())
	// Poll for the outcome, not a fixed time: under load the reconnect
	// and the backlog re-read can take seconds.
	committed := h.committed()
	deadline := time.Now().Add(30 * time.Second)
	for {
		have := map[string]bool{}
		for _, r := range h.sink.All() {
			have[r.ID] = true
		}
		missing := 0
		for id := range committed {
			if !have[id] {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a duplicate would come right behind
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range h.sink.All() {
		seen[r.ID]++
	}
	for id := range committed {
		if seen[id] == 0 {
			t.Errorf("committed event %s lost over the broker restart", id)
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s emitted %d times", id, n)
		}
	}
	_ = first
}
