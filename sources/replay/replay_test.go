package replay_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	"github.com/fluxstream/fluxstream/sources/replay"
)

const testdata = "../../testdata/flux"

func quiet() *slog.Logger { return coretest.Quiet() }

// pipeline runs sourceYAML (one source named "src") into a collector.
func pipeline(t *testing.T, sourceYAML, dataDir string) (*core.Pipeline, *coretest.Collector, func() error) {
	t.Helper()
	reg := core.NewRegistry()
	replay.Register(reg)
	flux.Register(reg)
	col := &coretest.Collector{}
	col.Register(reg)
	yaml := "cluster: test\nsources:\n  src:\n" + indent(sourceYAML) + "sinks:\n  out:\n    type: collect\n    inputs: [src]\n    buffer: {type: memory}\n"
	g := coretest.Build(t, reg, yaml)
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quiet(), ShutdownTimeout: 5 * time.Second})
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
	nc, _ := core.ParseNodeConfig(core.KindSource, "src", []byte("pace: slow\nspeed: 0\nuser_lookup: ldap\ninclude: {jobspec: sometimes}\n"))
	_, err := replay.New(nc)
	for _, want := range []string{
		`sources.src.path: must name a recorded journal (or embedded:scenario)`,
		`sources.src.pace: unknown pace "slow" (max, recorded)`,
		`sources.src.speed: must be a positive number`,
		`sources.src.user_lookup: unknown mode "ldap" (getent, files, none)`,
		`sources.src.include.jobspec: unknown policy "sometimes" (never, on-change, always)`,
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
	if err := src.Run(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "open journal: open /nonexistent/j.jsonl") {
		t.Fatalf("missing file: %v", err)
	}
}
