// Package spool is a durable FIFO of byte entries on disk: a segmented,
// append-only log with a CRC per entry, fsynced on demand, and an
// acknowledgement cursor. Each sink of fluxstream owns one.
//
// Entries get consecutive sequence numbers. Everything below the cursor
// (Acked) is delivered; whole segments below it are deleted. After a crash,
// Open keeps every entry that was synced, cuts a torn tail, and resumes
// from the last persisted cursor (entries delivered after it come again:
// at-least-once).
package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

const (
	segSuffix     = ".seg"
	cursorFile    = "cursor"
	entryHeader   = 8 // length + crc
	segHeader     = "FXSPOOL1"
	maxEntryBytes = 256 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Options tune a spool.
type Options struct {
	// SegmentBytes is the size at which a new segment file starts.
	SegmentBytes int64
}

// Entry is one stored item.
type Entry struct {
	Seq  uint64
	Data []byte
}

type segment struct {
	first uint64 // seq of its first entry
	count uint64
	size  int64 // bytes on disk
	path  string
}

func (s *segment) end() uint64 { return s.first + s.count }

// Spool is safe for concurrent use.
type Spool struct {
	dir  string
	opts Options

	mu        sync.Mutex
	segs      []*segment // oldest first; the last one is written to
	f         *os.File   // last segment, open for append
	w         *bufio.Writer
	next      uint64 // seq of the next append
	acked     uint64 // every seq below is delivered
	persisted uint64 // acked value last written to the cursor file
	bytes     int64  // on-disk size of live segments (incl. buffered)
	unsynced  []*os.File
	rd        *reader
	// Problems found while opening (torn tails, corrupt entries).
	recovered []string
}

// Open opens or creates the spool in dir.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 16 << 20
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, opts: opts}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Recovered lists what Open had to repair (empty after a clean shutdown).
func (s *Spool) Recovered() []string { return s.recovered }

func (s *Spool) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		s.segs = append(s.segs, &segment{first: first, path: filepath.Join(s.dir, name)})
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].first < s.segs[j].first })

	cursor, err := readCursor(filepath.Join(s.dir, cursorFile))
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	s.acked, s.persisted = cursor, cursor

	for i, seg := range s.segs {
		last := i == len(s.segs)-1
		if err := s.scan(seg, last); err != nil {
			return err
		}
		s.bytes += seg.size
	}
	if n := len(s.segs); n > 0 {
		s.next = s.segs[n-1].end()
	} else {
		s.next = s.acked
	}
	if s.acked > s.next {
		// The cursor outran the data (segments removed by hand?): resume
		// at the end rather than waiting for sequence numbers that exist
		// nowhere.
		s.recovered = append(s.recovered, fmt.Sprintf("cursor %d beyond last entry %d; reset", s.acked, s.next))
		s.acked = s.next
	}
	s.dropAcked()
	return s.openForAppend()
}

// scan counts a segment's valid entries; the last segment's torn tail is
// truncated, a corrupt entry elsewhere ends that segment (and is reported).
func (s *Spool) scan(seg *segment, last bool) error {
	f, err := os.Open(seg.path)
	if err != nil {
		return fmt.Errorf("spool %s: %w", seg.path, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, len(segHeader))
	off := int64(0)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr) != segHeader {
		s.recovered = append(s.recovered, fmt.Sprintf("%s: no complete header (a stop before its first write finished); segment started anew", seg.path))
		if last {
			return os.Truncate(seg.path, 0)
		}
		return nil
	}
	off = int64(len(segHeader))
	var eh [entryHeader]byte
	buf := make([]byte, 0, 4096)
	for {
		if _, err := io.ReadFull(br, eh[:]); err != nil {
			if err != io.EOF {
				s.recovered = append(s.recovered, fmt.Sprintf("%s: torn entry header at byte %d", seg.path, off))
			}
			break
		}
		n := binary.LittleEndian.Uint32(eh[:4])
		crc := binary.LittleEndian.Uint32(eh[4:])
		if n > maxEntryBytes {
			s.recovered = append(s.recovered, fmt.Sprintf("%s: bad entry length %d at byte %d", seg.path, n, off))
			break
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			s.recovered = append(s.recovered, fmt.Sprintf("%s: torn entry at byte %d", seg.path, off))
			break
		}
		if crc32.Checksum(buf, crcTable) != crc {
			s.recovered = append(s.recovered, fmt.Sprintf("%s: checksum mismatch at byte %d", seg.path, off))
			break
		}
		off += entryHeader + int64(n)
		seg.count++
	}
	seg.size = off
	if last {
		if st, err := f.Stat(); err == nil && st.Size() > off {
			if err := os.Truncate(seg.path, off); err != nil {
				return fmt.Errorf("spool %s: cut torn tail: %w", seg.path, err)
			}
		}
	}
	return nil
}

func (s *Spool) openForAppend() error {
	if n := len(s.segs); n > 0 && s.segs[n-1].size > 0 && s.segs[n-1].size < s.opts.SegmentBytes {
		seg := s.segs[n-1]
		f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("spool %s: %w", seg.path, err)
		}
		s.f, s.w = f, bufio.NewWriterSize(f, 256<<10)
		return nil
	}
	return s.roll()
}

// roll starts a new segment at s.next.
func (s *Spool) roll() error {
	if s.f != nil {
		if err := s.w.Flush(); err != nil {
			return s.ioErr(err)
		}
		s.unsynced = append(s.unsynced, s.f)
	}
	if n := len(s.segs); n > 0 && s.segs[n-1].count == 0 && s.segs[n-1].first == s.next {
		// Reuse an empty last segment (e.g. a header-less one after a crash).
		seg := s.segs[n-1]
		s.bytes -= seg.size
		s.segs = s.segs[:n-1]
		os.Remove(seg.path)
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d%s", s.next, segSuffix))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("spool %s: %w", path, err)
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 256<<10)
	if _, err := s.w.WriteString(segHeader); err != nil {
		return s.ioErr(err)
	}
	s.segs = append(s.segs, &segment{first: s.next, size: int64(len(segHeader)), path: path})
	s.bytes += int64(len(segHeader))
	return nil
}

func (s *Spool) ioErr(err error) error {
	return fmt.Errorf("spool %s: %w", s.dir, err)
}

// Append adds entries and returns the sequence number of the first. They
// are durable after the next Sync.
func (s *Spool) Append(data ...[]byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.next
	var eh [entryHeader]byte
	for _, d := range data {
		if len(d) > maxEntryBytes {
			return first, fmt.Errorf("spool %s: entry of %d bytes exceeds the %d-byte limit", s.dir, len(d), maxEntryBytes)
		}
		seg := s.segs[len(s.segs)-1]
		if seg.size >= s.opts.SegmentBytes && seg.count > 0 {
			if err := s.roll(); err != nil {
				return first, err
			}
			seg = s.segs[len(s.segs)-1]
		}
		binary.LittleEndian.PutUint32(eh[:4], uint32(len(d)))
		binary.LittleEndian.PutUint32(eh[4:], crc32.Checksum(d, crcTable))
		if _, err := s.w.Write(eh[:]); err != nil {
			return first, s.ioErr(err)
		}
		if _, err := s.w.Write(d); err != nil {
			return first, s.ioErr(err)
		}
		n := int64(entryHeader + len(d))
		seg.size += n
		seg.count++
		s.bytes += n
		s.next++
	}
	return first, nil
}

// Sync makes every appended entry durable and persists the cursor. It
// returns the sequence number below which all entries are durable. The
// fsync runs outside the lock, so appends go on meanwhile.
func (s *Spool) Sync() (uint64, error) {
	s.mu.Lock()
	if s.f == nil {
		s.mu.Unlock()
		return 0, s.ioErr(os.ErrClosed)
	}
	if err := s.w.Flush(); err != nil {
		s.mu.Unlock()
		return 0, s.ioErr(err)
	}
	upto := s.next
	files := append(s.unsynced, s.f)
	s.unsynced = nil
	acked := s.acked
	persist := acked != s.persisted
	s.mu.Unlock()

	for i, f := range files {
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return 0, s.ioErr(err)
		}
		if i < len(files)-1 {
			f.Close()
		}
	}
	if persist {
		if err := writeCursor(filepath.Join(s.dir, cursorFile), acked); err != nil {
			return 0, s.ioErr(err)
		}
		s.mu.Lock()
		if acked > s.persisted {
			s.persisted = acked
		}
		s.mu.Unlock()
	}
	return upto, nil
}

// Ack records that every entry below seq is delivered. Whole segments
// below it are deleted; the cursor is persisted by the next Sync.
func (s *Spool) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.next {
		seq = s.next
	}
	if seq > s.acked {
		s.acked = seq
		s.dropAcked()
	}
}

// dropAcked deletes segments whose entries are all below the cursor, never
// the one being written.
func (s *Spool) dropAcked() {
	for len(s.segs) > 1 && s.segs[0].end() <= s.acked {
		seg := s.segs[0]
		if s.rd != nil && s.rd.seg == seg {
			s.rd.close()
		}
		os.Remove(seg.path)
		s.bytes -= seg.size
		s.segs = s.segs[1:]
	}
}

// DropOldest gives up the oldest undelivered entries until at least want
// bytes are free (or only the segment being written is left, which it
// then closes and starts anew). It returns how many entries were dropped
// and the new cursor.
func (s *Spool) DropOldest(want int64) (dropped, cursor uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.acked
	freed := int64(0)
	for freed < want {
		if len(s.segs) == 1 {
			if s.segs[0].count == 0 {
				break
			}
			if err := s.roll(); err != nil {
				return s.acked - before, s.acked, err
			}
		}
		seg := s.segs[0]
		freed += seg.size
		s.acked = max(s.acked, seg.end())
		s.dropAcked()
	}
	return s.acked - before, s.acked, nil
}

// Next is the sequence number the next Append gets.
func (s *Spool) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Acked is the cursor: every entry below it is delivered.
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Bytes is the on-disk size of the live segments.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Len is the number of undelivered entries.
func (s *Spool) Len() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - s.acked
}

// Read returns up to max entries starting at seq (which must not be below
// the cursor), reading the segment files. Sequential calls continue where
// the last one stopped without rescanning.
func (s *Spool) Read(seq uint64, max int) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < s.acked {
		seq = s.acked
	}
	if seq >= s.next || max <= 0 {
		return nil, nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, s.ioErr(err)
	}
	var out []Entry
	for len(out) < max && seq < s.next {
		if s.rd == nil || s.rd.f == nil || s.rd.next != seq || seq >= s.rd.seg.end() {
			var err error
			if seq, err = s.seekReader(seq); err != nil {
				return out, err
			}
		}
		d, err := s.rd.readEntry()
		if err == io.EOF {
			// End of this segment: move to the next one.
			s.rd.close()
			continue
		}
		if err != nil {
			return out, s.ioErr(err)
		}
		out = append(out, Entry{Seq: seq, Data: d})
		seq++
		s.rd.next = seq
	}
	return out, nil
}

// seekReader positions the reader at seq, or at the first entry after it
// when seq fell into a gap (entries lost to a crash before they were
// synced: never acknowledged upstream, so the source sends them again). It
// returns the sequence number it is at.
func (s *Spool) seekReader(seq uint64) (uint64, error) {
	if s.rd != nil {
		s.rd.close()
	}
	var seg *segment
	for _, sg := range s.segs {
		if sg.end() > seq && sg.count > 0 {
			seg = sg
			break
		}
	}
	if seg == nil {
		return seq, fmt.Errorf("spool %s: entry %d is in no segment", s.dir, seq)
	}
	seq = max(seq, seg.first)
	f, err := os.Open(seg.path)
	if err != nil {
		return seq, s.ioErr(err)
	}
	rd := &reader{seg: seg, f: f, br: bufio.NewReaderSize(f, 256<<10), next: seg.first}
	if _, err := rd.br.Discard(len(segHeader)); err != nil {
		rd.close()
		return seq, s.ioErr(err)
	}
	for rd.next < seq {
		if _, err := rd.readEntry(); err != nil {
			rd.close()
			return seq, s.ioErr(fmt.Errorf("seek to %d: %w", seq, err))
		}
		rd.next++
	}
	s.rd = rd
	return seq, nil
}

type reader struct {
	seg  *segment
	f    *os.File
	br   *bufio.Reader
	next uint64
}

func (r *reader) readEntry() ([]byte, error) {
	if r.f == nil {
		return nil, io.EOF
	}
	var eh [entryHeader]byte
	if _, err := io.ReadFull(r.br, eh[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%s: torn entry", r.seg.path)
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(eh[:4])
	if n > maxEntryBytes {
		return nil, fmt.Errorf("%s: bad entry length %d", r.seg.path, n)
	}
	d := make([]byte, n)
	if _, err := io.ReadFull(r.br, d); err != nil {
		return nil, fmt.Errorf("%s: torn entry: %w", r.seg.path, err)
	}
	if crc32.Checksum(d, crcTable) != binary.LittleEndian.Uint32(eh[4:]) {
		return nil, fmt.Errorf("%s: checksum mismatch for entry %d", r.seg.path, r.next)
	}
	return d, nil
}

func (r *reader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Close syncs and closes the spool.
func (s *Spool) Close() error {
	_, err := s.Sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rd != nil {
		s.rd.close()
	}
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
		s.f = nil
	}
	return err
}

func readCursor(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 12 || crc32.Checksum(b[:8], crcTable) != binary.LittleEndian.Uint32(b[8:]) {
		// A bad cursor only costs redelivery from the start.
		return 0, nil
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// writeCursor replaces the cursor file atomically (write, fsync, rename).
func writeCursor(path string, seq uint64) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], crcTable))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
