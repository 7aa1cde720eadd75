package core

import (
	"cmp"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/spool"
	"github.com/fluxstream/fluxstream/internal/durable"
)

// deferRig is a disk buffer whose sync loop never ticks by itself (an
// hour's interval): the test calls syncOnce, so what is written when is
// exact.
type deferRig struct {
	t     *testing.T
	dir   string
	b     *diskBuffer
	stats SinkStats
	acked atomic.Int64
	seq   int
	// window is max_records: the in-memory window (10000 unless set).
	window int
}

func newDeferRig(t *testing.T) *deferRig {
	r := &deferRig{t: t, dir: filepath.Join(t.TempDir(), "spool")}
	r.open()
	return r
}

func (r *deferRig) open() {
	cfg := BufferConfig{MaxRecords: cmp.Or(r.window, 10000), MaxBytes: 1 << 30, WhenFull: "block", SyncInterval: time.Hour}
	b, err := openDiskBuffer(durable.OS, r.dir, cfg, &r.stats, slog.New(slog.DiscardHandler),
		newDeadLetters(r.t.TempDir(), "s"), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.b = b
}

// push pushes n records, each acknowledged on its own.
func (r *deferRig) push(n int) []*Record {
	recs := make([]*Record, n)
	for i := range recs {
		g := &ackGroup{done: func() { r.acked.Add(1) }}
		g.add(1)
		recs[i] = &Record{Kind: KindEvent, ID: fmt.Sprintf("rec-%d", r.seq), Cluster: "test", ack: g}
		r.seq++
	}
	if err := r.b.Push(r.t.Context(), recs); err != nil {
		r.t.Fatal(err)
	}
	return recs
}

// deliver takes up to n records from the buffer and marks them delivered.
func (r *deferRig) deliver(n int) {
	recs, tk, err := r.b.Next(r.t.Context(), n)
	if err != nil || len(recs) != n {
		r.t.Fatalf("Next: %d records, %v; want %d", len(recs), err, n)
	}
	r.b.Done(tk)
}

// entryBytes is the spool's size of the full entries of recs.
func entryBytes(t *testing.T, recs []*Record) int64 {
	var n int64
	for _, rec := range recs {
		e, err := appendSpoolEntry(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		n += int64(len(e)) + 8
	}
	return n
}

// While the sink keeps up, a record is written only once it waited
// writeAfter (here two ticks): in full if still undelivered, as a 9-byte
// tombstone if delivered. The source is released from each record once
// delivered or fsynced, and a reopened spool holds exactly the
// undelivered ones.
func TestDeferredSpoolWrites(t *testing.T) {
	r := newDeferRig(t)
	base := r.b.sp.Bytes()
	r.push(100)
	r.deliver(100)
	undelivered := r.push(100)
	if got := r.acked.Load(); got != 100 {
		t.Fatalf("%d records released, want the 100 delivered", got)
	}
	for range 2 {
		r.b.syncOnce(false)
		if next := r.b.sp.Next(); next != 0 {
			t.Fatalf("%d records written before they waited writeAfter", next)
		}
	}
	r.b.syncOnce(false) // the third tick: the first two ticks' records are due
	if next, acked := r.b.sp.Next(), r.b.sp.Acked(); next != 200 || acked != 100 {
		t.Fatalf("spool next %d, cursor %d; want 200 written, the first 100 delivered", next, acked)
	}
	if got, want := r.b.sp.Bytes()-base, 100*9+entryBytes(t, undelivered); got != want {
		t.Fatalf("%d bytes written, want %d (100 tombstones, 100 full entries)", got, want)
	}
	if got := r.acked.Load(); got != 200 {
		t.Fatalf("%d records released after the fsync, want 200", got)
	}
	if err := r.b.Close(); err != nil {
		t.Fatal(err)
	}
	r.open()
	defer r.b.Close()
	recs, _, err := r.b.Next(t.Context(), 1000)
	if err != nil || len(recs) != 100 || recs[0].ID != "rec-100" || recs[99].ID != "rec-199" {
		t.Fatalf("reopened: %d records (%v), want rec-100..rec-199", len(recs), err)
	}
}

// A sink that is failing, or took nothing for two sync intervals, has
// every record written at the next tick: Flux may purge the jobs it has
// not delivered.
func TestDeferredSpoolWritesAtOnceForAStuckSink(t *testing.T) {
	for _, stuck := range []string{"failing", "idle"} {
		t.Run(stuck, func(t *testing.T) {
			r := newDeferRig(t)
			defer r.b.Close()
			r.push(50)
			if stuck == "failing" {
				r.stats.failingSince.Store(time.Now().UnixNano())
			} else {
				r.b.mu.Lock()
				r.b.lastTake = time.Now().Add(-3 * time.Hour)
				r.b.mu.Unlock()
			}
			r.b.syncOnce(false)
			if next := r.b.sp.Next(); next != 50 {
				t.Fatalf("%d of 50 records written at the first tick", next)
			}
			if got := r.acked.Load(); got != 50 {
				t.Fatalf("%d of 50 records released", got)
			}
		})
	}
}

// Records the window lets go of are written first, although not yet due:
// the sink reads them back from disk.
func TestWindowWritesWhatItLetsGo(t *testing.T) {
	r := &deferRig{t: t, dir: filepath.Join(t.TempDir(), "spool"), window: 100}
	r.open()
	defer r.b.Close()
	r.stats.failingSince.Store(time.Now().UnixNano()) // so that Push does not wait for the sink to keep pace
	r.push(100)
	r.push(50)
	if next := r.b.sp.Next(); next != 50 {
		t.Fatalf("%d records written, want the 50 the window let go of", next)
	}
	recs, tk, err := r.b.Next(t.Context(), 1000)
	if err != nil || len(recs) != 50 || recs[0].ID != "rec-0" || recs[49].ID != "rec-49" {
		t.Fatalf("%d records (%v), want rec-0..rec-49 read back", len(recs), err)
	}
	r.b.Done(tk)
	r.deliver(100)
}

// A spool left by a crash between writing tombstones and persisting the
// cursor past them reads back without them: those records were
// delivered.
func TestSpoolTombstonesAreSkipped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir, spool.Options{Meta: spoolMeta})
	if err != nil {
		t.Fatal(err)
	}
	var entries [][]byte
	for i := range 6 {
		if i%2 == 0 {
			entries = append(entries, []byte{spoolTombstone})
			continue
		}
		e, err := appendSpoolEntry(nil, &Record{Kind: KindEvent, ID: fmt.Sprintf("rec-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if _, err := sp.Append(entries...); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	r := &deferRig{t: t, dir: dir}
	r.open()
	defer r.b.Close()
	recs, tk, err := r.b.Next(t.Context(), 100)
	if err != nil || len(recs) != 3 || recs[0].ID != "rec-1" || recs[2].ID != "rec-5" || tk.end != 6 {
		t.Fatalf("%d records (%v), ticket end %d; want rec-1, rec-3, rec-5 up to 6", len(recs), err, tk.end)
	}
	if n := r.stats.DeadLettered.Load(); n != 0 {
		t.Fatalf("%d tombstones dead-lettered", n)
	}
}
