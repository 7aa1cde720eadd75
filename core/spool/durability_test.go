package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/internal/durable/faultfs"
)

// faultSpool is a spool in root/spool on a faultfs rooted at root.
type faultSpool struct {
	t    *testing.T
	fs   *faultfs.FS
	dir  string
	opts Options
	s    *Spool
}

func newFaultSpool(t *testing.T, opts Options) *faultSpool {
	t.Helper()
	root := t.TempDir()
	fsys, err := faultfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	opts.FS = fsys
	fs := &faultSpool{t: t, fs: fsys, dir: filepath.Join(root, "spool"), opts: opts}
	fs.s = mustOpen(t, fs.dir, opts)
	return fs
}

// crash cuts the power and opens the spool again.
func (f *faultSpool) crash() {
	f.t.Helper()
	if err := f.fs.Crash(); err != nil {
		f.t.Fatal(err)
	}
	f.fs.ClearFaults()
	f.s = mustOpen(f.t, f.dir, f.opts)
}

// appendN appends n entries whose values are their sequence numbers.
func (f *faultSpool) appendN(n int) {
	f.t.Helper()
	next := int(f.s.Next())
	if _, err := f.s.Append(entries(n, next)...); err != nil {
		f.t.Fatal(err)
	}
}

// checkDurable checks that every entry from the cursor up to upto is
// there, in order, with no gap: what Sync promised.
func checkDurable(t *testing.T, s *Spool, upto uint64) {
	t.Helper()
	es := readAll(t, s, s.Acked())
	if uint64(len(es)) < upto-s.Acked() {
		t.Fatalf("after the crash %d entries from %d, want at least %d (Sync returned %d)", len(es), s.Acked(), upto-s.Acked(), upto)
	}
	checkSeq(t, es[:upto-s.Acked()], s.Acked(), int(s.Acked()))
}

// A crash right after Sync returned keeps every entry below what it
// returned, across segment rolls, whatever was appended after.
// Fails without the segment fsync (m1) or the directory fsync after a
// new segment.
func TestCrashKeepsSynced(t *testing.T) {
	tests := []struct {
		name         string
		segmentBytes int64
		batches      []int // appended then synced, in turn
		unsynced     int   // appended after the last Sync
	}{
		{"one segment", 1 << 20, []int{10}, 0},
		{"unsynced tail", 1 << 20, []int{10, 5}, 7},
		{"a new segment per batch", 100, []int{3, 4, 5, 6}, 0},
		{"several segments in one sync", 100, []int{40}, 0},
		{"unsynced new segments", 100, []int{5}, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFaultSpool(t, Options{SegmentBytes: tt.segmentBytes})
			var upto uint64
			for _, n := range tt.batches {
				f.appendN(n)
				var err error
				if upto, err = f.s.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			f.appendN(tt.unsynced)
			f.crash()
			defer f.s.Close()
			checkDurable(t, f.s, upto)
			if f.s.Next() < upto {
				t.Fatalf("next = %d after the crash, below %d", f.s.Next(), upto)
			}
			// And the spool goes on from there.
			f.appendN(1)
			if upto, err := f.s.Sync(); err != nil || upto != f.s.Next() {
				t.Fatalf("Sync after reopen = %d, %v", upto, err)
			}
		})
	}
}

// Entries appended while the fsync runs are not covered by it: Sync
// must not report them durable (m3: the durable point taken after the
// fsync, or released before it finished).
func TestSyncCoversOnlyWhatWasFlushed(t *testing.T) {
	f := newFaultSpool(t, Options{SegmentBytes: 1 << 20})
	f.appendN(10)
	f.fs.BeforeSync("*.seg", func() { f.appendN(5) })
	upto, err := f.s.Sync()
	if err != nil {
		t.Fatal(err)
	}
	if upto != 10 {
		t.Fatalf("Sync = %d, want 10: entries appended during the fsync are not durable yet", upto)
	}
	f.crash()
	defer f.s.Close()
	checkDurable(t, f.s, upto)
}

// The cursor survives a crash once Sync returned (m2: no fsync of the
// cursor file; no directory fsync after its rename).
func TestCursorSurvivesCrash(t *testing.T) {
	f := newFaultSpool(t, Options{})
	f.appendN(10)
	f.s.Ack(6)
	if _, err := f.s.Sync(); err != nil {
		t.Fatal(err)
	}
	f.s.Ack(8) // not synced: may come again
	f.crash()
	defer f.s.Close()
	if got := f.s.Acked(); got != 6 {
		t.Fatalf("cursor after the crash = %d, want 6", got)
	}
	if r := f.s.Recovered(); len(r) != 0 {
		t.Fatalf("recovered %v", r)
	}
}

// A failed fsync fails the spool for good: Sync reports the failure and
// never again a durable point, even if the disk works again (m4: success
// despite a failed fsync, or a retry that pretends). After a crash,
// everything below the last good Sync is there.
func TestFailedFsyncIsFatal(t *testing.T) {
	tests := []struct {
		name    string
		pattern string // of the failing fsync
		file    string // named in the error
	}{
		{"segment data", "*.seg", ".seg"},
		{"directory after a new segment", "spool", "spool"},
		{"cursor file", "cursor.tmp", "cursor.tmp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFaultSpool(t, Options{SegmentBytes: 100})
			f.appendN(3)
			good, err := f.s.Sync()
			if err != nil {
				t.Fatal(err)
			}
			f.appendN(10) // new segments: a directory fsync is due
			f.s.Ack(2)    // a cursor write is due
			f.fs.InjectSync(tt.pattern, faultfs.FailOnce)
			_, err = f.s.Sync()
			if !errors.Is(err, ErrFailed) || !errors.Is(err, faultfs.ErrInjected) || !strings.Contains(err.Error(), tt.file) {
				t.Fatalf("Sync with a failing fsync of %s = %v", tt.pattern, err)
			}
			first := err
			// The disk works again; the spool does not pretend.
			for _, call := range []struct {
				name string
				err  func() error
			}{
				{"Sync", func() error { _, err := f.s.Sync(); return err }},
				{"Append", func() error { _, err := f.s.Append([]byte("x")); return err }},
				{"Read", func() error { _, err := f.s.Read(f.s.Acked(), 1); return err }},
				{"DropOldest", func() error { _, _, err := f.s.DropOldest(1); return err }},
				{"Err", f.s.Err},
				{"Close", f.s.Close},
			} {
				if err := call.err(); err != first {
					t.Errorf("%s after the failure = %v, want the first failure", call.name, err)
				}
			}
			f.crash()
			defer f.s.Close()
			checkDurable(t, f.s, good)
		})
	}
}

// A lying fsync is beyond what any code can see; the point here is the
// test's own power: a crash after one loses what Sync reported.
func TestLyingFsyncIsVisibleToTheCrashCheck(t *testing.T) {
	f := newFaultSpool(t, Options{})
	f.fs.InjectSync("*.seg", faultfs.Lie)
	f.appendN(5)
	upto, err := f.s.Sync()
	if err != nil || upto != 5 {
		t.Fatalf("Sync = %d, %v", upto, err)
	}
	f.crash()
	defer f.s.Close()
	if n := len(readAll(t, f.s, 0)); n != 0 {
		t.Fatalf("%d entries survived a lying fsync", n)
	}
}

// The directory is fsynced when a segment is created or the cursor
// renamed, never per entry or per Sync of plain appends.
func TestDirectoryFsyncNotPerEntry(t *testing.T) {
	f := newFaultSpool(t, Options{SegmentBytes: 1 << 20})
	defer f.s.Close()
	f.s.Sync() // the first segment's entry
	before := f.fs.SyncCalls("spool")
	for range 50 {
		f.appendN(20)
		if _, err := f.s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.fs.SyncCalls("spool") - before; n != 0 {
		t.Fatalf("%d directory fsyncs for 50 syncs of appends", n)
	}
	for range 10 {
		f.appendN(20)
		f.s.Ack(f.s.Next())
		f.s.Sync()
	}
	if n := f.fs.SyncCalls("spool") - before; n != 10 {
		t.Fatalf("%d directory fsyncs for 10 cursor updates, want 10", n)
	}
}

// A new spool directory is durable in its parent with the spool's first
// Sync.
func TestNewDirectorySurvivesCrash(t *testing.T) {
	f := newFaultSpool(t, Options{})
	f.dir = filepath.Join(f.dir, "a", "b")
	f.s.Close()
	f.s = mustOpen(t, f.dir, f.opts)
	f.appendN(3)
	upto, err := f.s.Sync()
	if err != nil {
		t.Fatal(err)
	}
	f.crash()
	defer f.s.Close()
	checkDurable(t, f.s, upto)
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := mustOpen(t, dir, Options{SegmentBytes: 100})
	s.Append(entries(20, 0)...)
	s.Ack(3)
	s.Close()
	ents, _ := os.ReadDir(dir)
	want := map[string]os.FileMode{".": 0o700}
	for _, e := range ents {
		want[e.Name()] = 0o600
	}
	if len(want) < 3 {
		t.Fatalf("files: %v", ents)
	}
	for name, mode := range want {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
}

// Many rounds of appends, syncs, acks and crashes at every step: after
// each crash, everything below the last returned Sync is there, in order.
func TestCrashAnywhere(t *testing.T) {
	for crashAfter := range 12 {
		t.Run(fmt.Sprint("crash after step ", crashAfter), func(t *testing.T) {
			f := newFaultSpool(t, Options{SegmentBytes: 120})
			var upto uint64
			for step := range 12 {
				f.appendN(step%4 + 1)
				if step%3 != 2 {
					var err error
					if upto, err = f.s.Sync(); err != nil {
						t.Fatal(err)
					}
				}
				if step%5 == 4 {
					f.s.Ack(upto / 2)
				}
				if step == crashAfter {
					f.crash()
					checkDurable(t, f.s, upto)
					upto = max(f.s.Acked(), min(upto, f.s.Next()))
				}
			}
			f.s.Close()
		})
	}
}
