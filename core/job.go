package core

import "encoding/json"

// Job is the snapshot of one Flux job at one event, derived the way
// flux-core 0.88's job-list module derives it, under the key names of
// `flux jobs --json` (sources/flux/jobstate/RULES.md says where each field
// comes from). A value that is not known yet is left out of the JSON (nil
// pointer, empty string, zero time), as `flux jobs --json` leaves it out.
//
// Three fields are always in the JSON form, with flux jobs --json's empty
// values: exception ({"occurred": false} when none), dependencies ([])
// and annotations ({}).
//
// A Job is copied by value on every event. The pointers, slices and raw
// JSON it holds are never written once a snapshot holds them: the reducer
// replaces them instead, so copies may be shared between goroutines.
type Job struct {
	ID       uint64 `json:"id"`                 // job id (FLUID, RFC 19)
	JobID    string `json:"jobid"`              // f58 form with the ASCII prefix, e.g. "fAApqNHV"
	UserID   uint32 `json:"userid"`             // submitter; 4294967295 until the submit event is seen
	Username string `json:"username,omitempty"` // set by the source from NSS, not by the reducer
	Urgency  int    `json:"urgency"`            // 0..31 (0 held, 31 expedited); -1 until submit is seen
	Priority *int64 `json:"priority,omitempty"` // from the priority event; only while the job has been in SCHED

	State  string `json:"state,omitempty"`  // NEW, DEPEND, PRIORITY, SCHED, RUN, CLEANUP or INACTIVE
	Result string `json:"result,omitempty"` // COMPLETED, FAILED, CANCELED or TIMEOUT; only once INACTIVE
	Status string `json:"status,omitempty"` // state name while pending/running, result name once INACTIVE

	Name    string `json:"name,omitempty"`    // attributes.system.job.name, else basename of the command
	Cwd     string `json:"cwd,omitempty"`     // attributes.system.cwd
	Queue   string `json:"queue,omitempty"`   // attributes.system.queue
	Project string `json:"project,omitempty"` // attributes.system.project
	Bank    string `json:"bank,omitempty"`    // attributes.system.bank

	NTasks     *int     `json:"ntasks,omitempty"`     // task count (jobspec, adjusted from R for per-resource)
	NCores     *int     `json:"ncores,omitempty"`     // from the jobspec, then the allocated core count from R
	NNodes     *int     `json:"nnodes,omitempty"`     // from the jobspec if it asks for nodes, then from R
	Duration   *float64 `json:"duration,omitempty"`   // attributes.system.duration in seconds; 0 means unlimited
	Expiration float64  `json:"expiration,omitempty"` // R execution.expiration (after resource-update); from RUN on
	Nodelist   string   `json:"nodelist,omitempty"`   // allocated hosts as a hostlist (RFC 29); from RUN on
	Ranks      string   `json:"ranks,omitempty"`      // allocated broker ranks as an idset (RFC 22); from RUN on

	Success    *bool      `json:"success,omitempty"`    // exited 0 with no fatal exception; only once INACTIVE
	WaitStatus *int       `json:"waitstatus,omitempty"` // wait(2) status of the finish event
	ReturnCode *int       `json:"returncode,omitempty"` // exit code, -signal, -128 canceled before running, 1 failed before running
	Exception  *Exception `json:"exception,omitempty"`  // the exception that counts (see Exception); nil if none

	TSubmit   float64 `json:"t_submit,omitempty"`   // submit event
	TDepend   float64 `json:"t_depend,omitempty"`   // validate event (entered DEPEND)
	TPriority float64 `json:"t_priority,omitempty"` // first time PRIORITY was entered
	TSched    float64 `json:"t_sched,omitempty"`    // first time SCHED was entered
	TRun      float64 `json:"t_run,omitempty"`      // alloc event
	TCleanup  float64 `json:"t_cleanup,omitempty"`  // finish, or the first fatal exception
	TInactive float64 `json:"t_inactive,omitempty"` // clean event
	Runtime   float64 `json:"runtime,omitempty"`    // t_cleanup - t_run, once both are known

	Dependencies []string        `json:"dependencies,omitempty"` // outstanding dependency descriptions, in order added
	Annotations  json.RawMessage `json:"annotations,omitempty"`  // RFC 27 annotations (sched, user); user.uri moved to URI
	URI          string          `json:"uri,omitempty"`          // annotations.user.uri of a Flux instance job

	Requested *Requested `json:"requested,omitempty"` // resources asked for in the jobspec
	Allocated *Allocated `json:"allocated,omitempty"` // resources granted in R; from RUN on
}

// Exception is the exception that describes the job: the first one, or a
// later one of lower (more severe) severity. Severity 0 is fatal.
type Exception struct {
	Occurred bool   `json:"occurred"` // always true in a snapshot (nil Exception means none)
	Severity int    `json:"severity"` // 0 (fatal) .. 7
	Type     string `json:"type"`     // e.g. cancel, timeout, exec, prolog, dependency
	Note     string `json:"note"`     // human-readable text, may be empty
}

// Requested summarizes the resources the jobspec asks for (RFC 14/25),
// counted as flux-core's jj reader counts them.
type Requested struct {
	NNodes    int     `json:"nnodes"`     // nodes asked for; 0 if the jobspec has no node level
	NSlots    int     `json:"nslots"`     // slots in total (times nnodes)
	SlotCores int     `json:"slot_cores"` // cores per slot
	SlotGPUs  int     `json:"slot_gpus"`  // gpus per slot
	NCores    int     `json:"ncores"`     // nslots * slot_cores
	NGPUs     int     `json:"ngpus"`      // nslots * slot_gpus
	NTasks    int     `json:"ntasks"`     // tasks[0].count.total, or per_slot * nslots
	Exclusive bool    `json:"exclusive"`  // node-exclusive request
	Duration  float64 `json:"duration"`   // seconds; 0 means unlimited
}

// Allocated summarizes the resources of R (RFC 20).
type Allocated struct {
	NNodes     int     `json:"nnodes"`               // distinct ranks in R_lite
	NCores     int     `json:"ncores"`               // cores over all ranks
	NGPUs      int     `json:"ngpus"`                // gpus over all ranks
	Ranks      string  `json:"ranks,omitempty"`      // idset, e.g. "0" or "[0-3,7]"
	Nodelist   string  `json:"nodelist,omitempty"`   // hostlist, e.g. "node[0-3]"
	StartTime  float64 `json:"starttime,omitempty"`  // execution.starttime
	Expiration float64 `json:"expiration,omitempty"` // execution.expiration; 0/absent means none
}
