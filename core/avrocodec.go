package core

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// The Avro binary encoding of a record (schemas/record.avsc), written by
// hand: it is on the hot path of every Kafka record and of every spool
// entry, and a reflection codec cost five to ten times more each way.
// hamba/avro stays the reference: schemas' tests decode these bytes with
// it, and encode with it for DecodeAvro, on every fixture record and on
// records with every field set, so a field added to the schema but not
// here fails them.
//
// Avro binary (spec, "Binary Encoding"): int and long are zig-zag
// varints, double is 8 bytes little-endian, a string is its length then
// its bytes, a union is the branch index then the value, an array is a
// block count, the items, and a zero count.

func avLong(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64((v<<1)^(v>>63)))
}

func avDouble(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func avStr(b []byte, s string) []byte {
	b = avLong(b, int64(len(s)))
	return append(b, s...)
}

func avBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// Unions in record.avsc are all ["null", T]: branch 0 is null, 1 is T.

func avOptStr(b []byte, s string) []byte {
	if s == "" {
		return append(b, 0)
	}
	return avStr(append(b, 2), s) // zig-zag 1
}

func avOptRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, 0)
	}
	b = append(b, 2)
	b = avLong(b, int64(len(raw)))
	return append(b, raw...)
}

func avOptDouble(b []byte, f float64) []byte {
	if f == 0 {
		return append(b, 0)
	}
	return avDouble(append(b, 2), f)
}

func avOptDoublePtr(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, 0)
	}
	return avDouble(append(b, 2), *f)
}

func avOptIntPtr(b []byte, v *int) []byte {
	if v == nil {
		return append(b, 0)
	}
	return avLong(append(b, 2), int64(*v))
}

func avEvent(b []byte, e *Event) []byte {
	b = avDouble(b, e.Timestamp)
	b = avStr(b, e.Name)
	return avOptRaw(b, e.Context)
}

// AppendAvro appends the Avro binary encoding of r (record.avsc).
func AppendAvro(b []byte, r *Record) []byte {
	b = avStr(b, string(r.Kind))
	b = avStr(b, r.ID)
	b = avOptStr(b, r.Cluster)
	b = avOptStr(b, r.Source)
	if r.Event == nil {
		b = append(b, 0)
	} else {
		b = avEvent(append(b, 2), r.Event)
	}
	if r.Job == nil {
		b = append(b, 0)
	} else {
		b = avJob(append(b, 2), r.Job)
	}
	b = avOptRaw(b, r.Jobspec)
	b = avOptRaw(b, r.R)
	if r.Eventlog == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		if n := len(r.Eventlog); n > 0 {
			b = avLong(b, int64(n))
			for i := range r.Eventlog {
				b = avEvent(b, &r.Eventlog[i])
			}
		}
		b = append(b, 0)
	}
	if p := r.Purge; p == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		b = avLong(b, int64(p.ID))
		b = avStr(b, p.JobID)
		b = avStr(b, p.Reason)
		b = avOptDouble(b, p.Time)
	}
	if v := r.Invalid; v == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		b = avStr(b, v.Error)
		b = avOptStr(b, v.Where)
		b = avOptStr(b, v.Raw)
	}
	return b
}

func avJob(b []byte, j *Job) []byte {
	b = avLong(b, int64(j.ID))
	b = avStr(b, j.JobID)
	b = avLong(b, int64(j.UserID))
	b = avOptStr(b, j.Username)
	b = avLong(b, int64(j.Urgency))
	if j.Priority == nil {
		b = append(b, 0)
	} else {
		b = avLong(append(b, 2), *j.Priority)
	}
	b = avOptStr(b, j.State)
	b = avOptStr(b, j.Result)
	b = avOptStr(b, j.Status)
	b = avOptStr(b, j.Name)
	b = avOptStr(b, j.Cwd)
	b = avOptStr(b, j.Queue)
	b = avOptStr(b, j.Project)
	b = avOptStr(b, j.Bank)
	b = avOptIntPtr(b, j.NTasks)
	b = avOptIntPtr(b, j.NCores)
	b = avOptIntPtr(b, j.NNodes)
	b = avOptDoublePtr(b, j.Duration)
	b = avOptDouble(b, j.Expiration)
	b = avOptStr(b, j.Nodelist)
	b = avOptStr(b, j.Ranks)
	if j.Success == nil {
		b = append(b, 0)
	} else {
		b = avBool(append(b, 2), *j.Success)
	}
	b = avOptIntPtr(b, j.WaitStatus)
	b = avOptIntPtr(b, j.ReturnCode)
	if x := j.Exception; x == nil {
		b = append(b, 0)
	} else {
		b = avBool(append(b, 2), x.Occurred)
		b = avLong(b, int64(x.Severity))
		b = avStr(b, x.Type)
		b = avStr(b, x.Note)
	}
	b = avOptDouble(b, j.TSubmit)
	b = avOptDouble(b, j.TDepend)
	b = avOptDouble(b, j.TPriority)
	b = avOptDouble(b, j.TSched)
	b = avOptDouble(b, j.TRun)
	b = avOptDouble(b, j.TCleanup)
	b = avOptDouble(b, j.TInactive)
	b = avOptDouble(b, j.Runtime)
	if j.Dependencies == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		if n := len(j.Dependencies); n > 0 {
			b = avLong(b, int64(n))
			for _, d := range j.Dependencies {
				b = avStr(b, d)
			}
		}
		b = append(b, 0)
	}
	b = avOptRaw(b, j.Annotations)
	b = avOptStr(b, j.URI)
	if q := j.Requested; q == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		b = avLong(b, int64(q.NNodes))
		b = avLong(b, int64(q.NSlots))
		b = avLong(b, int64(q.SlotCores))
		b = avLong(b, int64(q.SlotGPUs))
		b = avLong(b, int64(q.NCores))
		b = avLong(b, int64(q.NGPUs))
		b = avLong(b, int64(q.NTasks))
		b = avBool(b, q.Exclusive)
		b = avDouble(b, q.Duration)
	}
	if a := j.Allocated; a == nil {
		b = append(b, 0)
	} else {
		b = append(b, 2)
		b = avLong(b, int64(a.NNodes))
		b = avLong(b, int64(a.NCores))
		b = avLong(b, int64(a.NGPUs))
		b = avOptStr(b, a.Ranks)
		b = avOptStr(b, a.Nodelist)
		b = avOptDouble(b, a.StartTime)
		b = avOptDouble(b, a.Expiration)
	}
	return b
}

// avroReader decodes Avro binary, refusing lengths and counts larger than
// what is left of the input (so corrupt input cannot make it allocate).
type avroReader struct {
	b   []byte
	err error
}

var errAvroShort = errors.New("avro record cut short")

func (d *avroReader) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *avroReader) long() int64 {
	if d.err != nil {
		return 0
	}
	u, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errAvroShort)
		return 0
	}
	d.b = d.b[n:]
	return int64(u>>1) ^ -int64(u&1)
}

func (d *avroReader) int() int {
	v := d.long()
	if v != int64(int32(v)) {
		d.fail(fmt.Errorf("avro int %d out of range", v))
	}
	return int(v)
}

func (d *avroReader) double() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail(errAvroShort)
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return f
}

func (d *avroReader) boolean() bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < 1 {
		d.fail(errAvroShort)
		return false
	}
	v := d.b[0]
	d.b = d.b[1:]
	if v > 1 {
		d.fail(fmt.Errorf("avro boolean byte %d", v))
	}
	return v == 1
}

func (d *avroReader) bytes() []byte {
	n := d.long()
	if d.err != nil {
		return nil
	}
	if n < 0 || n > int64(len(d.b)) {
		d.fail(errAvroShort)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *avroReader) str() string { return string(d.bytes()) }

// present reads the branch of a ["null", T] union.
func (d *avroReader) present() bool {
	switch d.long() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(errors.New("avro union branch out of range"))
		return false
	}
}

func (d *avroReader) optStr() string {
	if d.present() {
		return d.str()
	}
	return ""
}

func (d *avroReader) optRaw() json.RawMessage {
	if d.present() {
		return json.RawMessage(d.bytes())
	}
	return nil
}

func (d *avroReader) optDouble() float64 {
	if d.present() {
		return d.double()
	}
	return 0
}

func (d *avroReader) optDoublePtr() *float64 {
	if d.present() {
		v := d.double()
		return &v
	}
	return nil
}

func (d *avroReader) optIntPtr() *int {
	if d.present() {
		v := d.int()
		return &v
	}
	return nil
}

// count reads an array block count; each item needs at least min bytes.
func (d *avroReader) count(min int) int {
	n := d.long()
	if n < 0 {
		d.long() // the block's size in bytes, which we do not need
		n = -n
	}
	if d.err == nil && n*int64(min) > int64(len(d.b)) {
		d.fail(errAvroShort)
		return 0
	}
	return int(n)
}

func (d *avroReader) event() Event {
	return Event{Timestamp: d.double(), Name: d.str(), Context: d.optRaw()}
}

// DecodeAvro decodes what AppendAvro (or any writer of record.avsc)
// wrote. Byte slices in the record alias b.
func DecodeAvro(b []byte) (*Record, error) {
	d := &avroReader{b: b}
	r := &Record{Kind: Kind(d.str()), ID: d.str(), Cluster: d.optStr(), Source: d.optStr()}
	if d.present() {
		e := d.event()
		r.Event = &e
	}
	if d.present() {
		r.Job = d.job()
	}
	r.Jobspec = d.optRaw()
	r.R = d.optRaw()
	if d.present() {
		r.Eventlog = []Event{}
		for n := d.count(10); n > 0 && d.err == nil; n = d.count(10) {
			for range n {
				r.Eventlog = append(r.Eventlog, d.event())
			}
		}
	}
	if d.present() {
		r.Purge = &Purge{ID: uint64(d.long()), JobID: d.str(), Reason: d.str(), Time: d.optDouble()}
	}
	if d.present() {
		r.Invalid = &Invalid{Error: d.str(), Where: d.optStr(), Raw: d.optStr()}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d bytes after the avro record", len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func (d *avroReader) job() *Job {
	j := &Job{ID: uint64(d.long()), JobID: d.str(), UserID: uint32(d.long()), Username: d.optStr(), Urgency: d.int()}
	if d.present() {
		p := d.long()
		j.Priority = &p
	}
	j.State, j.Result, j.Status = d.optStr(), d.optStr(), d.optStr()
	j.Name, j.Cwd, j.Queue, j.Project, j.Bank = d.optStr(), d.optStr(), d.optStr(), d.optStr(), d.optStr()
	j.NTasks, j.NCores, j.NNodes = d.optIntPtr(), d.optIntPtr(), d.optIntPtr()
	j.Duration = d.optDoublePtr()
	j.Expiration = d.optDouble()
	j.Nodelist, j.Ranks = d.optStr(), d.optStr()
	if d.present() {
		v := d.boolean()
		j.Success = &v
	}
	j.WaitStatus, j.ReturnCode = d.optIntPtr(), d.optIntPtr()
	if d.present() {
		j.Exception = &Exception{Occurred: d.boolean(), Severity: d.int(), Type: d.str(), Note: d.str()}
	}
	j.TSubmit, j.TDepend, j.TPriority, j.TSched = d.optDouble(), d.optDouble(), d.optDouble(), d.optDouble()
	j.TRun, j.TCleanup, j.TInactive, j.Runtime = d.optDouble(), d.optDouble(), d.optDouble(), d.optDouble()
	if d.present() {
		j.Dependencies = []string{}
		for n := d.count(1); n > 0 && d.err == nil; n = d.count(1) {
			for range n {
				j.Dependencies = append(j.Dependencies, d.str())
			}
		}
	}
	j.Annotations = d.optRaw()
	j.URI = d.optStr()
	if d.present() {
		j.Requested = &Requested{NNodes: d.int(), NSlots: d.int(), SlotCores: d.int(), SlotGPUs: d.int(),
			NCores: d.int(), NGPUs: d.int(), NTasks: d.int(), Exclusive: d.boolean(), Duration: d.double()}
	}
	if d.present() {
		j.Allocated = &Allocated{NNodes: d.int(), NCores: d.int(), NGPUs: d.int(), Ranks: d.optStr(),
			Nodelist: d.optStr(), StartTime: d.optDouble(), Expiration: d.optDouble()}
	}
	return j
}
