package filter

import (
	"encoding/json"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// rawPlan prunes one of Flux's JSON objects of every record.
type rawPlan struct {
	path  string
	start recpath.Start
	field func(*core.Record) *json.RawMessage // nil when the record lacks the part
}

var rawFields = map[string]func(*core.Record) *json.RawMessage{
	"jobspec": func(r *core.Record) *json.RawMessage { return &r.Jobspec },
	"R":       func(r *core.Record) *json.RawMessage { return &r.R },
	"event.context": func(r *core.Record) *json.RawMessage {
		if r.Event == nil {
			return nil
		}
		return &r.Event.Context
	},
	"job.annotations": func(r *core.Record) *json.RawMessage {
		if r.Job == nil {
			return nil
		}
		return &r.Job.Annotations
	},
}

func onJob(fn func(j *core.Job)) func(*core.Record) {
	return func(r *core.Record) {
		if r.Job != nil {
			fn(r.Job)
		}
	}
}

// clears removes one field of the contract from a clone: the zero value,
// which the JSON form leaves out and Avro writes as null (userid and
// urgency get the contract's "not known" values, 4294967295 and -1).
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
		if r.Event != nil {
			r.Event.Context = nil
		}
	},
	"purge.time": func(r *core.Record) {
		if r.Purge != nil {
			r.Purge.Time = 0
		}
	},
	"invalid.where": func(r *core.Record) {
		if r.Invalid != nil {
			r.Invalid.Where = ""
		}
	},
	"invalid.raw": func(r *core.Record) {
		if r.Invalid != nil {
			r.Invalid.Raw = ""
		}
	},
	"job.userid":       onJob(func(j *core.Job) { j.UserID = 4294967295 }),
	"job.urgency":      onJob(func(j *core.Job) { j.Urgency = -1 }),
	"job.username":     onJob(func(j *core.Job) { j.Username = "" }),
	"job.priority":     onJob(func(j *core.Job) { j.Priority = nil }),
	"job.state":        onJob(func(j *core.Job) { j.State = "" }),
	"job.result":       onJob(func(j *core.Job) { j.Result = "" }),
	"job.status":       onJob(func(j *core.Job) { j.Status = "" }),
	"job.name":         onJob(func(j *core.Job) { j.Name = "" }),
	"job.cwd":          onJob(func(j *core.Job) { j.Cwd = "" }),
	"job.queue":        onJob(func(j *core.Job) { j.Queue = "" }),
	"job.project":      onJob(func(j *core.Job) { j.Project = "" }),
	"job.bank":         onJob(func(j *core.Job) { j.Bank = "" }),
	"job.ntasks":       onJob(func(j *core.Job) { j.NTasks = nil }),
	"job.ncores":       onJob(func(j *core.Job) { j.NCores = nil }),
	"job.nnodes":       onJob(func(j *core.Job) { j.NNodes = nil }),
	"job.duration":     onJob(func(j *core.Job) { j.Duration = nil }),
	"job.expiration":   onJob(func(j *core.Job) { j.Expiration = 0 }),
	"job.nodelist":     onJob(func(j *core.Job) { j.Nodelist = "" }),
	"job.ranks":        onJob(func(j *core.Job) { j.Ranks = "" }),
	"job.success":      onJob(func(j *core.Job) { j.Success = nil }),
	"job.waitstatus":   onJob(func(j *core.Job) { j.WaitStatus = nil }),
	"job.returncode":   onJob(func(j *core.Job) { j.ReturnCode = nil }),
	"job.exception":    onJob(func(j *core.Job) { j.Exception = nil }),
	"job.t_submit":     onJob(func(j *core.Job) { j.TSubmit = 0 }),
	"job.t_depend":     onJob(func(j *core.Job) { j.TDepend = 0 }),
	"job.t_priority":   onJob(func(j *core.Job) { j.TPriority = 0 }),
	"job.t_sched":      onJob(func(j *core.Job) { j.TSched = 0 }),
	"job.t_run":        onJob(func(j *core.Job) { j.TRun = 0 }),
	"job.t_cleanup":    onJob(func(j *core.Job) { j.TCleanup = 0 }),
	"job.t_inactive":   onJob(func(j *core.Job) { j.TInactive = 0 }),
	"job.runtime":      onJob(func(j *core.Job) { j.Runtime = 0 }),
	"job.dependencies": onJob(func(j *core.Job) { j.Dependencies = nil }),
	"job.annotations":  onJob(func(j *core.Job) { j.Annotations = nil }),
	"job.uri":          onJob(func(j *core.Job) { j.URI = "" }),
	"job.requested":    onJob(func(j *core.Job) { j.Requested = nil }),
	"job.allocated":    onJob(func(j *core.Job) { j.Allocated = nil }),
	"job.allocated.ranks": onJob(func(j *core.Job) {
		if j.Allocated != nil {
			j.Allocated.Ranks = ""
		}
	}),
	"job.allocated.nodelist": onJob(func(j *core.Job) {
		if j.Allocated != nil {
			j.Allocated.Nodelist = ""
		}
	}),
	"job.allocated.starttime": onJob(func(j *core.Job) {
		if j.Allocated != nil {
			j.Allocated.StartTime = 0
		}
	}),
	"job.allocated.expiration": onJob(func(j *core.Job) {
		if j.Allocated != nil {
			j.Allocated.Expiration = 0
		}
	}),
}
