package elasticsearch

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/estest"
)

// getDoc fetches a document's _source and _version.
func getDoc(t testing.TB, n *estest.Node, index, id string) (map[string]any, int64) {
	t.Helper()
	var out struct {
		Found   bool           `json:"found"`
		Version int64          `json:"_version"`
		Source  map[string]any `json:"_source"`
	}
	if err := n.Do(context.Background(), "GET", "/"+index+"/_doc/"+url.PathEscape(id), nil, &out); err != nil {
		t.Fatalf("get %s/%s: %v", index, id, err)
	}
	return out.Source, out.Version
}

// field walks a dotted path of nested objects; ok is false when absent.
func field(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok := m[p]; ok {
			cur = v
			continue
		}
		return nil, false
	}
	return cur, true
}

// checkFields compares fields of doc with want (numbers compared as
// float64, nil = must be absent).
func checkFields(t testing.TB, what string, doc map[string]any, want map[string]any) {
	t.Helper()
	for path, w := range want {
		got, ok := field(doc, path)
		if w == nil {
			if ok {
				t.Errorf("%s: %s = %v, want it absent", what, path, got)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: %s missing (want %v)", what, path, w)
			continue
		}
		if !same(got, w) {
			t.Errorf("%s: %s = %v (%T), want %v (%T)", what, path, got, got, w, w)
		}
	}
}

func same(got, want any) bool {
	switch w := want.(type) {
	case int:
		return same(got, float64(w))
	case int64:
		return same(got, float64(w))
	case uint32:
		return same(got, float64(w))
	case uint64:
		return same(got, float64(w))
	case float64:
		g, ok := got.(float64)
		return ok && (g == w || math.Abs(g-w) <= 1e-9*math.Max(1, math.Abs(w)))
	case []string:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if g[i] != w[i] {
				return false
			}
		}
		return true
	}
	return fmt.Sprint(got) == fmt.Sprint(want)
}

// lastOf is the last record of each job key, and the set of event ids.
func lastOf(recs []*core.Record) (last map[string]*core.Record, events map[string]bool) {
	last, events = map[string]*core.Record{}, map[string]bool{}
	for _, r := range recs {
		if r.Kind == core.KindEvent {
			events[r.ID] = true
			last[jobKeyOf(r)] = r
		}
	}
	return last, events
}

func TestBulkFixtureProfiles(t *testing.T) {
	node := estest.Start(t)
	recs := bulk2000(t)
	last, events := lastOf(recs)
	if len(events) != 22000 || len(last) != 2000 {
		t.Fatalf("fixture: %d events, %d jobs", len(events), len(last))
	}
	// One job, field by field: the first of the fixture.
	var sample *core.Record
	for _, r := range recs {
		if r.Job != nil {
			sample = last[jobKeyOf(r)]
			break
		}
	}
	j := sample.Job
	key := JobKey("test", j.JobID, j.TSubmit)
	d := Derive(j)
	if d.Elapsed == nil || d.ExitCode == nil || d.QueueWait == nil || j.State != "INACTIVE" {
		t.Fatalf("sample job %s not finished: %+v", j.JobID, j)
	}
	for _, profile := range []string{"native", "ecs", "slurm"} {
		t.Run(profile, func(t *testing.T) {
			prefix := estest.Prefix()
			node.Cleanup(t, prefix)
			s := newSink(t, node.URL, sinkYAML(prefix, profile, "in_flight: 4\n"))
			perm, _ := deliver(t, s, recs, 1000)
			if len(perm) > 0 {
				t.Fatalf("%d records refused, e.g. %v", len(perm), first(perm))
			}
			if got := node.Count(t, prefix+"events-*", ""); got != len(events) {
				t.Errorf("events index: %d documents, want %d", got, len(events))
			}
			if got := node.Count(t, prefix+"jobs", ""); got != len(last) {
				t.Errorf("jobs index: %d documents, want %d", got, len(last))
			}
			// Every job document is the job's last snapshot.
			if got := node.Count(t, prefix+"jobs", notInactive(profile)); got != 0 {
				t.Errorf("%d job documents not in their final state", got)
			}
			doc, version := getDoc(t, node, prefix+"jobs", key)
			if version != Version(sample.Event.Timestamp) {
				t.Errorf("job doc version %d, want %d (the clean event's time in ns)", version, Version(sample.Event.Timestamp))
			}
			checkFields(t, "jobs/"+key, doc, wantJob(profile, sample, key))
			// One event document.
			ev := recs[0]
			for _, r := range recs {
				if r.Job != nil && r.Job.JobID == j.JobID && r.Event.Name == "alloc" {
					ev = r
				}
			}
			edoc, _ := getDoc(t, node, formatIndex(prefix+"events-%Y.%m.%d", ev.Event.Timestamp), ev.ID)
			checkFields(t, "events/"+ev.ID, edoc, wantEvent(profile, ev, key))
		})
	}
}

func first(m map[string]error) string {
	for k, v := range m {
		return k + ": " + v.Error()
	}
	return ""
}

func notInactive(profile string) string {
	switch profile {
	case "ecs":
		return "NOT job.state:INACTIVE"
	case "slurm":
		return "NOT flux_state:INACTIVE"
	}
	return "NOT job.state:INACTIVE"
}

// wantJob is the jobs document of r's snapshot, written out field by
// field from the record (README.md's tables).
func wantJob(profile string, r *core.Record, key string) map[string]any {
	j := r.Job
	elapsed := j.TCleanup - j.TRun
	ncores := float64(j.Allocated.NCores)
	switch profile {
	case "ecs":
		return map[string]any{
			"@timestamp": r.Event.Timestamp, "job_key": key,
			"event.dataset": "flux.joblog", "event.action": "clean", "event.outcome": "COMPLETED",
			"event.start": j.TRun, "event.end": j.TInactive,
			"event.duration": int64(elapsed * 1e9), "event.duration_seconds": elapsed,
			"user.id": "6001", "user.name": nil, // user_lookup: none
			"host.cluster": "test",
			"job.id":       j.JobID, "job.name": "bulk", "job.queue": "batch", "job.scheduler": "flux",
			"job.state": "INACTIVE", "job.cwd": j.Cwd, "job.urgency": "16",
			"job.node.list": "vm", "job.node.count": 1, "job.node.hosts": []string{"vm"}, "job.proc.count": 1,
			"job.ntasks":     1,
			"job.submittime": j.TSubmit, "job.eligibletime": j.TSched,
			"job.exit_code": 0, "job.exit_signal": 0, "job.returncode": 0,
			"job.queue_time": j.TRun - j.TSched, "job.core_hours": elapsed * ncores / 3600,
			"job.exception_type": nil, "job.timelimit": nil, "purged": nil,
		}
	case "slurm":
		return map[string]any{
			"@timestamp": r.Event.Timestamp, "job_key": key,
			"jobid": j.JobID, "user_id": 6001, "username": nil,
			"@submit": j.TSubmit, "@eligible": j.TSched, "@start": j.TRun, "@end": j.TCleanup,
			"elapsed": elapsed, "@queue_wait": j.TRun - j.TSched,
			"partition": "batch", "account": nil, "job_name": "bulk", "work_dir": j.Cwd,
			"nodes": "vm", "hosts": []string{"vm"}, "total_nodes": 1, "total_cpus": 1, "ntasks": 1,
			"state": "COMPLETED", "flux_state": "INACTIVE", "flux_result": "COMPLETED",
			"exit_code": "0:0", "derived_ec": "0:0", "cpu_hours": elapsed * ncores / 3600,
			"cluster": "test", "time_limit": nil,
		}
	}
	return map[string]any{
		"@timestamp": r.Event.Timestamp, "job_key": key, "kind": "event", "id": r.ID, "cluster": "test",
		"event.name": "clean", "event.timestamp": r.Event.Timestamp, "event.context": nil,
		"job.id": j.ID, "job.jobid": j.JobID, "job.userid": 6001, "job.state": "INACTIVE",
		"job.result": "COMPLETED", "job.name": "bulk", "job.queue": "batch", "job.ncores": 1, "job.nnodes": 1,
		"job.t_submit": j.TSubmit, "job.t_run": j.TRun, "job.t_inactive": j.TInactive, "job.runtime": j.Runtime,
		"job.exception.occurred": false, "job.requested.ncores": 1, "job.allocated.nodelist": "vm",
		"job.success": true, "job.waitstatus": 0, "job.returncode": 0,
		"derived.elapsed": elapsed, "derived.queue_wait": j.TRun - j.TSched, "derived.core_hours": elapsed * ncores / 3600,
		"derived.exit_code": 0, "derived.exit_signal": 0, "derived.hosts": []string{"vm"},
		"jobspec": nil, "R": nil, "purged": nil,
	}
}

// wantEvent is the events document of r (the alloc event).
func wantEvent(profile string, r *core.Record, key string) map[string]any {
	j := r.Job
	switch profile {
	case "ecs":
		return map[string]any{"@timestamp": r.Event.Timestamp, "event.action": "alloc", "flux.id": r.ID,
			"flux.kind": "event", "job.id": j.JobID, "job.state": "RUN", "event.start": j.TRun,
			"event.end": nil, "event.outcome": nil, "job.queue": "batch"}
	case "slurm":
		return map[string]any{"@timestamp": r.Event.Timestamp, "event": "alloc", "flux_id": r.ID, "jobid": j.JobID,
			"state": "RUNNING", "@start": j.TRun, "@end": nil, "partition": "batch"}
	}
	var want map[string]any
	js, _ := r.JSON()
	json.Unmarshal(js, &want)
	// The record's JSON form, with @timestamp, job_key and derived.
	flat := map[string]any{"@timestamp": r.Event.Timestamp, "job_key": key, "derived.queue_wait": j.TRun - j.TSched,
		"derived.elapsed": nil, "kind": "event", "id": r.ID, "event.name": "alloc", "job.state": "RUN",
		"job.t_run": j.TRun, "R.version": 1, "jobspec": nil}
	return flat
}
