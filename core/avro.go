package core

import (
	"encoding/json"
	"slices"
	"sync"
	"unsafe"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

// The Avro form of a record is hamba/avro's encoding of the types that
// avrogen generated from schemas/avrorec/record.avsc. This file only maps
// a Record onto those types and back. Encoding borrows the record's own
// memory (pointers to its fields, its JSON bytes viewed as strings), so a
// record encodes without allocating; decoding copies.

// avroScratch holds what an encode needs besides pointers into the
// record: Avro nulls are pointers, and a Record keeps some values (ints,
// JSON text) in other Go types.
type avroScratch struct {
	rec   avrorec.Record
	ev    avrorec.Event
	job   avrorec.Job
	exc   avrorec.Exception
	req   avrorec.Requested
	alloc avrorec.Allocated
	purge avrorec.Purge
	inv   avrorec.Invalid
	log   []avrorec.Event
	ctx   []string // event contexts of the eventlog, as strings
	str   [4]string
	num   [5]int64
}

var avroScratchPool = sync.Pool{New: func() any { return new(avroScratch) }}

// AppendAvro appends the Avro binary encoding of r (record.avsc).
func AppendAvro(b []byte, r *Record) ([]byte, error) {
	s := avroScratchPool.Get().(*avroScratch)
	s.fill(r)
	b, err := avrorec.Append(b, &s.rec)
	s.reset()
	avroScratchPool.Put(s)
	return b, err
}

// rawString views JSON bytes as a string without copying; the string only
// lives while the record is encoded, and records are immutable.
func rawString(raw json.RawMessage) string {
	return unsafe.String(unsafe.SliceData(raw), len(raw))
}

func optStr(s *string) *string {
	if *s == "" {
		return nil
	}
	return s
}

func optF64(f *float64) *float64 {
	if *f == 0 {
		return nil
	}
	return f
}

func (s *avroScratch) optRaw(slot *string, raw json.RawMessage) *string {
	if len(raw) == 0 {
		return nil
	}
	*slot = rawString(raw)
	return slot
}

func (s *avroScratch) optInt(slot *int64, v *int) *int64 {
	if v == nil {
		return nil
	}
	*slot = int64(*v)
	return slot
}

func (s *avroScratch) event(dst *avrorec.Event, ctx *string, e *Event) {
	*dst = avrorec.Event{Timestamp: e.Timestamp, Name: e.Name, Context: s.optRaw(ctx, e.Context)}
}

func (s *avroScratch) fill(r *Record) {
	s.rec = avrorec.Record{Kind: string(r.Kind), ID: r.ID, Cluster: optStr(&r.Cluster), Source: optStr(&r.Source)}
	if r.Event != nil {
		s.event(&s.ev, &s.str[0], r.Event)
		s.rec.Event = &s.ev
	}
	if r.Job != nil {
		s.fillJob(r.Job)
		s.rec.Job = &s.job
	}
	s.rec.Jobspec = s.optRaw(&s.str[1], r.Jobspec)
	s.rec.R = s.optRaw(&s.str[2], r.R)
	if r.Eventlog != nil {
		n := len(r.Eventlog)
		s.log = append(s.log[:0], make([]avrorec.Event, n)...)
		s.ctx = append(s.ctx[:0], make([]string, n)...)
		for i := range r.Eventlog {
			s.event(&s.log[i], &s.ctx[i], &r.Eventlog[i])
		}
		s.rec.Eventlog = &s.log
	}
	if p := r.Purge; p != nil {
		s.purge = avrorec.Purge{ID: int64(p.ID), Jobid: p.JobID, Reason: p.Reason, Time: optF64(&p.Time), TSubmit: optF64(&p.TSubmit)}
		s.rec.Purge = &s.purge
	}
	if v := r.Invalid; v != nil {
		s.inv = avrorec.Invalid{Error: v.Error, Where: optStr(&v.Where), Raw: optStr(&v.Raw)}
		s.rec.Invalid = &s.inv
	}
}

func (s *avroScratch) fillJob(j *Job) {
	s.job = avrorec.Job{
		ID: int64(j.ID), Jobid: j.JobID, Userid: int64(j.UserID), Username: optStr(&j.Username),
		Urgency: int64(j.Urgency), Priority: clonePtr(j.Priority),
		State: optStr(&j.State), Result: optStr(&j.Result), Status: optStr(&j.Status),
		Name: optStr(&j.Name), Cwd: optStr(&j.Cwd), Queue: optStr(&j.Queue), Project: optStr(&j.Project), Bank: optStr(&j.Bank),
		Ntasks: s.optInt(&s.num[0], j.NTasks), Ncores: s.optInt(&s.num[1], j.NCores), Nnodes: s.optInt(&s.num[2], j.NNodes),
		Duration: clonePtr(j.Duration), Expiration: optF64(&j.Expiration),
		Nodelist: optStr(&j.Nodelist), Ranks: optStr(&j.Ranks),
		Success:    j.Success,
		Waitstatus: s.optInt(&s.num[3], j.WaitStatus), Returncode: s.optInt(&s.num[4], j.ReturnCode),
		TSubmit: optF64(&j.TSubmit), TDepend: optF64(&j.TDepend), TPriority: optF64(&j.TPriority), TSched: optF64(&j.TSched),
		TRun: optF64(&j.TRun), TCleanup: optF64(&j.TCleanup), TInactive: optF64(&j.TInactive), Runtime: optF64(&j.Runtime),
		Annotations: s.optRaw(&s.str[3], j.Annotations), URI: optStr(&j.URI),
	}
	if j.Dependencies != nil {
		s.job.Dependencies = &j.Dependencies
	}
	if x := j.Exception; x != nil {
		s.exc = avrorec.Exception{Occurred: x.Occurred, Severity: int64(x.Severity), Type: x.Type, Note: x.Note}
		s.job.Exception = &s.exc
	}
	if q := j.Requested; q != nil {
		s.req = avrorec.Requested{Nnodes: int64(q.NNodes), Nslots: int64(q.NSlots), SlotCores: int64(q.SlotCores),
			SlotGpus: int64(q.SlotGPUs), Ncores: int64(q.NCores), Ngpus: int64(q.NGPUs), Ntasks: int64(q.NTasks),
			Exclusive: q.Exclusive, Duration: q.Duration}
		s.job.Requested = &s.req
	}
	if a := j.Allocated; a != nil {
		s.alloc = avrorec.Allocated{Nnodes: int64(a.NNodes), Ncores: int64(a.NCores), Ngpus: int64(a.NGPUs),
			Ranks: optStr(&a.Ranks), Nodelist: optStr(&a.Nodelist), Starttime: optF64(&a.StartTime), Expiration: optF64(&a.Expiration)}
		s.job.Allocated = &s.alloc
	}
}

// reset drops every pointer into the record, so the pool keeps no record
// alive.
func (s *avroScratch) reset() {
	clear(s.log)
	clear(s.ctx)
	log, ctx := s.log[:0], s.ctx[:0]
	*s = avroScratch{log: log, ctx: ctx}
}

// DecodeAvro decodes the Avro binary of a record written with the current
// schema.
func DecodeAvro(b []byte) (*Record, error) { return DecodeAvroFrom(nil, b) }

// DecodeAvroFrom decodes a record written with schema writer (nil: the
// current one), resolving an older writer schema to the current one.
func DecodeAvroFrom(writer avro.Schema, b []byte) (*Record, error) {
	if writer != nil && writer != avrorec.Schema {
		// Resolution may skip reader fields: decode into a zero value.
		var a avrorec.Record
		if err := avrorec.Unmarshal(writer, b, &a); err != nil {
			return nil, err
		}
		return fromAvro(&a), nil
	}
	// With the current schema every field is written, so a reused value is
	// overwritten whole, and hamba fills the optional fields' targets in
	// place instead of allocating them (about half the allocations of a
	// decode). fromAvro copies out all it keeps.
	a := decodeScratch.Get().(*avrorec.Record)
	defer decodeScratch.Put(a)
	// hamba grows arrays in place and never shortens them: an empty one
	// would keep the last record's elements.
	if a.Eventlog != nil {
		*a.Eventlog = (*a.Eventlog)[:0]
	}
	if a.Job != nil && a.Job.Dependencies != nil {
		*a.Job.Dependencies = (*a.Job.Dependencies)[:0]
	}
	if err := avrorec.Unmarshal(nil, b, a); err != nil {
		*a = avrorec.Record{} // a failed decode may leave anything
		return nil, err
	}
	return fromAvro(a), nil
}

var decodeScratch = sync.Pool{New: func() any { return new(avrorec.Record) }}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func raw(p *string) json.RawMessage {
	if p == nil {
		return nil
	}
	return json.RawMessage(*p)
}

func f64(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// clonePtr copies what p points to: the decode scratch that holds it is
// reused by the next decode.
func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func intp(p *int64) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}

func fromAvroEvent(e *avrorec.Event) Event {
	return Event{Timestamp: e.Timestamp, Name: e.Name, Context: raw(e.Context)}
}

func fromAvro(a *avrorec.Record) *Record {
	r := &Record{Kind: Kind(a.Kind), ID: a.ID, Cluster: str(a.Cluster), Source: str(a.Source),
		Jobspec: raw(a.Jobspec), R: raw(a.R)}
	if a.Event != nil {
		e := fromAvroEvent(a.Event)
		r.Event = &e
	}
	if a.Eventlog != nil {
		r.Eventlog = make([]Event, len(*a.Eventlog))
		for i := range *a.Eventlog {
			r.Eventlog[i] = fromAvroEvent(&(*a.Eventlog)[i])
		}
	}
	if p := a.Purge; p != nil {
		r.Purge = &Purge{ID: uint64(p.ID), JobID: p.Jobid, Reason: p.Reason, Time: f64(p.Time), TSubmit: f64(p.TSubmit)}
	}
	if v := a.Invalid; v != nil {
		r.Invalid = &Invalid{Error: v.Error, Where: str(v.Where), Raw: str(v.Raw)}
	}
	if j := a.Job; j != nil {
		r.Job = fromAvroJob(j)
	}
	return r
}

func fromAvroJob(j *avrorec.Job) *Job {
	out := &Job{
		ID: uint64(j.ID), JobID: j.Jobid, UserID: uint32(j.Userid), Username: str(j.Username),
		Urgency: int(j.Urgency), Priority: clonePtr(j.Priority),
		State: str(j.State), Result: str(j.Result), Status: str(j.Status),
		Name: str(j.Name), Cwd: str(j.Cwd), Queue: str(j.Queue), Project: str(j.Project), Bank: str(j.Bank),
		NTasks: intp(j.Ntasks), NCores: intp(j.Ncores), NNodes: intp(j.Nnodes),
		Duration: clonePtr(j.Duration), Expiration: f64(j.Expiration), Nodelist: str(j.Nodelist), Ranks: str(j.Ranks),
		Success: clonePtr(j.Success), WaitStatus: intp(j.Waitstatus), ReturnCode: intp(j.Returncode),
		TSubmit: f64(j.TSubmit), TDepend: f64(j.TDepend), TPriority: f64(j.TPriority), TSched: f64(j.TSched),
		TRun: f64(j.TRun), TCleanup: f64(j.TCleanup), TInactive: f64(j.TInactive), Runtime: f64(j.Runtime),
		Annotations: raw(j.Annotations), URI: str(j.URI),
	}
	if j.Dependencies != nil {
		out.Dependencies = slices.Clone(*j.Dependencies) // the decode scratch is reused
	}
	if x := j.Exception; x != nil {
		out.Exception = &Exception{Occurred: x.Occurred, Severity: int(x.Severity), Type: x.Type, Note: x.Note}
	}
	if q := j.Requested; q != nil {
		out.Requested = &Requested{NNodes: int(q.Nnodes), NSlots: int(q.Nslots), SlotCores: int(q.SlotCores),
			SlotGPUs: int(q.SlotGpus), NCores: int(q.Ncores), NGPUs: int(q.Ngpus), NTasks: int(q.Ntasks),
			Exclusive: q.Exclusive, Duration: q.Duration}
	}
	if a := j.Allocated; a != nil {
		out.Allocated = &Allocated{NNodes: int(a.Nnodes), NCores: int(a.Ncores), NGPUs: int(a.Ngpus),
			Ranks: str(a.Ranks), Nodelist: str(a.Nodelist), StartTime: f64(a.Starttime), Expiration: f64(a.Expiration)}
	}
	return out
}
