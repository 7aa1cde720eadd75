package jobstate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// brief prints the fields a trace test looks at.
func brief(j core.Job, keys ...string) string {
	var m map[string]any
	b, _ := json.Marshal(j)
	_ = json.Unmarshal(b, &m)
	var parts []string
	for _, k := range keys {
		v, ok := m[k]
		if !ok {
			parts = append(parts, k+"=-")
			continue
		}
		vb, _ := json.Marshal(v)
		parts = append(parts, k+"="+string(vb))
	}
	return strings.Join(parts, " ")
}

// traceOf replays a fixture and returns the trace of one scenario job.
func traceOf(t *testing.T, file, label string) []applied {
	t.Helper()
	trace := map[uint64][]applied{}
	replay(t, readLines(t, file), trace)
	for _, j := range scenarioJobs(t) {
		if j.label == label {
			return trace[j.id]
		}
	}
	t.Fatalf("no job %s", label)
	return nil
}

type traceStep struct{ event, want string }

func checkTrace(t *testing.T, tr []applied, keys []string, want []traceStep) {
	t.Helper()
	if len(tr) != len(want) {
		t.Errorf("%d events, want %d", len(tr), len(want))
	}
	for i := 0; i < len(tr) && i < len(want); i++ {
		var j core.Job
		if err := json.Unmarshal([]byte(tr[i].snap), &j); err != nil {
			t.Fatal(err)
		}
		got := brief(j, keys...)
		if tr[i].ev.Name != want[i].event || got != want[i].want {
			t.Errorf("event %d:\n got  %s %s\n want %s %s", i, tr[i].ev.Name, got, want[i].event, want[i].want)
		}
	}
}

// The held job of the scenario: held at submit, two memos (one volatile),
// duration changed with flux update, then released with urgency 20.
// jobspec-update and urgency send it from SCHED back to PRIORITY; priority
// is hidden until SCHED is entered again; t_priority and t_sched keep the
// first entry.
func TestTraceHeldUrgencyLive(t *testing.T) {
	keys := []string{"state", "urgency", "priority", "duration", "t_priority", "t_sched", "annotations"}
	const tp, ts = `t_priority=1795394505.346321`, `t_sched=1795394505.3463624`
	const memo1 = `{"user":{"note":"waiting on admin","ticket":42}}`
	const memo2 = `{"user":{"note":"waiting on admin","ticket":42,"vkey":"volatile-value"}}`
	const ann = `{"sched":{"resource_summary":"rank0/core0"},"user":{"note":"waiting on admin","ticket":42,"vkey":"volatile-value"}}`
	want := []traceStep{
		{"submit", `state="NEW" urgency=0 priority=- duration=0 t_priority=- t_sched=- annotations=-`},
		{"validate", `state="DEPEND" urgency=0 priority=- duration=0 t_priority=- t_sched=- annotations=-`},
		{"depend", `state="PRIORITY" urgency=0 priority=- duration=0 ` + tp + ` t_sched=- annotations=-`},
		{"priority", `state="SCHED" urgency=0 priority=0 duration=0 ` + tp + ` ` + ts + ` annotations=-`},
		{"memo", `state="SCHED" urgency=0 priority=0 duration=0 ` + tp + ` ` + ts + ` annotations=` + memo1},
		{"memo", `state="SCHED" urgency=0 priority=0 duration=0 ` + tp + ` ` + ts + ` annotations=` + memo2},
		{"jobspec-update", `state="PRIORITY" urgency=0 priority=- duration=300 ` + tp + ` ` + ts + ` annotations=` + memo2},
		{"priority", `state="SCHED" urgency=0 priority=0 duration=300 ` + tp + ` ` + ts + ` annotations=` + memo2},
		{"urgency", `state="PRIORITY" urgency=20 priority=- duration=300 ` + tp + ` ` + ts + ` annotations=` + memo2},
		{"priority", `state="SCHED" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + memo2},
		{"annotations", `state="SCHED" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + ann},
		{"alloc", `state="RUN" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + ann},
	}
	for _, e := range []string{"prolog-start", "prolog-finish", "start"} {
		want = append(want, traceStep{e, `state="RUN" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + ann})
	}
	for _, e := range []string{"finish", "epilog-start", "release", "epilog-finish", "free"} {
		want = append(want, traceStep{e, `state="CLEANUP" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + ann})
	}
	want = append(want, traceStep{"clean", `state="INACTIVE" urgency=20 priority=20 duration=300 ` + tp + ` ` + ts + ` annotations=` + ann})
	checkTrace(t, traceOf(t, "journal-scenario-live-full.jsonl", "held-urgency"), keys, want)
}

// The same job from the backlog: no annotations events and no separate
// volatile memo. Its first memo carries vkey all the same: the job-manager
// keeps that memo's context object as annotations.user and merges the
// volatile memo into it, so the in-memory eventlog the backlog is served
// from shows the merged context (the KVS eventlog, jobs/held-urgency
// .eventlog.jsonl, does not). The backlog jobspec is the current one, so
// duration is 300 from submit on.
func TestTraceHeldUrgencyBacklog(t *testing.T) {
	keys := []string{"state", "priority", "duration", "annotations"}
	const memo = `{"user":{"note":"waiting on admin","ticket":42,"vkey":"volatile-value"}}`
	want := []traceStep{
		{"submit", `state="NEW" priority=- duration=300 annotations=-`},
		{"validate", `state="DEPEND" priority=- duration=300 annotations=-`},
		{"depend", `state="PRIORITY" priority=- duration=300 annotations=-`},
		{"priority", `state="SCHED" priority=0 duration=300 annotations=-`},
		{"memo", `state="SCHED" priority=0 duration=300 annotations=` + memo},
		{"jobspec-update", `state="PRIORITY" priority=- duration=300 annotations=` + memo},
		{"priority", `state="SCHED" priority=0 duration=300 annotations=` + memo},
		{"urgency", `state="PRIORITY" priority=- duration=300 annotations=` + memo},
		{"priority", `state="SCHED" priority=20 duration=300 annotations=` + memo},
		{"alloc", `state="RUN" priority=20 duration=300 annotations=` + memo},
	}
	tr := traceOf(t, "journal-backlog-full-before-purge.jsonl", "held-urgency")
	checkTrace(t, tr[:len(want)], keys, want)
}

// Queue change by jobspec-update: the live stream starts in batch (the
// jobspec as submitted), the backlog in debug (the current jobspec).
func TestTraceQueueChange(t *testing.T) {
	keys := []string{"state", "queue", "duration", "priority"}
	live := []traceStep{
		{"submit", `state="NEW" queue="batch" duration=0 priority=-`},
		{"validate", `state="DEPEND" queue="batch" duration=0 priority=-`},
		{"depend", `state="PRIORITY" queue="batch" duration=0 priority=-`},
		{"priority", `state="SCHED" queue="batch" duration=0 priority=0`},
		{"jobspec-update", `state="PRIORITY" queue="debug" duration=120 priority=-`},
		{"priority", `state="SCHED" queue="debug" duration=120 priority=0`},
		{"urgency", `state="PRIORITY" queue="debug" duration=120 priority=-`},
		{"priority", `state="SCHED" queue="debug" duration=120 priority=10`},
	}
	tr := traceOf(t, "journal-scenario-live-full.jsonl", "held-queue-change")
	checkTrace(t, tr[:len(live)], keys, live)

	backlog := []traceStep{
		{"submit", `state="NEW" queue="debug" duration=120 priority=-`},
		{"validate", `state="DEPEND" queue="debug" duration=120 priority=-`},
		{"depend", `state="PRIORITY" queue="debug" duration=120 priority=-`},
		{"priority", `state="SCHED" queue="debug" duration=120 priority=0`},
		{"jobspec-update", `state="PRIORITY" queue="debug" duration=120 priority=-`},
	}
	tr = traceOf(t, "journal-backlog-full-before-purge.jsonl", "held-queue-change")
	checkTrace(t, tr[:len(backlog)], keys, backlog)
}

// A non-fatal exception shows when it happens; flux update duration=+1m
// on the running job gives jobspec-update then resource-update. job-list
// re-parses the jobspec on jobspec-update, which leaves nnodes unknown
// until resource-update re-parses R (RULES.md, "nnodes").
func TestTraceNonfatalException(t *testing.T) {
	keys := []string{"state", "nnodes", "duration", "expiration", "exception"}
	const exc = `exception={"note":"non-fatal test exception","occurred":true,"severity":3,"type":"test"}`
	want := []traceStep{
		{"alloc", `state="RUN" nnodes=1 duration=60 expiration=1795394570.3322248 exception=-`},
		{"prolog-start", `state="RUN" nnodes=1 duration=60 expiration=1795394570.3322248 exception=-`},
		{"prolog-finish", `state="RUN" nnodes=1 duration=60 expiration=1795394570.3322248 exception=-`},
		{"start", `state="RUN" nnodes=1 duration=60 expiration=1795394570.3322248 exception=-`},
		{"exception", `state="RUN" nnodes=1 duration=60 expiration=1795394570.3322248 ` + exc},
		{"jobspec-update", `state="RUN" nnodes=- duration=120 expiration=1795394570.3322248 ` + exc},
		{"resource-update", `state="RUN" nnodes=1 duration=120 expiration=1795394630.3322248 ` + exc},
		{"finish", `state="CLEANUP" nnodes=1 duration=120 expiration=1795394630.3322248 ` + exc},
	}
	tr := traceOf(t, "journal-scenario-live-full.jsonl", "nonfatal-exception")
	checkTrace(t, tr[5:5+len(want)], keys, want)
}

// Other captures of the same instance reduce without errors; filters and
// purges give what they should.
func TestOtherCaptures(t *testing.T) {
	byLabel := map[string]uint64{}
	for _, j := range scenarioJobs(t) {
		byLabel[j.label] = j.id
	}

	after := replay(t, readLines(t, "journal-backlog-full-after-purge.jsonl"), nil)
	if len(after) != 15 {
		t.Errorf("after purge: %d jobs, want 15", len(after))
	}

	// deny annotations+memo: the held job has no annotations at all.
	deny := replay(t, readLines(t, "journal-backlog-full-deny-annotations-memo.jsonl"), nil)
	if j := deny[byLabel["held-urgency"]].Snapshot(); j.Annotations != nil || j.Result != ResultCompleted || *j.Duration != 300 {
		t.Errorf("deny filter: %s", mustJSON(t, j))
	}

	// allow submit+finish+clean: NEW, then CLEANUP, then INACTIVE; the
	// times of the states never entered stay unknown.
	allow := replay(t, readLines(t, "journal-backlog-full-allow-submit-finish-clean.jsonl"), nil)
	j := allow[byLabel["fail-exit3"]].Snapshot()
	if got := brief(j, "state", "result", "returncode", "t_sched", "t_run", "priority", "nodelist"); got !=
		`state="INACTIVE" result="FAILED" returncode=3 t_sched=- t_run=- priority=- nodelist=-` {
		t.Errorf("allow filter: %s", got)
	}

	// full:false: the backlog holds the active jobs, then live events.
	active := replay(t, readLines(t, "journal-active-only-not-full.jsonl"), nil)
	var states []string
	for id, s := range active {
		states = append(states, fmt.Sprintf("%d:%s", id, s.Snapshot().State))
	}
	if len(active) != 2 {
		t.Errorf("active-only capture: %v", states)
	}

	// The two rejected submissions of the scenario.
	live := replay(t, readLines(t, "journal-scenario-live-full.jsonl"), nil)
	for _, id := range []uint64{406193176576, 454142459904} {
		if s := live[id]; s == nil || !s.Invalidated() || s.Snapshot().State != StateNew {
			t.Errorf("job %d should be invalidated", id)
		}
	}
}
