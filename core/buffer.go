package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxstream/fluxstream/core/spool"
	"github.com/fluxstream/fluxstream/internal/durable"
)

// buffer sits between the DAG and a sink's writer. Push never drops a
// record silently: it blocks (when_full: block) or gives up the oldest
// (drop_oldest, counted and logged).
type buffer interface {
	Push(ctx context.Context, recs []*Record) error
	// Next waits for records and returns up to max of them; io.EOF once the
	// input is closed and everything was handed out.
	Next(ctx context.Context, max int) ([]*Record, ticket, error)
	// Done marks a batch from Next as delivered.
	Done(t ticket)
	// CloseInput refuses further pushes; Next drains what is left.
	CloseInput()
	// Close releases the buffer (the disk spool keeps what is undelivered).
	Close() error
	// Pending is the number of records not yet delivered, and their bytes
	// on disk (0 for memory).
	Pending() (records int64, bytes int64)
}

type ticket struct {
	end  uint64    // disk: spool cursor after this batch
	recs []*Record // memory: records to release
}

// condWait waits on c (whose lock is held) until woken or ctx ends.
func condWait(ctx context.Context, c *sync.Cond) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		c.L.Lock()
		c.Broadcast()
		c.L.Unlock()
	})
	c.Wait()
	stop()
	return ctx.Err()
}

// memBuffer is a bounded in-memory queue. Records are released upstream
// (and so checkpointed) only once the sink delivered them: after a crash
// the source sends them again.
type memBuffer struct {
	mu       sync.Mutex
	cond     *sync.Cond
	q        []*Record
	max      int
	dropOld  bool
	closed   bool
	stats    *SinkStats
	log      *slog.Logger
	lastWarn time.Time
}

func newMemBuffer(cfg BufferConfig, stats *SinkStats, log *slog.Logger) *memBuffer {
	b := &memBuffer{max: cfg.MaxRecords, dropOld: cfg.WhenFull == "drop_oldest", stats: stats, log: log}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *memBuffer) Push(ctx context.Context, recs []*Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range recs {
		for len(b.q) >= b.max && !b.closed {
			if b.dropOld {
				old := b.q[0]
				b.q[0] = nil
				b.q = b.q[1:]
				old.Ack() // gone: counts as handled, loudly
				b.stats.BufferDropped.Add(1)
				if time.Since(b.lastWarn) > 10*time.Second {
					b.lastWarn = time.Now()
					b.log.Warn("buffer full: dropped oldest records (when_full: drop_oldest)", "dropped_total", b.stats.BufferDropped.Load())
				}
				continue
			}
			if err := condWait(ctx, b.cond); err != nil {
				return err
			}
		}
		if b.closed {
			return fmt.Errorf("buffer closed with %d records not taken", len(recs)-i)
		}
		b.q = append(b.q, r)
	}
	b.cond.Broadcast()
	return nil
}

func (b *memBuffer) Next(ctx context.Context, max int) ([]*Record, ticket, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.q) == 0 {
		if b.closed {
			return nil, ticket{}, io.EOF
		}
		if err := condWait(ctx, b.cond); err != nil {
			return nil, ticket{}, err
		}
	}
	n := min(max, len(b.q))
	out := make([]*Record, n)
	copy(out, b.q[:n])
	clear(b.q[:n])
	b.q = b.q[n:]
	b.cond.Broadcast()
	return out, ticket{recs: out}, nil
}

func (b *memBuffer) Done(t ticket) {
	for _, r := range t.recs {
		r.Ack()
	}
}

func (b *memBuffer) CloseInput() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *memBuffer) Close() error { return nil }

func (b *memBuffer) Pending() (int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.q)), 0
}

// diskBuffer keeps every record in the sink's spool. A record is released
// upstream once fsynced, so the source may forget it even if the sink is
// down for days; the sink reads recent records from an in-memory window
// and older ones back from disk, in order.
//
// Records are written by the sync tick, not by Push: in full, or as a
// one-byte tombstone if the sink delivered them meanwhile. While the sink
// keeps up, a record waits writeAfter for its delivery first, so such a
// sink costs the spool no encoding and almost no bytes; otherwise (the
// sink is failing or stuck) every tick writes all. Records are written
// sooner when the window moves past them or when the records held for
// their release near maxUnsynced. The source is never released from a
// record before it is delivered or fsynced.
type diskBuffer struct {
	sp       *spool.Spool
	cfg      BufferConfig
	stats    *SinkStats
	log      *slog.Logger
	mu       sync.Mutex
	cond     *sync.Cond
	window   []*Record // records of seqs [winFirst, winFirst+len(window))
	winFirst uint64
	readSeq  uint64
	// pending are the records pushed but not yet written, seqs
	// [sp.Next(), sp.Next()+len(pending)). Every record behind the
	// window is written. marks is the next seq at each of the last ticks,
	// oldest first (writeAfter).
	pending   []*Record
	cleared   int // pending[:cleared] were delivered and let go (Done)
	marks     []uint64
	entrySize int64  // the average size of a record's entry (pendingBytes)
	doneSeq   uint64 // the sink finished every seq below this
	entryBuf  []byte
	// Records not yet released upstream, oldest first, with the seq of
	// the first. A record is released once it is synced or delivered,
	// whichever comes first: both cover a prefix of the spool.
	unreleased      []*Record
	unreleasedFirst uint64
	closed          bool
	lastWarn        time.Time
	over80          bool // spool over 80% of max_bytes, logged
	// lastTake is when the sink last took a batch or finished one, and
	// lastBatch how long its last batch took from Next to Done (keepPace).
	lastTake  time.Time
	lastBatch time.Duration
	stopSync  chan struct{}
	syncDone  chan struct{}
	dlq       *deadLetters
	dir       string
	onFatal   func(error)
	// failed is set when an fsync failed: after that the page cache may
	// have dropped writes the kernel no longer reports, so nothing is ever
	// released as synced again and the pipeline stops (a restart re-reads
	// the spool from disk).
	failed atomic.Pointer[error]
}

// warnf logs a repeated problem at most once every 10 seconds.
func (b *diskBuffer) warnf(msg string, args ...any) {
	b.mu.Lock()
	if time.Since(b.lastWarn) < 10*time.Second {
		b.mu.Unlock()
		return
	}
	b.lastWarn = time.Now()
	b.mu.Unlock()
	b.log.Warn(msg, args...)
}

// failure wraps the fsync failure that ended a spool.
func (b *diskBuffer) failure() error {
	if p := b.failed.Load(); p != nil {
		return fmt.Errorf("spool failed, sink stopped; restart fluxstream once the disk is fixed (undelivered records stay spooled or come again from the source): %w", *p)
	}
	return nil
}

// openDiskBuffer opens the spool in dir. onFatal is told once when the
// spool fails for good.
func openDiskBuffer(fsys durable.FS, dir string, cfg BufferConfig, stats *SinkStats, log *slog.Logger, dlq *deadLetters, onFatal func(error)) (*diskBuffer, error) {
	seg := min(int64(16<<20), int64(cfg.MaxBytes)/8)
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: seg, Meta: spoolMeta, FS: fsys})
	if err != nil {
		return nil, err
	}
	for _, problem := range sp.Recovered() {
		log.Warn("spool: cut what an unclean stop left unfinished (those records were never acknowledged: the source sends them again)", "problem", problem)
	}
	b := &diskBuffer{sp: sp, cfg: cfg, stats: stats, log: log, dlq: dlq, dir: filepath.Clean(dir), onFatal: onFatal,
		stopSync: make(chan struct{}), syncDone: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	b.readSeq = sp.Acked()
	b.winFirst = sp.Next()
	b.doneSeq = sp.Acked()
	b.entrySize = 512
	b.lastTake = time.Now() // a sink just starting gets the patience too
	if n := sp.Len(); n > 0 {
		log.Info("spool holds undelivered records from an earlier run; delivering them first", "records", n, "bytes", sp.Bytes(), "dir", filepath.Clean(dir))
	}
	go b.syncLoop()
	return b, nil
}

func (b *diskBuffer) Push(ctx context.Context, recs []*Record) error {
	if err := b.failure(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	size := int64(len(recs)) * b.entrySize
	// A batch larger than the whole bound still goes into an empty spool,
	// or it would wait forever.
	for b.sp.Bytes()+b.pendingBytes()+size > int64(b.cfg.MaxBytes) && (b.sp.Len() > 0 || len(b.pending) > 0) && !b.closed {
		if b.cfg.WhenFull == "drop_oldest" {
			dropped, cursor, err := b.sp.DropOldest(size)
			if err != nil {
				return err
			}
			if cursor > b.readSeq {
				b.readSeq = cursor
			}
			b.stats.BufferDropped.Add(int64(dropped))
			if time.Since(b.lastWarn) > 10*time.Second {
				b.lastWarn = time.Now()
				b.log.Warn("spool full: dropped oldest undelivered records (when_full: drop_oldest)",
					"dropped_total", b.stats.BufferDropped.Load(), "max_bytes", b.cfg.MaxBytes.String())
			}
			break
		}
		if time.Since(b.lastWarn) > 10*time.Second {
			b.lastWarn = time.Now()
			b.log.Warn("spool full: blocking the source until the sink catches up (when_full: block)", "max_bytes", b.cfg.MaxBytes.String())
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
	if ctx.Value(keepsReadingKey{}) == nil {
		if err := b.keepPace(ctx, len(recs)); err != nil {
			return err
		}
	}
	// Records wait in memory until their fsync: bounded, so a disk slow
	// to sync holds the source instead of filling the heap (a run at load
	// 10 peaked at 362 MB where 120 MB is usual).
	for len(b.unreleased) >= maxUnsynced(b.cfg) && !b.closed {
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
	if b.closed {
		return errors.New("buffer closed")
	}
	first := b.nextSeq()
	if first != b.winFirst+uint64(len(b.window)) {
		// Not where the window ends (it never happens while every push
		// goes through it): start it anew, the old one on disk.
		if err := b.writeLocked(first); err != nil {
			return err
		}
		clear(b.window)
		b.window = b.window[:0]
		b.winFirst = first
	}
	if len(b.unreleased) == 0 {
		b.unreleasedFirst = first
	}
	b.pending = append(b.pending, recs...)
	b.window = append(b.window, recs...)
	if over := len(b.window) - b.cfg.MaxRecords; over > 0 {
		// The oldest part of the window stays on disk only: it must be
		// there first.
		if err := b.writeLocked(b.winFirst + uint64(over)); err != nil {
			return err
		}
		clear(b.window[:over])
		b.window = b.window[over:]
		b.winFirst += uint64(over)
	}
	b.unreleased = append(b.unreleased, recs...)
	b.noteFill()
	b.cond.Broadcast()
	return nil
}

// nextSeq is the seq the next pushed record gets (b.mu held).
func (b *diskBuffer) nextSeq() uint64 { return b.sp.Next() + uint64(len(b.pending)) }

// spoolTombstone is the entry of a record the sink delivered before it was
// written: read back (after a crash), it is skipped.
const spoolTombstone = 3

// writeLocked writes the pending records below seq to the spool (b.mu
// held): in full, or as tombstones where the sink already delivered them.
// A record that cannot be encoded (not with records of this build) is
// dead-lettered and written as a tombstone; the sink still gets it from
// the window.
func (b *diskBuffer) writeLocked(seq uint64) error {
	first := b.sp.Next()
	if seq <= first || len(b.pending) == 0 {
		return nil
	}
	n := int(min(seq-first, uint64(len(b.pending))))
	buf := b.entryBuf[:0]
	ends := make([]int, n)
	full, fullBytes := 0, 0
	for i, r := range b.pending[:n] {
		start := len(buf)
		if first+uint64(i) < b.doneSeq {
			buf = append(buf, spoolTombstone)
		} else {
			var err error
			if buf, err = appendSpoolEntry(buf, r); err != nil {
				buf = append(buf[:start], spoolTombstone)
				if derr := b.dlq.add(recordLetter(r, fmt.Errorf("cannot spool: %w", err))); derr != nil {
					return fmt.Errorf("record %s cannot be spooled (%v) nor dead-lettered: %w", r.ID, err, derr)
				}
				b.stats.DeadLettered.Add(1)
			} else {
				full++
				fullBytes += len(buf) - start + 8
			}
		}
		ends[i] = len(buf)
	}
	// Sliced only now: buf may have moved while it grew.
	payloads := make([][]byte, n)
	start := 0
	for i, end := range ends {
		payloads[i] = buf[start:end:end]
		start = end
	}
	got, err := b.sp.Append(payloads...)
	if cap(buf) <= maxPooledBatch {
		b.entryBuf = buf[:0]
	} else {
		b.entryBuf = nil
	}
	if err != nil {
		return err
	}
	if got != first {
		return fmt.Errorf("spool %s: records written at %d, expected at %d", b.dir, got, first)
	}
	if full > 0 {
		b.entrySize = (b.entrySize*3 + int64(fullBytes/full)) / 4
	}
	clear(b.pending[:n])
	b.pending = b.pending[n:]
	b.cleared = max(b.cleared-n, 0)
	b.sp.Ack(b.doneSeq) // the cursor may pass the tombstones now
	b.noteFill()
	b.cond.Broadcast() // the spool's bytes are known now (Push's bound)
	return nil
}

// pendingBytes estimates the bytes of the undelivered records not yet
// written (b.mu held).
func (b *diskBuffer) pendingBytes() int64 {
	return int64(b.nextSeq()-max(b.doneSeq, b.sp.Next())) * b.entrySize
}

// keepPace holds the source while the window is full and the sink is
// taking from it (b.mu held): a sink that is slower but alive then reads
// every record from memory, as with a memory buffer, instead of falling
// behind the window and paying to read and decode it back from disk. A
// sink that is failing, or took nothing for a while (patience: a few of
// its recent batch times), is left behind: the source never waits for a
// dead sink longer than that.
func (b *diskBuffer) keepPace(ctx context.Context, n int) error {
	// A sink less than a window behind it (it slipped: a slow start, a
	// pause) is waited for too, so it catches up with the window; one
	// further behind drains a real backlog and is not.
	for len(b.window) > 0 && len(b.window)+n > b.cfg.MaxRecords && b.readSeq+uint64(b.cfg.MaxRecords) >= b.winFirst && !b.closed &&
		b.stats.failingSince.Load() == 0 {
		left := b.patience() - time.Since(b.lastTake)
		if left <= 0 {
			return nil
		}
		// A timeout here only means the patience ran out: the loop
		// checks again.
		wctx, cancel := context.WithTimeout(ctx, left)
		condWait(wctx, b.cond)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.failure(); err != nil {
			return err
		}
	}
	return nil
}

// wait waits for a change of the buffer (b.mu held) and says why Push
// must give up: ctx ended or the spool failed.
func (b *diskBuffer) wait(ctx context.Context) error {
	if err := condWait(ctx, b.cond); err != nil {
		return err
	}
	return b.failure()
}

// keepsReadingKey marks the context of records from a KeepsReading
// source: keepPace does not hold it.
type keepsReadingKey struct{}

// patience is how long the source waits for a sink that took nothing
// since: four of its last batch times, within [minPatience, maxPatience].
func (b *diskBuffer) patience() time.Duration {
	return min(max(4*b.lastBatch, minPatience), maxPatience)
}

const (
	minPatience = time.Second
	maxPatience = 5 * time.Second
)

// writeAfter is how long a record may wait for its delivery before the
// sync tick writes it to the spool (the source is released from it then
// at the latest): a few batches of a sink that keeps up.
const writeAfter = time.Second

// keepingUp says the sink is not failing and took or finished a batch in
// the last two sync intervals (b.mu held): only then do its records wait
// for their delivery before they are written, so a sink that is down or
// stuck has every record on disk within sync_interval, as Flux may purge
// the jobs it has not delivered.
func (b *diskBuffer) keepingUp() bool {
	return b.stats.failingSince.Load() == 0 && time.Since(b.lastTake) <= 2*b.cfg.SyncInterval
}

// writeAfterTicks is writeAfter in sync ticks.
func writeAfterTicks(cfg BufferConfig) int {
	return max(int(writeAfter/max(cfg.SyncInterval, time.Millisecond)), 2)
}

// maxUnsynced bounds the records a disk buffer holds for their fsync.
func maxUnsynced(cfg BufferConfig) int { return 2 * cfg.MaxRecords }

// maxPooledBatch bounds the entry buffer kept between writes (a batch of
// huge records is not kept).
const maxPooledBatch = 8 << 20

// noteFill logs once when the spool goes over 80% of max_bytes, and once
// when it is back under 70% (b.mu held).
func (b *diskBuffer) noteFill() {
	used, limit := b.sp.Bytes()+b.pendingBytes(), int64(b.cfg.MaxBytes)
	acked, next := b.spanLocked()
	records := next - acked
	switch {
	case !b.over80 && used > limit/10*8:
		b.over80 = true
		b.log.Warn("spool over 80% full: the sink is behind; at 100% the source waits (when_full: block) or the oldest records go (drop_oldest)",
			"bytes", used, "max_bytes", b.cfg.MaxBytes.String(), "records", records, "when_full", b.cfg.WhenFull, "dir", b.dir)
	case b.over80 && used < limit/10*7:
		b.over80 = false
		b.log.Info("spool below 70% again", "bytes", used, "max_bytes", b.cfg.MaxBytes.String(), "records", records)
	}
}

// release acknowledges upstream every record below seq.
func (b *diskBuffer) release(seq uint64) {
	b.mu.Lock()
	n := 0
	if seq > b.unreleasedFirst {
		n = int(min(seq-b.unreleasedFirst, uint64(len(b.unreleased))))
	}
	recs := b.unreleased[:n:n]
	b.unreleased = b.unreleased[n:]
	b.unreleasedFirst += uint64(n)
	if n > 0 {
		b.cond.Broadcast() // room under maxUnsynced
	}
	b.mu.Unlock()
	for _, r := range recs {
		r.Ack()
	}
}

func (b *diskBuffer) syncLoop() {
	defer close(b.syncDone)
	t := time.NewTicker(b.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.stopSync:
			b.syncOnce(true)
			return
		}
		b.syncOnce(false)
	}
}

// syncOnce writes the records that waited writeAfter (all of them when
// final, or when the records held for their release near their bound),
// fsyncs and releases those records upstream.
func (b *diskBuffer) syncOnce(final bool) {
	if b.failed.Load() != nil {
		return
	}
	b.mu.Lock()
	b.marks = append(b.marks, b.nextSeq())
	upto := uint64(0)
	if len(b.marks) > writeAfterTicks(b.cfg) {
		upto = b.marks[0]
		b.marks = b.marks[1:]
	}
	if final || !b.keepingUp() || len(b.unreleased) >= maxUnsynced(b.cfg)*3/4 {
		upto = b.nextSeq()
	}
	werr := b.writeLocked(upto)
	b.mu.Unlock()
	if werr != nil && b.sp.Err() == nil {
		// Not the spool's fault (an entry nor its dead letter could be
		// written): nothing is released, the next tick tries again.
		b.warnf("spool write failed; retrying (nothing is released meanwhile)", "error", werr)
		return
	}
	upto, err := b.sp.Sync()
	if err != nil && b.sp.Err() == nil {
		// The spool is sound (the cursor could not be written, e.g. a full
		// disk): nothing is released, the next tick tries again.
		b.warnf("spool sync failed; retrying (nothing is released meanwhile)", "error", err)
		return
	}
	if err != nil {
		// Never retry and release: a second fsync can succeed although the
		// kernel dropped the pages the first one failed on.
		b.failed.Store(&err)
		b.log.Error("spool fsync failed: the sink stops and fluxstream shuts down; records since the last good fsync stay unacknowledged", "error", err)
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
		if b.onFatal != nil {
			b.onFatal(b.failure())
		}
		return
	}
	b.release(upto)
}

func (b *diskBuffer) Next(ctx context.Context, max int) ([]*Record, ticket, error) {
	b.mu.Lock()
	for b.readSeq >= b.nextSeq() {
		if b.closed {
			b.mu.Unlock()
			return nil, ticket{}, io.EOF
		}
		if err := condWait(ctx, b.cond); err != nil {
			b.mu.Unlock()
			return nil, ticket{}, err
		}
	}
	if b.readSeq >= b.winFirst && b.readSeq < b.winFirst+uint64(len(b.window)) {
		off := int(b.readSeq - b.winFirst)
		n := min(max, len(b.window)-off)
		out := make([]*Record, n)
		copy(out, b.window[off:off+n])
		// Drop what the sink now has from the window.
		clear(b.window[:off+n])
		b.window = b.window[off+n:]
		b.winFirst += uint64(off + n)
		b.readSeq += uint64(n)
		end := b.readSeq
		b.lastTake = time.Now()
		b.cond.Broadcast() // room in the window (keepPace)
		b.mu.Unlock()
		return out, ticket{end: end}, nil
	}
	// Behind the window: read back from disk, up to the window's start.
	want := max
	if len(b.window) > 0 && b.winFirst > b.readSeq {
		want = min(want, int(b.winFirst-b.readSeq))
	}
	entries, err := b.sp.Read(b.readSeq, want)
	var ce *spool.CorruptError
	if len(entries) == 0 && errors.As(err, &ce) {
		// Damage on disk: the entry (and, if its length was hit, the rest
		// of its segment) cannot be read. Park what is left of it and go
		// on past it, loudly.
		b.readSeq = ce.Resume
		b.mu.Unlock()
		lost := ce.Resume - ce.Seq
		b.log.Error("spool entry damaged on disk; its bytes go to the dead-letter file", "error", ce, "entries", lost, "file", b.dlq.path)
		if derr := b.dlq.add(deadLetter{Error: ce.Error(), Where: fmt.Sprintf("spool %s entries %d..%d", ce.Path, ce.Seq, ce.Resume-1), Raw: ce.Raw}); derr != nil {
			b.mu.Lock()
			b.readSeq = ce.Seq
			b.mu.Unlock()
			return nil, ticket{}, fmt.Errorf("%v, and it cannot be dead-lettered: %w", ce, derr)
		}
		b.stats.DeadLettered.Add(int64(lost))
		b.stats.Errors.Add(int64(lost))
		return nil, ticket{end: ce.Resume}, nil
	}
	if len(entries) == 0 {
		b.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("spool: no entry at %d", b.readSeq)
		}
		return nil, ticket{}, err
	}
	// Entries before a damaged one are delivered first; the next read
	// meets the damage.
	b.readSeq = entries[len(entries)-1].Seq + 1
	b.lastTake = time.Now()
	b.mu.Unlock()
	b.stats.ReadBack.Add(int64(len(entries)))
	out := make([]*Record, 0, len(entries))
	for _, e := range entries {
		if len(e.Data) == 1 && e.Data[0] == spoolTombstone {
			continue // delivered before it was written
		}
		r, err := decodeSpoolEntry(e.Data, e.Meta)
		if err == nil {
			out = append(out, r)
			continue
		}
		// Damaged or foreign bytes that passed the checksum: parked raw in
		// the dead-letter file, never skipped.
		where := fmt.Sprintf("spool %s entry %d", b.dir, e.Seq)
		b.log.Error("spool entry does not decode; moved, raw, to the dead-letter file", "where", where, "error", err, "file", b.dlq.path)
		if derr := b.dlq.add(deadLetter{Error: err.Error(), Where: where, Raw: e.Data}); derr != nil {
			// Keep it: reading resumes at this entry.
			b.mu.Lock()
			b.readSeq = e.Seq
			b.mu.Unlock()
			if len(out) == 0 {
				return nil, ticket{}, fmt.Errorf("%s does not decode (%v) and cannot be dead-lettered: %w", where, err, derr)
			}
			return out, ticket{end: e.Seq}, nil
		}
		b.stats.DeadLettered.Add(1)
		b.stats.Errors.Add(1)
	}
	return out, ticket{end: entries[len(entries)-1].Seq + 1}, nil
}

func (b *diskBuffer) Done(t ticket) {
	b.sp.Ack(t.end) // as far as written: writeLocked acks the rest
	b.release(t.end)
	b.mu.Lock()
	b.doneSeq = max(b.doneSeq, t.end)
	if first := b.sp.Next(); b.doneSeq > first {
		// Delivered before written: only a tombstone is left to write, so
		// the records need not stay in memory.
		n := int(min(b.doneSeq-first, uint64(len(b.pending))))
		if n > b.cleared {
			clear(b.pending[b.cleared:n])
			b.cleared = n
		}
	}
	now := time.Now()
	b.lastBatch = now.Sub(b.lastTake)
	b.lastTake = now
	b.noteFill()
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *diskBuffer) CloseInput() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *diskBuffer) Close() error {
	b.CloseInput()
	select {
	case <-b.stopSync:
	default:
		close(b.stopSync)
	}
	<-b.syncDone
	return b.sp.Close()
}

// Pending counts the records not yet delivered, written or not; the
// bytes are the spool's and the estimate for those not yet written.
func (b *diskBuffer) Pending() (int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	acked, next := b.spanLocked()
	return int64(next - acked), b.sp.Bytes() + b.pendingBytes()
}

// span is the undelivered range of seqs [acked, next), for the
// oldest-undelivered age (stats.go).
func (b *diskBuffer) span() (acked, next uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spanLocked()
}

// spanLocked is span with b.mu held. The spool's cursor can be ahead of
// doneSeq (drop_oldest) or behind it (delivered, not yet written).
func (b *diskBuffer) spanLocked() (acked, next uint64) {
	return max(b.sp.Acked(), b.doneSeq), b.nextSeq()
}
