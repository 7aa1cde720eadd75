package core_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/spool"
	"github.com/fluxstream/fluxstream/internal/durable/faultfs"
)

// The disk buffer releases a record upstream (so the source checkpoints
// it) only once the spool's fsync covering it succeeded. These tests cut
// the power (faultfs) or fail the fsync and count what survives against
// what was acknowledged.

const stuckSink = `
sources:
  gen: {type: gen, count: 100000, batch: 10, interval: 200us, wait: true}
sinks:
  out:
    type: mem
    inputs: [gen]
    buffer: {type: disk, sync_interval: 2ms}
`

// durableEntries counts the entries of the sink's spool that survived.
func durableEntries(t *testing.T, fsys *faultfs.FS, dataDir string) uint64 {
	t.Helper()
	sp, err := spool.Open(filepath.Join(dataDir, "spool", "out"), spool.Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	return sp.Len()
}

func startStuck(t *testing.T, fsys *faultfs.FS, dataDir string) (*instances, chan error, context.CancelFunc) {
	g, inst := mustBuild(t, stuckSink)
	stall := make(chan struct{})
	inst.sinks["out"].stall = stall
	t.Cleanup(func() { close(stall) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger(), FS: fsys, ShutdownTimeout: time.Millisecond})
	go func() { done <- p.Run(ctx) }()
	return inst, done, cancel
}

func waitAcked(t *testing.T, g *genSource, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for g.Acked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d acknowledged", g.Acked())
		}
		time.Sleep(time.Millisecond)
	}
}

// A power cut at the start of an fsync keeps every record acknowledged
// before it. (Fails if records are released before their fsync.)
func TestPowerCutKeepsEveryAcknowledgedRecord(t *testing.T) {
	dataDir := t.TempDir()
	fsys, err := faultfs.New(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	inst, done, cancel := startStuck(t, fsys, dataDir)
	defer cancel()
	waitAcked(t, inst.sources["gen"], 200)
	var ackedAtCut atomic.Int64
	fsys.BeforeSync("*.seg", func() {
		ackedAtCut.Store(int64(inst.sources["gen"].Acked()))
		if err := fsys.Crash(); err != nil {
			t.Error(err)
		}
	})
	err = <-done // the sync after the cut fails: the spool stops the run
	if err == nil || !strings.Contains(err.Error(), "spool") {
		t.Fatalf("run ended with %v", err)
	}
	acked := ackedAtCut.Load()
	if acked < 200 {
		t.Fatalf("hook saw %d acknowledged", acked)
	}
	fsys.ClearFaults()
	if got := durableEntries(t, fsys, dataDir); got < uint64(acked) {
		t.Fatalf("power cut: %d records acknowledged, %d survived", acked, got)
	}
}

// An fsync that fails is fatal: nothing is released after it, and the
// run stops saying why. (Fails if the buffer retries the fsync and
// releases, or releases despite the failure.)
func TestFailedFsyncReleasesNothing(t *testing.T) {
	dataDir := t.TempDir()
	fsys, err := faultfs.New(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	inst, done, cancel := startStuck(t, fsys, dataDir)
	defer cancel()
	waitAcked(t, inst.sources["gen"], 200)
	fsys.InjectSync("*.seg", faultfs.FailOnce)
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "fsync") {
		t.Fatalf("run ended with %v", err)
	}
	acked := inst.sources["gen"].Acked()
	if err := fsys.Crash(); err != nil {
		t.Fatal(err)
	}
	// Bytes whose fsync failed come back as zeros: the spool scan cuts
	// there. Every acknowledged record must lie before the cut.
	if got := durableEntries(t, fsys, dataDir); got < uint64(acked) {
		t.Fatalf("failed fsync: %d records acknowledged, %d survived", acked, got)
	}
}

// Records wait in memory for their fsync in a bounded number: an fsync
// that hangs holds the source (backpressure) instead of letting unsynced
// records fill the heap; once it returns, everything is delivered.
// (Fails if the disk buffer does not bound what waits for its fsync.)
func TestHungFsyncHoldsTheSource(t *testing.T) {
	dataDir := t.TempDir()
	fsys, err := faultfs.New(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 20000, batch: 100}
sinks:
  out:
    type: mem
    inputs: [gen]
    buffer: {type: disk, max_records: 500, sync_interval: 2ms}
`)
	stall := make(chan struct{})
	inst.sinks["out"].stall = stall // the sink takes nothing: only fsyncs release
	hung := make(chan struct{})
	fsys.BeforeSync("*.seg", func() { <-hung })
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger(), FS: fsys})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()

	spooled := func() int64 { return stats(t, p, "out").PendingRecords }
	deadline := time.Now().Add(20 * time.Second)
	for spooled() < 1000 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Bound: 2 x max_records, plus the batch that crossed it. Without
	// it the source spools all 20,000 within milliseconds.
	time.Sleep(200 * time.Millisecond)
	if n := spooled(); n < 1000 || n > 1100 {
		t.Fatalf("%d records spooled while their fsync hangs; want the source held at 1000-1100", n)
	}
	if a := inst.sources["gen"].Acked(); a != 0 {
		t.Fatalf("%d acknowledged before any fsync returned", a)
	}
	close(hung)
	close(stall)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := inst.sinks["out"].Got(); !slices.Equal(got, ids("rec-", 20000, nil)) {
		t.Fatalf("delivered %d records", len(got))
	}
}
