package elasticsearch

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/fluxstream/fluxstream/core"
)

// Documents of the three profiles. README.md lists every field with its
// derivation; Derive computes the numbers.

// errNoDoc says a record has no document of the asked kind.
var errNoDoc = errors.New("no document")

func jobKeyOf(r *core.Record) string {
	switch {
	case r.Job != nil:
		return JobKey(r.Cluster, r.Job.JobID, r.Job.TSubmit)
	case r.Purge != nil:
		return JobKey(r.Cluster, r.Purge.JobID, r.PurgeTSubmit())
	}
	return ""
}

// spliceFront puts the fields of front (a JSON object) before those of
// obj (a JSON object).
func spliceFront(front, obj []byte) []byte {
	out := make([]byte, 0, len(front)+len(obj)+1)
	out = append(out, front[:len(front)-1]...)
	if len(obj) > 2 {
		out = append(out, ',')
	}
	return append(out, obj[1:]...)
}

func fptr(f float64) *float64 {
	if f == 0 {
		return nil
	}
	return &f
}

// derivedDoc is the native profile's "derived" object.
type derivedDoc struct {
	Elapsed    *float64 `json:"elapsed,omitempty"`
	QueueWait  *float64 `json:"queue_wait,omitempty"`
	CoreHours  *float64 `json:"core_hours,omitempty"`
	ExitCode   *int     `json:"exit_code,omitempty"`
	ExitSignal *int     `json:"exit_signal,omitempty"`
	TimeLimit  *float64 `json:"time_limit,omitempty"`
	Hosts      []string `json:"hosts,omitempty"`
}

func derivedOf(d Derived) derivedDoc {
	return derivedDoc{d.Elapsed, d.QueueWait, d.CoreHours, d.ExitCode, d.ExitSignal, d.TimeLimit, d.Hosts}
}

// eventDoc is the events-index document of r.
func (c *Config) eventDoc(r *core.Record) ([]byte, error) {
	switch c.Profile {
	case "ecs":
		if r.Kind != core.KindEvent || r.Job == nil {
			return nil, errNoDoc
		}
		d := c.ecsDoc(r)
		d["flux"] = m{"id": r.ID, "kind": string(r.Kind), "event": m{"context": rawOrNil(r.Event.Context)}}
		return json.Marshal(d)
	case "slurm":
		if r.Kind != core.KindEvent || r.Job == nil {
			return nil, errNoDoc
		}
		d := c.slurmDoc(r)
		d["event"] = r.Event.Name
		d["flux_id"] = r.ID
		d["flux_kind"] = string(r.Kind)
		if ctx := rawOrNil(r.Event.Context); ctx != nil {
			d["event_context"] = ctx
		}
		return json.Marshal(d)
	}
	// native: the record's JSON form, with @timestamp and the job's key.
	js, err := r.JSON()
	if err != nil {
		return nil, err
	}
	front := m{}
	if ts := r.Time(); ts > 0 {
		front["@timestamp"] = ts
	}
	if k := jobKeyOf(r); k != "" {
		front["job_key"] = k
	}
	if r.Job != nil {
		front["derived"] = derivedOf(Derive(r.Job))
	}
	fb, err := json.Marshal(front)
	if err != nil {
		return nil, err
	}
	return spliceFront(fb, js), nil
}

func rawOrNil(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return raw
}

// jobDoc is the jobs-index document of an event record: the job's
// snapshot at that event.
func (c *Config) jobDoc(r *core.Record) ([]byte, error) {
	if r.Kind != core.KindEvent || r.Job == nil || r.Event == nil {
		return nil, errNoDoc
	}
	switch c.Profile {
	case "ecs":
		d := c.ecsDoc(r)
		d["job_key"] = jobKeyOf(r)
		return json.Marshal(d)
	case "slurm":
		d := c.slurmDoc(r)
		d["job_key"] = jobKeyOf(r)
		return json.Marshal(d)
	}
	base := (&core.Record{Kind: r.Kind, ID: r.ID, Cluster: r.Cluster, Source: r.Source, Job: r.Job}).AppendJSON(nil)
	fb, err := json.Marshal(struct {
		TS      float64    `json:"@timestamp"`
		Key     string     `json:"job_key"`
		Event   m          `json:"event"`
		Derived derivedDoc `json:"derived"`
	}{r.Event.Timestamp, jobKeyOf(r), m{"name": r.Event.Name, "timestamp": r.Event.Timestamp}, derivedOf(Derive(r.Job))})
	if err != nil {
		return nil, err
	}
	return spliceFront(fb, base), nil
}

// ecsDoc maps a snapshot to the field names of LLNL cmvl's
// hpc-job-scheduler schema (ECS style).
func (c *Config) ecsDoc(r *core.Record) m {
	j := r.Job
	d := Derive(j)
	ev := m{"dataset": "flux.joblog", "action": r.Event.Name}
	if j.State == "INACTIVE" && j.Result != "" {
		ev["outcome"] = j.Result
	}
	if j.TRun > 0 {
		ev["start"] = j.TRun
	}
	if j.TInactive > 0 {
		ev["end"] = j.TInactive
	}
	if d.Elapsed != nil {
		ev["duration"] = int64(*d.Elapsed * 1e9) // ECS: nanoseconds
		ev["duration_seconds"] = *d.Elapsed
	}
	user := m{}
	if j.UserID != 4294967295 {
		user["id"] = strconv.FormatUint(uint64(j.UserID), 10)
	}
	if j.Username != "" {
		user["name"] = j.Username
	}
	job := m{"id": j.JobID, "scheduler": "flux", "state": j.State}
	set := func(k string, v any, ok bool) {
		if ok {
			job[k] = v
		}
	}
	set("name", j.Name, j.Name != "")
	set("queue", j.Queue, j.Queue != "")
	set("bank", j.Bank, j.Bank != "")
	set("project", j.Project, j.Project != "")
	set("cwd", j.Cwd, j.Cwd != "")
	set("urgency", strconv.Itoa(j.Urgency), j.Urgency >= 0)
	set("priority", deref(j.Priority), j.Priority != nil)
	set("ntasks", derefInt(j.NTasks), j.NTasks != nil)
	if d.TimeLimit != nil {
		job["timelimit"] = FSD(*d.TimeLimit)
		job["timelimit_seconds"] = *d.TimeLimit
	}
	node := m{}
	if j.Nodelist != "" {
		node["list"] = j.Nodelist
	}
	if j.NNodes != nil {
		node["count"] = *j.NNodes
	}
	if d.Hosts != nil {
		node["hosts"] = d.Hosts
	}
	if len(node) > 0 {
		job["node"] = node
	}
	if j.NCores != nil {
		job["proc"] = m{"count": *j.NCores}
	}
	set("submittime", j.TSubmit, j.TSubmit > 0)
	set("eligibletime", j.TSched, j.TSched > 0)
	if d.ExitCode != nil {
		job["exit_code"], job["exit_signal"] = *d.ExitCode, *d.ExitSignal
	}
	set("returncode", derefInt(j.ReturnCode), j.ReturnCode != nil)
	set("queue_time", derefF(d.QueueWait), d.QueueWait != nil)
	set("core_hours", derefF(d.CoreHours), d.CoreHours != nil)
	if e := j.Exception; e != nil && e.Occurred {
		job["exception_type"], job["exception_note"], job["exception_severity"] = e.Type, e.Note, e.Severity
	}
	doc := m{"@timestamp": r.Event.Timestamp, "event": ev, "job": job}
	if len(user) > 0 {
		doc["user"] = user
	}
	if r.Cluster != "" {
		doc["host"] = m{"cluster": r.Cluster}
	}
	return doc
}

// slurmDoc maps a snapshot to the field names of Slurm's
// jobcomp/elasticsearch record.
func (c *Config) slurmDoc(r *core.Record) m {
	j := r.Job
	d := Derive(j)
	doc := m{"@timestamp": r.Event.Timestamp, "jobid": j.JobID, "state": SlurmState(j), "flux_state": j.State}
	set := func(k string, v any, ok bool) {
		if ok {
			doc[k] = v
		}
	}
	set("username", j.Username, j.Username != "")
	set("user_id", j.UserID, j.UserID != 4294967295)
	set("@submit", j.TSubmit, j.TSubmit > 0)
	set("@eligible", j.TSched, j.TSched > 0)
	set("@start", j.TRun, j.TRun > 0)
	set("@end", j.TCleanup, j.TCleanup > 0)
	set("elapsed", derefF(d.Elapsed), d.Elapsed != nil)
	set("@queue_wait", derefF(d.QueueWait), d.QueueWait != nil)
	set("partition", j.Queue, j.Queue != "")
	set("account", j.Bank, j.Bank != "")
	set("wc_key", j.Project, j.Project != "")
	set("job_name", j.Name, j.Name != "")
	set("work_dir", j.Cwd, j.Cwd != "")
	set("nodes", j.Nodelist, j.Nodelist != "")
	set("hosts", d.Hosts, d.Hosts != nil)
	set("total_nodes", derefInt(j.NNodes), j.NNodes != nil)
	set("total_cpus", derefInt(j.NCores), j.NCores != nil)
	set("ntasks", derefInt(j.NTasks), j.NTasks != nil)
	set("time_limit", derefF(d.TimeLimit), d.TimeLimit != nil)
	set("flux_result", j.Result, j.Result != "")
	if d.ExitCode != nil {
		ec := SlurmExitCode(*d.ExitCode, *d.ExitSignal)
		doc["exit_code"], doc["derived_ec"] = ec, ec
	}
	set("cpu_hours", derefF(d.CoreHours), d.CoreHours != nil)
	set("cluster", r.Cluster, r.Cluster != "")
	if e := j.Exception; e != nil && e.Occurred {
		doc["exception_type"], doc["exception_note"] = e.Type, e.Note
	}
	return doc
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func derefF(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// purgeFields are what a purge adds to the stored job document.
func purgeFields(r *core.Record, at float64) []byte {
	b, _ := json.Marshal(struct {
		Purged bool    `json:"purged"`
		At     float64 `json:"purged_at"`
		Reason string  `json:"purge_reason"`
	}{true, at, r.Purge.Reason})
	return b
}

// purgeStub is the job document of a purge whose job has none: what the
// purge knows.
func (c *Config) purgeStub(r *core.Record, at float64) ([]byte, error) {
	p := r.Purge
	key := jobKeyOf(r)
	up := m{"@timestamp": at, "job_key": key, "purged": true, "purged_at": at, "purge_reason": p.Reason}
	switch c.Profile {
	case "ecs":
		up["job"] = m{"id": p.JobID, "scheduler": "flux"}
		if r.Cluster != "" {
			up["host"] = m{"cluster": r.Cluster}
		}
	case "slurm":
		up["jobid"] = p.JobID
		if r.Cluster != "" {
			up["cluster"] = r.Cluster
		}
	default:
		up["kind"] = "purge"
		up["id"] = r.ID
		up["job"] = m{"id": p.ID, "jobid": p.JobID}
		if r.Cluster != "" {
			up["cluster"] = r.Cluster
		}
	}
	return json.Marshal(up)
}
