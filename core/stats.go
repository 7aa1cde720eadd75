package core

import (
	"sync"
	"sync/atomic"
	"time"
)

// NodeStats counts what passed through a node. Metrics exporters read it.
type NodeStats struct {
	In      atomic.Int64 // records received
	Out     atomic.Int64 // records emitted (sources, transforms) or delivered (sinks)
	Dropped atomic.Int64 // records a transform dropped on purpose
	Errors  atomic.Int64 // records that hit an error
}

// SinkStats adds what only sinks have.
type SinkStats struct {
	NodeStats
	Retries       atomic.Int64 // failed Write attempts that were retried
	DeadLettered  atomic.Int64 // records the destination refused for good
	BufferDropped atomic.Int64 // records given up by when_full: drop_oldest
	ReadBack      atomic.Int64 // records the sink read back from its spool on disk (it had fallen behind)
	InFlight      atomic.Int64 // records of the batches being written or retried

	// Unix nanoseconds, 0 when not so: the first failed attempt of the
	// batch being retried, and the start of the Write in progress (a Write
	// that hangs never fails, yet the sink is stuck).
	failingSince atomic.Int64
	writingSince atomic.Int64
	lastError    atomic.Pointer[string]
}

// StatsSnapshot is a plain copy of the counters of one node.
type StatsSnapshot struct {
	Node, Kind                   string
	In, Out, Dropped, Errors     int64
	Retries, DeadLettered        int64
	BufferDropped, ReadBack      int64
	PendingRecords, PendingBytes int64
	InFlight                     int64
	// OldestPending is when the oldest undelivered record of a sink was
	// taken into its buffer (to about a second); zero when none waits.
	// Records spooled by an earlier run count from this run's start.
	OldestPending time.Time
	FailingSince  time.Time // zero unless the sink's current batch failed and is retried
	WritingSince  time.Time // zero unless a Write is in progress
	LastError     string    // of the sink's latest failed Write while it still fails
}

func unixNanoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// SinkObserver is told of every Write attempt of every sink, on the
// sink's goroutine (metrics histograms); it must be quick.
type SinkObserver interface {
	ObserveWrite(sink string, records int, took time.Duration, err error)
}

// SetSinkObserver installs o (nil removes it); it may be called at any
// time, before or during Run.
func (p *Pipeline) SetSinkObserver(o SinkObserver) {
	if o == nil {
		p.obs.Store(nil)
		return
	}
	p.obs.Store(&o)
}

// SourceState is what a source that holds a connection reports.
type SourceState struct {
	Connected bool
	Detail    string // why not connected (the last error), or what it is doing
}

// KeepsReading is implemented by sources whose peer must never wait for
// fluxstream (flux: the broker would buffer what is not read). A disk
// buffer then never holds them to keep pace with a slower sink (the sink
// reads back from disk instead); only a full spool or a disk that does
// not complete its fsyncs does.
type KeepsReading interface {
	KeepsReading() bool
}

// StateReporter is implemented by sources whose peer can be down (flux,
// kafka): readiness checks ask them.
type StateReporter interface {
	SourceState() SourceState
}

// Pipeline phases, in order.
const (
	PhaseStarting = "starting" // provisioning: nothing flows yet
	PhaseRunning  = "running"
	PhaseStopping = "stopping" // sources are done; sinks drain
	PhaseStopped  = "stopped"
)

// phases and sourceRuns are indexed by the pipeline's and a source
// runtime's state (atomic, written by Run).
var phases = [...]string{PhaseStarting, PhaseRunning, PhaseStopping, PhaseStopped}

const (
	phaseStarting int32 = iota
	phaseRunning
	phaseStopping
	phaseStopped
)

// Source run states.
const (
	SourceRunning  = "running"
	SourceFinished = "finished" // Run returned: a finite source ran out
	SourceFailed   = "failed"
	SourceStopped  = "stopped" // cancelled by shutdown
)

var sourceRuns = [...]string{"", SourceRunning, SourceFinished, SourceFailed, SourceStopped}

const (
	srcNotStarted int32 = iota
	srcRunning
	srcFinished
	srcFailed
	srcStopped
)

// Health is the state of every part of a pipeline, for readiness checks.
type Health struct {
	Phase   string
	Sources []SourceHealth
	Sinks   []SinkHealth
}

// SourceHealth is one source's state.
type SourceHealth struct {
	Node string
	Run  string // "" before Run, else one of Source*
	// Connected is the StateReporter's answer; true for a source without
	// one (nothing to be disconnected from).
	Connected bool
	Detail    string
}

// SinkHealth is one sink's state.
type SinkHealth struct {
	Node         string
	FailingSince time.Time // zero when not failing
	WritingSince time.Time // zero when no Write is in progress
	LastError    string
}

// Health reports the pipeline's phase and every source's and sink's state.
func (p *Pipeline) Health() Health {
	h := Health{Phase: phases[p.phase.Load()]}
	for _, n := range p.g.Sources() {
		rt := p.rt[n]
		sh := SourceHealth{Node: n.Name, Run: sourceRuns[rt.srcRun.Load()], Connected: true}
		if sr, ok := n.Impl.(StateReporter); ok && sh.Run == SourceRunning {
			st := sr.SourceState()
			sh.Connected, sh.Detail = st.Connected, st.Detail
		}
		h.Sources = append(h.Sources, sh)
	}
	for _, n := range p.g.Sinks() {
		st := &p.rt[n].stats
		sh := SinkHealth{Node: n.Name, FailingSince: unixNanoTime(st.failingSince.Load()), WritingSince: unixNanoTime(st.writingSince.Load())}
		if e := st.lastError.Load(); e != nil && !sh.FailingSince.IsZero() {
			sh.LastError = *e
		}
		h.Sinks = append(h.Sinks, sh)
	}
	return h
}

// Node returns the component of the node called name (nil if none), once
// Run has provisioned the nodes (nil before: a component's accessors are
// not safe while it is set up). Metrics ask components for what only
// they know.
func (p *Pipeline) Node(name string) any {
	if p.phase.Load() == phaseStarting {
		return nil
	}
	for _, n := range p.g.Nodes {
		if n.Name == name {
			return n.Impl
		}
	}
	return nil
}

// snapshot adds the runner's view to a sink's stats.
func (s *sinkRunner) snapshot(out *StatsSnapshot) {
	out.PendingRecords, out.PendingBytes = s.buf.Pending()
	st := &s.rt.stats
	out.InFlight = st.InFlight.Load()
	out.FailingSince = unixNanoTime(st.failingSince.Load())
	out.WritingSince = unixNanoTime(st.writingSince.Load())
	if e := st.lastError.Load(); e != nil && !out.FailingSince.IsZero() {
		out.LastError = *e
	}
	acked, next := s.span()
	out.OldestPending = s.ages.oldest(acked, next)
}

// writing notes the start of a Write attempt of n records.
func (s *sinkRunner) writing(n int) time.Time {
	now := time.Now()
	if !s.pipelined {
		s.rt.stats.InFlight.Store(int64(n))
	}
	s.rt.stats.writingSince.Store(now.UnixNano())
	return now
}

// wrote notes the end of a Write attempt.
func (s *sinkRunner) wrote(n int, start time.Time, err error) {
	st := &s.rt.stats
	st.writingSince.Store(0)
	if err != nil {
		msg := err.Error()
		st.lastError.Store(&msg)
	}
	if o := s.p.obs.Load(); o != nil {
		(*o).ObserveWrite(s.rt.node.Name, n, time.Since(start), err)
	}
}

// failing notes that the batch being delivered has failed since t.
func (s *sinkRunner) failing(t time.Time) { s.rt.stats.failingSince.Store(t.UnixNano()) }

// delivered notes the end of a batch's delivery (or the runner's stop).
func (s *sinkRunner) delivered() {
	st := &s.rt.stats
	if !s.pipelined {
		st.InFlight.Store(0)
	}
	st.failingSince.Store(0)
	st.lastError.Store(nil)
}

// notePushed records that n records entered the buffer (n = 0: what an
// earlier run left in it), for the oldest-undelivered age.
func (s *sinkRunner) notePushed(n int) {
	s.memPushed.Add(uint64(n))
	acked, next := s.span()
	s.ages.pushed(acked, next, time.Now())
}

// noteDone records that the batch of t left the buffer.
func (s *sinkRunner) noteDone(t ticket) { s.memDone.Add(uint64(len(t.recs))) }

// span is the buffer's undelivered range of sequence numbers
// [acked, next): the spool's own for a disk buffer; for a memory buffer
// (first in, first out) counted here.
func (s *sinkRunner) span() (acked, next uint64) {
	if db, ok := s.buf.(*diskBuffer); ok {
		return db.span()
	}
	return s.memDone.Load() + uint64(s.rt.stats.BufferDropped.Load()), s.memPushed.Load()
}

// ageMarks maps a buffer's sequence numbers to when they were pushed, at
// most one mark a second, so the age of the oldest undelivered record
// costs the hot path a lock and a clock read per batch, not per record.
type ageMarks struct {
	mu    sync.Mutex
	marks []ageMark // ascending next
}

// ageMark: the seqs from the previous mark's next up to next were pushed
// at or after at, within a second of it.
type ageMark struct {
	next uint64
	at   time.Time
}

func (a *ageMarks) prune(acked uint64) {
	i := 0
	for i < len(a.marks) && a.marks[i].next <= acked {
		i++
	}
	a.marks = a.marks[i:]
}

func (a *ageMarks) pushed(acked, next uint64, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune(acked)
	if next <= acked {
		return
	}
	if n := len(a.marks); n > 0 {
		last := &a.marks[n-1]
		if next <= last.next {
			return
		}
		if now.Sub(last.at) < time.Second {
			last.next = next
			return
		}
	}
	a.marks = append(a.marks, ageMark{next: next, at: now})
}

// oldest is when the record at seq acked was pushed; zero if none waits.
func (a *ageMarks) oldest(acked, next uint64) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune(acked)
	if acked >= next || len(a.marks) == 0 {
		return time.Time{}
	}
	return a.marks[0].at
}
