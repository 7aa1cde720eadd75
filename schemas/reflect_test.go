package schemas

import (
	"encoding/json"

	"github.com/fluxstream/fluxstream/core"
)

// marshalReflect is Marshal through hamba's reflection encoder and the
// Go shape of avroRecord: the reference the hand-written encoder of core
// is tested against.
func marshalReflect(r *core.Record) ([]byte, error) {
	return api.Marshal(RecordSchema, toAvro(r))
}

func str(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func raw(b json.RawMessage) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}

func num(f float64) *float64 {
	if f == 0 {
		return nil
	}
	return &f
}

func toAvroEvent(e core.Event) avroEvent {
	return avroEvent{Timestamp: e.Timestamp, Name: e.Name, Context: raw(e.Context)}
}

func toAvro(r *core.Record) *avroRecord {
	a := &avroRecord{Kind: string(r.Kind), ID: r.ID, Cluster: str(r.Cluster), Source: str(r.Source),
		Jobspec: raw(r.Jobspec), R: raw(r.R)}
	if r.Event != nil {
		e := toAvroEvent(*r.Event)
		a.Event = &e
	}
	if r.Eventlog != nil {
		a.Eventlog = make([]avroEvent, len(r.Eventlog))
		for i, e := range r.Eventlog {
			a.Eventlog[i] = toAvroEvent(e)
		}
	}
	if p := r.Purge; p != nil {
		a.Purge = &avroPurge{ID: int64(p.ID), JobID: p.JobID, Reason: p.Reason, Time: num(p.Time)}
	}
	if v := r.Invalid; v != nil {
		a.Invalid = &avroInvalid{Error: v.Error, Where: str(v.Where), Raw: str(v.Raw)}
	}
	if j := r.Job; j != nil {
		a.Job = &avroJob{
			ID: int64(j.ID), JobID: j.JobID, UserID: int64(j.UserID), Username: str(j.Username),
			Urgency: j.Urgency, Priority: j.Priority, State: str(j.State), Result: str(j.Result), Status: str(j.Status),
			Name: str(j.Name), Cwd: str(j.Cwd), Queue: str(j.Queue), Project: str(j.Project), Bank: str(j.Bank),
			NTasks: j.NTasks, NCores: j.NCores, NNodes: j.NNodes, Duration: j.Duration, Expiration: num(j.Expiration),
			Nodelist: str(j.Nodelist), Ranks: str(j.Ranks), Success: j.Success, WaitStatus: j.WaitStatus, ReturnCode: j.ReturnCode,
			TSubmit: num(j.TSubmit), TDepend: num(j.TDepend), TPriority: num(j.TPriority), TSched: num(j.TSched),
			TRun: num(j.TRun), TCleanup: num(j.TCleanup), TInactive: num(j.TInactive), Runtime: num(j.Runtime),
			Dependencies: j.Dependencies, Annotations: raw(j.Annotations), URI: str(j.URI),
		}
		if x := j.Exception; x != nil {
			a.Job.Exception = &avroException{Occurred: x.Occurred, Severity: x.Severity, Type: x.Type, Note: x.Note}
		}
		if q := j.Requested; q != nil {
			a.Job.Requested = &avroRequested{NNodes: q.NNodes, NSlots: q.NSlots, SlotCores: q.SlotCores, SlotGPUs: q.SlotGPUs,
				NCores: q.NCores, NGPUs: q.NGPUs, NTasks: q.NTasks, Exclusive: q.Exclusive, Duration: q.Duration}
		}
		if al := j.Allocated; al != nil {
			a.Job.Allocated = &avroAllocated{NNodes: al.NNodes, NCores: al.NCores, NGPUs: al.NGPUs, Ranks: str(al.Ranks),
				Nodelist: str(al.Nodelist), StartTime: num(al.StartTime), Expiration: num(al.Expiration)}
		}
	}
	return a
}
