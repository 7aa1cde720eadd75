package journal

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

const (
	runningJob = 547759325184 // nonfatal-exception: running at annotatePos
	waitingJob = 572505718784 // busy-n2: waits for both cores at annotatePos
	// What job-list holds for them at annotatePos (live journal lines 223
	// and 250 of the fixture): no backlog has either.
	runningAnn = `{"sched":{"resource_summary":"rank0/core0"}}`
	waitingAnn = `{"sched":{"t_estimate":1795394570.332321}}`
	// The newest events of the two jobs at annotatePos.
	runningLast = 1795394510.8701491 // resource-update
	waitingLast = 1795394511.8004334 // priority (its annotations event is live-only)
)

// scenario is the recorded instance and its timeline, positions agreeing.
type scenario struct {
	in    *fluxtest.Instance
	items []fluxtest.Item
}

func loadScenario(t testing.TB) scenario {
	t.Helper()
	in, err := fluxtest.Scenario(testdata)
	if err != nil {
		t.Fatal(err)
	}
	items, err := fluxtest.LoadTimeline(filepath.Join(testdata, "journal-scenario-live-full.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	items = fluxtest.InsertEvent(items, fluxtest.ScenarioPurgeAfter, "job-purge-inactive", fluxtest.ScenarioPurgeSeq, json.RawMessage(`{"jobs":[]}`))
	if len(items) != in.Len() {
		t.Fatalf("timeline of %d items, instance of %d", len(items), in.Len())
	}
	return scenario{in, items}
}

// annotatePos is just after busy-n2's first annotations event.
func (s scenario) annotatePos() int { return s.in.PosAfterEvent(waitingJob, "annotations") }

// backlog is the full backlog a consumer connecting at k reads, sentinel
// included, as response payloads.
func (s scenario) backlog(t testing.TB, k int) [][]byte {
	t.Helper()
	var out [][]byte
	for _, r := range s.in.Backlog(k, true) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, []byte(`{"id":-1,"events":[]}`))
}

// live is the journal responses of the timeline from k to end.
func (s scenario) live(t testing.TB, k, end int) [][]byte {
	t.Helper()
	var out [][]byte
	for _, it := range s.items[k:end] {
		if it.Response == nil {
			continue
		}
		b, err := json.Marshal(it.Response)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// posAfter is the position just after the event of job id at ts.
func (s scenario) posAfter(t testing.TB, id int64, name string, ts float64) int {
	t.Helper()
	for i, it := range s.items {
		if r := it.Response; r != nil && r.ID == id {
			for _, e := range r.Events {
				if e.Name == name && e.Timestamp == ts {
					return i + 1
				}
			}
		}
	}
	t.Fatalf("no %s event of job %d at %v", name, id, ts)
	return 0
}

// clockAt is a fixed clock.
func clockAt(ts float64) func() time.Time {
	sec, frac := math.Modf(ts)
	t := time.Unix(int64(sec), int64(frac*1e9)).Round(time.Microsecond)
	return func() time.Time { return t }
}

func annotationsCtx(ann string) string { return `{"annotations":` + ann + `}` }

func jobRecords(recs []*core.Record, id uint64) []*core.Record {
	var out []*core.Record
	for _, r := range recs {
		if r.JobID() == id {
			out = append(out, r)
		}
	}
	return out
}

// An active job read from the backlog takes job-list's annotations, and,
// as records of it went out without them, gets one annotations record:
// dated when job-list answered, strictly after the job's newest event,
// context {"annotations": ...}, not in the eventlog; once. Its later
// records carry them.
func TestAnnotateBacklogJob(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	for _, tc := range []struct {
		name string
		now  float64
		// want the record's time for each job
		running, waiting float64
	}{
		// job-list answered a minute after the events: dated then.
		{"clock ahead", 1795394571.25, 1795394571.25, 1795394571.25},
		// The host's clock is behind the broker's: just after the job's
		// newest event.
		{"clock behind", 1795394000, math.Nextafter(runningLast, math.Inf(1)), math.Nextafter(waitingLast, math.Inf(1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := core.NewMemKV()
			c := NewConsumer(Options{Logger: quiet(), Now: clockAt(tc.now),
				Include: Include{Jobspec: IncludeOnChange, R: IncludeOnChange, Eventlog: IncludeAlways}}, kv)
			c.StartStream(true)
			backlog := feed(c, s.backlog(t, pos))
			if c.InBacklog() || c.ActiveJobs() != 2 {
				t.Fatalf("after the backlog: in backlog %v, %d active jobs", c.InBacklog(), c.ActiveJobs())
			}
			for _, r := range jobRecords(backlog, runningJob) {
				if string(r.Job.Annotations) != "" && string(r.Job.Annotations) != "{}" {
					t.Fatalf("backlog record %s already has annotations %s", r.ID, r.Job.Annotations)
				}
			}
			var all []*core.Record
			for _, w := range []struct {
				id  uint64
				ann string
				ts  float64
			}{{runningJob, runningAnn, tc.running}, {waitingJob, waitingAnn, tc.waiting}} {
				recs := c.Annotate(w.id, json.RawMessage(w.ann))
				if len(recs) != 1 {
					t.Fatalf("job %d: %d records, want 1", w.id, len(recs))
				}
				r := recs[0]
				wantID := strconv.FormatUint(w.id, 10) + ":annotations:" + strconv.FormatFloat(w.ts, 'f', -1, 64)
				if r.Kind != core.KindEvent || r.ID != wantID || r.Event.Name != "annotations" || r.Event.Timestamp != w.ts ||
					string(r.Event.Context) != annotationsCtx(w.ann) || string(r.Job.Annotations) != w.ann || r.Job.ID != w.id {
					t.Fatalf("record %s %+v annotations %s; want %s with %s", r.ID, r.Event, r.Job.Annotations, wantID, w.ann)
				}
				last := jobRecords(backlog, w.id)
				if prev := last[len(last)-1]; r.Event.Timestamp <= prev.Event.Timestamp {
					t.Fatalf("record at %v, not after the job's newest event %s", r.Event.Timestamp, prev.ID)
				}
				// The eventlog is Flux's: the synthetic event is not in it.
				if len(r.Eventlog) != len(last) || r.Eventlog[len(r.Eventlog)-1].Name == "annotations" && r.Eventlog[len(r.Eventlog)-1].Timestamp == w.ts {
					t.Fatalf("eventlog of %d events on the record, want the job's %d Flux events", len(r.Eventlog), len(last))
				}
				if js, err := r.JSON(); err != nil || !json.Valid(js) {
					t.Fatalf("record does not encode: %v", err)
				}
				// Once per backlog.
				if again := c.Annotate(w.id, json.RawMessage(w.ann)); again != nil {
					t.Fatalf("second Annotate: %d records", len(again))
				}
				all = append(all, recs...)
			}
			// The next record of the waiting job (its next live
			// annotations event replaces them anyway; take the
			// running job's finish instead) carries them.
			finish := feed(c, s.live(t, pos, s.in.PosAfterEvent(runningJob, "finish")))
			fr := jobRecords(finish, runningJob)
			if len(fr) != 1 || fr[0].Event.Name != "finish" || string(fr[0].Job.Annotations) != runningAnn {
				t.Fatalf("running job's next record %v carries %s", recordIDs(fr), fr[0].Job.Annotations)
			}
			all = append(backlog, append(all, finish...)...)
			c.Taken(all)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			j := entry(t, kv, runningJob)
			if taken, ok := j.seen[eventKey{"annotations", tc.running}]; !ok || !taken {
				t.Fatalf("the annotations record was not taken through the checkpoint: %v", j.seen)
			}
		})
	}
}

// A job whose backlog records all went out before (a restart, a
// reconnect) takes the annotations on its state but gets no record: its
// next record carries them.
func TestAnnotateJobTakenBefore(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	kv := core.NewMemKV()
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	c1.Taken(feed(c1, s.backlog(t, pos)))
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, kv)
	defer c2.Close()
	c2.StartStream(true)
	if recs := feed(c2, s.backlog(t, pos)); len(recs) != 0 {
		t.Fatalf("restart emitted %d records", len(recs))
	}
	if recs := c2.Annotate(runningJob, json.RawMessage(runningAnn)); len(recs) != 0 {
		t.Fatalf("Annotate of a job taken before: %v", recordIDs(recs))
	}
	finish := jobRecords(feed(c2, s.live(t, pos, s.in.PosAfterEvent(runningJob, "finish"))), runningJob)
	if len(finish) != 1 || string(finish[0].Job.Annotations) != runningAnn {
		t.Fatalf("next record %v, annotations %s; want %s", recordIDs(finish), finish[0].Job.Annotations, runningAnn)
	}
}

// A live annotations (or memo) event between the backlog and job-list's
// answer is as new as the answer or newer: it wins, Annotate does
// nothing. Jobs that are inactive, unknown, not from this backlog, or
// from an earlier stream's backlog give nothing either.
func TestAnnotateOnlyBacklogJobs(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	c := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, nil)
	defer c.Close()
	c.StartStream(true)
	feed(c, s.backlog(t, pos))
	// Live: the running job ends (lines 251-260), then the waiting job's
	// scheduler annotation changes (line 261).
	const liveSummary = `{"sched":{"resource_summary":"rank0/core[0-1]"}}`
	upTo := s.posAfter(t, waitingJob, "annotations", 1795394512.7003849)
	live := feed(c, s.live(t, pos, upTo))
	if last := live[len(live)-1]; last.Job.ID != waitingJob || string(last.Job.Annotations) != liveSummary {
		t.Fatalf("last live record %s annotations %s", last.ID, last.Job.Annotations)
	}
	if recs := c.Annotate(waitingJob, json.RawMessage(waitingAnn)); recs != nil {
		t.Fatalf("Annotate after a live annotations event: %v", recordIDs(recs))
	}
	alloc := feed(c, s.live(t, upTo, upTo+1))
	if len(alloc) != 1 || alloc[0].Event.Name != "alloc" || string(alloc[0].Job.Annotations) != liveSummary {
		t.Fatalf("next record %v annotations %s; want the live event's %s", recordIDs(alloc), alloc[0].Job.Annotations, liveSummary)
	}
	// Inactive now (its clean came live), and never known.
	for _, id := range []uint64{runningJob, 1 << 40} {
		if recs := c.Annotate(id, json.RawMessage(runningAnn)); recs != nil {
			t.Errorf("Annotate(%d): %v", id, recordIDs(recs))
		}
	}

	// A memo after the backlog wins as well.
	c2 := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, nil)
	defer c2.Close()
	c2.StartStream(true)
	feed(c2, s.backlog(t, pos))
	memo := feed(c2, [][]byte{[]byte(`{"id":572505718784,"events":[{"timestamp":1795394511.9,"name":"memo","context":{"note":"x"}}]}`)})
	if len(memo) != 1 || string(memo[0].Job.Annotations) != `{"user":{"note":"x"}}` {
		t.Fatalf("memo record %v", recordIDs(memo))
	}
	if recs := c2.Annotate(waitingJob, json.RawMessage(waitingAnn)); recs != nil {
		t.Fatalf("Annotate after a live memo: %v", recordIDs(recs))
	}
	// A job first met live (submitted after the backlog) did not come
	// from the backlog.
	c2.Response([]byte(`{"id":99,"events":[{"timestamp":1795394512,"name":"submit","context":{"userid":6001,"urgency":16,"flags":0,"version":1}}]}`), "")
	if recs := c2.Annotate(99, json.RawMessage(runningAnn)); recs != nil {
		t.Fatalf("Annotate of a live job: %v", recordIDs(recs))
	}
	// A new stream without a backlog (full:false, nothing re-read):
	// the running job's earlier backlog does not count.
	c2.StartStream(false)
	feed(c2, [][]byte{[]byte(`{"id":-1,"events":[]}`)})
	if recs := c2.Annotate(runningJob, json.RawMessage(runningAnn)); recs != nil {
		t.Fatalf("Annotate of a job from an earlier stream's backlog: %v", recordIDs(recs))
	}
}

// job-list's answer that is the job's annotations already gives no
// record; "none" (no annotations key) clears them as a null annotations
// event does; a value that is not an object is refused.
func TestAnnotateValues(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	for _, tc := range []struct {
		name    string
		ann     json.RawMessage
		records int
		want    string
	}{
		{"none", nil, 0, ""},
		{"empty", json.RawMessage(`{}`), 0, ""},
		{"user", json.RawMessage(`{"user":{"uri":"local:///tmp/x"}}`), 1, ""},
		{"not an object", json.RawMessage(`"x"`), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, nil)
			defer c.Close()
			c.StartStream(true)
			feed(c, s.backlog(t, pos))
			recs := c.Annotate(runningJob, tc.ann)
			if len(recs) != tc.records {
				t.Fatalf("%d records, want %d", len(recs), tc.records)
			}
			if tc.records == 1 && (recs[0].Job.URI != "local:///tmp/x" || string(recs[0].Event.Context) != annotationsCtx(string(tc.ann))) {
				t.Fatalf("uri %q context %s", recs[0].Job.URI, recs[0].Event.Context)
			}
		})
	}
}

// The annotations record never keeps a job from becoming done: taken
// with the rest, the entry is done once clean is taken; lost in a crash
// after the job's clean was taken, the next backlog (where the job is
// inactive, all its events taken) settles the entry as done.
func TestAnnotateDoneRule(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	end := s.in.PosAfterEvent(runningJob, "clean")
	for _, lost := range []bool{false, true} {
		kv := core.NewMemKV()
		c1 := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, kv)
		c1.StartStream(true)
		recs := feed(c1, s.backlog(t, pos))
		ann := c1.Annotate(runningJob, json.RawMessage(runningAnn))
		recs = append(recs, feed(c1, s.live(t, pos, end))...)
		if len(ann) != 1 || recs[len(recs)-1].ID != core.EventID(runningJob, "clean", 1795394512.6877866) {
			t.Fatalf("annotations %v, last %s", recordIDs(ann), recs[len(recs)-1].ID)
		}
		if !lost {
			c1.Taken(ann)
		}
		c1.Taken(recs)
		if err := c1.Close(); err != nil {
			t.Fatal(err)
		}
		if j := entry(t, kv, runningJob); j.done == lost {
			t.Fatalf("lost %v: entry done %v", lost, j.done)
		}
		c2 := NewConsumer(Options{Logger: quiet()}, kv)
		c2.StartStream(true)
		if again := jobRecords(feed(c2, s.backlog(t, end)), runningJob); len(again) != 0 {
			t.Fatalf("lost %v: emitted again %v", lost, recordIDs(again))
		}
		if err := c2.Close(); err != nil {
			t.Fatal(err)
		}
		v, _ := kv.Get(jobKey(runningJob))
		if j := entry(t, kv, runningJob); !j.done || len(v) != 10 || j.tsubmit != 1795394510.2985837 {
			t.Fatalf("lost %v: after the next backlog, entry %q, want done", lost, v)
		}
	}
}

// A later stream whose backlog emits records of the job again (events
// that happened while nobody listened) gets one annotations record of its
// own, with a new time and id; one whose backlog emits nothing of the job
// gets none.
func TestAnnotateAcrossRestarts(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	const liveSummary = `{"sched":{"resource_summary":"rank0/core[0-1]"}}`
	kv := core.NewMemKV()
	run := func(k int, ann string, now float64) (recs, annRecs []*core.Record) {
		c := NewConsumer(Options{Logger: quiet(), Now: clockAt(now)}, kv)
		c.StartStream(true)
		recs = feed(c, s.backlog(t, k))
		annRecs = c.Annotate(waitingJob, json.RawMessage(ann))
		c.Taken(recs)
		c.Taken(annRecs)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		return jobRecords(recs, waitingJob), annRecs
	}
	recs, a1 := run(pos, waitingAnn, 1795394571.25)
	if len(recs) != 4 || len(a1) != 1 || a1[0].ID != "572505718784:annotations:1795394571.25" {
		t.Fatalf("first run: %d records, annotations %v", len(recs), recordIDs(a1))
	}
	recs, a2 := run(pos, waitingAnn, 1795394572.5)
	if len(recs) != 0 || len(a2) != 0 {
		t.Fatalf("same backlog again: %d records, annotations %v", len(recs), recordIDs(a2))
	}
	// Later: the job was allocated and started while nobody listened.
	recs, a3 := run(s.in.PosAfterEvent(waitingJob, "start"), liveSummary, 1795394573.75)
	if got := recordIDs(recs); len(got) != 4 || recs[0].Event.Name != "alloc" || recs[3].Event.Name != "start" {
		t.Fatalf("later backlog: %v, want alloc, prolog-start, prolog-finish, start", got)
	}
	if len(a3) != 1 || a3[0].ID != "572505718784:annotations:1795394573.75" || string(a3[0].Job.Annotations) != liveSummary {
		t.Fatalf("later backlog: annotations %v", recordIDs(a3))
	}
	j := entry(t, kv, waitingJob)
	for _, ts := range []float64{1795394571.25, 1795394573.75} {
		if !j.seen[eventKey{"annotations", ts}] {
			t.Errorf("annotations record at %v not in the entry", ts)
		}
	}
}
