package core

import (
	"encoding/json"
	"strconv"
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
}

// Encoded is a record already turned into bytes by an encoder transform
// (e.g. avro). Sinks that ship bytes send these instead of the JSON form.
type Encoded struct {
	Format   string            // e.g. "avro-confluent", "avro-single-object"
	Value    []byte            // what goes on the wire
	SchemaID int               // registry id, 0 if none
	Headers  map[string]string // extra headers the encoder wants shipped
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

// Clone returns a shallow copy that shares the acknowledgement lineage of
// r. Transforms modify the clone, never r.
func (r *Record) Clone() *Record {
	c := &Record{
		Kind: r.Kind, ID: r.ID, Cluster: r.Cluster, Source: r.Source,
		Event: r.Event, Job: r.Job, Jobspec: r.Jobspec, R: r.R, Eventlog: r.Eventlog,
		Purge: r.Purge, Invalid: r.Invalid, Encoded: r.Encoded,
		ack: r.ack,
	}
	return c
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
