package jobstate

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// Hand-derived final snapshots of the scenario jobs with exceptions,
// updates, dependencies and cancels. Every value below was written by hand
// from testdata/flux/jobs/LABEL.eventlog.jsonl, LABEL.jobspec.json and
// LABEL.R.json by applying flux-core 0.88's job-list rules (job-list/ is
// src/modules/job-list/, info.py is src/bindings/python/flux/job/info.py).
// Unlike testdata/golden, -update never rewrites them: a rule changed in
// the reducer that disagrees with job-list fails here.
//
// Fields not listed are not checked here (golden_test.go covers them);
// absent lists fields that must be unknown (nil / zero).
type handJob struct {
	label  string
	want   map[string]any
	absent []string
}

// Rules used below, cited once:
//
//	state/t_*   job_state.c:update_job_state: t_priority and t_sched keep the first
//	            time the state was entered; t_depend/t_run/t_cleanup/t_inactive the
//	            (single) entry. job_transition_state: a state reached through an
//	            event is not entered again (except PRIORITY, SCHED), so a finish
//	            after a fatal exception keeps the exception's t_cleanup.
//	revert      job_state.c:journal_revert_job (urgency, jobspec-update): SCHED ->
//	            PRIORITY only; the next priority event re-enters SCHED
//	            (journal_priority_event, CONDITIONAL on PRIORITY).
//	result      job_state.c:eventlog_inactive_complete: COMPLETED if success, else
//	            CANCELED for exception type cancel, TIMEOUT for timeout, else FAILED.
//	success     job_state.c:finish_context_parse: status 0 and no severity-0 exception.
//	exception   job_state.c:exception_context_parse: the first, or a later one of
//	            lower severity.
//	returncode  info.py:JobInfo.returncode: WEXITSTATUS / -WTERMSIG of waitstatus;
//	            none: -128 if CANCELED, 1 if FAILED.
//	runtime     info.py:get_runtime: t_cleanup - t_run.
//	priority    job_util.c:store_attr: shown only with SCHED in states_mask.
//	deps        job_state.c:dependency_add/remove (grudgeset).
//	duration    job_data.c:parse_attributes_dict after job_jobspec_update (jpath_set).
//	expiration  job_data.c:job_R_update sets execution.expiration, parse_R re-reads it;
//	            info.py drops a 0 expiration.
var handJobs = []handJob{
	{label: "cancel-pending", want: map[string]any{
		"state": "INACTIVE", "result": "CANCELED", "status": "CANCELED",
		"urgency": 0, "priority": int64(0), // priority 0 still moves PRIORITY -> SCHED (journal_priority_event)
		"t_submit": 1795394507.2175784, "t_depend": 1795394507.2365093,
		"t_priority": 1795394507.25279, "t_sched": 1795394507.2528286,
		"t_cleanup":  1795394508.0792308, // the cancel exception, severity 0 (journal_exception_event)
		"t_inactive": 1795394508.0793052,
		"success":    false,
		"returncode": -128, // canceled with no waitstatus (info.py returncode)
		"exception":  core.Exception{Occurred: true, Severity: 0, Type: "cancel", Note: "no longer needed"},
		"duration":   0.0, "queue": "batch", "name": "cancel-pending",
		"ncores": 1, "ntasks": 1,
	}, absent: []string{"t_run", "waitstatus", "nodelist", "ranks", "expiration", "runtime", "nnodes", "dependencies"}},

	{label: "cancel-running", want: map[string]any{
		"state": "INACTIVE", "result": "CANCELED", "status": "CANCELED",
		"urgency": 16, "priority": int64(16),
		"t_submit": 1795394508.978996, "t_depend": 1795394509.0031018,
		"t_priority": 1795394509.016324, "t_sched": 1795394509.0163434,
		"t_run":      1795394509.031909,
		"t_cleanup":  1795394510.0099583, // the exception, not the later finish (job_transition_state)
		"t_inactive": 1795394510.1393442,
		"runtime":    minus(1795394510.0099583, 1795394509.031909),
		"waitstatus": 36608, "returncode": 143, // 36608 = 143<<8: the shell exited 143 after SIGTERM
		"success":   false,
		"exception": core.Exception{Occurred: true, Severity: 0, Type: "cancel", Note: ""},
		"nodelist":  "vm", "ranks": "0", "ncores": 1, "nnodes": 1, "ntasks": 1,
	}, absent: []string{"expiration", "dependencies"}}, // expiration 0 in R: dropped

	{label: "timeout", want: map[string]any{
		"state": "INACTIVE", "result": "TIMEOUT", "status": "TIMEOUT",
		"t_run":      1795394503.3063302,
		"t_cleanup":  1795394504.5644674, // the timeout exception
		"t_inactive": 1795394504.6978364,
		"runtime":    minus(1795394504.5644674, 1795394503.3063302),
		"waitstatus": 36352, "returncode": 142, "success": false,
		"exception": core.Exception{Occurred: true, Severity: 0, Type: "timeout", Note: "resource allocation expired"},
		"duration":  1.0, "expiration": 1795394504.2945993,
	}},

	{label: "prolog-fail", want: map[string]any{
		"state": "INACTIVE", "result": "FAILED", "status": "FAILED",
		"t_run":      1795394503.8385696,
		"t_cleanup":  1795394504.0661912, // prolog exception, severity 0; no finish event at all
		"t_inactive": 1795394504.0662947,
		"returncode": 1, // FAILED with no waitstatus (info.py returncode)
		"success":    false,
		"exception":  core.Exception{Occurred: true, Severity: 0, Type: "prolog", Note: "prolog exited with code=1 on unknown (rank (null))"},
		"nodelist":   "vm", "ranks": "0",
	}, absent: []string{"waitstatus"}},

	{label: "signaled", want: map[string]any{
		"state": "INACTIVE", "result": "FAILED", "status": "FAILED",
		// flux job kill -s SIGKILL killed the task; the job shell exited 137:
		// 35072 = 137<<8, WIFEXITED, so returncode 137, not -9.
		"waitstatus": 35072, "returncode": 137, "success": false,
		"t_cleanup": 1795394511.5719557, "t_inactive": 1795394511.5870154,
	}, absent: []string{"exception"}},

	{label: "fail-later", want: map[string]any{
		"state": "INACTIVE", "result": "FAILED", "status": "FAILED",
		"waitstatus": 256, "returncode": 1, "success": false,
		"t_cleanup": 1795394527.7379878,
	}, absent: []string{"exception"}},

	{label: "nonfatal-exception", want: map[string]any{
		// success: status 0 and the only exception has severity 3, so
		// COMPLETED even though an exception occurred.
		"state": "INACTIVE", "result": "COMPLETED", "status": "COMPLETED",
		"success": true, "waitstatus": 0, "returncode": 0,
		"exception": core.Exception{Occurred: true, Severity: 3, Type: "test", Note: "non-fatal test exception"},
		// jobspec-update in RUN changes no state (revert only from SCHED).
		"t_priority": 1795394510.330221, "t_sched": 1795394510.3302524,
		"t_run": 1795394510.3400238, "t_cleanup": 1795394512.6789167, "t_inactive": 1795394512.6877866,
		"duration":   120.0,              // jobspec-update attributes.system.duration
		"expiration": 1795394630.3322248, // resource-update
		// parse_R again after resource-update: counts from R.
		"nnodes": 1, "ncores": 1, "ntasks": 1, "nodelist": "vm", "ranks": "0",
	}},

	{label: "held-urgency", want: map[string]any{
		"state": "INACTIVE", "result": "COMPLETED", "success": true,
		"urgency": 20, "priority": int64(20), // the last urgency and priority events
		// PRIORITY and SCHED were entered three times (jobspec-update and
		// urgency reverted SCHED to PRIORITY); the first entries count.
		"t_priority": 1795394505.346321, "t_sched": 1795394505.3463624,
		"t_run":    1795394506.9497757,
		"duration": 300.0, "expiration": 1795394806.9358747,
	}},

	{label: "held-queue-change", want: map[string]any{
		"state": "INACTIVE", "result": "COMPLETED",
		"queue": "debug", "duration": 120.0, // one jobspec-update with three keys
		"urgency": 10, "priority": int64(10),
		"t_priority": 1795394527.5581877, "t_sched": 1795394527.558227,
		"expiration": 1795394648.1824844,
	}},

	{label: "expedite", want: map[string]any{
		"urgency": 31, "priority": int64(4294967295), // FLUX_JOB_URGENCY_EXPEDITE -> FLUX_JOB_PRIORITY_MAX
		"t_priority": 1795394508.5443392, "t_sched": 1795394508.5443683,
		"result": "COMPLETED",
	}},

	{label: "dep-afterok-failed", want: map[string]any{
		"state": "INACTIVE", "result": "FAILED", "status": "FAILED", // exception type dependency: neither cancel nor timeout
		"name":       "dep-bad",
		"t_submit":   1795394526.7852125,
		"t_depend":   1795394526.8005657,
		"t_cleanup":  1795394527.760041, // the dependency exception, straight from DEPEND
		"t_inactive": 1795394527.7600658,
		"returncode": 1, "success": false,
		"exception":    core.Exception{Occurred: true, Severity: 0, Type: "dependency", Note: "dependency after-success=fNSaJaDD can never be satisfied"},
		"dependencies": []string{"after-success=fNSaJaDD"}, // added, never removed
	}, absent: []string{"t_priority", "t_sched", "t_run", "priority", "waitstatus", "runtime", "nodelist"}},

	{label: "dep-afterany", want: map[string]any{
		"state": "INACTIVE", "result": "COMPLETED", "success": true, "returncode": 0, "waitstatus": 0,
		"t_depend":   1795394527.1692488,
		"t_priority": 1795394527.7599869, // depend, after the dependency-remove
		"t_sched":    1795394527.7600157,
		"t_run":      1795394527.7895386, "t_cleanup": 1795394528.2278655, "t_inactive": 1795394528.2513225,
	}, absent: []string{"dependencies", "exception"}}, // removed: none outstanding

	{label: "dep-afterok", want: map[string]any{
		"state": "INACTIVE", "result": "COMPLETED",
	}, absent: []string{"dependencies", "exception"}},

	{label: "begin-time", want: map[string]any{
		"state": "INACTIVE", "result": "COMPLETED",
		"t_depend":   1795394505.0142384,
		"t_priority": 1795394507.9821382, // depend, once begin-time was removed
	}, absent: []string{"dependencies"}},
}

// handField returns a snapshot field by its `flux jobs --json` name, nil
// when unknown.
func handField(j core.Job, name string) any {
	deref := func(p any) any {
		v := reflect.ValueOf(p)
		if v.IsNil() {
			return nil
		}
		return v.Elem().Interface()
	}
	nonZero := func(v any) any {
		if reflect.ValueOf(v).IsZero() {
			return nil
		}
		return v
	}
	switch name {
	case "state":
		return nonZero(j.State)
	case "result":
		return nonZero(j.Result)
	case "status":
		return nonZero(j.Status)
	case "name":
		return nonZero(j.Name)
	case "queue":
		return nonZero(j.Queue)
	case "urgency":
		return j.Urgency
	case "priority":
		return deref(j.Priority)
	case "ntasks":
		return deref(j.NTasks)
	case "ncores":
		return deref(j.NCores)
	case "nnodes":
		return deref(j.NNodes)
	case "duration":
		return deref(j.Duration)
	case "expiration":
		return nonZero(j.Expiration)
	case "nodelist":
		return nonZero(j.Nodelist)
	case "ranks":
		return nonZero(j.Ranks)
	case "success":
		return deref(j.Success)
	case "waitstatus":
		return deref(j.WaitStatus)
	case "returncode":
		return deref(j.ReturnCode)
	case "exception":
		return deref(j.Exception)
	case "t_submit":
		return nonZero(j.TSubmit)
	case "t_depend":
		return nonZero(j.TDepend)
	case "t_priority":
		return nonZero(j.TPriority)
	case "t_sched":
		return nonZero(j.TSched)
	case "t_run":
		return nonZero(j.TRun)
	case "t_cleanup":
		return nonZero(j.TCleanup)
	case "t_inactive":
		return nonZero(j.TInactive)
	case "runtime":
		return nonZero(j.Runtime)
	case "dependencies":
		if len(j.Dependencies) == 0 {
			return nil
		}
		return j.Dependencies
	}
	panic("handField: unknown field " + name)
}

// The reducer's final snapshots, from the live stream and from a late
// backlog, equal the hand-derived values.
func TestHandDerivedSnapshots(t *testing.T) {
	ids := map[string]uint64{}
	for _, j := range scenarioJobs(t) {
		ids[j.label] = j.id
	}
	live := replay(t, readLines(t, "journal-scenario-live-full.jsonl"), nil)
	backlog := replay(t, readLines(t, "journal-backlog-full-before-purge.jsonl"), nil)
	for _, hj := range handJobs {
		t.Run(hj.label, func(t *testing.T) {
			id, ok := ids[hj.label]
			if !ok {
				t.Fatalf("%s not in jobids.txt", hj.label)
			}
			for from, states := range map[string]map[uint64]*State{"live": live, "backlog": backlog} {
				st := states[id]
				if st == nil {
					t.Fatalf("%s: job missing from the %s journal", hj.label, from)
				}
				snap := st.Snapshot()
				for name, want := range hj.want {
					if got := handField(snap, name); !reflect.DeepEqual(got, want) {
						t.Errorf("%s %s: %s = %s, hand-derived %s", hj.label, from, name, show(got), show(want))
					}
				}
				for _, name := range hj.absent {
					if got := handField(snap, name); got != nil {
						t.Errorf("%s %s: %s = %s, want it unknown", hj.label, from, name, show(got))
					}
				}
			}
		})
	}
}

// minus subtracts in float64, as info.py does (Go constant arithmetic
// would be exact).
func minus(a, b float64) float64 { return a - b }

func show(v any) string { return fmt.Sprintf("%#v", v) }
