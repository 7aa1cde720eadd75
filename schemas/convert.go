package schemas

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fluxstream/fluxstream/core"
)

// The Avro shape of a record. Pointers are the ["null", T] unions; the
// zero values the JSON form omits become null, and back.

type avroRecord struct {
	Kind     string       `avro:"kind"`
	ID       string       `avro:"id"`
	Cluster  *string      `avro:"cluster"`
	Source   *string      `avro:"source"`
	Event    *avroEvent   `avro:"event"`
	Job      *avroJob     `avro:"job"`
	Jobspec  *string      `avro:"jobspec"`
	R        *string      `avro:"R"`
	Eventlog []avroEvent  `avro:"eventlog"`
	Purge    *avroPurge   `avro:"purge"`
	Invalid  *avroInvalid `avro:"invalid"`
}

type avroEvent struct {
	Timestamp float64 `avro:"timestamp"`
	Name      string  `avro:"name"`
	Context   *string `avro:"context"`
}

type avroJob struct {
	ID           int64          `avro:"id"`
	JobID        string         `avro:"jobid"`
	UserID       int64          `avro:"userid"`
	Username     *string        `avro:"username"`
	Urgency      int            `avro:"urgency"`
	Priority     *int64         `avro:"priority"`
	State        *string        `avro:"state"`
	Result       *string        `avro:"result"`
	Status       *string        `avro:"status"`
	Name         *string        `avro:"name"`
	Cwd          *string        `avro:"cwd"`
	Queue        *string        `avro:"queue"`
	Project      *string        `avro:"project"`
	Bank         *string        `avro:"bank"`
	NTasks       *int           `avro:"ntasks"`
	NCores       *int           `avro:"ncores"`
	NNodes       *int           `avro:"nnodes"`
	Duration     *float64       `avro:"duration"`
	Expiration   *float64       `avro:"expiration"`
	Nodelist     *string        `avro:"nodelist"`
	Ranks        *string        `avro:"ranks"`
	Success      *bool          `avro:"success"`
	WaitStatus   *int           `avro:"waitstatus"`
	ReturnCode   *int           `avro:"returncode"`
	Exception    *avroException `avro:"exception"`
	TSubmit      *float64       `avro:"t_submit"`
	TDepend      *float64       `avro:"t_depend"`
	TPriority    *float64       `avro:"t_priority"`
	TSched       *float64       `avro:"t_sched"`
	TRun         *float64       `avro:"t_run"`
	TCleanup     *float64       `avro:"t_cleanup"`
	TInactive    *float64       `avro:"t_inactive"`
	Runtime      *float64       `avro:"runtime"`
	Dependencies []string       `avro:"dependencies"`
	Annotations  *string        `avro:"annotations"`
	URI          *string        `avro:"uri"`
	Requested    *avroRequested `avro:"requested"`
	Allocated    *avroAllocated `avro:"allocated"`
}

type avroException struct {
	Occurred bool   `avro:"occurred"`
	Severity int    `avro:"severity"`
	Type     string `avro:"type"`
	Note     string `avro:"note"`
}

type avroRequested struct {
	NNodes    int     `avro:"nnodes"`
	NSlots    int     `avro:"nslots"`
	SlotCores int     `avro:"slot_cores"`
	SlotGPUs  int     `avro:"slot_gpus"`
	NCores    int     `avro:"ncores"`
	NGPUs     int     `avro:"ngpus"`
	NTasks    int     `avro:"ntasks"`
	Exclusive bool    `avro:"exclusive"`
	Duration  float64 `avro:"duration"`
}

type avroAllocated struct {
	NNodes     int      `avro:"nnodes"`
	NCores     int      `avro:"ncores"`
	NGPUs      int      `avro:"ngpus"`
	Ranks      *string  `avro:"ranks"`
	Nodelist   *string  `avro:"nodelist"`
	StartTime  *float64 `avro:"starttime"`
	Expiration *float64 `avro:"expiration"`
}

type avroPurge struct {
	ID     int64    `avro:"id"`
	JobID  string   `avro:"jobid"`
	Reason string   `avro:"reason"`
	Time   *float64 `avro:"time"`
}

type avroInvalid struct {
	Error string  `avro:"error"`
	Where *string `avro:"where"`
	Raw   *string `avro:"raw"`
}

func unstr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func unraw(p *string) json.RawMessage {
	if p == nil {
		return nil
	}
	return json.RawMessage(*p)
}

func unnum(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func fromAvroEvent(e avroEvent) core.Event {
	return core.Event{Timestamp: e.Timestamp, Name: e.Name, Context: unraw(e.Context)}
}

// checkJSON reports fields that should hold JSON text but do not (a
// foreign writer, or damage).
func checkJSON(a *avroRecord) error {
	check := func(name string, p *string) error {
		if p != nil && !json.Valid([]byte(*p)) {
			return fmt.Errorf("field %s: not JSON text", name)
		}
		return nil
	}
	errs := []error{check("jobspec", a.Jobspec), check("R", a.R)}
	if a.Event != nil {
		errs = append(errs, check("event.context", a.Event.Context))
	}
	for i := range a.Eventlog {
		errs = append(errs, check(fmt.Sprintf("eventlog[%d].context", i), a.Eventlog[i].Context))
	}
	if a.Job != nil {
		errs = append(errs, check("job.annotations", a.Job.Annotations))
	}
	return errors.Join(errs...)
}

func fromAvro(a *avroRecord) *core.Record {
	r := &core.Record{Kind: core.Kind(a.Kind), ID: a.ID, Cluster: unstr(a.Cluster), Source: unstr(a.Source),
		Jobspec: unraw(a.Jobspec), R: unraw(a.R)}
	if a.Event != nil {
		e := fromAvroEvent(*a.Event)
		r.Event = &e
	}
	if a.Eventlog != nil {
		r.Eventlog = make([]core.Event, len(a.Eventlog))
		for i, e := range a.Eventlog {
			r.Eventlog[i] = fromAvroEvent(e)
		}
	}
	if p := a.Purge; p != nil {
		r.Purge = &core.Purge{ID: uint64(p.ID), JobID: p.JobID, Reason: p.Reason, Time: unnum(p.Time)}
	}
	if v := a.Invalid; v != nil {
		r.Invalid = &core.Invalid{Error: v.Error, Where: unstr(v.Where), Raw: unstr(v.Raw)}
	}
	if j := a.Job; j != nil {
		r.Job = &core.Job{
			ID: uint64(j.ID), JobID: j.JobID, UserID: uint32(j.UserID), Username: unstr(j.Username),
			Urgency: j.Urgency, Priority: j.Priority, State: unstr(j.State), Result: unstr(j.Result), Status: unstr(j.Status),
			Name: unstr(j.Name), Cwd: unstr(j.Cwd), Queue: unstr(j.Queue), Project: unstr(j.Project), Bank: unstr(j.Bank),
			NTasks: j.NTasks, NCores: j.NCores, NNodes: j.NNodes, Duration: j.Duration, Expiration: unnum(j.Expiration),
			Nodelist: unstr(j.Nodelist), Ranks: unstr(j.Ranks), Success: j.Success, WaitStatus: j.WaitStatus, ReturnCode: j.ReturnCode,
			TSubmit: unnum(j.TSubmit), TDepend: unnum(j.TDepend), TPriority: unnum(j.TPriority), TSched: unnum(j.TSched),
			TRun: unnum(j.TRun), TCleanup: unnum(j.TCleanup), TInactive: unnum(j.TInactive), Runtime: unnum(j.Runtime),
			Dependencies: j.Dependencies, Annotations: unraw(j.Annotations), URI: unstr(j.URI),
		}
		if x := j.Exception; x != nil {
			r.Job.Exception = &core.Exception{Occurred: x.Occurred, Severity: x.Severity, Type: x.Type, Note: x.Note}
		}
		if q := j.Requested; q != nil {
			r.Job.Requested = &core.Requested{NNodes: q.NNodes, NSlots: q.NSlots, SlotCores: q.SlotCores, SlotGPUs: q.SlotGPUs,
				NCores: q.NCores, NGPUs: q.NGPUs, NTasks: q.NTasks, Exclusive: q.Exclusive, Duration: q.Duration}
		}
		if al := j.Allocated; al != nil {
			r.Job.Allocated = &core.Allocated{NNodes: al.NNodes, NCores: al.NCores, NGPUs: al.NGPUs, Ranks: unstr(al.Ranks),
				Nodelist: unstr(al.Nodelist), StartTime: unnum(al.StartTime), Expiration: unnum(al.Expiration)}
		}
	}
	return r
}
