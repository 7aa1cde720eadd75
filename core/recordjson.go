package core

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// The JSON form of a record is written by hand: it is the hot path of
// every sink and of the spool, and encoding/json's reflection cost several
// times more. recordjson_test.go checks, field by field and on every
// fixture record, that it means exactly what encoding/json writes for the
// same struct tags.

// AppendJSON appends the record's JSON form to b.
func (r *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"kind":`...)
	b = appendString(b, string(r.Kind))
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	b = optString(b, "cluster", r.Cluster)
	b = optString(b, "source", r.Source)
	if r.Event != nil {
		b = append(b, `,"event":`...)
		b = appendEvent(b, r.Event)
	}
	if r.Job != nil {
		b = append(b, `,"job":`...)
		b = r.Job.appendJSON(b)
	}
	b = optRaw(b, "jobspec", r.Jobspec)
	b = optRaw(b, "R", r.R)
	if len(r.Eventlog) > 0 {
		b = append(b, `,"eventlog":[`...)
		for i := range r.Eventlog {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendEvent(b, &r.Eventlog[i])
		}
		b = append(b, ']')
	}
	if p := r.Purge; p != nil {
		b = append(b, `,"purge":{"id":`...)
		b = strconv.AppendUint(b, p.ID, 10)
		b = append(b, `,"jobid":`...)
		b = appendString(b, p.JobID)
		b = append(b, `,"reason":`...)
		b = appendString(b, p.Reason)
		b = optFloat(b, "time", p.Time)
		b = optFloat(b, "t_submit", p.TSubmit)
		b = append(b, '}')
	}
	if v := r.Invalid; v != nil {
		b = append(b, `,"invalid":{"error":`...)
		b = appendString(b, v.Error)
		b = optString(b, "where", v.Where)
		b = optString(b, "raw", v.Raw)
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"timestamp":`...)
	b = appendFloat(b, e.Timestamp)
	b = append(b, `,"name":`...)
	b = appendString(b, e.Name)
	b = optRaw(b, "context", e.Context)
	return append(b, '}')
}

func (j *Job) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, j.ID, 10)
	b = append(b, `,"jobid":`...)
	b = appendString(b, j.JobID)
	b = append(b, `,"userid":`...)
	b = strconv.AppendUint(b, uint64(j.UserID), 10)
	b = optString(b, "username", j.Username)
	b = append(b, `,"urgency":`...)
	b = strconv.AppendInt(b, int64(j.Urgency), 10)
	if j.Priority != nil {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, *j.Priority, 10)
	}
	b = optString(b, "state", j.State)
	b = optString(b, "result", j.Result)
	b = optString(b, "status", j.Status)
	b = optString(b, "name", j.Name)
	b = optString(b, "cwd", j.Cwd)
	b = optString(b, "queue", j.Queue)
	b = optString(b, "project", j.Project)
	b = optString(b, "bank", j.Bank)
	b = optIntPtr(b, "ntasks", j.NTasks)
	b = optIntPtr(b, "ncores", j.NCores)
	b = optIntPtr(b, "nnodes", j.NNodes)
	if j.Duration != nil {
		b = append(b, `,"duration":`...)
		b = appendFloat(b, *j.Duration)
	}
	b = optFloat(b, "expiration", j.Expiration)
	b = optString(b, "nodelist", j.Nodelist)
	b = optString(b, "ranks", j.Ranks)
	if j.Success != nil {
		b = append(b, `,"success":`...)
		b = strconv.AppendBool(b, *j.Success)
	}
	b = optIntPtr(b, "waitstatus", j.WaitStatus)
	b = optIntPtr(b, "returncode", j.ReturnCode)
	if x := j.Exception; x == nil {
		b = append(b, `,"exception":{"occurred":false}`...) // as flux jobs --json
	} else {
		b = append(b, `,"exception":{"occurred":`...)
		b = strconv.AppendBool(b, x.Occurred)
		b = append(b, `,"severity":`...)
		b = strconv.AppendInt(b, int64(x.Severity), 10)
		b = append(b, `,"type":`...)
		b = appendString(b, x.Type)
		b = append(b, `,"note":`...)
		b = appendString(b, x.Note)
		b = append(b, '}')
	}
	b = optFloat(b, "t_submit", j.TSubmit)
	b = optFloat(b, "t_depend", j.TDepend)
	b = optFloat(b, "t_priority", j.TPriority)
	b = optFloat(b, "t_sched", j.TSched)
	b = optFloat(b, "t_run", j.TRun)
	b = optFloat(b, "t_cleanup", j.TCleanup)
	b = optFloat(b, "t_inactive", j.TInactive)
	b = optFloat(b, "runtime", j.Runtime)
	b = append(b, `,"dependencies":[`...)
	for i, d := range j.Dependencies {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, d)
	}
	b = append(b, ']')
	if len(j.Annotations) == 0 {
		b = append(b, `,"annotations":{}`...)
	} else {
		b = optRaw(b, "annotations", j.Annotations)
	}
	b = optString(b, "uri", j.URI)
	if q := j.Requested; q != nil {
		b = append(b, `,"requested":{"nnodes":`...)
		b = strconv.AppendInt(b, int64(q.NNodes), 10)
		b = append(b, `,"nslots":`...)
		b = strconv.AppendInt(b, int64(q.NSlots), 10)
		b = append(b, `,"slot_cores":`...)
		b = strconv.AppendInt(b, int64(q.SlotCores), 10)
		b = append(b, `,"slot_gpus":`...)
		b = strconv.AppendInt(b, int64(q.SlotGPUs), 10)
		b = append(b, `,"ncores":`...)
		b = strconv.AppendInt(b, int64(q.NCores), 10)
		b = append(b, `,"ngpus":`...)
		b = strconv.AppendInt(b, int64(q.NGPUs), 10)
		b = append(b, `,"ntasks":`...)
		b = strconv.AppendInt(b, int64(q.NTasks), 10)
		b = append(b, `,"exclusive":`...)
		b = strconv.AppendBool(b, q.Exclusive)
		b = append(b, `,"duration":`...)
		b = appendFloat(b, q.Duration)
		b = append(b, '}')
	}
	if a := j.Allocated; a != nil {
		b = append(b, `,"allocated":{"nnodes":`...)
		b = strconv.AppendInt(b, int64(a.NNodes), 10)
		b = append(b, `,"ncores":`...)
		b = strconv.AppendInt(b, int64(a.NCores), 10)
		b = append(b, `,"ngpus":`...)
		b = strconv.AppendInt(b, int64(a.NGPUs), 10)
		b = optString(b, "ranks", a.Ranks)
		b = optString(b, "nodelist", a.Nodelist)
		b = optFloat(b, "starttime", a.StartTime)
		b = optFloat(b, "expiration", a.Expiration)
		b = append(b, '}')
	}
	return append(b, '}')
}

// key appends ,"name": for a field that follows another.
func key(b []byte, name string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func optString(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(key(b, name), v)
}

func optFloat(b []byte, name string, v float64) []byte {
	if v == 0 {
		return b
	}
	return appendFloat(key(b, name), v)
}

func optInt(b []byte, name string, v int) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(key(b, name), int64(v), 10)
}

func optIntPtr(b []byte, name string, v *int) []byte {
	if v == nil {
		return b
	}
	return strconv.AppendInt(key(b, name), int64(*v), 10)
}

func optRaw(b []byte, name string, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return b
	}
	return appendRaw(key(b, name), raw)
}

// appendRaw appends raw JSON compacted, as encoding/json does: a JSON
// line must hold no newline.
func appendRaw(b []byte, raw json.RawMessage) []byte {
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return append(b, raw...)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		// Not JSON: keep the text, as a string, rather than break the line.
		return appendString(b, string(raw))
	}
	return append(b, buf.Bytes()...)
}

// appendFloat writes a float as encoding/json does (shortest form that
// reads back exactly; exponent form outside [1e-6, 1e21)).
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 -> 1e-7
		n := len(b) - start
		if n >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, as the record's JSON form
// writes strings (transforms that edit JSON bytes use it too).
func AppendJSONString(b []byte, s string) []byte { return appendString(b, s) }

// appendString writes a JSON string. Like encoding/json it replaces
// invalid UTF-8 with U+FFFD and escapes U+2028 and U+2029; unlike it, it
// leaves <, > and & alone (records are data, not HTML).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
