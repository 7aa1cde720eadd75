package journal

import (
	"encoding/binary"
	"fmt"
	"math"
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
// Stored per job in the source's KV namespace (key: job id, 8 bytes big
// endian):
//   - "D": done. Every event up to and including clean was taken; the
//     whole backlog entry of the job is skipped without reducing it.
//   - "P" + events: the events taken so far (name, timestamp).
//   - "X": purged or invalidated (kept only with keepGone, for replays: a
//     recording can be played again, a Flux instance never sends a purged
//     job again).
//
// An active job is a few hundred bytes; an inactive one 2 bytes until Flux
// purges it, when its entry is deleted. Events emitted but not yet taken
// are tracked in memory only: after a crash they are emitted again.
type Checkpoint struct {
	kv       core.KV
	keepGone bool
	mu       sync.Mutex
	jobs     map[uint64]*ckJob // jobs with events in flight or not yet flushed
	dirty    map[uint64]struct{}
}

type ckJob struct {
	done     bool
	seen     map[eventKey]bool // true: taken; false: in flight
	inflight int
	final    bool // the job's last event (clean) was taken
	gone     bool // purged or invalidated: delete once nothing is in flight
	goneKept bool // stored as "X"
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

// load returns the job's entry, reading it from the KV on first use. c.mu
// is held.
func (c *Checkpoint) load(id uint64) (*ckJob, error) {
	if j, ok := c.jobs[id]; ok {
		return j, nil
	}
	v, err := c.kv.Get(jobKey(id))
	if err != nil {
		return nil, err
	}
	j := &ckJob{seen: map[eventKey]bool{}}
	if err := decodeCheckpoint(v, j); err != nil {
		// Treat the job as unknown from now on (its events are emitted
		// again: duplicates at worst), and say so once.
		c.jobs[id] = &ckJob{seen: map[eventKey]bool{}}
		return nil, &DamagedError{JobID: id, Entry: v, Err: err}
	}
	c.jobs[id] = j
	return j, nil
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

// Done reports whether every event of the job was taken (the backlog
// entry can be skipped whole).
func (c *Checkpoint) Done(id uint64) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j, ok := c.jobs[id]; ok {
		return j.done, nil
	}
	v, err := c.kv.Get(jobKey(id))
	if err != nil {
		return false, err
	}
	return len(v) == 1 && (v[0] == 'D' || v[0] == 'X'), nil
}

// Gone reports whether the job is known to be purged or invalidated.
func (c *Checkpoint) Gone(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load(id)
	return err == nil && (j.gone || j.goneKept)
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
	j, err := c.load(id)
	if err != nil {
		j = &ckJob{seen: map[eventKey]bool{}}
		c.jobs[id] = j
	}
	if _, ok := j.seen[k]; !ok {
		j.seen[k] = false
		j.inflight++
	}
}

// Taken notes that every sink has the event durably. final marks the job's
// last event: once it and everything before it are taken, the job is done.
func (c *Checkpoint) Taken(id uint64, k eventKey, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[id]
	if j == nil || j.seen[k] {
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

// Forget drops the job (purged, or invalidated: it never comes back).
func (c *Checkpoint) Forget(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[id]
	if j == nil {
		j = &ckJob{seen: map[eventKey]bool{}}
		c.jobs[id] = j
	}
	j.gone = true
	c.dirty[id] = struct{}{}
}

// Flush writes what changed since the last flush in one transaction, and
// lets go of jobs that need no memory any more.
func (c *Checkpoint) Flush() error {
	c.mu.Lock()
	puts := make([]core.KVPut, 0, len(c.dirty))
	ids := make([]uint64, 0, len(c.dirty))
	for id := range c.dirty {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	var release []uint64
	for _, id := range ids {
		j := c.jobs[id]
		switch {
		case j == nil:
		case j.gone && c.keepGone:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: []byte{'X'}})
			if j.inflight == 0 {
				release = append(release, id)
			}
		case j.gone:
			puts = append(puts, core.KVPut{Key: jobKey(id)})
			if j.inflight == 0 {
				release = append(release, id)
			}
		case j.done:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: []byte{'D'}})
			release = append(release, id)
		default:
			puts = append(puts, core.KVPut{Key: jobKey(id), Value: encodeCheckpoint(j)})
		}
	}
	clear(c.dirty)
	c.mu.Unlock()
	if err := c.kv.Commit(puts); err != nil {
		// Mark them dirty again: the next flush retries.
		c.mu.Lock()
		for _, id := range ids {
			c.dirty[id] = struct{}{}
		}
		c.mu.Unlock()
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	c.mu.Lock()
	for _, id := range release {
		if j := c.jobs[id]; j != nil && j.inflight == 0 {
			if _, again := c.dirty[id]; !again {
				delete(c.jobs, id)
			}
		}
	}
	c.mu.Unlock()
	return nil
}

// Release lets go of the in-memory entry of a job that has nothing in
// flight (e.g. an inactive job from the backlog whose events were all
// skipped), keeping memory flat on huge backlogs.
func (c *Checkpoint) Release(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.jobs[id]; j != nil && j.inflight == 0 {
		if _, dirty := c.dirty[id]; !dirty {
			delete(c.jobs, id)
		}
	}
}

// Jobs calls fn for every job the checkpoint knows (stored or in memory),
// except those being forgotten.
func (c *Checkpoint) Jobs(fn func(id uint64)) error {
	c.mu.Lock()
	mem := map[uint64]bool{}
	for id, j := range c.jobs {
		mem[id] = !j.gone && !j.goneKept
	}
	c.mu.Unlock()
	err := c.kv.ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) == 1 && v[0] == 'X' {
			return nil
		}
		id := binary.BigEndian.Uint64(k)
		if live, ok := mem[id]; ok {
			if live {
				fn(id)
			}
			delete(mem, id)
			return nil
		}
		fn(id)
		return nil
	})
	if err != nil {
		return err
	}
	ids := make([]uint64, 0, len(mem))
	for id, live := range mem {
		if live {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		fn(id)
	}
	return nil
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
	b := []byte{'P'}
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

// decodeCheckpoint reads a stored entry into j. Every length is checked
// against what is left of v before it is used, so a damaged entry gives an
// error, never a panic or an allocation larger than v.
func decodeCheckpoint(v []byte, j *ckJob) error {
	if len(v) == 0 {
		return nil
	}
	switch v[0] {
	case 'D':
		if len(v) != 1 {
			return fmt.Errorf("done entry of %d bytes, want 1", len(v))
		}
		j.done, j.final = true, true
		return nil
	case 'X':
		if len(v) != 1 {
			return fmt.Errorf("gone entry of %d bytes, want 1", len(v))
		}
		j.done, j.final, j.goneKept = true, true, true
		return nil
	case 'P':
	default:
		return fmt.Errorf("unknown entry kind 0x%02x", v[0])
	}
	off := 1
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
	}
	return nil
}
