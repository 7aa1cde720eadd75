package replay_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	"github.com/fluxstream/fluxstream/sources/flux/journal"
	"github.com/fluxstream/fluxstream/sources/replay"
)

const testdata = "../../testdata/flux"

func quiet() *slog.Logger { return coretest.Quiet() }

// pipeline runs sourceYAML (one source named "src") into a collector.
func pipeline(t *testing.T, sourceYAML, dataDir string) (*core.Pipeline, *coretest.Collector, func() error) {
	t.Helper()
	return pipelineLog(t, sourceYAML, dataDir, quiet())
}

// pipelineLog is pipeline logging to logger.
func pipelineLog(t *testing.T, sourceYAML, dataDir string, logger *slog.Logger) (*core.Pipeline, *coretest.Collector, func() error) {
	t.Helper()
	reg := core.NewRegistry()
	replay.Register(reg)
	flux.Register(reg)
	col := &coretest.Collector{}
	col.Register(reg)
	yaml := "cluster: test\nsources:\n  src:\n" + indent(sourceYAML) + "sinks:\n  out:\n    type: collect\n    inputs: [src]\n    buffer: {type: memory}\n"
	g := coretest.Build(t, reg, yaml)
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: logger, ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return p, col, func() error {
		select {
		case err := <-done:
			cancel()
			return err
		case <-time.After(30 * time.Second):
			cancel()
			return <-done
		}
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// Every fixture journal replays with the event counts the fixture README
// and the recordings give.
func TestEveryFixture(t *testing.T) {
	for _, tc := range []struct {
		file           string
		events, purges int
		jobs           int
	}{
		{"journal-scenario-live-full.jsonl", 373, 0, 27},
		{"journal-backlog-full-before-purge.jsonl", 324, 0, 23},
		{"journal-backlog-full-after-purge.jsonl", 214, 0, 15},
		{"journal-backlog-full-allow-submit-finish-clean.jsonl", 66, 0, 23},
		{"journal-backlog-full-deny-annotations-memo.jsonl", 323, 0, 23},
		{"journal-active-only-not-full.jsonl", 20, 0, 2},
		{"journal-bulk2000-live.jsonl.gz", 22000, 0, 2000},
		{"journal-bulk2000-backlog-full.jsonl.gz", 20234, 0, 2017},
		{"event-job-purge-inactive.jsonl", 0, 8, 8},
		{replay.EmbeddedScenario, 373, 8, 27},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := tc.file
			if !strings.HasPrefix(path, "embedded:") {
				path = filepath.Join(testdata, tc.file)
			}
			_, col, wait := pipeline(t, fmt.Sprintf("type: replay\npath: %s\nuser_lookup: none\n", path), t.TempDir())
			if err := wait(); err != nil {
				t.Fatal(err)
			}
			events, purges := 0, 0
			jobs := map[uint64]bool{}
			for _, r := range col.All() {
				switch r.Kind {
				case core.KindEvent:
					events++
				case core.KindPurge:
					purges++
				default:
					t.Errorf("unexpected %s record %s", r.Kind, r.ID)
				}
				jobs[r.JobID()] = true
			}
			if events != tc.events || purges != tc.purges || len(jobs) != tc.jobs {
				t.Fatalf("%d events, %d purges, %d jobs; want %d, %d, %d", events, purges, len(jobs), tc.events, tc.purges, tc.jobs)
			}
		})
	}
}

// The replay source yields exactly the records the flux source yields for
// the same stream (purge time aside: the flux source dates it by the wall
// clock, a replay by the journal).
func TestReplayEqualsFlux(t *testing.T) {
	b, in := fluxtest.StartScenario(t, testdata)
	p, fromFlux, _ := pipeline(t, fmt.Sprintf("type: flux\nuri: %s\nuser_lookup: none\n", b.URI()), t.TempDir())
	for b.Streams() == 0 {
		time.Sleep(time.Millisecond)
	}
	in.Step(in.Len())
	deadline := time.Now().Add(10 * time.Second)
	for len(fromFlux.All()) < 381 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	_ = p
	_, fromReplay, wait := pipeline(t, "type: replay\npath: embedded:scenario\nuser_lookup: none\n", t.TempDir())
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	// Events in the same order, byte for byte; purge records the same
	// (a broker event and journal responses travel apart, so where the
	// purge falls between events may differ).
	split := func(recs []*core.Record) (events []string, purges map[core.Purge]bool) {
		purges = map[core.Purge]bool{}
		for _, r := range recs {
			if r.Purge != nil {
				p := *r.Purge
				p.Time = 0
				purges[p] = true
				continue
			}
			js, _ := r.JSON()
			events = append(events, string(js))
		}
		return events, purges
	}
	ea, pa := split(fromFlux.All())
	er, pr := split(fromReplay.All())
	if len(ea) != 373 || len(er) != 373 || len(pa) != 8 || len(pr) != 8 {
		t.Fatalf("flux %d events %d purges, replay %d and %d; want 373 and 8", len(ea), len(pa), len(er), len(pr))
	}
	for i := range ea {
		if ea[i] != er[i] {
			t.Fatalf("record %d differs:\nflux   %s\nreplay %s", i, ea[i], er[i])
		}
	}
	for p := range pa {
		if !pr[p] {
			t.Errorf("purge %+v only from flux", p)
		}
	}
}

// Recorded pace: the live part is spread as it was recorded, divided by
// speed; the backlog comes at once.
func TestRecordedPace(t *testing.T) {
	_, col, wait := pipeline(t, fmt.Sprintf("type: replay\npath: %s\npace: recorded\nspeed: 100\nuser_lookup: none\n",
		filepath.Join(testdata, "journal-active-only-not-full.jsonl")), t.TempDir())
	start := time.Now()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	recs := col.All()
	// The live part of this recording spans about 1.2 s: 12 ms at 100x.
	first, last := 0.0, 0.0
	for _, r := range recs[12:] {
		if first == 0 {
			first = r.Event.Timestamp
		}
		last = r.Event.Timestamp
	}
	want := time.Duration((last - first) / 100 * float64(time.Second))
	if took < want {
		t.Fatalf("replay took %v, the recorded pace at 100x needs at least %v", took, want)
	}
}

// A checkpointed replay played twice emits nothing the second time.
func TestReplayTwice(t *testing.T) {
	dir := t.TempDir()
	for run, want := range []int{381, 0} {
		_, col, wait := pipeline(t, "type: replay\npath: embedded:scenario\nuser_lookup: none\n", dir)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		if n := len(col.All()); n != want {
			t.Fatalf("run %d emitted %d, want %d", run+1, n, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	nc, _ := core.ParseNodeConfig(core.KindSource, "src", []byte("pace: slow\nspeed: 0\nuser_lookup: ldap\ninclude: {jobspec: sometimes}\nmax_line: 100\n"))
	_, err := replay.New(nc)
	for _, want := range []string{
		`sources.src.path: must name a recorded journal (or embedded:scenario)`,
		`sources.src.pace: unknown pace "slow" (max, recorded)`,
		`sources.src.speed: must be a positive number`,
		`sources.src.user_lookup: unknown mode "ldap" (getent, files, none)`,
		`sources.src.include.jobspec: unknown policy "sometimes" (never, on-change, always)`,
		`sources.src.max_line: must be at least 1KiB`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	nc, _ = core.ParseNodeConfig(core.KindSource, "src", []byte("path: /nonexistent/j.jsonl\n"))
	src, err := replay.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	src.(core.Provisioner).Provision(context.Background(), core.NodeContext{Logger: quiet()})
	if err := src.Run(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "journal: open /nonexistent/j.jsonl: no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

// expectedIDs lists the record ids a fresh consumer yields for complete
// journal lines: one per event (a first reading emits every event).
func expectedIDs(t *testing.T, data []byte) []string {
	t.Helper()
	var ids []string
	for _, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		var r struct {
			ID     int64 `json:"id"`
			Events []struct {
				Timestamp float64 `json:"timestamp"`
				Name      string  `json:"name"`
			} `json:"events"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("fixture line %q: %v", l, err)
		}
		for _, e := range r.Events {
			ids = append(ids, core.EventID(uint64(r.ID), e.Name, e.Timestamp))
		}
	}
	return ids
}

func collectedIDs(col *coretest.Collector) []string {
	var ids []string
	for _, r := range col.All() {
		ids = append(ids, r.ID)
	}
	return ids
}

// A gzip file cut short: every complete line before the cut is delivered,
// then the replay stops with an error naming file, line and offset.
func TestTruncatedGzipDeliversWhatCameBefore(t *testing.T) {
	whole, err := os.ReadFile(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	cut := whole[:len(whole)/2]
	path := filepath.Join(t.TempDir(), "cut.jsonl.gz")
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	// What a reader gets out of the cut file, independently of the source.
	zr, err := gzip.NewReader(bytes.NewReader(cut))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading the cut file: %v, want unexpected EOF", err)
	}
	complete := data[:bytes.LastIndexByte(data, '\n')+1]
	nlines := bytes.Count(complete, []byte("\n"))
	want := expectedIDs(t, complete)
	if nlines < 5000 || len(want) < 5000 {
		t.Fatalf("cut too early: %d lines, %d events", nlines, len(want))
	}

	_, col, wait := pipeline(t, fmt.Sprintf("type: replay\npath: %s\nuser_lookup: none\n", path), t.TempDir())
	err = wait()
	wantErr := fmt.Sprintf("source src: read %s: line %d (byte offset %d of the decompressed data): incomplete line of %d bytes: unexpected EOF; the %d lines before it were delivered",
		path, nlines+1, len(complete), len(data)-len(complete), nlines)
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error\n %v\nwant\n %s", err, wantErr)
	}
	if got := collectedIDs(col); !slices.Equal(got, want) {
		t.Fatalf("delivered %d records, want the %d of the complete lines (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
}

// A line longer than max_line: the lines before it are delivered, then the
// replay stops with an error naming file, line and offset.
func TestOverlongLineDeliversWhatCameBefore(t *testing.T) {
	path := filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	// The fixture's 10th line (job held-urgency with its updates) is the
	// first longer than 2 KiB.
	long := -1
	for i, l := range lines {
		if len(bytes.TrimSuffix(l, []byte("\n"))) > 2048 {
			long = i
			break
		}
	}
	if long != 9 {
		t.Fatalf("first line over 2KiB is line %d, want 10", long+1)
	}
	before := bytes.Join(lines[:long], nil)
	want := expectedIDs(t, before)

	_, col, wait := pipeline(t, fmt.Sprintf("type: replay\npath: %s\nuser_lookup: none\nmax_line: 2KiB\n", path), t.TempDir())
	err = wait()
	wantErr := fmt.Sprintf("source src: read %s: line 10 (byte offset %d): line longer than max_line (2048 bytes); the 9 lines before it were delivered", path, len(before))
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error\n %v\nwant\n %s", err, wantErr)
	}
	if got := collectedIDs(col); !slices.Equal(got, want) {
		t.Fatalf("delivered %d records, want the %d of the 9 lines before (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	if len(want) < 100 {
		t.Fatalf("only %d events before the long line", len(want))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// shiftFile writes the recorded stream at src as a restarted instance
// without its old KVS would send it: the same job ids, every event dt
// seconds later.
func shiftFile(t *testing.T, src string, dt float64) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var r struct {
			ID     json.Number `json:"id"`
			Events []struct {
				Timestamp float64         `json:"timestamp"`
				Name      string          `json:"name"`
				Context   json.RawMessage `json:"context,omitempty"`
			} `json:"events"`
			Jobspec json.RawMessage `json:"jobspec,omitempty"`
			R       json.RawMessage `json:"R,omitempty"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		for i := range r.Events {
			r.Events[i].Timestamp += dt
		}
		b, _ := json.Marshal(r)
		out.Write(append(b, '\n'))
	}
	path := filepath.Join(t.TempDir(), "shifted-"+filepath.Base(src))
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A list of files where a later one reuses the job ids of an earlier one
// (an instance restarted without its KVS): every job of both is delivered
// in full, each old job's purge record (JOBID:purge:T_SUBMIT) right before
// the new one's records; played again, nothing is emitted twice.
func TestReplayReusedIDs(t *testing.T) {
	a := filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl")
	b := shiftFile(t, a, 3600)
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	var want []string
	want = append(want, expectedIDs(t, bytes.TrimSpace(da))...)
	for _, l := range bytes.Split(bytes.TrimSpace(db), []byte("\n")) {
		var r struct {
			ID     uint64
			Events []struct {
				Timestamp float64
				Name      string
			}
		}
		json.Unmarshal(l, &r)
		if r.ID == 1<<64-1 || len(r.Events) == 0 {
			continue // the sentinel
		}
		want = append(want, journal.PurgeID(r.ID, r.Events[0].Timestamp-3600))
		want = append(want, expectedIDs(t, l)...)
	}
	if len(want) != 324+23+324 {
		t.Fatalf("expected %d records", len(want))
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("type: replay\npath: [%s, %s]\nuser_lookup: none\n", a, b)
	for run, n := range []int{len(want), 0} {
		_, col, wait := pipeline(t, cfg, dir)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		got := collectedIDs(col)
		if run == 0 && !slices.Equal(got, want) {
			t.Fatalf("delivered %d records, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
		}
		if len(got) != n {
			t.Fatalf("run %d: %d records, want %d", run+1, len(got), n)
		}
	}
}
