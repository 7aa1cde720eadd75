// Package transformtest holds what the transforms' tests share: the
// fixture records as the replay source yields them, an Emitter that
// collects, building a node from YAML, and benchmarks per CPU second.
package transformtest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/replay"
)

// Fixtures, relative to a transforms/NAME package directory.
const (
	Scenario = "../../testdata/flux/journal-scenario-live-full.jsonl"
	Backlog  = "../../testdata/flux/journal-backlog-full-before-purge.jsonl"
	Bulk     = "../../testdata/flux/journal-bulk2000-live.jsonl.gz"
)

// Include settings of the replay source.
const (
	IncludeDefault = ""
	IncludeRaw     = "include: {jobspec: always, R: always}\n"
	IncludeAll     = "include: {jobspec: always, R: always, eventlog: always}\n"
)

// Quiet is a logger that writes nothing.
func Quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

var _ core.Emitter = (*Collector)(nil)

// Collector is an Emitter that keeps what it is given and acknowledges it.
type Collector struct {
	mu   sync.Mutex
	recs []*core.Record
}

// Emit keeps recs.
func (c *Collector) Emit(_ context.Context, recs []*core.Record, ack func()) error {
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.mu.Unlock()
	ack()
	return nil
}

// Records returns what was emitted so far.
func (c *Collector) Records() []*core.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*core.Record(nil), c.recs...)
}

// Records replays a journal through the replay source (no user lookup,
// cluster "test", include as given: one of the Include constants or YAML
// of the same shape) and returns every record it emits.
func Records(t testing.TB, path, include string) []*core.Record {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindSource, "src", []byte("path: "+path+"\nuser_lookup: none\ncluster: test\n"+include))
	if err != nil {
		t.Fatal(err)
	}
	src, err := replay.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.(core.Provisioner).Provision(context.Background(), core.NodeContext{Name: "src", Logger: Quiet()}); err != nil {
		t.Fatal(err)
	}
	defer src.(io.Closer).Close()
	c := &Collector{}
	if err := src.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.Records()
}

// Node builds a transform (or router) node named name from YAML with the
// constructor new, provisioning it when it wants that.
func Node[T any](t testing.TB, name, yaml string, new func(*core.NodeConfig) (any, error)) T {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindTransform, name, []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	v, err := new(nc)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := v.(core.Provisioner); ok {
		if err := p.Provision(context.Background(), core.NodeContext{Name: name, Logger: Quiet()}); err != nil {
			t.Fatal(err)
		}
	}
	return v.(T)
}

// Process runs tr on r and wants exactly one record back.
func Process(t testing.TB, tr core.Transform, r *core.Record) *core.Record {
	t.Helper()
	out, err := tr.Process(context.Background(), r)
	if err != nil {
		t.Fatalf("%s: %v", r.ID, err)
	}
	if len(out) != 1 {
		t.Fatalf("%s: %d records out", r.ID, len(out))
	}
	return out[0]
}

// CPUTime is the CPU time (user + system) the process used so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// PerCPU runs the benchmark loop and reports records per CPU second (the
// process's, garbage collection included) besides the wall-clock figures:
// the test machines are shared and loaded, so wall time says more about
// the neighbours than about us.
func PerCPU(b *testing.B, loop func()) {
	b.ReportAllocs()
	runtime.GC() // the setup's garbage (a replayed journal) is not the loop's
	b.ResetTimer()
	start := CPUTime()
	loop()
	cpu := CPUTime() - start
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
	}
}

// Bench runs a transform over recs, b.N records in turn, per CPU second.
// fresh gives the transform for each pass over recs: a new one (or the
// same, its caches emptied), since in a run each record comes once, and a
// cache keyed by a record's own bytes must not be credited with hits
// that only a benchmark's second pass gets.
func Bench(b *testing.B, recs []*core.Record, fresh func() core.Transform) {
	ctx := context.Background()
	var tr core.Transform
	PerCPU(b, func() {
		for i := 0; i < b.N; i++ {
			if i%len(recs) == 0 {
				tr = fresh()
			}
			if _, err := tr.Process(ctx, recs[i%len(recs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Golden compares got with the file at path (testdata/...), or rewrites
// the file when update is set (go test -update).
func Golden(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Fatalf("differs from %s (go test -update to accept):\n%s", path, got)
	}
}
