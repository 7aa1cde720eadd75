package filter

import (
	"encoding/json"
	"strings"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// rawPlan prunes one of Flux's JSON objects of every record.
type rawPlan struct {
	path  string
	start recpath.Start
	field rawField
}

// rawField reaches one of Flux's JSON objects in a Derive copy: get reads
// it (nil when the record lacks the part); own, for one inside a part the
// copy shares with the original (the event), gives the copy that part of
// its own and returns the field's place in it.
type rawField struct {
	get func(*core.Record) *json.RawMessage
	own func(*core.Record) *json.RawMessage
}

var rawFields = map[string]rawField{
	"jobspec": {get: func(r *core.Record) *json.RawMessage { return &r.Jobspec }},
	"R":       {get: func(r *core.Record) *json.RawMessage { return &r.R }},
	"event.context": {
		get: func(r *core.Record) *json.RawMessage {
			if r.Event == nil {
				return nil
			}
			return &r.Event.Context
		},
		own: func(r *core.Record) *json.RawMessage { return &r.OwnEvent().Context },
	},
	"job.annotations": {get: func(r *core.Record) *json.RawMessage {
		if r.Job == nil {
			return nil
		}
		return &r.Job.Annotations
	}},
}

func onJob(fn func(j *core.Job)) func(*core.Record) {
	return func(r *core.Record) {
		if r.Job != nil {
			fn(r.Job)
		}
	}
}

// clears removes one field of the contract from a Derive copy: the zero
// value, which the JSON form leaves out and Avro writes as null (userid
// and urgency get the contract's "not known" values, 4294967295 and -1).
// The copy owns the record and its job; a field inside a part it shares
// (event, purge, invalid, allocated) is cleared in a copy of that part
// (ownParts, or OwnEvent).
var clears = map[string]func(*core.Record){
	"cluster":  func(r *core.Record) { r.Cluster = "" },
	"source":   func(r *core.Record) { r.Source = "" },
	"event":    func(r *core.Record) { r.Event = nil },
	"jobspec":  func(r *core.Record) { r.Jobspec = nil },
	"R":        func(r *core.Record) { r.R = nil },
	"eventlog": func(r *core.Record) { r.Eventlog = nil },
	"purge":    func(r *core.Record) { r.Purge = nil },
	"invalid":  func(r *core.Record) { r.Invalid = nil },
	"job":      func(r *core.Record) { r.Job = nil },
	"event.context": func(r *core.Record) {
		if r.Event != nil && r.Event.Context != nil {
			r.OwnEvent().Context = nil
		}
	},
	"purge.time": func(r *core.Record) {
		if r.Purge != nil && r.Purge.Time != 0 {
			p := *r.Purge
			p.Time = 0
			r.Purge = &p
		}
	},
	"invalid.where":            onInvalid(func(v *core.Invalid) { v.Where = "" }),
	"invalid.raw":              onInvalid(func(v *core.Invalid) { v.Raw = "" }),
	"job.userid":               onJob(func(j *core.Job) { j.UserID = 4294967295 }),
	"job.urgency":              onJob(func(j *core.Job) { j.Urgency = -1 }),
	"job.username":             onJob(func(j *core.Job) { j.Username = "" }),
	"job.priority":             onJob(func(j *core.Job) { j.Priority = nil }),
	"job.state":                onJob(func(j *core.Job) { j.State = "" }),
	"job.result":               onJob(func(j *core.Job) { j.Result = "" }),
	"job.status":               onJob(func(j *core.Job) { j.Status = "" }),
	"job.name":                 onJob(func(j *core.Job) { j.Name = "" }),
	"job.cwd":                  onJob(func(j *core.Job) { j.Cwd = "" }),
	"job.queue":                onJob(func(j *core.Job) { j.Queue = "" }),
	"job.project":              onJob(func(j *core.Job) { j.Project = "" }),
	"job.bank":                 onJob(func(j *core.Job) { j.Bank = "" }),
	"job.ntasks":               onJob(func(j *core.Job) { j.NTasks = nil }),
	"job.ncores":               onJob(func(j *core.Job) { j.NCores = nil }),
	"job.nnodes":               onJob(func(j *core.Job) { j.NNodes = nil }),
	"job.duration":             onJob(func(j *core.Job) { j.Duration = nil }),
	"job.expiration":           onJob(func(j *core.Job) { j.Expiration = 0 }),
	"job.nodelist":             onJob(func(j *core.Job) { j.Nodelist = "" }),
	"job.ranks":                onJob(func(j *core.Job) { j.Ranks = "" }),
	"job.success":              onJob(func(j *core.Job) { j.Success = nil }),
	"job.waitstatus":           onJob(func(j *core.Job) { j.WaitStatus = nil }),
	"job.returncode":           onJob(func(j *core.Job) { j.ReturnCode = nil }),
	"job.exception":            onJob(func(j *core.Job) { j.Exception = nil }),
	"job.t_submit":             onJob(func(j *core.Job) { j.TSubmit = 0 }),
	"job.t_depend":             onJob(func(j *core.Job) { j.TDepend = 0 }),
	"job.t_priority":           onJob(func(j *core.Job) { j.TPriority = 0 }),
	"job.t_sched":              onJob(func(j *core.Job) { j.TSched = 0 }),
	"job.t_run":                onJob(func(j *core.Job) { j.TRun = 0 }),
	"job.t_cleanup":            onJob(func(j *core.Job) { j.TCleanup = 0 }),
	"job.t_inactive":           onJob(func(j *core.Job) { j.TInactive = 0 }),
	"job.runtime":              onJob(func(j *core.Job) { j.Runtime = 0 }),
	"job.dependencies":         onJob(func(j *core.Job) { j.Dependencies = nil }),
	"job.annotations":          onJob(func(j *core.Job) { j.Annotations = nil }),
	"job.uri":                  onJob(func(j *core.Job) { j.URI = "" }),
	"job.requested":            onJob(func(j *core.Job) { j.Requested = nil }),
	"job.allocated":            onJob(func(j *core.Job) { j.Allocated = nil }),
	"job.allocated.ranks":      onAllocated(func(a *core.Allocated) { a.Ranks = "" }),
	"job.allocated.nodelist":   onAllocated(func(a *core.Allocated) { a.Nodelist = "" }),
	"job.allocated.starttime":  onAllocated(func(a *core.Allocated) { a.StartTime = 0 }),
	"job.allocated.expiration": onAllocated(func(a *core.Allocated) { a.Expiration = 0 }),
}

// onAllocated clears in the allocated part, which ownParts copied.
func onAllocated(fn func(*core.Allocated)) func(*core.Record) {
	return onJob(func(j *core.Job) {
		if j.Allocated != nil {
			fn(j.Allocated)
		}
	})
}

// onInvalid clears in the invalid part, which ownParts copied.
func onInvalid(fn func(*core.Invalid)) func(*core.Record) {
	return func(r *core.Record) {
		if r.Invalid != nil {
			fn(r.Invalid)
		}
	}
}

// Parts a Derive copy shares that clears write into: the plan notes
// which, and ownParts copies them once per record before the clears.
const (
	ownAllocated = 1 << iota
	ownInvalid
	ownPurge
)

func partOf(path string) int {
	switch {
	case strings.HasPrefix(path, "job.allocated."):
		return ownAllocated
	case strings.HasPrefix(path, "invalid."):
		return ownInvalid
	case strings.HasPrefix(path, "purge."):
		return ownPurge
	}
	return 0
}

func ownParts(r *core.Record, parts int) {
	if parts&ownAllocated != 0 && r.Job != nil && r.Job.Allocated != nil {
		a := *r.Job.Allocated
		r.Job.Allocated = &a
	}
	if parts&ownInvalid != 0 && r.Invalid != nil {
		v := *r.Invalid
		r.Invalid = &v
	}
	if parts&ownPurge != 0 && r.Purge != nil {
		p := *r.Purge
		r.Purge = &p
	}
}
