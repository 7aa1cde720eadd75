package journal

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
)

// eventKey identifies an event within its job: name and timestamp (the
// job-manager is single-threaded, so the pair is unique per job).
type eventKey struct {
	name string
	ts   float64
}

// Checkpoint remembers, per job, which events every sink has taken
// durably, so that a restart (which always reads the whole backlog again:
// Flux has no resume cursor) emits only what is new.
//
// A job is identified by its id and its submit time (t_submit, the
// timestamp of its submit event): a Flux instance started without its old
// KVS numbers jobs from its own start and hands out ids an earlier
// instance used. The checkpoint holds one incarnation per id, the latest
// seen; an id that comes back with another submit time is a new job (see
// Identify).
//
// Stored per job in the source's KV namespace, key: job id, 8 bytes big
// endian. Value, version 2 (written now):
//
//	0x02 'D' T           done: every event up to and including clean was
//	                     taken; the backlog entry is skipped whole (10 bytes)
//	0x02 'P' T events    partial: the events taken so far, each
//	                     {uvarint name length, name, 8-byte timestamp}
//	0x02 'X' T           purged or invalidated (kept only with keepGone,
//	                     for replays: a recording can be played again, a
//	                     Flux instance never sends a purged job again)
//
// T is the job's t_submit as float64 bits, big endian; 0 means not known
// (the job's eventlog had no submit event, e.g. under an allow filter).
// Version 1 entries (before t_submit was kept: 'D', 'X', or 'P' events,
// with no version byte) are still read. A version 1 'P' entry that holds
// the submit event gets that event's timestamp as T; one without (and every
// version 1 'D' or 'X') has T not known, and matches whatever submit time
// comes first for that id: it is adopted, and rewritten as version 2 once
// the job's entry is written again. So an id reused while the previous
// version ran is taken for the old job, once; there is no information to
// tell them apart.
//
// With keepGone, an incarnation replaced by a newer one and purged is also
// kept under the 16-byte key (job id, T) with the value 0x02 'X' T, so a
// replay of files that reuse ids, played again, emits nothing twice.
//
// An active job is a few hundred bytes; an inactive one 10 bytes until
// Flux purges it, when its entry is deleted. Events emitted but not yet
// taken are tracked in memory only: after a crash they are emitted again.
type Checkpoint struct {
	kv       core.KV
	keepGone bool
	mu       sync.Mutex
	jobs     map[uint64]*ckJob // jobs with events in flight or not yet flushed
	dirty    map[uint64]struct{}
	// flushMu makes flushes one at a time: when Flush returns, every
	// change made before it was called is committed, even one that a
	// concurrent flush had taken (an exactly-once sink counts on it).
	flushMu sync.Mutex
}

type ckJob struct {
	tsubmit  float64 // the incarnation's submit time; 0: not known
	done     bool
	seen     map[eventKey]bool // true: taken; false: in flight
	inflight int
	final    bool // the job's last event (clean) was taken
	gone     bool // purged or invalidated: delete once nothing is in flight
	goneKept bool // stored as "X"
	purging  bool // a purge record of this incarnation is in flight
	// earlier lists the submit times of earlier incarnations of the id
	// whose purge record is in flight. The entry is not written before
	// they are taken: a crash in between finds the old incarnation again,
	// and its purge record is emitted again.
	earlier []float64
	// keptGone lists earlier incarnations whose purge was taken, to store
	// under their own key (keepGone only).
	keptGone []float64
}

func newCkJob(tsubmit float64) *ckJob {
	return &ckJob{tsubmit: tsubmit, seen: map[eventKey]bool{}}
}

// empty reports whether the entry holds nothing about any job.
func (j *ckJob) empty() bool {
	return j.tsubmit == 0 && !j.done && !j.gone && !j.goneKept && !j.purging && len(j.seen) == 0
}

// NewCheckpoint wraps a node's KV. keepGone keeps a marker for purged and
// invalidated jobs instead of deleting them.
func NewCheckpoint(kv core.KV, keepGone bool) *Checkpoint {
	if kv == nil {
		kv = core.NewMemKV()
	}
	return &Checkpoint{kv: kv, keepGone: keepGone, jobs: map[uint64]*ckJob{}, dirty: map[uint64]struct{}{}}
}

// store names the KV for messages: its own String if it has one, else
// where the pipeline keeps node state.
func (c *Checkpoint) store() string {
	if s, ok := c.kv.(fmt.Stringer); ok {
		return s.String()
	}
	return "the node's checkpoint in data_dir/state.db"
}

func jobKey(id uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	return b[:]
}

// goneKey is the key of a replaced, purged incarnation (keepGone).
func goneKey(id uint64, tsubmit float64) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], id)
	binary.BigEndian.PutUint64(b[8:], math.Float64bits(tsubmit))
	return b[:]
}

// load returns the job's entry, reading it from the KV on first use. c.mu
// is held. A damaged entry gives a *DamagedError once; the job is then
// unknown (a fresh entry).
func (c *Checkpoint) load(id uint64) (*ckJob, error) {
	if j, ok := c.jobs[id]; ok {
		return j, nil
	}
	v, err := c.kv.Get(jobKey(id))
	if err != nil {
		return nil, err
	}
	j := newCkJob(0)
	if err := decodeCheckpoint(v, j); err != nil {
		// Treat the job as unknown from now on (its events are emitted
		// again: duplicates at worst), and say so once.
		c.jobs[id] = newCkJob(0)
		return nil, &DamagedError{JobID: id, Entry: v, Err: err}
	}
	c.jobs[id] = j
	return j, nil
}

// loadOrFresh is load where a failure means "unknown". c.mu is held.
func (c *Checkpoint) loadOrFresh(id uint64) (*ckJob, error) {
	j, err := c.load(id)
	if j == nil {
		j = c.jobs[id]
		if j == nil {
			j = newCkJob(0)
			c.jobs[id] = j
		}
	}
	return j, err
}

// DamagedError says a job's checkpoint entry does not decode. The
// checkpoint then treats the job as unknown: its events are emitted again
// (duplicates at worst, with the same record ids), and the entry is
// rewritten once they are taken.
type DamagedError struct {
	JobID uint64
	Entry []byte
	Err   error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("checkpoint entry of job %d (%s) is damaged (%d bytes: %v); the job is treated as unknown: its events are emitted again, duplicates at worst",
		e.JobID, jobstate.F58(e.JobID), len(e.Entry), e.Err)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// Match is what the checkpoint knows of a job met in the journal.
type Match int

const (
	// Same: the checkpointed incarnation (or nothing known): emit the
	// events it has not taken.
	Same Match = iota
	// Reused: another incarnation of the id is checkpointed. The caller
	// emits a purge record for it (Identity.Old) before the new job's
	// records; the new job is emitted in full.
	Reused
	// NoSubmit: the journal's eventlog has no submit event but the
	// checkpoint knows the job's submit time: it cannot be told whether
	// this is the same job. Whatever the checkpoint does not hold as
	// taken is emitted (all of it if the job was done); the entry forgets
	// its submit time, so this happens once.
	NoSubmit
	// Reborn: the checkpointed incarnation is purged (or its purge record
	// is in flight); this is a new one, emitted in full.
	Reborn
)

// Identity is the result of Identify.
type Identity struct {
	Match   Match
	Done    bool    // Same: every event was taken, skip the job whole
	Adopted bool    // Same: the entry had no submit time and took this one
	Old     float64 // Reused: the checkpointed incarnation's t_submit (0: not known)
}

// Identify tells whether job id, whose eventlog has its submit event at
// tsubmit (0: no submit event), is the job the checkpoint holds, and makes
// the checkpoint follow the job met: a reused id starts a new entry. A
// damaged entry is an error (*DamagedError), and the job is then unknown
// (Same, nothing taken).
func (c *Checkpoint) Identify(id uint64, tsubmit float64) (Identity, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load(id)
	if err != nil {
		fresh, _ := c.loadOrFresh(id)
		fresh.tsubmit = tsubmit
		return Identity{Match: Same}, err
	}
	switch {
	case j.gone || j.goneKept || j.purging:
		if tsubmit == j.tsubmit && (tsubmit != 0 || j.goneKept) {
			// A recording played again (keepGone), or the purge of this
			// very job is still in flight.
			return Identity{Match: Same, Done: j.done}, nil
		}
		if c.keptGoneBefore(id, tsubmit) {
			return Identity{Match: Same, Done: true}, nil
		}
		c.replace(id, j, tsubmit, false)
		return Identity{Match: Reborn}, nil
	case tsubmit == 0:
		if j.tsubmit == 0 {
			return Identity{Match: Same, Done: j.done}, nil
		}
		n := newCkJob(0)
		n.earlier = j.earlier
		if !j.done {
			n.seen, n.inflight = j.seen, j.inflight
		}
		c.jobs[id] = n
		return Identity{Match: NoSubmit}, nil
	case j.empty():
		j.tsubmit = tsubmit
		return Identity{Match: Same}, nil
	case j.tsubmit == 0:
		j.tsubmit = tsubmit
		c.dirty[id] = struct{}{} // rewrite it as version 2
		return Identity{Match: Same, Done: j.done, Adopted: true}, nil
	case j.tsubmit == tsubmit:
		return Identity{Match: Same, Done: j.done}, nil
	}
	if c.keptGoneBefore(id, tsubmit) {
		return Identity{Match: Same, Done: true}, nil
	}
	old := j.tsubmit
	c.replace(id, j, tsubmit, true)
	return Identity{Match: Reused, Old: old}, nil
}

// keptGoneBefore reports whether (id, tsubmit) is an incarnation replaced
// and purged earlier (keepGone: a replay played again). c.mu is held.
func (c *Checkpoint) keptGoneBefore(id uint64, tsubmit float64) bool {
	if !c.keepGone || tsubmit == 0 {
		return false
	}
	if j := c.jobs[id]; j != nil && slices.Contains(j.keptGone, tsubmit) {
		return true
	}
	v, err := c.kv.Get(goneKey(id, tsubmit))
	return err == nil && len(v) > 0
}

// replace starts a new incarnation of id. purge says the caller emits a
// purge record for the old one now; one already in flight is waited for
// as well. c.mu is held.
func (c *Checkpoint) replace(id uint64, old *ckJob, tsubmit float64, purge bool) {
	n := newCkJob(tsubmit)
	n.earlier = old.earlier
	n.keptGone = old.keptGone
	if purge || old.purging {
		n.earlier = append(n.earlier, old.tsubmit)
	}
	if (old.gone || old.goneKept) && c.keepGone && old.tsubmit != 0 {
		n.keptGone = append(n.keptGone, old.tsubmit)
	}
	c.jobs[id] = n
	if old.gone || len(n.keptGone) > 0 {
		c.dirty[id] = struct{}{} // the old one's deletion (or marker) must still be written
	}
}

// StartPurge notes that a purge record of the job's current incarnation
// is being emitted, and returns that incarnation's t_submit. ok is false
// when the job is already purged, or a purge record for it is in flight.
func (c *Checkpoint) StartPurge(id uint64) (tsubmit float64, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.loadOrFresh(id)
	if j.gone || j.goneKept || j.purging {
		return j.tsubmit, false, err
	}
	j.purging = true
	return j.tsubmit, true, err
}

// Seen reports whether the event was emitted before (taken, or in flight
// in this process).
func (c *Checkpoint) Seen(id uint64, k eventKey) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load(id)
	if err != nil {
		return false, err
	}
	if j.done {
		return true, nil
	}
	_, ok := j.seen[k]
	return ok, nil
}

// Emitted notes an event handed to the pipeline.
func (c *Checkpoint) Emitted(id uint64, k eventKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, _ := c.loadOrFresh(id)
	if _, ok := j.seen[k]; !ok {
		j.seen[k] = false
		j.inflight++
	}
}

// Taken notes that every sink has the event durably. tsubmit is the job's
// submit time as the record shows it (0: not known); an event of an
// incarnation the checkpoint no longer holds is ignored. final marks the
// job's last event: once it and everything before it are taken, the job
// is done.
func (c *Checkpoint) Taken(id uint64, tsubmit float64, k eventKey, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[id]
	if j == nil || tsubmit != 0 && j.tsubmit != 0 && tsubmit != j.tsubmit {
		return
	}
	if taken, emitted := j.seen[k]; !emitted || taken {
		return
	}
	j.seen[k] = true
	j.inflight--
	if final {
		j.final = true
	}
	if j.final && j.inflight == 0 {
		j.done = true
	}
	c.dirty[id] = struct{}{}
}

// Forget drops the incarnation of the job submitted at tsubmit (purged,
// or invalidated: it never comes back). The purge record of an earlier
// incarnation lets the newer one's entry be written.
func (c *Checkpoint) Forget(id uint64, tsubmit float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, _ := c.loadOrFresh(id)
	if i := slices.Index(j.earlier, tsubmit); i >= 0 {
		j.earlier = slices.Delete(j.earlier, i, i+1)
		if c.keepGone && tsubmit != 0 {
			j.keptGone = append(j.keptGone, tsubmit)
		}
		c.dirty[id] = struct{}{}
		return
	}
	if tsubmit != 0 && j.tsubmit != 0 && tsubmit != j.tsubmit {
		return // an incarnation no longer held: nothing to forget
	}
	if j.tsubmit == 0 {
		j.tsubmit = tsubmit
	}
	j.gone = true
	j.purging = false
	c.dirty[id] = struct{}{}
}

// Flush writes what changed since the last flush in one transaction, and
// lets go of jobs that need no memory any more.
func (c *Checkpoint) Flush() error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	// written is an entry as it went into the transaction. c.mu is let go
	// during the commit: an entry replaced meanwhile (a new incarnation)
	// or changed again is not the one written and must stay.
	type written struct {
		id      uint64
		j       *ckJob
		kept    int // keptGone markers written
		release bool
	}
	c.mu.Lock()
	puts := make([]core.KVPut, 0, len(c.dirty))
	ids := make([]uint64, 0, len(c.dirty))
	for id := range c.dirty {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	var done []written
	var held []uint64
	for _, id := range ids {
		j := c.jobs[id]
		if j == nil {
			continue
		}
		if len(j.earlier) > 0 {
			held = append(held, id) // wait for the earlier purge records
			continue
		}
		w := written{id: id, j: j, kept: len(j.keptGone)}
		for _, t := range j.keptGone {
			puts = append(puts, core.KVPut{Key: goneKey(id, t), Value: entryHeader('X', t)})
		}
		switch {
		case j.gone && c.keepGone:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: entryHeader('X', j.tsubmit)})
			w.release = j.inflight == 0
		case j.gone:
			puts = append(puts, core.KVPut{Key: jobKey(id)})
			w.release = j.inflight == 0
		case j.done:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: entryHeader('D', j.tsubmit)})
			w.release = !j.purging
		default:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: encodeCheckpoint(j)})
		}
		done = append(done, w)
	}
	clear(c.dirty)
	for _, id := range held {
		c.dirty[id] = struct{}{}
	}
	c.mu.Unlock()
	if err := c.kv.Commit(puts); err != nil {
		// Mark them dirty again: the next flush retries.
		c.mu.Lock()
		for _, w := range done {
			c.dirty[w.id] = struct{}{}
		}
		c.mu.Unlock()
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	c.mu.Lock()
	for _, w := range done {
		if c.jobs[w.id] != w.j {
			continue // replaced while committing
		}
		w.j.keptGone = w.j.keptGone[w.kept:]
		if _, again := c.dirty[w.id]; w.release && !again && w.j.inflight == 0 && !w.j.purging && len(w.j.earlier) == 0 {
			delete(c.jobs, w.id)
		}
	}
	c.mu.Unlock()
	return nil
}

// Settle marks a job done whose clean event was taken (in this process or
// an earlier one) and that has nothing in flight. An inactive job met in a
// backlog whose records all went out before, but whose entry is not done
// (a record it never needed, like a synthetic annotations event, was lost
// in a crash after its clean was taken), is then skipped whole next time.
func (c *Checkpoint) Settle(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.jobs[id]; j != nil && j.final && !j.done && j.inflight == 0 && !j.gone && !j.goneKept {
		j.done = true
		c.dirty[id] = struct{}{}
	}
}

// Release lets go of the in-memory entry of a job that has nothing in
// flight (e.g. an inactive job from the backlog whose events were all
// skipped), keeping memory flat on huge backlogs.
func (c *Checkpoint) Release(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.jobs[id]; j != nil && j.inflight == 0 && !j.purging && len(j.earlier) == 0 {
		if _, dirty := c.dirty[id]; !dirty {
			delete(c.jobs, id)
		}
	}
}

// Jobs calls fn for every job the checkpoint knows (stored or in memory)
// with its incarnation's t_submit, except those purged or being purged.
func (c *Checkpoint) Jobs(fn func(id uint64, tsubmit float64)) error {
	type memJob struct {
		live    bool
		tsubmit float64
	}
	c.mu.Lock()
	mem := map[uint64]memJob{}
	for id, j := range c.jobs {
		mem[id] = memJob{!j.gone && !j.goneKept && !j.purging && !j.empty(), j.tsubmit}
	}
	c.mu.Unlock()
	err := c.kv.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return nil
		}
		id := binary.BigEndian.Uint64(k)
		if m, ok := mem[id]; ok {
			if m.live {
				fn(id, m.tsubmit)
			}
			delete(mem, id)
			return nil
		}
		kind, tsubmit, _ := entryKind(v)
		if kind != 'X' {
			fn(id, tsubmit)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ids := make([]uint64, 0, len(mem))
	for id, m := range mem {
		if m.live {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		fn(id, mem[id].tsubmit)
	}
	return nil
}

// entryVersion2 is the first byte of a version 2 entry.
const entryVersion2 = 0x02

// entryHeader is a version 2 entry without events: version, kind, t_submit.
func entryHeader(kind byte, tsubmit float64) []byte {
	b := make([]byte, 0, 10)
	b = append(b, entryVersion2, kind)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(tsubmit))
}

// entryKind reads the kind and t_submit of an entry without its events (a
// damaged entry reads as a partial one with t_submit not known).
func entryKind(v []byte) (kind byte, tsubmit float64, ok bool) {
	switch {
	case len(v) >= 10 && v[0] == entryVersion2:
		return v[1], math.Float64frombits(binary.BigEndian.Uint64(v[2:10])), true
	case len(v) > 0 && v[0] != entryVersion2:
		return v[0], 0, true
	}
	return 'P', 0, false
}

func encodeCheckpoint(j *ckJob) []byte {
	keys := make([]eventKey, 0, len(j.seen))
	for k, taken := range j.seen {
		if taken {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].ts != keys[b].ts {
			return keys[a].ts < keys[b].ts
		}
		return keys[a].name < keys[b].name
	})
	b := entryHeader('P', j.tsubmit)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k.name)))
		b = append(b, k.name...)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(k.ts))
	}
	return b
}

// maxEventName bounds an event name in a checkpoint entry. Flux's event
// names are short words (RFC 21); a longer length field is damage.
const maxEventName = 1 << 10

// decodeCheckpoint reads a stored entry (version 2, or version 1) into j.
// Every length is checked against what is left of v before it is used, so
// a damaged entry gives an error, never a panic or an allocation larger
// than v.
func decodeCheckpoint(v []byte, j *ckJob) error {
	if len(v) == 0 {
		return nil
	}
	version2 := v[0] == entryVersion2
	off := 1
	if version2 {
		if len(v) < 10 {
			return fmt.Errorf("version 2 entry of %d bytes, want at least 10", len(v))
		}
		off = 10
		j.tsubmit = math.Float64frombits(binary.BigEndian.Uint64(v[2:10]))
		if j.tsubmit < 0 || math.IsNaN(j.tsubmit) || math.IsInf(j.tsubmit, 0) {
			return fmt.Errorf("t_submit %v", j.tsubmit)
		}
	}
	kind := v[off-1]
	if version2 {
		kind = v[1]
	}
	switch kind {
	case 'D', 'X':
		if len(v) != off {
			return fmt.Errorf("%c entry of %d bytes, want %d", kind, len(v), off)
		}
		j.done, j.final, j.goneKept = true, true, kind == 'X'
		return nil
	case 'P':
	default:
		return fmt.Errorf("unknown entry kind 0x%02x", kind)
	}
	for i := 0; off < len(v); i++ {
		n, w := binary.Uvarint(v[off:])
		if w <= 0 {
			return fmt.Errorf("event %d at byte %d: bad name length varint", i, off)
		}
		off += w
		left := len(v) - off
		if n > maxEventName || n+8 > uint64(left) {
			return fmt.Errorf("event %d at byte %d: name of %d bytes and a timestamp do not fit in the %d bytes left", i, off-w, n, left)
		}
		name := string(v[off : off+int(n)])
		off += int(n)
		ts := math.Float64frombits(binary.BigEndian.Uint64(v[off:]))
		off += 8
		j.seen[eventKey{name, ts}] = true
		if name == "clean" {
			j.final = true // the job's last event was taken
		}
		if !version2 && name == "submit" {
			j.tsubmit = ts // a version 1 entry: its submit event tells
		}
	}
	return nil
}
