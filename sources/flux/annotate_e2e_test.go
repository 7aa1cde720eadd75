package flux_test

import (
	"math"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

const (
	runningN1      = 547759325184 // nonfatal-exception: running when the consumer connects
	runningSummary = `{"sched":{"resource_summary":"rank0/core0"}}`
)

// findRecord polls the sink for the record with the given id.
func (h *harness) findRecord(id string) *core.Record {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range h.sink.All() {
			if r.ID == id {
				return r
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("record %s never delivered", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A late consumer, with the real journal consumer taking job-list's
// answer: the backlog's snapshots lack the live-only annotations; right
// after the backlog each active job gets one annotations record (dated
// when job-list answered, after the job's newest event) whose snapshot
// carries what job-list holds, sched.resource_summary of the running job
// and sched.t_estimate of the waiting one, and the jobs' later records
// carry them too. A reconnect reads the backlog again: nothing new of
// those jobs, so no record, but the rebuilt state takes the annotations
// again (the finish after it still shows resource_summary).
func TestLateConsumerGetsJobListAnnotations(t *testing.T) {
	h := newHarness(t)
	jl := startJobList(t, h.broker, h.in)
	h.uri = jl.URI()
	h.logs = newLogRecorder()
	pos := h.in.PosAfterEvent(busyN2, "annotations")
	h.in.SeekTo(pos)
	want := jl.activeAnnotations(pos)
	if len(want) != 2 || want[0].id != runningN1 || string(want[0].annotations) != runningSummary {
		t.Fatalf("job-list at %d: %v", pos, want)
	}
	backlogEvents := 0
	lastTS := map[uint64]float64{}
	for _, r := range h.in.Backlog(pos, true) {
		backlogEvents += len(r.Events)
		lastTS[uint64(r.ID)] = r.Events[len(r.Events)-1].Timestamp
	}
	before := float64(time.Now().UnixMicro()) / 1e6
	h.start("")
	logged := h.logs.waitFor(t, msgAnnotated, 1)
	after := float64(time.Now().UnixMicro()) / 1e6
	if jobs, recs := logged[0].Attrs["jobs"].Int64(), logged[0].Attrs["records"].Int64(); jobs != 2 || recs != 2 {
		t.Fatalf("job-list: %d jobs, %d records; want 2 and 2", jobs, recs)
	}
	recs := h.waitRecords(backlogEvents + 2)
	for _, w := range want {
		var ann []*core.Record
		for _, r := range recs {
			if r.Job.ID != w.id {
				continue
			}
			if r.Event.Name == "annotations" {
				ann = append(ann, r)
			} else if len(r.Job.Annotations) > 2 {
				t.Errorf("backlog record %s has annotations %s (live-only: no backlog has them)", r.ID, r.Job.Annotations)
			}
		}
		if len(ann) != 1 {
			t.Fatalf("job %d: %d annotations records, want 1", w.id, len(ann))
		}
		r := ann[0]
		ts := r.Event.Timestamp
		dated := ts >= before && ts <= after || ts == math.Nextafter(lastTS[w.id], math.Inf(1))
		if !dated || ts <= lastTS[w.id] || r.ID != core.EventID(w.id, "annotations", ts) ||
			string(r.Event.Context) != `{"annotations":`+string(w.annotations)+`}` || string(r.Job.Annotations) != string(w.annotations) {
			t.Fatalf("annotations record %s at %v (job-list answered in [%v, %v], newest event %v): context %s, snapshot %s; want %s",
				r.ID, ts, before, after, lastTS[w.id], r.Event.Context, r.Job.Annotations, w.annotations)
		}
		if r.Job.State == "" || r.Job.TSubmit == 0 || r.Cluster != "test" || r.Source != "flux" {
			t.Fatalf("annotations record lacks the job: %+v", r.Job)
		}
	}

	// A reconnect: the backlog again (nothing new), job-list again.
	h.broker.DropConnections()
	again := h.logs.waitFor(t, msgAnnotated, 2)
	if recs := again[1].Attrs["records"].Int64(); recs != 0 {
		t.Fatalf("after a reconnect: %d annotations records, want 0 (nothing new went out)", recs)
	}
	// Live: the running job finishes; its record carries the summary.
	finishPos := h.in.PosAfterEvent(runningN1, "finish")
	h.in.SeekTo(finishPos)
	finish := h.findRecord(core.EventID(runningN1, "finish", 1795394512.6789167))
	if string(finish.Job.Annotations) != runningSummary {
		t.Fatalf("finish after the reconnect carries annotations %s, want %s", finish.Job.Annotations, runningSummary)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	// Nothing twice; the backlog, two annotations records, the live
	// part, nothing else.
	seen := map[string]bool{}
	synthetic := 0
	live := map[string]bool{}
	for _, id := range liveEventIDs(jl, pos, finishPos) {
		live[id] = true
	}
	for _, r := range h.sink.All() {
		if seen[r.ID] {
			t.Errorf("%s delivered twice", r.ID)
		}
		seen[r.ID] = true
		if r.Event.Name == "annotations" && !live[r.ID] {
			synthetic++
		}
	}
	for id := range live {
		if !seen[id] {
			t.Errorf("live event %s not delivered", id)
		}
	}
	if len(seen) != backlogEvents+2+len(live) || synthetic != 2 {
		t.Fatalf("%d records (%d annotations records), want %d backlog + 2 + %d live", len(seen), synthetic, backlogEvents, len(live))
	}
}

// liveEventIDs lists the record ids of the live events that happen
// between two positions of the instance (jl's timeline is the instance's).
func liveEventIDs(jl *jobListBroker, from, to int) []string {
	var ids []string
	for _, it := range jl.items[from:to] {
		if r := it.Response; r != nil {
			for _, e := range r.Events {
				ids = append(ids, core.EventID(uint64(r.ID), e.Name, e.Timestamp))
			}
		}
	}
	return ids
}
