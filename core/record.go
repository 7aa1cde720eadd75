package core

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Kind says what a record stands for.
type Kind string

const (
	// KindEvent is one job event, with the job's snapshot at that event.
	KindEvent Kind = "event"
	// KindPurge says Flux purged an inactive job: it is gone from Flux.
	KindPurge Kind = "purge"
	// KindInvalid carries input the source could not decode, so that it
	// reaches the sinks (and a human) instead of vanishing.
	KindInvalid Kind = "invalid"
)

// Event is one entry of a job eventlog (RFC 18).
type Event struct {
	Timestamp float64         `json:"timestamp"`
	Name      string          `json:"name"`
	Context   json.RawMessage `json:"context,omitempty"`
}

// Invalid describes undecodable input (Kind == KindInvalid).
type Invalid struct {
	Error string `json:"error"`
	Where string `json:"where,omitempty"` // e.g. "journal response 12"
	Raw   string `json:"raw,omitempty"`   // the input as received
}

// Purge describes a purge record (Kind == KindPurge): Flux forgot an
// inactive job. It carries the job's identity only.
type Purge struct {
	ID    uint64 `json:"id"`    // job id
	JobID string `json:"jobid"` // f58 form
	// Reason is "purge-event" (Flux published job-purge-inactive) or
	// "missing-from-backlog" (the job left Flux while we were away).
	Reason string  `json:"reason"`
	Time   float64 `json:"time,omitempty"` // when it was learned (unix seconds)
	// TSubmit is the purged job's submit time: with ID, its identity
	// (Flux reuses ids after a restart without its KVS). 0 if unknown.
	TSubmit float64 `json:"t_submit,omitempty"`
}

// Encoded is a record already turned into bytes by an encoder transform
// (e.g. avro). Sinks that ship bytes send these instead of the JSON form.
type Encoded struct {
	Format   string            // e.g. "avro-confluent", "avro-single-object"
	Value    []byte            // what goes on the wire
	SchemaID int               // registry id, 0 if none
	Headers  map[string]string // extra headers the encoder wants shipped
	// RecordAt is where in Value the record's own Avro binary (the
	// schemas/avrorec schema, as AppendAvro writes it) starts, after the
	// framing: 5 for Confluent, 10 for single-object. 0: Value is not the
	// record's own encoding. A disk spool then stores the record once.
	RecordAt int
}

// Record is what flows through the DAG: one job event plus the job snapshot
// at that event and metadata. Its JSON form (MarshalJSON) is a documented
// contract (schemas/record.md). A record is immutable once emitted: a
// transform that changes one works on a Clone.
type Record struct {
	Kind    Kind   `json:"kind"`
	ID      string `json:"id"`                // idempotency key, stable across restarts
	Cluster string `json:"cluster,omitempty"` // name of the Flux instance
	Source  string `json:"source,omitempty"`  // source node that produced it
	Event   *Event `json:"event,omitempty"`
	Job     *Job   `json:"job,omitempty"`
	// Raw job data, present according to the source's "include" settings.
	Jobspec  json.RawMessage `json:"jobspec,omitempty"`
	R        json.RawMessage `json:"R,omitempty"`
	Eventlog []Event         `json:"eventlog,omitempty"`
	Purge    *Purge          `json:"purge,omitempty"`
	Invalid  *Invalid        `json:"invalid,omitempty"`

	// Encoded is set by encoder transforms; it is not part of the JSON form.
	Encoded *Encoded `json:"-"`

	ack  *ackGroup
	json atomic.Pointer[[]byte] // cached JSON form
}

// EventID builds the identity of a job event: job id, event name and
// timestamp. The job-manager is single-threaded, so the triple is unique,
// and it does not depend on the event's position, which differs between a
// live stream and a later backlog.
func EventID(jobID uint64, name string, timestamp float64) string {
	b := make([]byte, 0, 48)
	b = strconv.AppendUint(b, jobID, 10)
	b = append(b, ':')
	b = append(b, name...)
	b = append(b, ':')
	b = strconv.AppendFloat(b, timestamp, 'f', -1, 64)
	return string(b)
}

// JobID returns the numeric job id, 0 when the record has no job.
func (r *Record) JobID() uint64 {
	switch {
	case r.Job != nil:
		return r.Job.ID
	case r.Purge != nil:
		return r.Purge.ID
	}
	return 0
}

// Key is the partitioning / upsert key of the record's job: the decimal job
// id. All records of one job share it, so per-key order is per-job order.
// Records without a job (invalid input) use their own id.
func (r *Record) Key() string {
	if id := r.JobID(); id != 0 {
		return strconv.FormatUint(id, 10)
	}
	return r.ID
}

// Time is the event's timestamp (unix seconds), or the purge time.
func (r *Record) Time() float64 {
	switch {
	case r.Event != nil:
		return r.Event.Timestamp
	case r.Purge != nil:
		return r.Purge.Time
	}
	return 0
}

// EventName is the event's name, or the record kind for non-event records.
func (r *Record) EventName() string {
	if r.Event != nil {
		return r.Event.Name
	}
	return string(r.Kind)
}

// Clone returns a copy that shares the acknowledgement lineage of r, for a
// transform to change. Everything a transform can change by assignment is
// the clone's own: the job (with its pointers, slices and exception), the
// event, the eventlog slice, purge, invalid and encoded parts. Only JSON
// bytes (jobspec, R, event contexts, annotations, an encoded value) are
// shared: they are replaced, never written into (EditJSON builds new
// ones). The clone has no cached JSON form. A transform that changes a
// few fields does better with Derive.
func (r *Record) Clone() *Record {
	// One allocation for the record, its event and its job with every
	// pointee: transforms clone every record they change, on the hot path.
	var c *Record
	var ev *Event
	if r.Job != nil {
		all := &struct {
			rec Record
			ev  Event
			job jobParts
		}{}
		c, ev = &all.rec, &all.ev
		c.Job = all.job.deepCopy(r.Job)
	} else {
		both := &struct {
			rec Record
			ev  Event
		}{}
		c, ev = &both.rec, &both.ev
	}
	r.copyTop(c)
	if r.Event != nil {
		*ev = *r.Event
		ev.Context = clip(ev.Context)
		c.Event = ev
	}
	if r.Eventlog != nil {
		c.Eventlog = make([]Event, len(r.Eventlog))
		for i, e := range r.Eventlog {
			e.Context = clip(e.Context)
			c.Eventlog[i] = e
		}
	}
	if r.Purge != nil {
		p := *r.Purge
		c.Purge = &p
	}
	if r.Invalid != nil {
		v := *r.Invalid
		c.Invalid = &v
	}
	if r.Encoded != nil {
		e := *r.Encoded
		e.Value = clip(e.Value)
		if e.Headers != nil {
			e.Headers = make(map[string]string, len(r.Encoded.Headers))
			for k, v := range r.Encoded.Headers {
				e.Headers[k] = v
			}
		}
		c.Encoded = &e
	}
	return c
}

// Derive returns a copy of r for a transform that changes a few fields,
// in one allocation. The copy and its job are its own: assign any of
// their fields. Everything else is shared with r, read-only: the event,
// what the job points to (exception, requested, allocated, the number
// pointers, dependencies), the eventlog, purge, invalid, the encoded part
// and all JSON bytes. Replace such a part with a new value (OwnEvent
// gives the copy an event of its own) and never write into it: r belongs
// to other sinks too. Like a clone, the copy shares r's acknowledgement
// lineage and has no cached JSON form.
func (r *Record) Derive() *Record {
	var c *Record
	if r.Job != nil {
		both := &struct {
			rec Record
			job Job
		}{job: *r.Job}
		c = &both.rec
		c.Job = &both.job
		c.Job.Annotations = clip(c.Job.Annotations)
		c.Job.Dependencies = clip(c.Job.Dependencies)
	} else {
		c = &Record{}
	}
	r.copyTop(c)
	c.Event, c.Eventlog = r.Event, clip(r.Eventlog)
	c.Purge, c.Invalid, c.Encoded = r.Purge, r.Invalid, r.Encoded
	return c
}

// WithEncoded returns a copy of r that differs only in its encoded part,
// for encoders: one small allocation, everything else (the job included)
// shared with r, read-only, as Derive shares it. Later transforms change
// such a record through Derive or Clone, never in place.
func (r *Record) WithEncoded(e *Encoded) *Record {
	c := &Record{}
	r.copyTop(c)
	c.Event, c.Job, c.Eventlog = r.Event, r.Job, clip(r.Eventlog)
	c.Purge, c.Invalid, c.Encoded = r.Purge, r.Invalid, e
	return c
}

// OwnEvent gives a Derive copy an event of its own (a copy of the shared
// one, context bytes still shared) and returns it; nil when there is no
// event.
func (r *Record) OwnEvent() *Event {
	if r.Event == nil {
		return nil
	}
	e := *r.Event
	e.Context = clip(e.Context)
	r.Event = &e
	return r.Event
}

// copyTop copies the plain fields every copy has of its own.
func (r *Record) copyTop(c *Record) {
	c.Kind, c.ID, c.Cluster, c.Source = r.Kind, r.ID, r.Cluster, r.Source
	c.Jobspec, c.R = clip(r.Jobspec), clip(r.R)
	c.ack = r.ack
}

// clip caps a shared slice at its length, so an append to it reallocates
// instead of writing into the original's memory.
func clip[S ~[]E, E any](s S) S { return s[:len(s):len(s)] }

// Clone returns a copy of the job that shares no memory with j except
// JSON bytes (annotations), which are only ever replaced. The job and
// everything its pointers reach are one allocation.
func (j *Job) Clone() *Job { return new(jobParts).deepCopy(j) }

// jobParts is a job with room for everything its pointers reach.
type jobParts struct {
	job                                Job
	priority                           int64
	ntasks, ncores, nnodes, wait, retc int
	duration                           float64
	success                            bool
	exc                                Exception
	req                                Requested
	alloc                              Allocated
}

// deepCopy copies j into x and returns x's job.
func (x *jobParts) deepCopy(j *Job) *Job {
	x.job = *j
	c := &x.job
	c.Priority = copyInto(&x.priority, j.Priority)
	c.NTasks, c.NCores, c.NNodes = copyInto(&x.ntasks, j.NTasks), copyInto(&x.ncores, j.NCores), copyInto(&x.nnodes, j.NNodes)
	c.Duration = copyInto(&x.duration, j.Duration)
	c.Success = copyInto(&x.success, j.Success)
	c.WaitStatus, c.ReturnCode = copyInto(&x.wait, j.WaitStatus), copyInto(&x.retc, j.ReturnCode)
	c.Exception = copyInto(&x.exc, j.Exception)
	c.Requested = copyInto(&x.req, j.Requested)
	c.Allocated = copyInto(&x.alloc, j.Allocated)
	if j.Dependencies != nil {
		c.Dependencies = append([]string{}, j.Dependencies...)
	}
	c.Annotations = clip(j.Annotations)
	return c
}

// copyInto copies *p into dst and returns dst, or nil for a nil p.
func copyInto[T any](dst *T, p *T) *T {
	if p == nil {
		return nil
	}
	*dst = *p
	return dst
}

// EditJSON decodes raw JSON (numbers kept exact), lets edit change the
// value, and returns the new encoding; raw itself is never written. An
// empty raw stays empty.
func EditJSON(raw json.RawMessage, edit func(v any) (any, error)) (json.RawMessage, error) {
	if len(raw) == 0 {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	v, err := edit(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// forgetJSON drops the cached JSON form; the runtime calls it on what a
// transform returns, so a form cached while the transform was still
// changing the record is never shipped.
func (r *Record) forgetJSON() { r.json.Store(nil) }

// AppendCachedJSON appends the record's JSON form to b: the bytes another
// sink had JSON cache, or else a fresh encoding that is not kept. For a
// sink that copies the form into its own buffer (a file): with one such
// sink, caching would only add an allocation per record.
func (r *Record) AppendCachedJSON(b []byte) []byte {
	if p := r.json.Load(); p != nil {
		return append(b, *p...)
	}
	return r.AppendJSON(b)
}

// JSON returns the record's JSON form, computed once: records reach several
// sinks and the spool, and are immutable once emitted.
func (r *Record) JSON() ([]byte, error) {
	if p := r.json.Load(); p != nil {
		return *p, nil
	}
	b, err := r.MarshalJSON()
	if err != nil {
		return nil, err
	}
	r.json.Store(&b)
	return b, nil
}

// recordJSON has the fields of Record in contract order, without methods.
type recordJSON Record

// MarshalJSON writes the JSON form of the record contract.
func (r *Record) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(make([]byte, 0, 1024)), nil
}

// UnmarshalJSON reads the JSON form back.
func (r *Record) UnmarshalJSON(b []byte) error {
	var tmp recordJSON
	if err := json.Unmarshal(b, &tmp); err != nil {
		return err
	}
	r.Kind, r.ID, r.Cluster, r.Source = tmp.Kind, tmp.ID, tmp.Cluster, tmp.Source
	r.Event, r.Job, r.Jobspec, r.R, r.Eventlog = tmp.Event, tmp.Job, tmp.Jobspec, tmp.R, tmp.Eventlog
	r.Purge, r.Invalid = tmp.Purge, tmp.Invalid
	if j := r.Job; j != nil && j.Exception != nil && !j.Exception.Occurred {
		j.Exception = nil // {"occurred": false}: the JSON form of none
	}
	return nil
}

// ackGroup counts the places a batch of records still has to reach. When
// the count drops to zero, done runs once.
type ackGroup struct {
	pending atomic.Int64
	once    sync.Once
	done    func()
}

func (g *ackGroup) add(n int64) {
	if g != nil {
		g.pending.Add(n)
	}
}

func (g *ackGroup) release() {
	if g == nil {
		return
	}
	switch n := g.pending.Add(-1); {
	case n == 0:
		if g.done != nil {
			g.once.Do(g.done)
		}
	case n < 0:
		panic("core: record acknowledged more often than it was handed out")
	}
}

// Ack releases the record: the runtime calls it when a sink has the record
// durably (spooled or delivered) or a transform dropped it.
func (r *Record) Ack() { r.ack.release() }

// retain adds n places the record still has to reach.
func (r *Record) retain(n int) { r.ack.add(int64(n)) }

// NewAckedBatch ties recs to one acknowledgement: done runs once every
// record of the batch has been released as often as it was handed out.
// An empty batch runs done at once.
func NewAckedBatch(recs []*Record, done func()) {
	g := &ackGroup{done: done}
	g.pending.Store(int64(len(recs)))
	for _, r := range recs {
		r.ack = g
	}
	if len(recs) == 0 && done != nil {
		done()
	}
}

// PurgeTSubmit is the submit time of the job a purge record is about (with
// its id, the job's identity): Purge.TSubmit, or for records spooled
// before purges carried it, the T_SUBMIT of the id JOBID:purge:T_SUBMIT.
// 0 when unknown.
func (r *Record) PurgeTSubmit() float64 {
	if r.Purge == nil {
		return 0
	}
	if r.Purge.TSubmit != 0 {
		return r.Purge.TSubmit
	}
	i := strings.LastIndexByte(r.ID, ':')
	if i < 0 || r.ID[i+1:] == "purge" {
		return 0
	}
	ts, err := strconv.ParseFloat(r.ID[i+1:], 64)
	if err != nil || math.IsNaN(ts) || math.IsInf(ts, 0) || ts < 0 {
		return 0
	}
	return ts
}
