// Package journal turns the responses of Flux's job-manager.events-journal
// stream into fluxstream records: one record per event with the job's
// snapshot at that event, purge records, and invalid records for input
// that does not decode. The Flux source and the replay source both use it,
// so they yield exactly the same records for the same journal.
package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
	"github.com/fluxstream/fluxstream/sources/flux/users"
)

// Include policies for raw job data on records.
const (
	IncludeNever    = "never"
	IncludeOnChange = "on-change" // on the first record of a job, and when it changed
	IncludeAlways   = "always"
)

// Include selects which raw job data records carry.
type Include struct {
	Jobspec  string `yaml:"jobspec"`  // never | on-change | always
	R        string `yaml:"R"`        // never | on-change | always
	Eventlog string `yaml:"eventlog"` // never | always (the events so far)
}

// DefaultInclude attaches jobspec and R when they change, and no eventlog.
func DefaultInclude() Include {
	return Include{Jobspec: IncludeOnChange, R: IncludeOnChange, Eventlog: IncludeNever}
}

// Validate checks the policies.
func (in Include) Validate() error {
	for key, v := range map[string]string{"include.jobspec": in.Jobspec, "include.R": in.R} {
		switch v {
		case IncludeNever, IncludeOnChange, IncludeAlways:
		default:
			return core.Fieldf(key, "unknown policy %q (never, on-change, always)", v)
		}
	}
	switch in.Eventlog {
	case IncludeNever, IncludeAlways:
	default:
		return core.Fieldf("include.eventlog", "unknown policy %q (never, always)", in.Eventlog)
	}
	return nil
}

// Options configure a Consumer.
type Options struct {
	Source  string // node name, stamped on records
	Cluster string
	Include Include
	Users   *users.Resolver // nil: no user names
	Logger  *slog.Logger
	Now     func() time.Time
	// FlushInterval is how often the checkpoint is written (0: 50ms).
	FlushInterval time.Duration
	// JournalClock dates purge records with the newest event time seen
	// instead of the wall clock (replays).
	JournalClock bool
	// KeepGone remembers purged and invalidated jobs, so that replaying a
	// recording again emits nothing twice. A Flux instance never sends a
	// purged job again, so the flux source lets them go.
	KeepGone bool
	// SummaryPerStream leaves the summary line out at the end of each
	// backlog: the caller logs one per stream (LogSummary), as the replay
	// source does at the end of each file.
	SummaryPerStream bool
}

// Counts are what a stream, or its backlog, did.
type Counts struct {
	Jobs int // jobs read from a backlog (one per backlog response)
	// Events is the number of event records emitted (Flux events).
	Events int
	// Skipped is the number of events not emitted because the checkpoint
	// holds them: delivered by an earlier run (or earlier in this one,
	// maybe still in flight), the events of done jobs included.
	Skipped int
	// DoneJobs is the number of backlog jobs skipped whole: every event
	// of theirs was delivered before.
	DoneJobs    int
	Purges      int // purge records emitted
	Invalid     int // invalid records emitted
	Annotations int // annotations records from job-list's answer (Annotate)
}

func (n *Counts) add(d Counts) {
	n.Jobs += d.Jobs
	n.Events += d.Events
	n.Skipped += d.Skipped
	n.DoneJobs += d.DoneJobs
	n.Purges += d.Purges
	n.Invalid += d.Invalid
	n.Annotations += d.Annotations
}

// Stats is what a consumer did, for logs, metrics and the CLI.
type Stats struct {
	Streams   int  // streams started
	InBacklog bool // the latest stream is still in its backlog
	// Backlog is the latest stream's backlog (complete once InBacklog is
	// false); Stream the latest stream so far, backlog and live; Total
	// every stream since the consumer was made.
	Backlog, Stream, Total Counts
	// Checkpoint names where the checkpoint is kept ("DATA_DIR/state.db
	// bucket node:NAME").
	Checkpoint string
	// Newest is the newest event timestamp taken in (unix seconds; 0
	// before any): now minus it is the journal lag.
	Newest float64
}

// StatsReporter is what a source built on the consumer offers: the flux
// and replay sources implement it (the CLI asserts it on a core.Source).
type StatsReporter interface {
	Stats() Stats
}

// Consumer reduces one journal stream at a time. Its methods are called
// from one goroutine (the source's), except Taken, which the pipeline
// calls when records are acknowledged.
type Consumer struct {
	opts Options
	ck   *Checkpoint
	jobs map[uint64]*job // active jobs
	// lim passes one line per kind of repeated trouble every
	// logutil.LogEvery (a full disk fails every checkpoint write, a
	// failing store every lookup), with a count of those held back.
	lim *logutil.Limiter

	full      bool
	inBacklog bool
	backlog   map[uint64]struct{} // jobs seen in the current backlog
	responses int                 // in the current stream, for messages
	noSubmit  int                 // NoSubmit matches in the current stream
	lastTS    float64             // newest event timestamp seen

	statsMu sync.Mutex
	stats   Stats

	stopFlush chan struct{}
	flushDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type job struct {
	id          uint64
	tsubmit     float64 // the submit event's timestamp: with id, the job's identity (0: not seen)
	state       *jobstate.State
	eventlog    []core.Event
	sentJobspec bool // on-change: the current jobspec is on some record
	sentR       bool
	lastTS      float64 // the newest event's timestamp
	// fromBacklog: read from this stream's backlog, and neither a live
	// annotations or memo event nor job-list's annotations (Annotate)
	// came since. Annotations are live-only, so such a job lacks them.
	fromBacklog bool
	// sentWithout: records of the job went out while fromBacklog, i.e.
	// without the annotations job-list holds.
	sentWithout bool
}

// NewConsumer returns a consumer whose checkpoint lives in kv.
func NewConsumer(opts Options, kv core.KV) *Consumer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Include == (Include{}) {
		opts.Include = DefaultInclude()
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 50 * time.Millisecond
	}
	c := &Consumer{opts: opts, ck: NewCheckpoint(kv, opts.KeepGone), jobs: map[uint64]*job{},
		lim:       logutil.NewLimiter(opts.Logger, logutil.LogEvery, opts.Now),
		stopFlush: make(chan struct{}), flushDone: make(chan struct{})}
	go c.flushLoop()
	return c
}

func (c *Consumer) flushLoop() {
	defer close(c.flushDone)
	t := time.NewTicker(c.opts.FlushInterval)
	defer t.Stop()
	failures := 0 // failed writes since the last good one
	for {
		select {
		case <-c.stopFlush:
			return
		case <-t.C:
			if err := c.ck.Flush(); err != nil {
				failures++
				c.lim.Log(slog.LevelError, "checkpoint-write", "checkpoint write failed; will retry", "store", c.ck.store(), "error", err)
				continue
			}
			if failures > 0 {
				c.opts.Logger.Info("checkpoint written again", "store", c.ck.store(), "failed_writes", failures)
				failures = 0
			}
		}
	}
}

// Close stops the periodic checkpoint writes and writes it a last time.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.stopFlush)
		<-c.flushDone
		c.closeErr = c.ck.Flush()
		c.lim.Flush()
	})
	return c.closeErr
}

// Checkpoint exposes the consumer's checkpoint (to flush it).
func (c *Consumer) Checkpoint() *Checkpoint { return c.ck }

// StartStream begins a new journal stream. full says it was requested with
// full:true: its backlog then lists every job Flux still has, so jobs we
// know of that are missing from it were purged meanwhile.
func (c *Consumer) StartStream(full bool) {
	c.full = full
	c.inBacklog = true
	for _, j := range c.jobs {
		j.fromBacklog = false // only jobs read again in this backlog take job-list's
	}
	c.backlog = map[uint64]struct{}{}
	c.responses = 0
	c.noSubmit = 0
	c.statsMu.Lock()
	c.stats.Streams++
	c.stats.InBacklog = true
	c.stats.Backlog, c.stats.Stream = Counts{}, Counts{}
	c.statsMu.Unlock()
}

// tally adds d to the stream's counts (and the backlog's, while in it).
func (c *Consumer) tally(d Counts) {
	c.statsMu.Lock()
	if c.inBacklog {
		c.stats.Backlog.add(d)
	}
	c.stats.Stream.add(d)
	c.stats.Total.add(d)
	c.stats.Newest = c.lastTS
	c.statsMu.Unlock()
}

// Stats reports what the consumer did. Safe to call from any goroutine.
func (c *Consumer) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	st := c.stats
	st.Checkpoint = c.ck.store()
	return st
}

// LogSummary logs one INFO line msg with n's counts and where the
// checkpoint is, and says why when no record at all went out because the
// checkpoint had every event: "N events already delivered (checkpoint in
// WHERE)".
func (c *Consumer) LogSummary(msg string, n Counts, args ...any) {
	store := c.ck.store()
	args = append(args[:len(args):len(args)], "jobs", n.Jobs, "events", n.Events, "already_delivered", n.Skipped,
		"done_jobs", n.DoneJobs, "purges", n.Purges)
	if n.Invalid > 0 {
		args = append(args, "invalid", n.Invalid)
	}
	args = append(args, "checkpoint", store)
	if n.Events == 0 && n.Purges == 0 && n.Invalid == 0 && n.Annotations == 0 && n.Skipped > 0 {
		args = append(args, "why", fmt.Sprintf("nothing new to send: %d events already delivered (checkpoint in %s); "+
			"to send them again, run once with --fresh (the old checkpoint is moved aside) or give the config a data_dir of its own", n.Skipped, store))
	}
	c.opts.Logger.Info(msg, args...)
}

// InBacklog reports whether the stream is still before its sentinel.
func (c *Consumer) InBacklog() bool { return c.inBacklog }

// Response handles one response payload (without NUL) and returns the
// records it yields. where names the input for error messages; "" uses
// the response number in the stream.
func (c *Consumer) Response(payload []byte, where string) []*core.Record {
	c.responses++
	return c.response(payload, place{name: where, n: c.responses})
}

// place names where a response came from, formatted only when a message
// or an invalid record needs it (building it for every line cost ~6% of
// a replay).
type place struct {
	name string // given by the caller
	file string // else file:n
	n    int    // else journal response n
}

func (p place) String() string {
	switch {
	case p.name != "":
		return p.name
	case p.file != "":
		return p.file + ":" + strconv.Itoa(p.n)
	}
	return "journal response " + strconv.Itoa(p.n)
}

// MarshalText makes slog print the place, not its fields.
func (p place) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// ParsedAt is Response for line line of file, already parsed with
// jobstate.ParseResponse (resp, err): a reader can parse ahead on another
// goroutine while the consumer, which is not safe for concurrent use,
// applies responses in order. The place's name is only built if a
// message needs it.
func (c *Consumer) ParsedAt(payload []byte, resp jobstate.Response, err error, file string, line int) []*core.Record {
	c.responses++
	return c.parsed(payload, resp, err, place{file: file, n: line})
}

func (c *Consumer) response(payload []byte, where place) []*core.Record {
	resp, err := jobstate.ParseResponse(payload)
	return c.parsed(payload, resp, err, where)
}

func (c *Consumer) parsed(payload []byte, resp jobstate.Response, err error, where place) []*core.Record {
	if err != nil {
		c.lim.Log(slog.LevelError, "invalid-response", "journal response does not decode; passed on as an invalid record", "where", where, "error", err)
		c.tally(Counts{Invalid: 1})
		return []*core.Record{c.invalid(where, err, payload)}
	}
	if resp.IsSentinel() {
		return c.endOfBacklog()
	}
	id := uint64(resp.ID)
	if c.inBacklog {
		c.backlog[id] = struct{}{}
		return c.backlogJob(id, resp, where)
	}
	return c.liveEvents(id, resp, where)
}

// backlogJob handles a job's whole eventlog from the backlog: rebuild its
// state from scratch and emit the events not emitted before. A job whose
// id the checkpoint holds with another submit time is a new job (the id
// was reused by a restarted instance): the old one gets its purge record
// first, the new one is emitted in full.
func (c *Consumer) backlogJob(id uint64, resp jobstate.Response, where place) []*core.Record {
	tsubmit := submitTime(resp.Events)
	recs, done := c.identify(id, tsubmit, where)
	if done {
		c.tally(Counts{Jobs: 1, DoneJobs: 1, Skipped: len(resp.Events)})
		delete(c.jobs, id)
		c.ck.Release(id)
		return recs
	}
	c.tally(Counts{Jobs: 1})
	j := &job{id: id, tsubmit: tsubmit, state: jobstate.New(id), fromBacklog: true}
	c.jobs[id] = j
	recs = append(recs, c.apply(j, resp, where)...)
	if c.isInactive(j) {
		delete(c.jobs, id)
		c.ck.Settle(id)
		c.ck.Release(id)
	}
	return recs
}

// liveEvents handles events of one job after the backlog. A submit event
// for an id whose active or checkpointed job has another submit time is a
// new job, as in a backlog.
func (c *Consumer) liveEvents(id uint64, resp jobstate.Response, where place) []*core.Record {
	j := c.jobs[id]
	var recs []*core.Record
	if tsubmit := submitTime(resp.Events); tsubmit != 0 && (j == nil || j.tsubmit != tsubmit) {
		recs, _ = c.identify(id, tsubmit, where)
		if j != nil && j.tsubmit != 0 {
			j = nil // the active job of that id is another incarnation
		}
		if j != nil {
			j.tsubmit = tsubmit
		}
	}
	if j == nil {
		j = &job{id: id, tsubmit: submitTime(resp.Events), state: jobstate.New(id)}
		c.jobs[id] = j
	}
	if applied := c.apply(j, resp, where); recs == nil {
		recs = applied // the usual case: no copy
	} else {
		recs = append(recs, applied...)
	}
	for _, ev := range resp.Events {
		if ev.Name == "annotations" || ev.Name == "memo" {
			j.fromBacklog = false // newer than what job-list will say, or the same
		}
	}
	if c.isInactive(j) {
		delete(c.jobs, id)
	}
	return recs
}

// submitTime is the timestamp of the first submit event, 0 if none.
func submitTime(evs []jobstate.Event) float64 {
	for _, ev := range evs {
		if ev.Name == "submit" {
			return ev.Timestamp
		}
	}
	return 0
}

// identify matches job id, submitted at tsubmit (0: no submit event), with
// the checkpoint. It returns the purge record of an earlier incarnation
// the job replaces, and whether the job is done (skip it whole).
func (c *Consumer) identify(id uint64, tsubmit float64, where place) ([]*core.Record, bool) {
	m, err := c.ck.Identify(id, tsubmit)
	if err != nil {
		c.checkpointError(id, err)
		return nil, false
	}
	switch m.Match {
	case Reused:
		if tsubmit < m.Old {
			c.opts.Logger.Warn("job id met again with a submit time earlier than the checkpointed job's (the clock stepped back, or a recording was replayed again): taken as a new job, delivered in full; the checkpointed one gets a purge record",
				"where", where, "job", id, "jobid", jobstate.F58(id), "t_submit", tsubmit, "checkpointed_t_submit", m.Old)
		} else {
			c.opts.Logger.Info("job id reused by a restarted instance: a new job, delivered in full; the old one gets a purge record",
				"where", where, "job", id, "jobid", jobstate.F58(id), "t_submit", tsubmit, "old_t_submit", m.Old)
		}
		return []*core.Record{c.purgeRecord(id, m.Old, "missing-from-backlog")}, false
	case NoSubmit:
		c.noSubmit++
		if c.noSubmit <= maxNoSubmitLogs {
			c.opts.Logger.Warn("journal eventlog without a submit event for a job the checkpoint knows with its submit time: cannot tell whether it is the same job, so what the checkpoint does not hold as taken is delivered (all of it if the job was done; duplicates at worst)",
				"where", where, "job", id, "jobid", jobstate.F58(id))
		}
	}
	return nil, m.Done
}

// maxNoSubmitLogs bounds the NoSubmit warnings per stream (an allow filter
// without submit gives one per job once); the rest are counted.
const maxNoSubmitLogs = 10

// checkpointError logs a failed checkpoint lookup of job id. Either way
// the job's events are emitted (again): duplicates at worst, never a loss,
// and never a stop: a damaged entry must not crash-loop the daemon.
func (c *Consumer) checkpointError(id uint64, err error) {
	var damaged *DamagedError
	if errors.As(err, &damaged) {
		c.lim.Log(slog.LevelError, "checkpoint-damaged", "damaged checkpoint entry: the job is treated as unknown and its events are emitted again (duplicates at worst, with the same record ids); nothing to do unless this repeats for many jobs, then check the disk under data_dir",
			"store", c.ck.store(), "job", id, "jobid", jobstate.F58(id), "error", err)
		return
	}
	c.lim.Log(slog.LevelError, "checkpoint-lookup", "checkpoint lookup failed; emitting the job's events (duplicates at worst)",
		"store", c.ck.store(), "job", id, "jobid", jobstate.F58(id), "error", err)
}

func (c *Consumer) isInactive(j *job) bool {
	s := j.state.Snapshot()
	return s.State == "INACTIVE" || j.state.Invalidated()
}

// apply feeds a response's events to the job's state, emitting a record for
// each event not emitted before. The response's jobspec is known from its
// first event on, its R from the alloc event on (a backlog carries both up
// front, with the whole eventlog; snapshots before alloc must not show R).
func (c *Consumer) apply(j *job, resp jobstate.Response, where place) []*core.Record {
	var recs []*core.Record
	skipped := 0
	defer func() { c.tally(Counts{Events: len(recs), Skipped: skipped}) }()
	if len(resp.Jobspec) > 0 {
		if err := j.state.SetJobspec(resp.Jobspec); err != nil {
			c.lim.Log(slog.LevelWarn, "bad-jobspec", "bad jobspec in journal", "where", where, "job", j.id, "error", err)
		}
		j.sentJobspec = false
	}
	rPending := len(resp.R) > 0
	setR := func() {
		if err := j.state.SetR(resp.R); err != nil {
			c.lim.Log(slog.LevelWarn, "bad-R", "bad R in journal", "where", where, "job", j.id, "error", err)
		}
		j.sentR = false
		rPending = false
	}
	hasAlloc := false
	for _, ev := range resp.Events {
		if ev.Name == "alloc" {
			hasAlloc = true
		}
	}
	if rPending && !hasAlloc {
		setR() // R without alloc in the same response: an update, known now
	}
	for i, ev := range resp.Events {
		if rPending && ev.Name == "alloc" {
			setR()
		}
		c.lastTS = max(c.lastTS, ev.Timestamp)
		j.lastTS = max(j.lastTS, ev.Timestamp)
		if err := j.state.Apply(ev); err != nil {
			c.lim.Log(slog.LevelWarn, "event-context", "journal event context does not decode; event kept, job state may lack it",
				"where", where, "job", j.id, "event", ev.Name, "index", i, "error", err)
		}
		// An update changed the raw object: on-change sends it again,
		// starting with the update's own record.
		switch ev.Name {
		case "jobspec-update":
			j.sentJobspec = false
		case "resource-update":
			j.sentR = false
		}
		cev := core.Event{Timestamp: ev.Timestamp, Name: ev.Name, Context: ev.Context}
		if c.opts.Include.Eventlog == IncludeAlways {
			j.eventlog = append(j.eventlog, cev)
		}
		key := eventKey{ev.Name, ev.Timestamp}
		seen, err := c.ck.Seen(j.id, key)
		if err != nil {
			c.checkpointError(j.id, err)
		}
		if seen {
			skipped++
			continue
		}
		c.ck.Emitted(j.id, key)
		recs = append(recs, c.eventRecord(j, cev))
		if j.fromBacklog {
			j.sentWithout = true
		}
	}
	return recs
}

// Annotate takes the annotations job-list holds for job id (the
// "annotations" attribute of job-list.list, nil when it has none; the
// flux source asks once after each backlog). Annotations events are
// live-only, so a job read from a backlog lacks them (the scheduler's
// resource_summary, t_estimate; volatile memos).
//
// Only a job read from this stream's backlog, still active, with no live
// annotations or memo event since (those are as new as job-list's answer,
// or newer) takes them, once per backlog: they replace its annotations as
// an annotations event would (job-list's journal_annotations_event;
// job-list merges memos into its annotations, so they are in the answer).
// If records of the job went out without them (from this backlog, or live
// since) and they changed the job, Annotate returns one record, a
// synthetic annotations event dated now (when job-list answered), strictly
// after the job's newest event, with context {"annotations": ...}, id
// JOBID:annotations:T. It is not a Flux event: not in the job's eventlog,
// and no backlog ever has it. A job whose backlog records all went out
// before gets the annotations on its state only: its next record carries
// them.
//
// The record goes through the checkpoint like an event. It never keeps a
// job from becoming done: done needs the clean event taken and nothing in
// flight; a record lost in a crash is not emitted again (the backlog does
// not have it), and the job's entry still becomes done on a later backlog
// (Settle). A later stream emits another one (a new T, a new record id)
// only if its backlog emits records of the job again.
func (c *Consumer) Annotate(id uint64, annotations json.RawMessage) []*core.Record {
	j := c.jobs[id]
	if c.inBacklog || j == nil || !j.fromBacklog || c.isInactive(j) {
		return nil // in a backlog: an answer asked in an earlier stream
	}
	j.fromBacklog = false
	if annotations == nil {
		annotations = json.RawMessage("null")
	}
	ctx, err := json.Marshal(map[string]json.RawMessage{"annotations": annotations})
	if err != nil {
		c.lim.Log(slog.LevelWarn, "job-list-annotations", "job-list annotations are not JSON; skipped", "job", id, "jobid", jobstate.F58(id), "error", err)
		return nil
	}
	ts := float64(c.opts.Now().UnixMicro()) / 1e6
	if ts <= j.lastTS {
		ts = math.Nextafter(j.lastTS, math.Inf(1))
	}
	before := j.state.Snapshot()
	if err := j.state.Apply(jobstate.Event{Timestamp: ts, Name: "annotations", Context: ctx}); err != nil {
		c.lim.Log(slog.LevelWarn, "job-list-annotations", "job-list annotations do not apply; skipped", "job", id, "jobid", jobstate.F58(id), "error", err)
		return nil
	}
	after := j.state.Snapshot()
	if !j.sentWithout || bytes.Equal(before.Annotations, after.Annotations) && before.URI == after.URI {
		return nil
	}
	key := eventKey{"annotations", ts}
	for {
		// A live annotations event at that very instant: the next one.
		seen, err := c.ck.Seen(j.id, key)
		if err != nil {
			c.checkpointError(j.id, err)
		}
		if !seen {
			break
		}
		key.ts = math.Nextafter(key.ts, math.Inf(1))
	}
	j.lastTS = key.ts
	c.ck.Emitted(j.id, key)
	c.tally(Counts{Annotations: 1})
	return []*core.Record{c.eventRecord(j, core.Event{Timestamp: key.ts, Name: "annotations", Context: ctx})}
}

func (c *Consumer) eventRecord(j *job, ev core.Event) *core.Record {
	// The record, its event and its snapshot in one allocation: one per
	// event instead of three.
	blk := &struct {
		rec  core.Record
		ev   core.Event
		snap core.Job
	}{ev: ev, snap: j.state.Snapshot()}
	snap := &blk.snap
	if c.opts.Users != nil {
		snap.Username = c.opts.Users.Name(snap.UserID)
	}
	r := &blk.rec
	r.Kind = core.KindEvent
	r.ID = core.EventID(j.id, ev.Name, ev.Timestamp)
	r.Cluster, r.Source = c.opts.Cluster, c.opts.Source
	r.Event, r.Job = &blk.ev, snap
	r.Jobspec = include(c.opts.Include.Jobspec, &j.sentJobspec, j.state.Jobspec())
	r.R = include(c.opts.Include.R, &j.sentR, j.state.R())
	if c.opts.Include.Eventlog == IncludeAlways {
		r.Eventlog = j.eventlog[:len(j.eventlog):len(j.eventlog)]
	}
	return r
}

// include returns raw data for a record under policy; sent tracks, for
// on-change, whether the current value already went out.
func include(policy string, sent *bool, raw json.RawMessage) json.RawMessage {
	switch {
	case policy == IncludeAlways, policy == IncludeOnChange && !*sent:
		*sent = raw != nil
		return raw
	}
	return nil
}

// endOfBacklog ends the backlog at its sentinel: purge records for the
// jobs it lacks, and a summary line (how many events went out, how many
// the checkpoint already had), so that a run that sends nothing says why.
func (c *Consumer) endOfBacklog() []*core.Record {
	recs := c.purgeMissing()
	c.inBacklog = false
	c.statsMu.Lock()
	c.stats.InBacklog = false
	backlog := c.stats.Backlog
	c.statsMu.Unlock()
	if !c.opts.SummaryPerStream {
		c.LogSummary("journal backlog read", backlog)
	}
	return recs
}

// purgeMissing: with full:true, every job Flux still has was in the
// backlog; jobs we knew that were not have been purged while we were not
// listening.
func (c *Consumer) purgeMissing() []*core.Record {
	if !c.full {
		c.backlog = nil
		return nil
	}
	var recs []*core.Record
	if c.noSubmit > maxNoSubmitLogs {
		c.opts.Logger.Warn("more backlog jobs had no submit event while the checkpoint knew their submit time; delivered as well",
			"jobs", c.noSubmit, "logged", maxNoSubmitLogs)
	}
	var missing []uint64
	err := c.ck.Jobs(func(id uint64, _ float64) {
		if _, ok := c.backlog[id]; !ok {
			missing = append(missing, id)
		}
	})
	if err != nil {
		c.lim.Log(slog.LevelError, "checkpoint-scan", "checkpoint scan failed; purged jobs are not detected this time", "error", err)
	}
	for id := range c.jobs {
		if _, ok := c.backlog[id]; !ok {
			delete(c.jobs, id)
		}
	}
	for _, id := range missing {
		tsubmit, ok, err := c.ck.StartPurge(id)
		if err != nil {
			c.checkpointError(id, err)
		}
		if ok {
			recs = append(recs, c.purgeRecord(id, tsubmit, "missing-from-backlog"))
		}
	}
	c.backlog = nil
	return recs
}

// Purge handles the payload of a job-purge-inactive event.
func (c *Consumer) Purge(payload []byte, where string) []*core.Record {
	var ev struct {
		Jobs []json.Number `json:"jobs"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil || ev.Jobs == nil {
		if err == nil {
			err = fmt.Errorf(`no "jobs" array`)
		}
		c.tally(Counts{Invalid: 1})
		err = fmt.Errorf("job-purge-inactive event: %w", err)
		c.lim.Log(slog.LevelError, "invalid-purge", "purge event does not decode; passed on as an invalid record", "where", where, "error", err)
		return []*core.Record{c.invalid(place{name: where}, err, payload)}
	}
	recs := make([]*core.Record, 0, len(ev.Jobs))
	for _, n := range ev.Jobs {
		id, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil {
			c.tally(Counts{Invalid: 1})
			recs = append(recs, c.invalid(place{name: where}, fmt.Errorf("job-purge-inactive event: bad job id %s", n), payload))
			continue
		}
		delete(c.jobs, id)
		tsubmit, ok, err := c.ck.StartPurge(id)
		if err != nil {
			c.checkpointError(id, err)
		}
		if !ok {
			continue // a replayed recording: this purge was delivered before
		}
		recs = append(recs, c.purgeRecord(id, tsubmit, "purge-event"))
	}
	return recs
}

// purgeRecord says the job (id, tsubmit) left Flux. It carries the
// incarnation's submit time (purge.t_submit, 0 and left out when not
// known) and its id names the incarnation, JOBID:purge:T_SUBMIT
// (JOBID:purge), so that the purge of a job whose id was reused later
// stays apart from the purge of the new one.
func (c *Consumer) purgeRecord(id uint64, tsubmit float64, reason string) *core.Record {
	c.tally(Counts{Purges: 1})
	return &core.Record{
		Kind:    core.KindPurge,
		ID:      PurgeID(id, tsubmit),
		Cluster: c.opts.Cluster,
		Source:  c.opts.Source,
		Purge:   &core.Purge{ID: id, JobID: jobstate.F58(id), Reason: reason, Time: c.now(), TSubmit: tsubmit},
	}
}

// PurgeID is the record id of the purge of job id submitted at tsubmit:
// JOBID:purge:T_SUBMIT, or JOBID:purge when tsubmit is 0 (not known).
func PurgeID(id uint64, tsubmit float64) string {
	b := strconv.AppendUint(make([]byte, 0, 40), id, 10)
	b = append(b, ":purge"...)
	if tsubmit != 0 {
		b = append(b, ':')
		b = strconv.AppendFloat(b, tsubmit, 'f', -1, 64)
	}
	return string(b)
}

// now is the wall clock, or for replays the newest event time seen, so a
// replay yields the same records every time.
func (c *Consumer) now() float64 {
	if c.opts.JournalClock && c.lastTS > 0 {
		return c.lastTS
	}
	return float64(c.opts.Now().UnixNano()) / 1e9
}

func (c *Consumer) invalid(where place, err error, raw []byte) *core.Record {
	sum := sha256.Sum256(raw)
	return &core.Record{
		Kind:    core.KindInvalid,
		ID:      "invalid:" + hex.EncodeToString(sum[:12]),
		Cluster: c.opts.Cluster,
		Source:  c.opts.Source,
		Invalid: &core.Invalid{Error: err.Error(), Where: where.String(), Raw: string(raw)},
	}
}

// Taken is called when the pipeline acknowledges records: every sink has
// them durably. It updates the checkpoint (flushed by Flush).
func (c *Consumer) Taken(recs []*core.Record) {
	for _, r := range recs {
		switch r.Kind {
		case core.KindEvent:
			final := r.Event.Name == "clean"
			c.ck.Taken(r.Job.ID, r.Job.TSubmit, eventKey{r.Event.Name, r.Event.Timestamp}, final)
			if r.Event.Name == "invalidate" {
				c.ck.Forget(r.Job.ID, r.Job.TSubmit)
			}
		case core.KindPurge:
			// Taken sees the very records this consumer built (the
			// pipeline acknowledges the source's own batch), so the
			// submit time is on the record; 0 when it was not known.
			c.ck.Forget(r.Purge.ID, r.Purge.TSubmit)
		}
	}
}

// Stage marks recs taken and commits the checkpoint before it returns:
// an exactly-once sink calls it inside its transaction, whose store is
// the checkpoint's KV (core.CheckpointStager).
func (c *Consumer) Stage(recs []*core.Record) error {
	c.Taken(recs)
	return c.ck.Flush()
}

// ActiveJobs is the number of jobs held in memory.
func (c *Consumer) ActiveJobs() int { return len(c.jobs) }
