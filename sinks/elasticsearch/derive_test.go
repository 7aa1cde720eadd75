package elasticsearch

import (
	"math"
	"reflect"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// finals is the last snapshot of every job of recs, by job name.
func finals(recs []*core.Record) map[string]*core.Job {
	out := map[string]*core.Job{}
	for _, r := range recs {
		if r.Job != nil && r.Job.Name != "" {
			out[r.Job.Name] = r.Job
		}
	}
	return out
}

// The derived numbers on the scenario, against the reducer's own fields
// (runtime, returncode) and against values read off the journal by hand.
func TestDeriveScenario(t *testing.T) {
	recs := scenario(t)
	n := 0
	for _, r := range recs {
		j := r.Job
		if j == nil || j.State != "INACTIVE" {
			continue
		}
		n++
		d := Derive(j)
		if j.TRun > 0 {
			if d.Elapsed == nil || math.Abs(*d.Elapsed-j.Runtime) > 1e-9 {
				t.Errorf("%s: elapsed %v, reducer's runtime %v", r.ID, d.Elapsed, j.Runtime)
			}
			if d.QueueWait == nil || *d.QueueWait != j.TRun-j.TSched || *d.QueueWait < 0 {
				t.Errorf("%s: queue wait %v, t_run-t_sched %v", r.ID, d.QueueWait, j.TRun-j.TSched)
			}
			want := j.Runtime * float64(j.Allocated.NCores) / 3600
			if d.CoreHours == nil || math.Abs(*d.CoreHours-want) > 1e-12 {
				t.Errorf("%s: core-hours %v, want %v", r.ID, d.CoreHours, want)
			}
		} else if d.Elapsed != nil || d.QueueWait != nil || d.CoreHours != nil {
			t.Errorf("%s: never ran but elapsed %v queue wait %v core-hours %v", r.ID, d.Elapsed, d.QueueWait, d.CoreHours)
		}
		if j.WaitStatus != nil {
			if d.ExitCode == nil || j.ReturnCode == nil || *d.ExitCode != *j.ReturnCode {
				t.Errorf("%s: exit code %v, reducer's returncode %v", r.ID, d.ExitCode, j.ReturnCode)
			}
		} else if d.ExitCode != nil {
			t.Errorf("%s: no wait status but exit code %v", r.ID, *d.ExitCode)
		}
	}
	if n == 0 {
		t.Fatal("no inactive snapshots in the scenario")
	}

	// By hand, from journal-scenario-live-full.jsonl.
	f := finals(recs)
	type want struct {
		code, sig int
		slurm     string
		state     string
		elapsed   float64 // t_cleanup - t_run of the journal
		cores     int
	}
	for name, w := range map[string]want{
		// finish status 768: exit 3
		"fail3": {3, 0, "3:0", "FAILED", 1795394503.1913497 - 1795394502.812509, 1},
		// flux job kill --signal=SIGKILL: status 35072 = exit 137
		"sigkill": {137, 9, "0:9", "FAILED", 0, 0},
		// canceled while running: status 36608 = exit 143 (SIGTERM)
		"cancel-running": {143, 15, "0:15", "CANCELLED", 0, 0},
		// -t 1s sleep 30: finish status 36352 = exit 142 (SIGALRM from
		// the shell), timeout exception
		"tlimit": {142, 14, "0:14", "TIMEOUT", 1795394504.5644674 - 1795394503.3063302, 1},
	} {
		j := f[name]
		if j == nil {
			t.Errorf("no job named %s", name)
			continue
		}
		d := Derive(j)
		if d.ExitCode == nil || *d.ExitCode != w.code || *d.ExitSignal != w.sig {
			t.Errorf("%s: exit %v/%v, want %d/%d", name, d.ExitCode, d.ExitSignal, w.code, w.sig)
			continue
		}
		if got := SlurmExitCode(*d.ExitCode, *d.ExitSignal); got != w.slurm {
			t.Errorf("%s: slurm exit code %s, want %s", name, got, w.slurm)
		}
		if got := SlurmState(j); got != w.state {
			t.Errorf("%s: slurm state %s, want %s", name, got, w.state)
		}
		if w.elapsed > 0 {
			if math.Abs(*d.Elapsed-w.elapsed) > 1e-6 {
				t.Errorf("%s: elapsed %v, want %v", name, *d.Elapsed, w.elapsed)
			}
			if ch := w.elapsed * float64(w.cores) / 3600; math.Abs(*d.CoreHours-ch) > 1e-9 {
				t.Errorf("%s: core-hours %v, want %v", name, *d.CoreHours, ch)
			}
		}
	}
}

func TestSplitWaitStatus(t *testing.T) {
	for _, c := range []struct{ ws, code, sig int }{
		{0, 0, 0}, {768, 3, 0}, {36352, 142, 14}, {9, 137, 9}, {15, 143, 15}, {137 << 8, 137, 9}, {255 << 8, 255, 0}, {128 << 8, 128, 0},
	} {
		code, sig := SplitWaitStatus(c.ws)
		if code != c.code || sig != c.sig {
			t.Errorf("SplitWaitStatus(%d) = %d, %d; want %d, %d", c.ws, code, sig, c.code, c.sig)
		}
	}
}

func TestExpandHostlist(t *testing.T) {
	for in, want := range map[string][]string{
		"vm":                 {"vm"},
		"node[0-3]":          {"node0", "node1", "node2", "node3"},
		"node[0-1,7],login1": {"node0", "node1", "node7", "login1"},
		"rack[08-10]x":       {"rack08x", "rack09x", "rack10x"},
		"a[1],b[2-3]":        {"a1", "b2", "b3"},
		"bad[3-1]":           nil,
		"bad[x]":             nil,
	} {
		if got := ExpandHostlist(in, 100); !reflect.DeepEqual(got, want) {
			t.Errorf("ExpandHostlist(%q) = %q, want %q", in, got, want)
		}
	}
	if got := ExpandHostlist("n[0-200]", 100); got != nil {
		t.Errorf("over the limit: %d names", len(got))
	}
}

func TestFormatIndex(t *testing.T) {
	ts := 1795394504.6978364 // 2026-11-23T00:41:44Z
	for in, want := range map[string]string{
		"flux-events-%Y.%m.%d": "flux-events-2026.11.23",
		"e-%y%j-%H":            "e-26327-00",
		"fixed":                "fixed",
		"p%%-%Y":               "p%-2026",
	} {
		if got := formatIndex(in, ts); got != want {
			t.Errorf("formatIndex(%q) = %q, want %q", in, got, want)
		}
	}
	if got := indexPattern("flux-events-%Y.%m.%d"); got != "flux-events-*.*.*" {
		t.Errorf("pattern %q", got)
	}
}

func TestVersionOrdersEvents(t *testing.T) {
	// Within a job, later events get strictly larger versions.
	last := map[uint64]float64{}
	for _, r := range bulk2000(t) {
		if r.Event == nil {
			continue
		}
		id := r.Job.ID
		if prev, ok := last[id]; ok && Version(r.Event.Timestamp) <= Version(prev) {
			t.Fatalf("%s: version %d not above the previous event's %d", r.ID, Version(r.Event.Timestamp), Version(prev))
		}
		last[id] = r.Event.Timestamp
	}
}
