package jobstate

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

const testJobspec = `{"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}],"tasks":[{"command":["/usr/bin/sleep","1"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"cwd":"/tmp","queue":"batch"}},"version":1}`

const testR = `{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0"}}],"starttime":100,"expiration":0,"nodelist":["vm"]}}`

func ev(ts float64, name, ctx string) Event {
	e := Event{Timestamp: ts, Name: name}
	if ctx != "" {
		e.Context = json.RawMessage(ctx)
	}
	return e
}

// run applies events, failing the test on any error.
func run(t *testing.T, s *State, evs ...Event) {
	t.Helper()
	for _, e := range evs {
		if err := s.Apply(e); err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
	}
}

// pending returns a job in SCHED.
func pending(t *testing.T) *State {
	t.Helper()
	s := New(1234)
	if err := s.SetJobspec(json.RawMessage(testJobspec)); err != nil {
		t.Fatal(err)
	}
	run(t, s,
		ev(1, "submit", `{"userid":100,"urgency":16,"flags":0,"version":1}`),
		ev(2, "validate", ""),
		ev(3, "depend", ""),
		ev(4, "priority", `{"priority":16}`))
	return s
}

func TestNewSnapshot(t *testing.T) {
	j := New(349066756096).Snapshot()
	got := mustJSON(t, j)
	want := `{"id":349066756096,"jobid":"fAApqNHV","userid":4294967295,"urgency":-1,"state":"NEW"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestPendingJob(t *testing.T) {
	j := pending(t).Snapshot()
	if j.State != StateSched || j.Status != StateSched || j.UserID != 100 || j.Urgency != 16 ||
		j.Priority == nil || *j.Priority != 16 || j.Name != "sleep" || j.Queue != "batch" ||
		j.TSubmit != 1 || j.TDepend != 2 || j.TPriority != 3 || j.TSched != 4 || j.TRun != 0 {
		t.Errorf("pending: %s", mustJSON(t, j))
	}
	if j.Result != "" || j.Success != nil || j.ReturnCode != nil || j.Nodelist != "" || j.Allocated != nil {
		t.Errorf("pending job shows end-of-job fields: %s", mustJSON(t, j))
	}
}

func TestTDependOldEventlog(t *testing.T) {
	// Before eventlog version 1 there was no validate event: t_depend is t_submit.
	s := New(1)
	run(t, s, ev(7, "submit", `{"userid":1,"urgency":16}`))
	if j := s.Snapshot(); j.TDepend != 7 {
		t.Errorf("t_depend = %v, want 7", j.TDepend)
	}
}

func TestRevertToPriority(t *testing.T) {
	for _, tc := range []struct{ name, ctx string }{
		{"urgency", `{"urgency":0,"userid":100}`},
		{"jobspec-update", `{"attributes.system.queue":"debug"}`},
		{"flux-restart", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := pending(t)
			run(t, s, ev(5, tc.name, tc.ctx))
			j := s.Snapshot()
			// Back in PRIORITY: priority hidden until SCHED is entered
			// again; t_priority and t_sched keep their first values.
			if j.State != StatePriority || j.Priority != nil || j.TPriority != 3 || j.TSched != 4 {
				t.Fatalf("after %s: %s", tc.name, mustJSON(t, j))
			}
			run(t, s, ev(6, "priority", `{"priority":7}`))
			j = s.Snapshot()
			if j.State != StateSched || *j.Priority != 7 || j.TPriority != 3 || j.TSched != 4 {
				t.Errorf("after priority: %s", mustJSON(t, j))
			}
		})
	}
	// Outside SCHED these events change no state.
	s := New(1)
	run(t, s, ev(1, "submit", `{"userid":1,"urgency":16,"version":1}`), ev(2, "validate", ""),
		ev(3, "urgency", `{"urgency":4,"userid":1}`))
	if j := s.Snapshot(); j.State != StateDepend || j.Urgency != 4 || j.TPriority != 0 {
		t.Errorf("urgency in DEPEND: %s", mustJSON(t, j))
	}
	// A priority event outside PRIORITY updates the priority only.
	s = pending(t)
	run(t, s, ev(5, "alloc", ""), ev(6, "priority", `{"priority":9}`))
	if j := s.Snapshot(); j.State != StateRun || *j.Priority != 9 {
		t.Errorf("priority in RUN: %s", mustJSON(t, j))
	}
}

func TestResults(t *testing.T) {
	type step = Event
	for _, tc := range []struct {
		name    string
		evs     []step
		result  string
		success bool
		ws      *int
		rc      *int
		exc     *core.Exception
		tclean  float64
	}{
		{"completed", []step{ev(5, "alloc", ""), ev(6, "finish", `{"status":0}`), ev(7, "clean", "")},
			ResultCompleted, true, ip(0), ip(0), nil, 6},
		{"exit 3", []step{ev(5, "alloc", ""), ev(6, "finish", `{"status":768}`), ev(7, "clean", "")},
			ResultFailed, false, ip(768), ip(3), nil, 6},
		{"killed by a signal", []step{ev(5, "alloc", ""), ev(6, "finish", `{"status":9}`), ev(7, "clean", "")},
			ResultFailed, false, ip(9), ip(-9), nil, 6},
		{"stopped status is no return code", []step{ev(5, "alloc", ""), ev(6, "finish", `{"status":4991}`), ev(7, "clean", "")},
			ResultFailed, false, ip(4991), nil, nil, 6},
		{"canceled while pending", []step{ev(5, "exception", `{"type":"cancel","severity":0,"note":"x"}`), ev(6, "clean", "")},
			ResultCanceled, false, nil, ip(-128), exc(0, "cancel", "x"), 5},
		{"canceled while running", []step{ev(5, "alloc", ""), ev(6, "exception", `{"type":"cancel","severity":0,"note":""}`),
			ev(7, "finish", `{"status":36608}`), ev(8, "clean", "")},
			ResultCanceled, false, ip(36608), ip(143), exc(0, "cancel", ""), 6},
		{"timeout", []step{ev(5, "alloc", ""), ev(6, "exception", `{"type":"timeout","severity":0,"note":"t"}`),
			ev(7, "finish", `{"status":36352}`), ev(8, "clean", "")},
			ResultTimeout, false, ip(36352), ip(142), exc(0, "timeout", "t"), 6},
		{"fatal exception before running", []step{ev(5, "exception", `{"type":"alloc","severity":0,"note":"n"}`), ev(6, "clean", "")},
			ResultFailed, false, nil, ip(1), exc(0, "alloc", "n"), 5},
		{"non-fatal exception, exit 0", []step{ev(5, "alloc", ""), ev(6, "exception", `{"type":"test","severity":3,"note":"n"}`),
			ev(7, "finish", `{"status":0}`), ev(8, "clean", "")},
			ResultCompleted, true, ip(0), ip(0), exc(3, "test", "n"), 7},
		{"non-fatal cancel type and a failure", []step{ev(5, "alloc", ""), ev(6, "exception", `{"type":"cancel","severity":1,"note":""}`),
			ev(7, "finish", `{"status":256}`), ev(8, "clean", "")},
			ResultCanceled, false, ip(256), ip(1), exc(1, "cancel", ""), 7},
		{"a more severe exception replaces the first", []step{ev(5, "alloc", ""),
			ev(6, "exception", `{"type":"test","severity":3,"note":"a"}`),
			ev(7, "exception", `{"type":"exec","severity":0,"note":"b"}`),
			ev(8, "exception", `{"type":"cancel","severity":0,"note":"c"}`),
			ev(9, "finish", `{"status":0}`), ev(10, "clean", "")},
			ResultFailed, false, ip(0), ip(0), exc(0, "exec", "b"), 7},
		{"fatal exception after finish 0 keeps success", []step{ev(5, "alloc", ""), ev(6, "finish", `{"status":0}`),
			ev(7, "exception", `{"type":"epilog","severity":0,"note":""}`), ev(8, "clean", "")},
			ResultCompleted, true, ip(0), ip(0), exc(0, "epilog", ""), 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := pending(t)
			run(t, s, tc.evs...)
			j := s.Snapshot()
			got := mustJSON(t, []any{j.State, j.Result, j.Status, *j.Success, j.WaitStatus, j.ReturnCode, j.Exception, j.TCleanup})
			want := mustJSON(t, []any{StateInactive, tc.result, tc.result, tc.success, tc.ws, tc.rc, tc.exc, tc.tclean})
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func ip(v int) *int { return &v }

func TestExceptionShownWhenItHappens(t *testing.T) {
	s := pending(t)
	run(t, s, ev(5, "alloc", ""), ev(6, "exception", `{"type":"test","severity":2,"note":"n","userid":1}`))
	j := s.Snapshot()
	if j.State != StateRun || j.Exception == nil || j.Exception.Type != "test" || j.Result != "" {
		t.Errorf("%s", mustJSON(t, j))
	}
}

func TestAnnotationsAndMemo(t *testing.T) {
	s := pending(t)
	steps := []struct {
		e    Event
		want string // annotations JSON, "" for none
		uri  string
	}{
		{ev(5, "memo", `{"a":1,"b":{"c":2}}`), `{"user":{"a":1,"b":{"c":2}}}`, ""},
		{ev(6, "memo", `{"b":{"d":3},"a":null}`), `{"user":{"b":{"c":2,"d":3}}}`, ""},
		// An annotations event replaces everything, user memos included.
		{ev(7, "annotations", `{"annotations":{"sched":{"t_estimate":5.5}}}`), `{"sched":{"t_estimate":5.5}}`, ""},
		{ev(8, "memo", `{"uri":"ssh://host/tmp/sock"}`), `{"sched":{"t_estimate":5.5}}`, "ssh://host/tmp/sock"},
		{ev(9, "memo", `{"k":"v"}`), `{"sched":{"t_estimate":5.5},"user":{"k":"v"}}`, "ssh://host/tmp/sock"},
		{ev(10, "memo", `{"k":null,"uri":null}`), `{"sched":{"t_estimate":5.5}}`, ""},
		// alloc carries annotations too, but job-list ignores them.
		{ev(11, "alloc", `{"annotations":{"sched":{"resource_summary":"rank0/core0"}}}`), `{"sched":{"t_estimate":5.5}}`, ""},
		{ev(12, "annotations", `{"annotations":null}`), ``, ""},
		{ev(13, "memo", `{"x":null}`), ``, ""},
	}
	for _, st := range steps {
		run(t, s, st.e)
		j := s.Snapshot()
		if string(j.Annotations) != st.want || j.URI != st.uri {
			t.Errorf("after %s %s: annotations %s uri %q, want %s %q", st.e.Name, st.e.Context, j.Annotations, j.URI, st.want, st.uri)
		}
	}
}

func TestDependencies(t *testing.T) {
	s := New(1)
	var got []string
	for _, e := range []Event{
		ev(1, "dependency-add", `{"description":"a"}`),
		ev(2, "dependency-add", `{"description":"b"}`),
		ev(3, "dependency-add", `{"description":"a"}`), // already there
		ev(4, "dependency-remove", `{"description":"a"}`),
		ev(5, "dependency-add", `{"description":"a"}`),    // once removed, never again (grudgeset)
		ev(6, "dependency-remove", `{"description":"x"}`), // absent: not an error
	} {
		run(t, s, e)
		got = append(got, mustJSON(t, s.Snapshot().Dependencies))
	}
	want := []string{`["a"]`, `["a","b"]`, `["a","b"]`, `["b"]`, `["b"]`, `["b"]`}
	if mustJSON(t, got) != mustJSON(t, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	run(t, s, ev(7, "dependency-remove", `{"description":"b"}`))
	if d := s.Snapshot().Dependencies; d != nil {
		t.Errorf("dependencies %q, want none", d)
	}
}

func TestSnapshotsAreIsolated(t *testing.T) {
	s := pending(t)
	run(t, s, ev(5, "dependency-add", `{"description":"a"}`), ev(6, "memo", `{"a":1}`))
	old := s.Snapshot()
	before := mustJSON(t, old)
	run(t, s,
		ev(7, "dependency-add", `{"description":"b"}`),
		ev(8, "memo", `{"a":2}`),
		ev(9, "priority", `{"priority":99}`),
		ev(10, "jobspec-update", `{"attributes.system.duration":60}`),
		ev(11, "alloc", ""),
		ev(12, "finish", `{"status":256}`),
		ev(13, "clean", ""))
	if after := mustJSON(t, old); after != before {
		t.Errorf("an old snapshot changed:\nbefore %s\nafter  %s", before, after)
	}
}

func TestJobspecUpdate(t *testing.T) {
	s := pending(t)
	err := s.Apply(ev(5, "jobspec-update", `{"attributes.system.queue":"debug","attributes.system.job.name":"renamed","environment.X":"1","attributes..y":2,"attributes.system.duration":60.5}`))
	if err == nil || !strings.Contains(err.Error(), `["environment.X" "attributes..y"]`) {
		t.Errorf("error %v, want the keys not applied", err)
	}
	j := s.Snapshot()
	if j.Queue != "debug" || j.Name != "renamed" || *j.Duration != 60.5 || j.Requested.Duration != 60.5 || j.State != StatePriority {
		t.Errorf("%s", mustJSON(t, j))
	}
	want := `{"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}],"tasks":[{"command":["/usr/bin/sleep","1"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":60.5,"cwd":"/tmp","queue":"debug","job":{"name":"renamed"}}},"version":1}`
	if got := string(s.Jobspec()); got != want {
		t.Errorf("jobspec\n got  %s\n want %s", got, want)
	}
	// Without a jobspec there is nothing to update; the revert still happens.
	s2 := New(2)
	run(t, s2, ev(1, "jobspec-update", `{"attributes.system.queue":"debug"}`))
	if s2.Jobspec() != nil || s2.Snapshot().Queue != "" {
		t.Errorf("update without jobspec: %s", mustJSON(t, s2.Snapshot()))
	}
}

func TestJobspecUpdateWhileRunning(t *testing.T) {
	// job-list re-parses the jobspec on jobspec-update, which resets
	// nnodes to "unknown" for a jobspec without nodes, until R is parsed
	// again by a resource-update. We follow it (see RULES.md).
	s := pending(t)
	if err := s.SetR(json.RawMessage(testR)); err != nil {
		t.Fatal(err)
	}
	run(t, s, ev(5, "alloc", ""))
	if j := s.Snapshot(); j.NNodes == nil || *j.NNodes != 1 || j.Expiration != 0 {
		t.Fatalf("after alloc: %s", mustJSON(t, j))
	}
	run(t, s, ev(6, "jobspec-update", `{"attributes.system.duration":60}`))
	if j := s.Snapshot(); j.NNodes != nil || j.State != StateRun || *j.NCores != 1 {
		t.Errorf("after jobspec-update: %s", mustJSON(t, j))
	}
	run(t, s, ev(7, "resource-update", `{"expiration":160}`))
	j := s.Snapshot()
	if j.NNodes == nil || *j.NNodes != 1 || j.Expiration != 160 || j.Allocated.Expiration != 160 {
		t.Errorf("after resource-update: %s", mustJSON(t, j))
	}
	if !strings.Contains(string(s.R()), `"expiration":160`) {
		t.Errorf("R not updated: %s", s.R())
	}
	// A value R cannot hold is refused; R and the fields stay.
	r := string(s.R())
	if err := s.Apply(ev(8, "resource-update", `{"expiration":"soon"}`)); err == nil ||
		!strings.Contains(err.Error(), "resource-update event: context.expiration: R.execution.expiration: want a number, got a string") {
		t.Errorf("error %v", err)
	}
	if string(s.R()) != r || s.Snapshot().Expiration != 160 {
		t.Errorf("bad resource-update changed R: %s", s.R())
	}
	// Without R (job-list logs it) there is nothing to update.
	s2 := pending(t)
	run(t, s2, ev(5, "resource-update", `{"expiration":160}`))
	if s2.R() != nil || s2.Snapshot().Expiration != 0 {
		t.Errorf("resource-update without R: %s", mustJSON(t, s2.Snapshot()))
	}
}

func TestJobspecDerivation(t *testing.T) {
	for _, tc := range []struct {
		name, jobspec string
		want          string // JSON of name, ntasks, ncores, nnodes, duration, requested
		err           string
	}{
		{"command basename, total tasks",
			`{"version":1,"resources":[{"type":"slot","count":4,"with":[{"type":"core","count":2},{"type":"gpu","count":1}]}],"tasks":[{"command":["/bin/app"],"count":{"total":3}}],"attributes":{"system":{"duration":30}}}`,
			`["app",3,8,null,30,{"nnodes":0,"nslots":4,"slot_cores":2,"slot_gpus":1,"ncores":8,"ngpus":4,"ntasks":3,"exclusive":false,"duration":30}]`, ""},
		{"trailing slash keeps the path",
			`{"version":1,"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}]}],"tasks":[{"command":["dir/"],"count":{"per_slot":2}}],"attributes":{"system":{"duration":0}}}`,
			`["dir/",1,1,null,0,{"nnodes":0,"nslots":1,"slot_cores":1,"slot_gpus":0,"ncores":1,"ngpus":0,"ntasks":2,"exclusive":false,"duration":0}]`, ""},
		{"nodes: nslots times nnodes",
			`{"version":1,"resources":[{"type":"node","count":2,"with":[{"type":"slot","count":3,"with":[{"type":"core","count":2}]}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0}}}`,
			`["x",6,12,2,0,{"nnodes":2,"nslots":6,"slot_cores":2,"slot_gpus":0,"ncores":12,"ngpus":0,"ntasks":6,"exclusive":false,"duration":0}]`, ""},
		{"exclusive nodes: cores unknown until R",
			`{"version":1,"resources":[{"type":"node","count":2,"exclusive":true,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":1}]}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0}}}`,
			`["x",2,null,2,0,{"nnodes":2,"nslots":2,"slot_cores":1,"slot_gpus":0,"ncores":2,"ngpus":0,"ntasks":2,"exclusive":true,"duration":0}]`, ""},
		{"per-resource node without nodes: tasks unknown until R",
			`{"version":1,"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"shell":{"options":{"per-resource":{"type":"node","count":4}}}}}}`,
			`["x",null,1,null,0,{"nnodes":0,"nslots":1,"slot_cores":1,"slot_gpus":0,"ncores":1,"ngpus":0,"ntasks":1,"exclusive":false,"duration":0}]`, ""},
		{"per-resource core",
			`{"version":1,"resources":[{"type":"slot","count":2,"with":[{"type":"core","count":3}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"shell":{"options":{"per-resource":{"type":"core"}}}}}}`,
			`["x",6,6,null,0,{"nnodes":0,"nslots":2,"slot_cores":3,"slot_gpus":0,"ncores":6,"ngpus":0,"ntasks":2,"exclusive":false,"duration":0}]`, ""},
		{"job name attribute",
			`{"version":1,"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"job":{"name":"nm"}}}}`,
			`["nm",1,1,null,0,{"nnodes":0,"nslots":1,"slot_cores":1,"slot_gpus":0,"ncores":1,"ngpus":0,"ntasks":1,"exclusive":false,"duration":0}]`, ""},
		{"no duration: name only",
			`{"version":1,"resources":[],"tasks":[{"command":["x"]}],"attributes":{"system":{}}}`,
			`["x",null,null,null,null,null]`, "attributes.system.duration: missing"},
		{"no slot",
			`{"version":1,"resources":[{"type":"core","count":1}],"tasks":[{"command":["x"]}],"attributes":{"system":{"duration":1}}}`,
			`["x",null,null,null,1,null]`, "unable to determine slot count"},
		{"real count",
			`{"version":1,"resources":[{"type":"slot","count":1.0}],"tasks":[{"command":["x"]}],"attributes":{"system":{"duration":1}}}`,
			`["x",null,null,null,1,null]`, "count: want an integer"},
		{"no attributes", `{"version":1}`, `["",null,null,null,null,null]`, "attributes: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(1)
			err := s.SetJobspec(json.RawMessage(tc.jobspec))
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
			j := s.Snapshot()
			if got := mustJSON(t, []any{j.Name, j.NTasks, j.NCores, j.NNodes, j.Duration, j.Requested}); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRDerivation(t *testing.T) {
	const js = `{"version":1,"resources":[{"type":"node","count":3,"exclusive":true,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":1}]}]}],"tasks":[{"command":["x"],"count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"shell":{"options":{"per-resource":{"type":"core","count":2}}}}}}`
	for _, tc := range []struct {
		name, R string
		want    string // nnodes, ncores, ntasks, ranks, nodelist, expiration, allocated
		err     string
	}{
		{"three nodes",
			`{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0-3","gpu":"0"}},{"rank":"3","children":{"core":"0-1"}}],"nodelist":["node[1-2]","node4"],"starttime":10,"expiration":70}}`,
			`[3,10,20,"[0-1,3]","node[1-2,4]",70,{"nnodes":3,"ncores":10,"ngpus":2,"ranks":"[0-1,3]","nodelist":"node[1-2,4]","starttime":10,"expiration":70}]`, ""},
		{"same rank twice is merged",
			`{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0-1"}},{"rank":"0","children":{"core":"1-2"}}],"nodelist":["a"]}}`,
			`[1,3,6,"0","a",0,{"nnodes":1,"ncores":3,"ngpus":0,"ranks":"0","nodelist":"a"}]`, ""},
		{"no nodelist: no core count",
			`{"version":1,"execution":{"R_lite":[{"rank":"5","children":{"core":"0"}}]}}`,
			`[1,null,null,"5","",0,{"nnodes":1,"ncores":1,"ngpus":0,"ranks":"5"}]`, ""},
		{"bad version", `{"version":2,"execution":{"R_lite":[]}}`,
			`[3,null,null,"","",0,null]`, "R.version: 2 is not supported"},
		{"nodelist too short", `{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0"}}],"nodelist":["a"]}}`,
			`[3,null,null,"","",0,null]`, "1 hosts for 2 ranks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(1)
			if err := s.SetJobspec(json.RawMessage(js)); err != nil {
				t.Fatal(err)
			}
			run(t, s, ev(1, "submit", `{"userid":1,"urgency":16,"version":1}`), ev(2, "validate", ""),
				ev(3, "depend", ""), ev(4, "priority", `{"priority":1}`), ev(5, "alloc", ""))
			err := s.SetR(json.RawMessage(tc.R)) // after alloc: parsed at once
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
			j := s.Snapshot()
			if got := mustJSON(t, []any{j.NNodes, j.NCores, j.NTasks, j.Ranks, j.Nodelist, j.Expiration, j.Allocated}); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRBeforeAlloc(t *testing.T) {
	// R known before alloc (a backlog carries it up front) shows from RUN on.
	s := pending(t)
	if err := s.SetR(json.RawMessage(testR)); err != nil {
		t.Fatal(err)
	}
	if j := s.Snapshot(); j.Nodelist != "" || j.Allocated != nil || j.NNodes != nil {
		t.Errorf("R shown before alloc: %s", mustJSON(t, j))
	}
	run(t, s, ev(5, "alloc", ""))
	if j := s.Snapshot(); j.Nodelist != "vm" || j.Ranks != "0" || j.Allocated == nil || j.Allocated.StartTime != 100 {
		t.Errorf("after alloc: %s", mustJSON(t, j))
	}
}

func TestBadContexts(t *testing.T) {
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{ev(5, "submit", ""), "submit event: context: missing"},
		{ev(5, "submit", `{"urgency":16}`), "submit event: context.userid: missing"},
		{ev(5, "submit", `{"urgency":16,"userid":-1}`), "submit event: context.userid: -1 is not a user id"},
		{ev(5, "priority", `{"priority":"high"}`), "priority event: context.priority: want an integer, got a string"},
		{ev(5, "priority", `{}`), "priority event: context.priority: missing"},
		{ev(5, "finish", `{"status":1.5}`), "finish event: context.status: want an integer, got the number 1.5"},
		{ev(5, "urgency", `{"urgency":32,"userid":1}`), "urgency event: context.urgency: 32 is out of range 0..31"},
		{ev(5, "exception", `{"type":"cancel","severity":0}`), "exception event: context.note: missing"},
		{ev(5, "exception", `{"type":7,"severity":0,"note":""}`), "exception event: context.type: want a string, got the integer 7"},
		{ev(5, "annotations", `{"annotations":[1]}`), "annotations event: context.annotations: want an object or null, got an array"},
		{ev(5, "memo", ""), "memo event: context: missing"},
		{ev(5, "dependency-add", `{"description":1}`), "dependency-add event: context.description: want a string"},
		{ev(5, "jobspec-update", ""), "jobspec-update event: context: missing"},
		{ev(5, "start", `{"a":`), "start event: context: not a JSON object"},
		{ev(5, "finish", `[0]`), "finish event: context: not a JSON object"},
	} {
		t.Run(tc.e.Name, func(t *testing.T) {
			s := pending(t)
			before := mustJSON(t, s.Snapshot())
			err := s.Apply(tc.e)
			if err == nil || !strings.Contains(err.Error(), "job fNH (1234): "+tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if after := mustJSON(t, s.Snapshot()); after != before {
				t.Errorf("a bad context changed the snapshot:\nbefore %s\nafter  %s", before, after)
			}
			// The state goes on.
			run(t, s, ev(6, "alloc", ""), ev(7, "finish", `{"status":0}`), ev(8, "clean", ""))
			if s.Snapshot().State != StateInactive {
				t.Errorf("state did not go on")
			}
		})
	}
}

func TestInvalidate(t *testing.T) {
	s := New(1)
	run(t, s, ev(1, "submit", `{"userid":1,"urgency":16,"version":1}`), ev(2, "invalidate", ""))
	if !s.Invalidated() || s.Snapshot().State != StateNew {
		t.Errorf("invalidated %v, state %s", s.Invalidated(), s.Snapshot().State)
	}
}

func TestUnknownAndRepeatedEvents(t *testing.T) {
	s := pending(t)
	run(t, s, ev(5, "alloc", ""), ev(6, "finish", `{"status":0}`))
	before := mustJSON(t, s.Snapshot())
	// Events without a rule, and a second finish/alloc (CLEANUP and RUN
	// are entered once), change no state.
	run(t, s, ev(7, "debug.x", `{"a":1}`), ev(8, "set-flags", `{"flags":["debug"]}`),
		ev(9, "release", `{"ranks":"all","final":true}`), ev(10, "alloc", ""))
	if after := mustJSON(t, s.Snapshot()); after != before {
		t.Errorf("before %s\nafter  %s", before, after)
	}
	if err := s.Apply(ev(11, "finish", `{"status":256}`)); err != nil {
		t.Fatal(err)
	}
	if j := s.Snapshot(); j.TCleanup != 6 || *j.WaitStatus != 256 {
		t.Errorf("second finish: %s", mustJSON(t, j))
	}
}

func exc(sev int, typ, note string) *core.Exception {
	return &core.Exception{Occurred: true, Severity: sev, Type: typ, Note: note}
}
