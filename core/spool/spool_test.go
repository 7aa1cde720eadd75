package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func entries(n, from int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "entry-%06d", from+i)
	}
	return out
}

func mustOpen(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s *Spool, from uint64) []Entry {
	t.Helper()
	var out []Entry
	for {
		es, err := s.Read(from, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		from = es[len(es)-1].Seq + 1
	}
}

func checkSeq(t *testing.T, es []Entry, firstSeq uint64, firstVal int) {
	t.Helper()
	for i, e := range es {
		if e.Seq != firstSeq+uint64(i) {
			t.Fatalf("entry %d has seq %d, want %d", i, e.Seq, firstSeq+uint64(i))
		}
		if want := fmt.Sprintf("entry-%06d", firstVal+i); string(e.Data) != want {
			t.Fatalf("entry %d = %q, want %q", i, e.Data, want)
		}
	}
}

func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 200})
	first, err := s.Append(entries(50, 0)...)
	if err != nil || first != 0 {
		t.Fatalf("Append = %d, %v", first, err)
	}
	if upto, err := s.Sync(); err != nil || upto != 50 {
		t.Fatalf("Sync = %d, %v", upto, err)
	}
	es := readAll(t, s, 0)
	if len(es) != 50 {
		t.Fatalf("read %d entries, want 50", len(es))
	}
	checkSeq(t, es, 0, 0)
	segsBefore := len(s.segs)
	s.Ack(30)
	if len(s.segs) >= segsBefore {
		t.Fatalf("acked segments not deleted: %d -> %d", segsBefore, len(s.segs))
	}
	if s.Len() != 20 {
		t.Fatalf("Len = %d, want 20", s.Len())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, Options{SegmentBytes: 200})
	defer s.Close()
	if s.Acked() != 30 || s.Next() != 50 {
		t.Fatalf("reopened at acked=%d next=%d, want 30, 50", s.Acked(), s.Next())
	}
	es = readAll(t, s, s.Acked())
	checkSeq(t, es, 30, 30)
	if len(es) != 20 {
		t.Fatalf("read %d after reopen, want 20", len(es))
	}
	// Appends continue the sequence.
	if first, _ := s.Append(entries(5, 50)...); first != 50 {
		t.Fatalf("append after reopen got seq %d", first)
	}
	checkSeq(t, readAll(t, s, 50), 50, 50)
	if len(s.Recovered()) != 0 {
		t.Fatalf("clean reopen reported %v", s.Recovered())
	}
}

// A crash in the middle of a write leaves a torn entry at the tail: it is
// cut, every whole entry before it survives, and appends go on.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	s.Append(entries(10, 0)...)
	s.Sync()
	seg := s.segs[0].path
	s.Close()
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{100, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'}) // header says 100 bytes, 2 follow
	f.Close()

	s = mustOpen(t, dir, Options{})
	defer s.Close()
	if s.Next() != 10 {
		t.Fatalf("next = %d, want 10", s.Next())
	}
	if r := s.Recovered(); len(r) != 1 || !strings.Contains(r[0], seg+": entry length 100 runs past the end of the segment at byte 216: cut the 10 bytes") {
		t.Fatalf("recovered = %v", r)
	}
	s.Append(entries(3, 10)...)
	es := readAll(t, s, 0)
	checkSeq(t, es, 0, 0)
	if len(es) != 13 {
		t.Fatalf("read %d, want 13", len(es))
	}
}

func TestChecksumMismatch(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	s.Append(entries(5, 0)...)
	s.Close()
	seg := filepath.Join(dir, fmt.Sprintf("%020d.seg", 0))
	b, _ := os.ReadFile(seg)
	b[len(b)-1] ^= 0xff // corrupt the last entry's payload
	os.WriteFile(seg, b, 0o600)
	s = mustOpen(t, dir, Options{})
	defer s.Close()
	if s.Next() != 4 {
		t.Fatalf("next = %d, want 4 (corrupt entry dropped)", s.Next())
	}
	if r := s.Recovered(); len(r) != 1 || !strings.Contains(r[0], seg+": checksum mismatch at byte 96: cut the 20 bytes") {
		t.Fatalf("recovered = %v", r)
	}
}

// Entries lost from a middle segment (never synced before a crash) leave a
// gap: reading skips to the next segment.
func TestGapBetweenSegments(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 100})
	s.Append(entries(20, 0)...)
	s.Close()
	if len(s.segs) < 3 {
		t.Fatalf("want several segments, have %d", len(s.segs))
	}
	// Cut the first segment after its first entry.
	first := s.segs[0]
	os.Truncate(first.path, first.hdrLen+entryHeader+12+3)
	s = mustOpen(t, dir, Options{SegmentBytes: 100})
	defer s.Close()
	es := readAll(t, s, 0)
	if es[0].Seq != 0 || es[1].Seq != s.segs[1].first {
		t.Fatalf("read %v %v around the gap; second segment starts at %d", es[0].Seq, es[1].Seq, s.segs[1].first)
	}
	if got := es[len(es)-1].Seq; got != 19 {
		t.Fatalf("last seq %d, want 19", got)
	}
}

func TestDropOldest(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 100})
	defer s.Close()
	s.Append(entries(30, 0)...)
	before := s.Bytes()
	dropped, cursor, err := s.DropOldest(150)
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 || cursor != dropped || s.Bytes() > before-150 {
		t.Fatalf("dropped %d cursor %d bytes %d -> %d", dropped, cursor, before, s.Bytes())
	}
	es := readAll(t, s, 0)
	checkSeq(t, es, cursor, int(cursor))
	if uint64(len(es)) != 30-dropped {
		t.Fatalf("read %d, want %d", len(es), 30-dropped)
	}
	// Dropping everything leaves an empty, usable spool.
	s.DropOldest(1 << 30)
	if s.Len() != 0 {
		t.Fatalf("Len = %d after dropping all", s.Len())
	}
	first, _ := s.Append(entries(1, 99)...)
	if first != 30 {
		t.Fatalf("append after drop got %d", first)
	}
}

func TestCursorSurvivesOnlyAfterSync(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	s.Append(entries(10, 0)...)
	s.Sync()
	s.Ack(6)
	// No Sync: simulate a crash by not closing; reopen sees cursor 0.
	s2 := mustOpen(t, dir, Options{})
	if s2.Acked() != 0 {
		t.Fatalf("cursor persisted without Sync: %d", s2.Acked())
	}
	s2.Close()
	s.Sync()
	s3 := mustOpen(t, dir, Options{})
	defer s3.Close()
	if s3.Acked() != 6 {
		t.Fatalf("cursor after Sync = %d, want 6", s3.Acked())
	}
}

// Append+Sync of a batch, as core/buffer does. With an Ack per round
// every Sync also replaces the cursor (one directory fsync per Sync,
// never per entry).
func BenchmarkAppendSync(b *testing.B) {
	for _, bc := range []struct {
		name  string
		batch int
		ack   bool
	}{
		{"batch=1000/ack", 1000, true},
		{"batch=10/ack", 10, true},
		{"batch=10/noack", 10, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := mustOpenB(b)
			defer s.Close()
			payload := make([]byte, 1024)
			batch := make([][]byte, bc.batch)
			for i := range batch {
				batch[i] = payload
			}
			b.SetBytes(int64(len(payload) * len(batch)))
			for b.Loop() {
				s.Append(batch...)
				s.Sync()
				if bc.ack {
					s.Ack(s.Next())
				}
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

func mustOpenB(b *testing.B) *Spool {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// A spool closed with everything delivered leaves no segment behind, and
// the next one goes on numbering from the cursor.
func TestCloseDeliveredLeavesNoSegment(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	if _, err := s.Append(entries(5, 0)...); err != nil {
		t.Fatal(err)
	}
	s.Ack(5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 0 {
		t.Fatalf("segments left: %v", segs)
	}
	s = mustOpen(t, dir, Options{})
	defer s.Close()
	if s.Next() != 5 || s.Acked() != 5 || s.Len() != 0 {
		t.Fatalf("reopened at next %d acked %d len %d", s.Next(), s.Acked(), s.Len())
	}
	first, err := s.Append(entries(1, 5)...)
	if err != nil || first != 5 {
		t.Fatalf("append after reopen: seq %d, %v", first, err)
	}
}
