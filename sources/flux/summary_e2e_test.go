package flux_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

const msgBacklogSummary = "journal backlog read"

// A second run of the same config against the same instance sends
// nothing, and its log says why: every event of the backlog already
// delivered, with the checkpoint that says so.
func TestSecondRunSaysWhy(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(h.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)) // 23 inactive jobs, 324 events
	want, _ := recordedEvents(t, "journal-backlog-full-before-purge.jsonl")
	store := filepath.Join(h.dataDir, "state.db") + " bucket node:flux"
	for run, counts := range []string{"23 324 0 0 0", "23 0 324 23 0"} {
		h.logs = newLogRecorder()
		h.start("")
		l := h.logs.waitFor(t, msgBacklogSummary, 1)[0]
		if run == 0 {
			h.waitRecords(len(want))
		}
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		a := l.Attrs
		got := strings.Join([]string{a["jobs"].String(), a["events"].String(), a["already_delivered"].String(), a["done_jobs"].String(), a["purges"].String()}, " ")
		why, said := a["why"]
		if got != counts || a["checkpoint"].String() != store || said != (run == 1) {
			t.Fatalf("run %d: %s checkpoint %s why %v; want %s, checkpoint %s", run+1, got, a["checkpoint"], why, counts, store)
		}
		if run == 1 {
			if !strings.Contains(why.String(), "324 events already delivered (checkpoint in "+store+")") {
				t.Fatalf("why = %s", why)
			}
			if n := len(h.sink.All()); n != 0 {
				t.Fatalf("second run sent %d records", n)
			}
		}
	}
}
