package flux_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	"github.com/fluxstream/fluxstream/sources/flux/journal"
)

// A Flux instance restarted without its old KVS hands out the job ids of
// the earlier instance again (tests: fluxtest's Reincarnate, the recorded
// scenario run again an hour later on the same socket). Every job of both
// instances must be delivered in full, and every job of the first one that
// fluxstream knew gets a purge record (JOBID:purge:T_SUBMIT) before the
// records of the job that took its id.

const reuseShift = 3600 // the second instance runs the scenario an hour later

// expectedRun lists what a consumer connected at position k of in, and
// following it to the end, must receive: the backlog at k, then every live
// event; and the jobs of the backlog at the end with their submit times.
func expectedRun(in *fluxtest.Instance, k int) (events map[string]bool, final map[uint64]float64) {
	events = map[string]bool{}
	for _, r := range in.Backlog(k, true) {
		for _, e := range r.Events {
			events[core.EventID(uint64(r.ID), e.Name, e.Timestamp)] = true
		}
	}
	for _, it := range in.Items()[k:] {
		if it.Response == nil {
			continue
		}
		for _, e := range it.Response.Events {
			events[core.EventID(uint64(it.Response.ID), e.Name, e.Timestamp)] = true
		}
	}
	final = map[uint64]float64{}
	for _, r := range in.Backlog(in.Len(), true) {
		for _, e := range r.Events {
			if e.Name == "submit" {
				final[uint64(r.ID)] = e.Timestamp
			}
		}
	}
	return events, final
}

// purgeEvents lists the purge records of the job-purge-inactive events of
// in (all of them happen after position k).
func purgeEvents(t *testing.T, in *fluxtest.Instance) map[string]bool {
	t.Helper()
	submits := map[uint64]float64{}
	out := map[string]bool{}
	for _, it := range in.Items() {
		if it.Response != nil {
			for _, e := range it.Response.Events {
				if e.Name == "submit" {
					submits[uint64(it.Response.ID)] = e.Timestamp
				}
			}
			continue
		}
		for _, id := range parseJobs(t, it.Payload) {
			out[journal.PurgeID(id, submits[id])] = true
		}
	}
	return out
}

func parseJobs(t *testing.T, payload []byte) []uint64 {
	t.Helper()
	var p struct{ Jobs []uint64 }
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	return p.Jobs
}

// checkRun asserts recs hold exactly the events and purge records wanted,
// once each, and that each purge record of an old job (oldSubmits) comes
// before every record of the new job with its id.
func checkRun(t *testing.T, recs []*core.Record, events, purges map[string]bool, oldSubmits map[uint64]float64) {
	t.Helper()
	got := map[string]int{}
	firstNew := map[uint64]int{}
	purgeAt := map[uint64]int{}
	for i, r := range recs {
		got[r.ID]++
		switch r.Kind {
		case core.KindEvent:
			if !events[r.ID] {
				t.Errorf("unexpected event %s", r.ID)
			}
			if old, ok := oldSubmits[r.Job.ID]; ok && r.Job.TSubmit != 0 && r.Job.TSubmit != old {
				if _, ok := firstNew[r.Job.ID]; !ok {
					firstNew[r.Job.ID] = i
				}
			}
		case core.KindPurge:
			if !purges[r.ID] {
				t.Errorf("unexpected purge %s (%s)", r.ID, r.Purge.Reason)
			}
			if old, ok := oldSubmits[r.Purge.ID]; ok && r.ID == journal.PurgeID(r.Purge.ID, old) {
				purgeAt[r.Purge.ID] = i
				if r.Purge.Reason != "missing-from-backlog" {
					t.Errorf("purge %s: reason %s", r.ID, r.Purge.Reason)
				}
			}
		default:
			t.Errorf("unexpected record %s", r.ID)
		}
	}
	for id, n := range got {
		if n > 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	var missing []string
	for id := range events {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id := range purges {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%d of %d records lost, e.g. %v", len(missing), len(events)+len(purges), missing[:min(5, len(missing))])
	}
	for id, i := range firstNew {
		if p, ok := purgeAt[id]; !ok || p > i {
			t.Errorf("job %d: the old job's purge record (at %d) does not come before the new job's first record (at %d)", id, p, i)
		}
	}
}

// waitFor polls until the sink holds n records, or gives up after 10 s
// (the checks that follow then say what is missing).
func (h *harness) waitFor(n int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.sink.All()) < n && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// union merges sets.
func union(sets ...map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, s := range sets {
		for k := range s {
			out[k] = true
		}
	}
	return out
}

// oldPurges: the purge records fluxstream owes the jobs of the first
// instance it still knew when the second came (its final backlog).
func oldPurges(final map[uint64]float64) map[string]bool {
	out := map[string]bool{}
	for id, ts := range final {
		out[journal.PurgeID(id, ts)] = true
	}
	return out
}

// fluxstream runs across the instance restart: the connection drops, the
// source reconnects to the new instance, whose backlog already holds jobs
// with the old ids (position k), then follows it live.
func TestReusedIDsAcrossInstanceRestart(t *testing.T) {
	for _, k := range []int{0, 200} {
		t.Run(fmt.Sprintf("new instance at %d", k), func(t *testing.T) {
			h := newHarness(t)
			h.start("")
			h.waitStream()
			h.in.Step(h.in.Len())
			eventsA, finalA := expectedRun(h.in, 0)
			purgesA := purgeEvents(t, h.in)
			h.waitFor(len(eventsA) + len(purgesA))

			in2 := h.in.Reincarnate(reuseShift)
			in2.SeekTo(k)
			if err := h.broker.RestartWith(in2); err != nil {
				t.Fatal(err)
			}
			h.waitStream()
			in2.Step(in2.Len())
			eventsB, _ := expectedRun(in2, k)
			purgesB := purgeEvents(t, in2)
			owed := oldPurges(finalA)
			h.waitFor(len(eventsA) + len(purgesA) + len(owed) + len(eventsB) + len(purgesB))
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			if len(eventsA) != 373 || len(purgesA) != 8 || len(owed) != 17 {
				t.Fatalf("scenario: %d events, %d purges, %d jobs left; want 373, 8, 17", len(eventsA), len(purgesA), len(owed))
			}
			checkRun(t, h.sink.All(), union(eventsA, eventsB), union(purgesA, owed, purgesB), finalA)
		})
	}
}

// fluxstream is stopped while the instance restarts and the new one runs
// jobs with the old ids (up to position k); started again, it reads the
// new instance's backlog against its checkpoint of the old one.
func TestReusedIDsWhileStopped(t *testing.T) {
	for _, k := range []int{200, -1} {
		t.Run(fmt.Sprintf("new instance at %d", k), func(t *testing.T) {
			h := newHarness(t)
			h.start("")
			h.waitStream()
			h.in.Step(h.in.Len())
			eventsA, finalA := expectedRun(h.in, 0)
			purgesA := purgeEvents(t, h.in)
			h.waitFor(len(eventsA) + len(purgesA))
			if err := h.stop(); err != nil { // the checkpoint is written at close
				t.Fatal(err)
			}
			checkRun(t, h.sink.All(), eventsA, purgesA, nil)

			in2 := h.in.Reincarnate(reuseShift)
			if k < 0 {
				k = in2.Len() // the whole second scenario ran meanwhile
			}
			in2.SeekTo(k)
			if err := h.broker.RestartWith(in2); err != nil {
				t.Fatal(err)
			}
			h.start("")
			h.waitStream()
			in2.Step(in2.Len())
			eventsB, _ := expectedRun(in2, k)
			purgesB := map[string]bool{}
			if k < in2.Len() {
				purgesB = purgeEvents(t, in2) // the purge event comes live
			}
			owed := oldPurges(finalA)
			h.waitFor(len(owed) + len(eventsB) + len(purgesB))
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			checkRun(t, h.sink.All(), eventsB, union(owed, purgesB), finalA)
			if len(eventsB) < 200 {
				t.Fatalf("only %d events for the new instance", len(eventsB))
			}
		})
	}
}
