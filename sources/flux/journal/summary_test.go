package journal

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

const msgBacklogRead = "journal backlog read"

// summary formats a line's counts: jobs events already_delivered
// done_jobs purges.
func summary(l logLine) string {
	a := l.attrs
	return fmt.Sprintf("%d %d %d %d %d", a["jobs"].Int64(), a["events"].Int64(), a["already_delivered"].Int64(), a["done_jobs"].Int64(), a["purges"].Int64())
}

// At the end of each backlog the consumer logs what it sent and what the
// checkpoint already had; a run that sends nothing says why, naming the
// checkpoint. Stats reports the same counts, per backlog, stream and in
// total.
func TestBacklogSummary(t *testing.T) {
	kv := &failingKV{MemKV: core.NewMemKV()}
	before := lines(t, "journal-backlog-full-before-purge.jsonl")
	after := lines(t, "journal-backlog-full-after-purge.jsonl")
	logs := &captureHandler{}
	first := len(eventIDs(t, before[:10]))
	// The jobs among the first ten all of whose events were taken.
	taken := map[string]bool{}
	for _, id := range eventIDs(t, before[:10])[:first-5] {
		taken[id] = true
	}
	done := 0
	for _, l := range before[:10] {
		all := true
		for _, id := range eventIDs(t, [][]byte{l}) {
			all = all && taken[id]
		}
		if all {
			done++
		}
	}
	if first != 144 || done != 9 {
		t.Fatalf("the first ten jobs: %d events, %d done once 5 are not taken; want 144 and 9", first, done)
	}
	for i, tc := range []struct {
		backlog [][]byte
		crash   bool // the backlog is cut: no sentinel, added here
		take    int  // records taken (-1: all)
		want    string
		why     bool
	}{
		// A crash after 10 jobs, the last 5 records not taken.
		{before[:10], true, 144 - 5, "10 144 0 0 0", false},
		{before, false, -1, "23 185 139 9 0", false},
		// The same config again: nothing new.
		{before, false, -1, "23 0 324 23 0", true},
		// Flux purged 8 jobs meanwhile.
		{after, false, -1, "15 0 214 15 8", false},
	} {
		c := NewConsumer(Options{Logger: slog.New(logs)}, kv)
		c.StartStream(true)
		if tc.crash {
			tc.backlog = append(tc.backlog[:len(tc.backlog):len(tc.backlog)], []byte(`{"id":-1,"events":[]}`))
		}
		recs := feed(c, tc.backlog)
		if tc.take < 0 {
			tc.take = len(recs)
		}
		c.Taken(recs[:tc.take])
		st := c.Stats()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		got := logs.with(msgBacklogRead)
		if len(got) != i+1 {
			t.Fatalf("run %d: %d summary lines in all", i+1, len(got))
		}
		l := got[i]
		why, said := l.attrs["why"]
		if summary(l) != tc.want || l.level != slog.LevelInfo || l.attrs["checkpoint"].String() != "test.db bucket node:flux" || said != tc.why {
			t.Fatalf("run %d: %s checkpoint %s why %q; want %s (why: %v)", i+1, summary(l), l.attrs["checkpoint"], why, tc.want, tc.why)
		}
		if tc.why && why.String() != "nothing new to send: 324 events already delivered (checkpoint in test.db bucket node:flux); to send them again, run once with --fresh (the old checkpoint is moved aside) or give the config a data_dir of its own" {
			t.Fatalf("why = %s", why)
		}
		b := st.Backlog
		if s := fmt.Sprintf("%d %d %d %d %d", b.Jobs, b.Events, b.Skipped, b.DoneJobs, b.Purges); s != tc.want ||
			st.Stream != st.Backlog || st.Total != st.Backlog || st.Streams != 1 || st.InBacklog || st.Checkpoint != "test.db bucket node:flux" {
			t.Fatalf("run %d: Stats %+v, want backlog counts %s", i+1, st, tc.want)
		}
	}
}

// Live events, purge events, annotations records and invalid input count
// in the stream and the total, not in the backlog; a new stream starts
// its counts again, the total goes on.
func TestStatsAcrossStreams(t *testing.T) {
	s := loadScenario(t)
	pos := s.annotatePos()
	c := NewConsumer(Options{Logger: quiet(), Now: clockAt(1795394571.25)}, nil)
	defer c.Close()
	c.StartStream(true)
	if st := c.Stats(); !st.InBacklog || st.Streams != 1 {
		t.Fatalf("%+v", st)
	}
	backlog := feed(c, s.backlog(t, pos))
	c.Annotate(runningJob, []byte(runningAnn))
	live := feed(c, s.live(t, pos, pos+5))
	c.Response([]byte(`{"id":"x"}`), "")
	c.Purge([]byte(`{"jobs":[349066756096]}`), "")
	st := c.Stats()
	bl := Counts{Jobs: 17, Events: len(backlog)}
	stream := Counts{Jobs: 17, Events: len(backlog) + len(live), Purges: 1, Invalid: 1, Annotations: 1}
	if st.Backlog != bl || st.Stream != stream || st.Total != stream {
		t.Fatalf("stats %+v\nwant backlog %+v, stream and total %+v", st, bl, stream)
	}
	// A reconnect: the backlog again (a job more, submitted live),
	// everything in it emitted before.
	c.StartStream(true)
	again := feed(c, s.backlog(t, pos+5))
	st = c.Stats()
	if len(again) != 0 || st.Streams != 2 || st.Stream != st.Backlog || st.Backlog.Events != 0 || st.Backlog.Jobs != 18 || st.Backlog.Skipped != len(backlog)+len(live) ||
		st.Total.Events != stream.Events || st.Total.Skipped != st.Backlog.Skipped {
		t.Fatalf("after a reconnect: %d records, stats %+v", len(again), st)
	}
}
