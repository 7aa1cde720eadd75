// Package spool is a durable FIFO of byte entries on disk: a segmented,
// append-only log with a CRC per entry, fsynced on demand, and an
// acknowledgement cursor. Each sink of fluxstream owns one.
//
// Entries get consecutive sequence numbers. Everything below the cursor
// (Acked) is delivered; whole segments below it are deleted. After a crash,
// Open keeps every entry that was synced, cuts a torn tail, and resumes
// from the last persisted cursor (entries delivered after it come again:
// at-least-once).
//
// # Durability
//
// Sync returns a sequence number below which every entry survives a power
// cut. Before it returns it has fsynced every segment written since the
// last Sync and, when a segment was created, the directory (a new file's
// name is not durable until its directory is); the cursor is written to a
// temporary file, fsynced, renamed over the old one, and the directory
// fsynced again. Removing delivered segments is not followed by a
// directory fsync: a removal lost in a crash brings back a segment whose
// entries lie below the cursor (skipped) or were delivered after it
// (delivered again), never a hole.
//
// A failed write or fsync of a segment, the directory or the cursor is
// fatal: the spool stops for good (until reopened) and every later Append,
// Sync and Read returns that first error (errors.Is(err, ErrFailed)).
// After a failed fsync Linux may have dropped the unwritten pages and
// report success to the next one ("fsyncgate"), so nothing appended since
// the last good Sync may ever be called durable: its records stay
// unacknowledged and the source sends them again after a restart.
//
// Every read checks the entry's CRC; a damaged entry is a *CorruptError
// naming the file, the byte offset and where reading can go on.
//
// # Format
//
// A segment is named after its first sequence number (%020d.seg) and
// starts with a header: "FXSPOOL2", the length of Options.Meta (uint32
// LE), a CRC-32C of that length and the meta, then the meta. Entries
// follow, each a uint32 LE length, a CRC-32C of the length bytes and the
// data (so a zero-filled tail never reads as empty entries), then the
// data. Meta is opaque here (fluxstream stores the record schema in it);
// each segment keeps the meta it was created with, and a reopened spool
// with a different meta starts a new segment. Segments of the first
// format ("FXSPOOL1": no meta, CRC of the data only) are still read and
// drained, their entries with a nil Meta. Files are 0600 in a 0700
// directory.
package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/fluxstream/fluxstream/internal/durable"
)

const (
	segSuffix   = ".seg"
	cursorFile  = "cursor"
	entryHeader = 8 // length + crc
	magicV1     = "FXSPOOL1"
	magicV2     = "FXSPOOL2"
	// v2 header: magic, meta length, meta CRC; the meta follows.
	headerV2      = len(magicV2) + 8
	maxEntryBytes = 256 << 20
	// MaxMetaBytes bounds Options.Meta (and what a damaged header may
	// make Open allocate).
	MaxMetaBytes = 1 << 20
	filePerm     = 0o600
	dirPerm      = 0o700
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Options tune a spool.
type Options struct {
	// SegmentBytes is the size at which a new segment file starts.
	SegmentBytes int64
	// FS is the file system (nil: the real one). Tests pass a faultfs.
	FS durable.FS
	// Meta goes into the header of every segment created from now on and
	// comes back as Entry.Meta. At most MaxMetaBytes.
	Meta []byte
}

// Entry is one stored item.
type Entry struct {
	Seq  uint64
	Data []byte
	// Meta is the Options.Meta its segment was created with (nil for
	// segments of the first format). Shared by the segment's entries: do
	// not modify.
	Meta []byte
}

// ErrFailed is in the chain of every error of a spool that stopped after
// a failed write or fsync.
var ErrFailed = errors.New("spool failed")

// failure is the fatal error of a spool.
type failure struct {
	op, file string
	err      error
}

func (e *failure) Error() string {
	return fmt.Sprintf("spool failed for good: %s %s: %v (the disk may not hold what it was given, so nothing written since the last good sync counts as durable: those records stay unacknowledged and the source sends them again; the sink stops; fix the disk and restart)", e.op, e.file, e.err)
}

func (e *failure) Unwrap() []error { return []error{ErrFailed, e.err} }

// CorruptError is an entry that fails its checksum or framing on read.
type CorruptError struct {
	Path   string // segment file
	Offset int64  // byte offset of the entry in Path
	Seq    uint64
	Reason string
	// Resume is where reading can go on: Seq+1 when the entry's length
	// was intact, else the end of its segment.
	Resume uint64
	// Raw is the damaged entry's data when its length was intact.
	Raw []byte
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool %s: entry %d at byte %d: %s (its record cannot be trusted; reading goes on at entry %d)", e.Path, e.Seq, e.Offset, e.Reason, e.Resume)
}

type segment struct {
	first   uint64 // seq of its first entry
	count   uint64
	size    int64 // bytes on disk (incl. buffered) of its valid entries
	path    string
	version int // 1 or 2
	meta    []byte
	hdrLen  int64
}

func (s *segment) end() uint64 { return s.first + s.count }

// Spool is safe for concurrent use.
type Spool struct {
	dir  string
	fs   durable.FS
	opts Options

	syncMu sync.Mutex // one Sync at a time: each covers all before it

	mu        sync.Mutex
	segs      []*segment // oldest first; the last one is written to
	f         durable.File
	w         *bufio.Writer
	next      uint64 // seq of the next append
	acked     uint64 // every seq below is delivered
	persisted uint64 // acked value last written to the cursor file
	bytes     int64  // on-disk size of live segments (incl. buffered)
	unsynced  []durable.File
	dirDirty  bool  // a segment was created since the last directory fsync
	failed    error // the first fatal error, for good
	rd        *reader
	// Problems found while opening (torn tails, corrupt entries).
	recovered []string
}

// Open opens or creates the spool in dir.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 16 << 20
	}
	if opts.FS == nil {
		opts.FS = durable.OS
	}
	if len(opts.Meta) > MaxMetaBytes {
		return nil, fmt.Errorf("spool %s: meta of %d bytes exceeds the %d-byte limit", dir, len(opts.Meta), MaxMetaBytes)
	}
	opts.Meta = bytes.Clone(opts.Meta)
	if len(opts.Meta) == 0 {
		opts.Meta = nil // as a reopened segment reports it
	}
	if err := durable.MkdirAllSync(opts.FS, dir, dirPerm); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, fs: opts.FS, opts: opts}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Recovered lists what Open had to repair (empty after a clean shutdown).
// Each note names the file, the byte offset and what it means.
func (s *Spool) Recovered() []string { return s.recovered }

// Err is the error that stopped the spool for good, or nil.
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *Spool) note(format string, args ...any) {
	s.recovered = append(s.recovered, fmt.Sprintf(format, args...))
}

func (s *Spool) load() error {
	ents, err := s.fs.ReadDir(s.dir)
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

	cursor, err := s.readCursor()
	if err != nil {
		return err
	}
	s.acked, s.persisted = cursor, cursor

	kept := s.segs[:0]
	for i, seg := range s.segs {
		ok, err := s.scan(seg, i == len(s.segs)-1)
		if err != nil {
			return err
		}
		if ok {
			kept = append(kept, seg)
			s.bytes += seg.size
		}
	}
	s.segs = kept
	if n := len(s.segs); n > 0 {
		s.next = s.segs[n-1].end()
	} else {
		s.next = s.acked
	}
	if s.acked > s.next {
		// The cursor outran the data (segments removed by hand?): resume
		// at the end rather than waiting for sequence numbers that exist
		// nowhere.
		s.note("%s: cursor %d is beyond the last entry %d; reset to it", filepath.Join(s.dir, cursorFile), s.acked, s.next)
		s.acked = s.next
	}
	s.dropAcked()
	return s.openForAppend()
}

// scan reads a segment's header and counts its valid entries. A torn or
// damaged tail is cut from the last segment and ends any other one; a
// segment whose header is damaged is moved aside. It reports whether the
// segment stays in the spool.
func (s *Spool) scan(seg *segment, last bool) (bool, error) {
	f, err := s.fs.OpenFile(seg.path, os.O_RDONLY, 0)
	if err != nil {
		return false, fmt.Errorf("spool %s: %w", seg.path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("spool %s: %w", seg.path, err)
	}
	res := scanSegment(bufio.NewReaderSize(f, 1<<20), st.Size(), nil)
	switch {
	case res.tornHeader:
		// Created, never synced: nothing in it was ever acknowledged.
		s.note("%s: no complete header at byte 0 (a stop while the segment was created; nothing in it was ever acknowledged); started anew", seg.path)
		seg.size = 0
		if last {
			return true, s.fs.Truncate(seg.path, 0)
		}
		return true, nil
	case res.badHeader != "":
		aside := seg.path + ".damaged"
		if err := s.fs.Rename(seg.path, aside); err != nil {
			return false, fmt.Errorf("spool %s: damaged header (%s), and moving it aside failed: %w", seg.path, res.badHeader, err)
		}
		s.note("%s: damaged header at byte 0 (%s): its entries cannot be read; moved to %s. Records in it that the sink had not received are lost unless the source still has them; inspect the file, then delete it", seg.path, res.badHeader, aside)
		return false, nil
	}
	seg.version, seg.meta, seg.hdrLen = res.version, res.meta, res.hdrLen
	seg.count, seg.size = res.count, res.end
	for _, off := range res.damaged {
		s.note("%s: entry at byte %d fails its checksum but entries after it are sound: damaged on disk; kept, and the sink dead-letters its bytes when it gets there", seg.path, off)
	}
	if res.problem == "" {
		return true, nil
	}
	cut := st.Size() - res.end
	if last {
		if err := s.fs.Truncate(seg.path, res.end); err != nil {
			return false, fmt.Errorf("spool %s: cut torn tail: %w", seg.path, err)
		}
		s.note("%s: %s at byte %d: cut the %d bytes from there (an unclean stop: those entries were never acknowledged and the source sends them again)", seg.path, res.problem, res.end, cut)
		return true, nil
	}
	s.note("%s: %s at byte %d: the %d bytes from there (entries from %d on in this segment) are skipped. After a crash that is a tail never acknowledged; otherwise the file is damaged: copy it away now to inspect it, it is deleted once the sink is past it", seg.path, res.problem, res.end, cut, seg.end())
	return true, nil
}

type scanResult struct {
	tornHeader bool   // shorter than its header, or zero-filled: never synced
	badHeader  string // why the header is damaged
	version    int
	meta       []byte
	hdrLen     int64
	count      uint64
	end        int64   // offset after the last valid entry
	problem    string  // why the entries end before the file does
	damaged    []int64 // offsets of entries damaged in place, followed by sound ones
}

// scanSegment parses a segment of size bytes from r, calling visit (if
// not nil) with each valid entry.
func scanSegment(r *bufio.Reader, size int64, visit func([]byte)) scanResult {
	var res scanResult
	version, meta, hdrLen, err := readHeader(r, size)
	if err != nil {
		if errors.Is(err, errTornHeader) {
			res.tornHeader = true
		} else {
			res.badHeader = err.Error()
		}
		return res
	}
	res.version, res.meta, res.hdrLen, res.end = version, meta, hdrLen, hdrLen
	var buf []byte
	for {
		d, n, err := readEntry(r, version, size-res.end, buf)
		if err == io.EOF {
			return res
		}
		var ee *entryError
		if errors.As(err, &ee) && ee.framed {
			// A checksum that fails on a complete entry: if a sound
			// entry follows, this one was damaged in place (not a torn
			// tail) and everything after it is kept; reading it gives a
			// CorruptError.
			m := entryHeader + int64(len(ee.raw))
			if d2, n2, err2 := readEntry(r, version, size-res.end-m, nil); err2 == nil {
				res.damaged = append(res.damaged, res.end)
				res.end += m
				res.count++
				d, n, err = d2, n2, nil
			}
		}
		if err != nil {
			res.problem = err.Error()
			return res
		}
		if visit != nil {
			visit(d)
		}
		buf = d[:0]
		res.end += n
		res.count++
	}
}

var errTornHeader = errors.New("incomplete header")

// readHeader parses a segment header, never allocating more than the
// file can hold.
func readHeader(r *bufio.Reader, size int64) (version int, meta []byte, hdrLen int64, err error) {
	var magic [len(magicV2)]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return 0, nil, 0, errTornHeader
	}
	switch string(magic[:]) {
	case magicV1:
		return 1, nil, int64(len(magicV1)), nil
	case magicV2:
	case "\x00\x00\x00\x00\x00\x00\x00\x00":
		// A crash after the file grew but before its data was written.
		return 0, nil, 0, errTornHeader
	default:
		return 0, nil, 0, fmt.Errorf("unknown magic %q", magic[:])
	}
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, 0, errTornHeader
	}
	n := binary.LittleEndian.Uint32(h[:4])
	if n > MaxMetaBytes {
		return 0, nil, 0, fmt.Errorf("meta length %d exceeds %d", n, MaxMetaBytes)
	}
	hdrLen = int64(headerV2) + int64(n)
	if hdrLen > size {
		return 0, nil, 0, errTornHeader
	}
	meta = make([]byte, n)
	if _, err := io.ReadFull(r, meta); err != nil {
		return 0, nil, 0, errTornHeader
	}
	if crc32.Update(crc32.Checksum(h[:4], crcTable), crcTable, meta) != binary.LittleEndian.Uint32(h[4:]) {
		return 0, nil, 0, errors.New("meta checksum mismatch")
	}
	if n == 0 {
		meta = nil
	}
	return 2, meta, hdrLen, nil
}

func encodeHeader(meta []byte) []byte {
	b := make([]byte, headerV2+len(meta))
	copy(b, magicV2)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(meta)))
	copy(b[headerV2:], meta)
	binary.LittleEndian.PutUint32(b[12:], crc32.Update(crc32.Checksum(b[8:12], crcTable), crcTable, meta))
	return b
}

// entryCRC is the checksum of an entry; v2 covers its length too.
func entryCRC(version int, length []byte, data []byte) uint32 {
	if version == 1 {
		return crc32.Checksum(data, crcTable)
	}
	return crc32.Update(crc32.Checksum(length, crcTable), crcTable, data)
}

// entryError is an entry that cannot be read. framed: its length was
// intact, so the next entry can still be found.
type entryError struct {
	reason string
	framed bool
	raw    []byte
}

func (e *entryError) Error() string { return e.reason }

// readEntry reads one entry (reusing buf) and its size on disk, from a
// segment with room bytes left. io.EOF: a clean end.
func readEntry(r *bufio.Reader, version int, room int64, buf []byte) ([]byte, int64, error) {
	var eh [entryHeader]byte
	if k, err := io.ReadFull(r, eh[:]); err != nil {
		if k == 0 && err == io.EOF {
			return nil, 0, io.EOF
		}
		return nil, 0, &entryError{reason: "torn entry header"}
	}
	n := binary.LittleEndian.Uint32(eh[:4])
	if n > maxEntryBytes || int64(n) > room-entryHeader {
		return nil, 0, &entryError{reason: fmt.Sprintf("entry length %d runs past the end of the segment", n)}
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, 0, &entryError{reason: "torn entry"}
	}
	if entryCRC(version, eh[:4], buf) != binary.LittleEndian.Uint32(eh[4:]) {
		return nil, 0, &entryError{reason: "checksum mismatch", framed: true, raw: buf}
	}
	return buf, entryHeader + int64(n), nil
}

func (s *Spool) openForAppend() error {
	if n := len(s.segs); n > 0 {
		seg := s.segs[n-1]
		// Only a segment of today's format and meta takes more entries:
		// its meta must describe them.
		if seg.size > 0 && seg.size < s.opts.SegmentBytes && seg.version == 2 && bytes.Equal(seg.meta, s.opts.Meta) {
			f, err := s.fs.OpenFile(seg.path, os.O_WRONLY|os.O_APPEND, filePerm)
			if err != nil {
				return fmt.Errorf("spool %s: %w", seg.path, err)
			}
			s.f, s.w = f, bufio.NewWriterSize(f, 256<<10)
			return nil
		}
	}
	return s.roll()
}

// roll starts a new segment at s.next. When creating it fails nothing has
// changed and it may be tried again.
func (s *Spool) roll() error {
	if s.f != nil {
		if err := s.w.Flush(); err != nil {
			return s.failLocked("write", s.f.Name(), err)
		}
	}
	if n := len(s.segs); n > 0 && s.segs[n-1].count == 0 && s.segs[n-1].first == s.next {
		// Reuse an empty last segment (e.g. a header-less one after a crash).
		seg := s.segs[n-1]
		s.bytes -= seg.size
		s.segs = s.segs[:n-1]
		s.fs.Remove(seg.path) // O_TRUNC below covers a failure
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d%s", s.next, segSuffix))
	f, err := s.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, filePerm)
	if err != nil {
		return fmt.Errorf("spool %s: %w", path, err)
	}
	if s.f != nil {
		s.unsynced = append(s.unsynced, s.f)
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 256<<10)
	s.dirDirty = true
	hdr := encodeHeader(s.opts.Meta)
	s.segs = append(s.segs, &segment{first: s.next, size: int64(len(hdr)), path: path,
		version: 2, meta: s.opts.Meta, hdrLen: int64(len(hdr))})
	s.bytes += int64(len(hdr))
	if _, err := s.w.Write(hdr); err != nil {
		return s.failLocked("write", path, err)
	}
	return nil
}

// failLocked stops the spool for good; called with s.mu held.
func (s *Spool) failLocked(op, file string, err error) error {
	if s.failed == nil {
		s.failed = &failure{op: op, file: file, err: err}
	}
	return s.failed
}

func (s *Spool) fail(op, file string, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failLocked(op, file, err)
}

// usable is nil when the spool takes calls; called with s.mu held.
func (s *Spool) usable() error {
	if s.failed != nil {
		return s.failed
	}
	if s.f == nil {
		return fmt.Errorf("spool %s: %w", s.dir, os.ErrClosed)
	}
	return nil
}

// Append adds entries and returns the sequence number of the first. They
// are durable after the next Sync. It adds all or, with an error, none
// (or it fails the spool).
func (s *Spool) Append(data ...[]byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.next
	if err := s.usable(); err != nil {
		return first, err
	}
	for _, d := range data {
		if len(d) > maxEntryBytes {
			return first, fmt.Errorf("spool %s: entry of %d bytes exceeds the %d-byte limit", s.dir, len(d), maxEntryBytes)
		}
	}
	var eh [entryHeader]byte
	for i, d := range data {
		seg := s.segs[len(s.segs)-1]
		if seg.size >= s.opts.SegmentBytes && seg.count > 0 {
			if err := s.roll(); err != nil {
				if i > 0 && s.failed == nil {
					// Part of the batch is in: all or nothing is gone.
					return first, s.failLocked("create a segment in the middle of a batch in", s.dir, err)
				}
				return first, err
			}
			seg = s.segs[len(s.segs)-1]
		}
		binary.LittleEndian.PutUint32(eh[:4], uint32(len(d)))
		binary.LittleEndian.PutUint32(eh[4:], entryCRC(2, eh[:4], d))
		if _, err := s.w.Write(eh[:]); err != nil {
			return first, s.failLocked("write", seg.path, err)
		}
		if _, err := s.w.Write(d); err != nil {
			return first, s.failLocked("write", seg.path, err)
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
// fsyncs run outside the lock, so appends go on meanwhile; they are not
// covered by this Sync.
func (s *Spool) Sync() (uint64, error) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	if err := s.w.Flush(); err != nil {
		err = s.failLocked("write", s.f.Name(), err)
		s.mu.Unlock()
		return 0, err
	}
	upto := s.next // everything below is in the files now
	files := append(s.unsynced, s.f)
	s.unsynced = nil
	syncDir := s.dirDirty
	s.dirDirty = false
	acked := s.acked
	persist := acked != s.persisted
	s.mu.Unlock()

	for i, f := range files {
		if err := f.Sync(); err != nil {
			for _, g := range files[i:] {
				if g != files[len(files)-1] {
					g.Close()
				}
			}
			return 0, s.fail("fsync", f.Name(), err)
		}
		if i < len(files)-1 {
			f.Close() // a full segment: written for good
		}
	}
	if syncDir {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return 0, s.fail("fsync directory", s.dir, err)
		}
	}
	if persist {
		if err := s.writeCursor(acked); err != nil {
			return 0, err
		}
		s.mu.Lock()
		s.persisted = max(s.persisted, acked)
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
// the one being written. (No directory fsync: see the package comment.)
func (s *Spool) dropAcked() {
	for len(s.segs) > 1 && s.segs[0].end() <= s.acked {
		seg := s.segs[0]
		if s.rd != nil && s.rd.seg == seg {
			s.rd.close()
		}
		s.fs.Remove(seg.path)
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
	if err := s.usable(); err != nil {
		return 0, s.acked, err
	}
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
// the last one stopped without rescanning. A damaged entry ends the batch
// with a *CorruptError (the entries before it are returned).
func (s *Spool) Read(seq uint64, max int) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if seq < s.acked {
		seq = s.acked
	}
	if seq >= s.next || max <= 0 {
		return nil, nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, s.failLocked("write", s.f.Name(), err)
	}
	var out []Entry
	for len(out) < max && seq < s.next {
		if s.rd == nil || s.rd.f == nil || s.rd.next != seq || seq >= s.rd.seg.end() {
			var err error
			if seq, err = s.seekReader(seq); err != nil {
				return out, err
			}
		}
		off := s.rd.off
		d, n, err := s.rd.read()
		if err == io.EOF {
			// End of this segment: move to the next one.
			s.rd.close()
			continue
		}
		if err != nil {
			return out, s.rd.corrupt(seq, off, err)
		}
		out = append(out, Entry{Seq: seq, Data: d, Meta: s.rd.seg.meta})
		seq++
		s.rd.next, s.rd.off = seq, off+n
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
	f, err := s.fs.OpenFile(seg.path, os.O_RDONLY, 0)
	if err != nil {
		return seq, fmt.Errorf("spool %s: %w", seg.path, err)
	}
	rd := &reader{seg: seg, f: f, br: bufio.NewReaderSize(f, 256<<10), next: seg.first, off: seg.hdrLen}
	if _, err := rd.br.Discard(int(seg.hdrLen)); err != nil {
		rd.close()
		return seq, fmt.Errorf("spool %s: %w", seg.path, err)
	}
	// Skip to seq by the lengths alone: a damaged entry before it must
	// not keep the reader from the ones after.
	for rd.next < seq {
		off := rd.off
		n, err := rd.skip()
		if err != nil {
			rd.close()
			return seq, rd.corrupt(rd.next, off, err)
		}
		rd.next++
		rd.off += n
	}
	s.rd = rd
	return seq, nil
}

type reader struct {
	seg  *segment
	f    durable.File
	br   *bufio.Reader
	next uint64
	off  int64 // byte offset of entry next
}

func (r *reader) read() ([]byte, int64, error) {
	if r.f == nil {
		return nil, 0, io.EOF
	}
	// A new buffer per entry: the caller keeps it.
	return readEntry(r.br, r.seg.version, r.seg.size-r.off, nil)
}

// skip passes over one entry without checking its data.
func (r *reader) skip() (int64, error) {
	var eh [entryHeader]byte
	if _, err := io.ReadFull(r.br, eh[:]); err != nil {
		return 0, &entryError{reason: "torn entry header"}
	}
	n := binary.LittleEndian.Uint32(eh[:4])
	if int64(n) > r.seg.size-r.off-entryHeader {
		return 0, &entryError{reason: fmt.Sprintf("entry length %d runs past the end of the segment", n)}
	}
	if _, err := r.br.Discard(int(n)); err != nil {
		return 0, &entryError{reason: "torn entry"}
	}
	return entryHeader + int64(n), nil
}

// corrupt describes a read failure of entry seq at off, and moves the
// reader past it where the framing allows.
func (r *reader) corrupt(seq uint64, off int64, err error) error {
	ce := &CorruptError{Path: r.seg.path, Offset: off, Seq: seq, Reason: err.Error(), Resume: r.seg.end()}
	var ee *entryError
	if errors.As(err, &ee) && ee.framed {
		ce.Resume, ce.Raw = seq+1, ee.raw
	}
	r.close()
	return ce
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
	for _, f := range s.unsynced {
		f.Close()
	}
	s.unsynced = nil
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
		s.f = nil
	}
	if err == nil && s.acked == s.next && s.persisted == s.acked {
		// Everything delivered and the cursor says so: leave no segment
		// behind (the next Open starts a new one at the cursor). A removal
		// lost to a crash only leaves entries below the cursor.
		for _, seg := range s.segs {
			s.fs.Remove(seg.path)
		}
		s.segs = nil
		s.bytes = 0
	}
	return err
}

// readCursor reads the persisted cursor. A damaged one costs only
// redelivery from the oldest entry kept, so it is a note, not an error.
func (s *Spool) readCursor() (uint64, error) {
	path := filepath.Join(s.dir, cursorFile)
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", path, err)
	}
	const redeliver = "delivery restarts from the oldest entry kept: records already delivered come again (duplicates, nothing lost)"
	switch {
	case len(b) != 12:
		s.note("%s: damaged cursor (%d bytes at byte 0, want 12); %s", path, len(b), redeliver)
		return 0, nil
	case crc32.Checksum(b[:8], crcTable) != binary.LittleEndian.Uint32(b[8:]):
		s.note("%s: damaged cursor (checksum mismatch at byte 8); %s", path, redeliver)
		return 0, nil
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// writeCursor replaces the cursor file atomically (write, fsync, rename,
// fsync the directory). A failure before anything is claimed (creating or
// writing the temporary file, the rename) is returned and retried by the
// next Sync; a failed fsync fails the spool.
func (s *Spool) writeCursor(seq uint64) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], crcTable))
	path := filepath.Join(s.dir, cursorFile)
	tmp := path + ".tmp"
	f, err := s.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return fmt.Errorf("spool %s: %w", tmp, err)
	}
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return fmt.Errorf("spool %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return s.fail("fsync", tmp, err)
	}
	if err := f.Close(); err != nil {
		return s.fail("close", tmp, err)
	}
	if err := s.fs.Rename(tmp, path); err != nil {
		return fmt.Errorf("spool %s: %w", path, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return s.fail("fsync directory", s.dir, err)
	}
	return nil
}
