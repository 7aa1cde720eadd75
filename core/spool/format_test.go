package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// v1Entries is what testdata/v1 holds: written by the build before the
// v2 format (commit 4c137ec), SegmentBytes 256, entries 0..19 with the
// cursor at 3.
func v1Entries() [][]byte {
	var es [][]byte
	for i := range 20 {
		e := fmt.Appendf(nil, "v1-entry-%02d", i)
		switch i {
		case 7:
			e = []byte{}
		case 11:
			e = []byte{0, 0xff, 0x80, 0x0a, 0x0d, 'x'}
		}
		es = append(es, e)
	}
	return es
}

// copyDir copies testdata into a fresh directory.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A spool written by the first format drains under the new code, its
// entries with no meta; its segments are left as they were; new entries
// go to a new segment with the current meta.
func TestV1SpoolDrains(t *testing.T) {
	dir := copyDir(t, "testdata/v1")
	before := map[string][]byte{}
	for _, name := range []string{"00000000000000000000.seg", "00000000000000000014.seg"} {
		before[name], _ = os.ReadFile(filepath.Join(dir, name))
	}
	meta := []byte("schema v2")
	s := mustOpen(t, dir, Options{Meta: meta})
	if r := s.Recovered(); len(r) != 0 {
		t.Fatalf("recovered %v", r)
	}
	if s.Acked() != 3 || s.Next() != 20 {
		t.Fatalf("acked %d next %d, want 3, 20", s.Acked(), s.Next())
	}
	want := v1Entries()
	s.Append([]byte("new"))
	es := readAll(t, s, 0)
	if len(es) != 18 {
		t.Fatalf("read %d entries, want 17 old + 1 new", len(es))
	}
	for i, e := range es[:17] {
		if e.Seq != uint64(3+i) || !bytes.Equal(e.Data, want[3+i]) || e.Meta != nil {
			t.Fatalf("entry %d = %d %q meta %q, want %d %q and no meta", i, e.Seq, e.Data, e.Meta, 3+i, want[3+i])
		}
	}
	if last := es[17]; last.Seq != 20 || string(last.Data) != "new" || !bytes.Equal(last.Meta, meta) {
		t.Fatalf("new entry %d %q meta %q", last.Seq, last.Data, last.Meta)
	}
	s.Close()
	for name, b := range before {
		if now, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(now, b) {
			t.Errorf("%s changed by opening and appending", name)
		}
	}
	s = mustOpen(t, dir, Options{Meta: meta})
	defer s.Close()
	if es := readAll(t, s, 0); len(es) != 18 || es[0].Meta != nil || !bytes.Equal(es[17].Meta, meta) {
		t.Fatalf("after reopening: %d entries", len(es))
	}
}

// Each segment keeps the meta it was created with; a spool opened with
// another meta starts a new segment.
func TestMetaPerSegment(t *testing.T) {
	dir := t.TempDir()
	for i, meta := range []string{"A", "A", "B", "", "A"} {
		s := mustOpen(t, dir, Options{Meta: []byte(meta)})
		s.Append(entries(2, 2*i)...)
		s.Close()
	}
	s := mustOpen(t, dir, Options{Meta: []byte("A")})
	defer s.Close()
	es := readAll(t, s, 0)
	checkSeq(t, es, 0, 0)
	var got []string
	for _, e := range es {
		got = append(got, string(e.Meta))
	}
	if want := "A A A A B B   A A"; strings.Join(got, " ") != want {
		t.Fatalf("metas %q, want %q", strings.Join(got, " "), want)
	}
	if len(s.segs) != 4 {
		t.Fatalf("%d segments, want 4 (a reopen with the same meta appends)", len(s.segs))
	}
	if _, err := Open(t.TempDir(), Options{Meta: make([]byte, MaxMetaBytes+1)}); err == nil {
		t.Fatal("oversized meta accepted")
	}
}

// Damaged files give a note naming the file, the byte offset and what
// it means, or keep the spool usable; never a panic.
func TestDamagedFiles(t *testing.T) {
	seg0 := "00000000000000000000.seg"
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, s *Spool)
		note   string   // substring of the single note; "" = none
		seqs   string   // what can be read after, from the cursor
		bad    []uint64 // entries that read as damaged (CorruptError)
	}{
		{
			name:   "short cursor",
			damage: func(t *testing.T, dir string, _ *Spool) { writeFile(t, dir, "cursor", []byte{1, 2, 3}) },
			note:   "/cursor: damaged cursor (3 bytes at byte 0, want 12); delivery restarts from the oldest entry kept",
			seqs:   "0-29",
		},
		{
			name:   "cursor checksum",
			damage: func(t *testing.T, dir string, _ *Spool) { flip(t, dir, "cursor", 0) },
			note:   "/cursor: damaged cursor (checksum mismatch at byte 8)",
			seqs:   "0-29",
		},
		{
			name:   "unknown magic in the first segment",
			damage: func(t *testing.T, dir string, _ *Spool) { flip(t, dir, seg0, 3) },
			note:   "/" + seg0 + ": damaged header at byte 0 (unknown magic \"FXS\\xd0OOL2\"): its entries cannot be read; moved to ",
			seqs:   "10-29",
		},
		{
			name:   "meta length beyond any bound",
			damage: func(t *testing.T, dir string, _ *Spool) { overwrite(t, dir, seg0, 8, []byte{0xff, 0xff, 0xff, 0xff}) },
			note:   "damaged header at byte 0 (meta length 4294967295 exceeds 1048576)",
			seqs:   "10-29",
		},
		{
			name:   "meta checksum",
			damage: func(t *testing.T, dir string, _ *Spool) { flip(t, dir, seg0, 17) },
			note:   "damaged header at byte 0 (meta checksum mismatch)",
			seqs:   "10-29",
		},
		{
			name: "entry length beyond the file in a middle segment",
			damage: func(t *testing.T, dir string, _ *Spool) {
				overwrite(t, dir, seg0, 19+7*20, []byte{0xff, 0xff, 0xff, 0x7f})
			},
			note: "/" + seg0 + ": entry length 2147483647 runs past the end of the segment at byte 159: the 60 bytes from there (entries from 7 on in this segment) are skipped",
			seqs: "5-6,10-29",
		},
		{
			name: "entry checksum in the last segment",
			damage: func(t *testing.T, dir string, s *Spool) {
				flip(t, dir, filepath.Base(s.segs[len(s.segs)-1].path), 19+20+10)
			},
			note: ": entry at byte 39 fails its checksum but entries after it are sound: damaged on disk; kept",
			seqs: "5-20,22-29",
			bad:  []uint64{21},
		},
		{
			name: "checksum of the last entry: a torn tail",
			damage: func(t *testing.T, dir string, s *Spool) {
				flip(t, dir, filepath.Base(s.segs[len(s.segs)-1].path), 19+9*20+10)
			},
			note: ": checksum mismatch at byte 199: cut the 20 bytes from there (an unclean stop",
			seqs: "5-28",
		},
		{
			name: "zero-filled tail: no phantom entries",
			damage: func(t *testing.T, dir string, s *Spool) {
				f, _ := os.OpenFile(s.segs[len(s.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0)
				f.Write(make([]byte, 4096))
				f.Close()
			},
			note: ": checksum mismatch at byte 219: cut the 4096 bytes from there",
			seqs: "5-29",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{SegmentBytes: 200, Meta: []byte("abc")})
			s.Append(entries(30, 0)...)
			s.Ack(5)
			s.Close()
			tt.damage(t, dir, s)
			s = mustOpen(t, dir, Options{SegmentBytes: 200, Meta: []byte("abc")})
			defer s.Close()
			r := s.Recovered()
			if tt.note == "" && len(r) > 0 || tt.note != "" && (len(r) != 1 || !strings.Contains(r[0], tt.note)) {
				t.Fatalf("recovered:\n%s\nwant one with %q", strings.Join(r, "\n"), tt.note)
			}
			if tt.note != "" && !strings.Contains(r[0], dir) {
				t.Fatalf("note %q does not name the file", r[0])
			}
			got, bad := readSkipping(t, s, s.Acked())
			if ranges(got) != tt.seqs {
				t.Fatalf("read %s, want %s", ranges(got), tt.seqs)
			}
			if fmt.Sprint(bad) != fmt.Sprint(tt.bad) {
				t.Fatalf("damaged entries %v, want %v", bad, tt.bad)
			}
		})
	}
}

// readSkipping reads every entry from seq on, going past damaged ones as
// a sink does (their CorruptError tells where to resume).
func readSkipping(t *testing.T, s *Spool, from uint64) (out []Entry, bad []uint64) {
	t.Helper()
	for {
		es, err := s.Read(from, 7)
		out = append(out, es...)
		if len(es) > 0 {
			from = es[len(es)-1].Seq + 1
		}
		var ce *CorruptError
		switch {
		case errors.As(err, &ce):
			if ce.Raw == nil || ce.Resume != ce.Seq+1 {
				t.Fatalf("damaged entry without its bytes or resume point: %+v", ce)
			}
			bad = append(bad, ce.Seq)
			from = ce.Resume
		case err != nil:
			t.Fatal(err)
		case len(es) == 0:
			return out, bad
		}
	}
}

// ranges renders the sequence numbers of es as "0-4,9-12".
func ranges(es []Entry) string {
	var parts []string
	for i := 0; i < len(es); {
		j := i
		for j+1 < len(es) && es[j+1].Seq == es[j].Seq+1 {
			j++
		}
		if string(es[i].Data) != fmt.Sprintf("entry-%06d", es[i].Seq) {
			return fmt.Sprintf("wrong data %q at %d", es[i].Data, es[i].Seq)
		}
		parts = append(parts, fmt.Sprintf("%d-%d", es[i].Seq, es[j].Seq))
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func writeFile(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, dir, name string, off int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x80
	writeFile(t, dir, name, b)
}

func overwrite(t *testing.T, dir, name string, off int, with []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	copy(b[off:], with)
	writeFile(t, dir, name, b)
}

// Every read checks the checksum: damage after Open (no scan saw it) is
// a CorruptError naming the segment, never the damaged data (m5), and
// reading goes on after it.
func TestReadVerifiesChecksum(t *testing.T) {
	tests := []struct {
		name       string
		off        int    // of the damaged byte, from entry 2's start
		wantResume uint64 // 3: framing intact; 5: the segment's end
		wantRaw    bool
	}{
		{"data", entryHeader + 4, 3, true},
		{"checksum field", 5, 3, true},
		{"length field", 3, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{})
			defer s.Close()
			s.Append(entries(5, 0)...)
			if _, err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			seg := s.segs[0]
			entry2 := int(seg.hdrLen) + 2*(entryHeader+12)
			overwrite(t, dir, filepath.Base(seg.path), entry2+tt.off, []byte{'#'})

			es, err := s.Read(0, 10)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Read of a damaged entry = %d entries, %v", len(es), err)
			}
			if len(es) != 2 || ce.Path != seg.path || ce.Seq != 2 || ce.Offset != int64(entry2) || ce.Resume != tt.wantResume || (ce.Raw != nil) != tt.wantRaw {
				t.Fatalf("got %d entries, %+v", len(es), ce)
			}
			if !strings.Contains(err.Error(), seg.path) || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", entry2)) {
				t.Fatalf("error %q does not name the file and offset", err)
			}
			if got := ranges(readAll(t, s, ce.Resume)); tt.wantResume == 3 && got != "3-4" || tt.wantResume == 5 && got != "" {
				t.Fatalf("after the damage read %q", got)
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, meta := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xab}, 5000)} {
		hdr := encodeHeader(meta)
		v, got, n, err := readHeader(bufio.NewReader(bytes.NewReader(hdr)), int64(len(hdr)))
		if err != nil || v != 2 || !bytes.Equal(got, meta) || n != int64(len(hdr)) {
			t.Fatalf("meta %d bytes: v%d %d bytes, n %d, %v", len(meta), v, len(got), n, err)
		}
		if binary.LittleEndian.Uint32(hdr[8:]) != uint32(len(meta)) {
			t.Fatal("length field")
		}
	}
}

// A damaged length field costs no more memory than the file holds.
func TestDamagedLengthsAllocateLittle(t *testing.T) {
	tests := []struct {
		name string
		seg  []byte
	}{
		{"entry length", append(encodeSegment(2, nil), 0x00, 0x00, 0x00, 0x0f, 1, 2, 3, 4, 5)},
		{"meta length", append([]byte(magicV2), 0x00, 0x00, 0x10, 0x00, 0, 0, 0, 0, 1, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			res := scanSegment(bufio.NewReaderSize(bytes.NewReader(tt.seg), 16), int64(len(tt.seg)), nil)
			runtime.ReadMemStats(&after)
			if res.count != 0 || (res.problem == "" && !res.tornHeader) {
				t.Fatalf("scan of damaged input: %+v", res)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
				t.Fatalf("scanning %d bytes allocated %d", len(tt.seg), grew)
			}
		})
	}
}
