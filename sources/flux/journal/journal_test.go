package journal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
)

const testdata = "../../../testdata/flux"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func lines(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	return out
}

// submitTimes maps each job of a recorded stream to its submit time.
func submitTimes(t testing.TB, name string) map[uint64]float64 {
	t.Helper()
	out := map[uint64]float64{}
	for _, l := range lines(t, name) {
		var r struct {
			ID     int64 `json:"id"`
			Events []struct {
				Timestamp float64 `json:"timestamp"`
				Name      string  `json:"name"`
			} `json:"events"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Events {
			if e.Name == "submit" {
				out[uint64(r.ID)] = e.Timestamp
			}
		}
	}
	return out
}

func feed(c *Consumer, ls [][]byte) []*core.Record {
	var out []*core.Record
	for _, l := range ls {
		out = append(out, c.Response(l, "")...)
	}
	return out
}

// Undecodable input becomes an invalid record that names the place; the
// stream goes on.
func TestInvalidInputIsKept(t *testing.T) {
	c := NewConsumer(Options{Source: "flux", Cluster: "c", Logger: quiet()}, nil)
	defer c.Close()
	c.StartStream(true)
	ls := lines(t, "journal-scenario-live-full.jsonl")[:3]
	bad := []byte(`{"id":349066756096,"events":[{"timestamp":"soon","name":"submit"}]}`)
	recs := feed(c, [][]byte{ls[0], bad, ls[1], ls[2]})
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	inv := recs[0]
	if inv.Kind != core.KindInvalid || inv.Invalid.Where != "journal response 2" || inv.Invalid.Raw != string(bad) ||
		!strings.Contains(inv.Invalid.Error, "timestamp") || !strings.HasPrefix(inv.ID, "invalid:") {
		t.Fatalf("invalid record %+v %+v", inv, inv.Invalid)
	}
	if recs[1].Event.Name != "submit" || recs[2].Event.Name != "validate" {
		t.Fatalf("stream did not go on: %s %s", recs[1].ID, recs[2].ID)
	}
	// The same bad input gets the same id (idempotent).
	again := c.Response(bad, "x")[0]
	if again.ID != inv.ID {
		t.Fatalf("ids %s vs %s", again.ID, inv.ID)
	}

	for _, payload := range []string{`{"jobs":"all"}`, `{}`, `[1,2]`} {
		recs := c.Purge([]byte(payload), "event seq 9")
		if len(recs) != 1 || recs[0].Kind != core.KindInvalid || !strings.Contains(recs[0].Invalid.Error, "job-purge-inactive event") {
			t.Errorf("purge %s -> %+v", payload, recs)
		}
	}
}

// Records of a backlog carry the snapshot at each event: R appears at
// alloc, not before; the jobspec on the job's first record only.
func TestBacklogSnapshotsFollowTheEvents(t *testing.T) {
	c := NewConsumer(Options{Source: "flux", Logger: quiet()}, nil)
	defer c.Close()
	c.StartStream(true)
	recs := feed(c, lines(t, "journal-backlog-full-before-purge.jsonl")[:1]) // job "early"
	if len(recs) != 14 {
		t.Fatalf("%d records for job early", len(recs))
	}
	for _, r := range recs {
		switch r.Event.Name {
		case "submit":
			if r.Jobspec == nil || r.Job.Allocated != nil || r.Job.Nodelist != "" || r.Job.State != "NEW" {
				t.Errorf("submit record: jobspec %v allocated %v nodelist %q state %s", r.Jobspec != nil, r.Job.Allocated, r.Job.Nodelist, r.Job.State)
			}
		case "alloc":
			if r.R == nil || r.Job.Allocated == nil || r.Job.Nodelist != "vm" || r.Jobspec != nil || r.Job.State != "RUN" {
				t.Errorf("alloc record: R %v allocated %v nodelist %q jobspec %v", r.R != nil, r.Job.Allocated, r.Job.Nodelist, r.Jobspec != nil)
			}
		case "clean":
			if r.Job.State != "INACTIVE" || r.Job.Result != "COMPLETED" || r.R != nil || r.Jobspec != nil {
				t.Errorf("clean record: %s %s", r.Job.State, r.Job.Result)
			}
		}
		if r.ID != core.EventID(349066756096, r.Event.Name, r.Event.Timestamp) {
			t.Errorf("id %s", r.ID)
		}
	}
}

// A second consumer on the same checkpoint emits nothing for what the
// first one had acknowledged, and skips finished jobs without reducing.
func TestCheckpointAcrossRestarts(t *testing.T) {
	kv := core.NewMemKV()
	backlog := lines(t, "journal-backlog-full-before-purge.jsonl")
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	recs := feed(c1, backlog[:10]) // ten jobs, then a crash
	c1.Taken(recs[:len(recs)-5])   // the last five never reached the sinks
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := NewConsumer(Options{Logger: quiet()}, kv)
	defer c2.Close()
	c2.StartStream(true)
	again := feed(c2, backlog)
	if len(again) < 5 || again[0].ID != recs[len(recs)-5].ID {
		t.Fatalf("restart emitted %d, first %s; want the 5 unacknowledged first", len(again), again[0].ID)
	}
	seen := map[string]bool{}
	for _, r := range recs[:len(recs)-5] {
		seen[r.ID] = true
	}
	total := 0
	for _, l := range backlog[:len(backlog)-1] {
		var r struct{ Events []json.RawMessage }
		json.Unmarshal(l, &r)
		total += len(r.Events)
	}
	for _, r := range again {
		if seen[r.ID] {
			t.Errorf("%s emitted again", r.ID)
		}
	}
	if len(again)+len(recs)-5 != total {
		t.Fatalf("%d + %d records, want %d", len(again), len(recs)-5, total)
	}
}

// Jobs known from the checkpoint but missing from a full backlog were
// purged while nobody listened: a purge record each; with full:false
// nothing can be concluded.
func TestMissingFromBacklog(t *testing.T) {
	kv := core.NewMemKV()
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	c1.Taken(feed(c1, lines(t, "journal-backlog-full-before-purge.jsonl")))
	c1.Close()
	submits := submitTimes(t, "journal-backlog-full-before-purge.jsonl")

	for _, full := range []bool{false, true} {
		c := NewConsumer(Options{Logger: quiet()}, kv)
		c.StartStream(full)
		recs := feed(c, lines(t, "journal-backlog-full-after-purge.jsonl"))
		var purged []uint64
		for _, r := range recs {
			if r.Kind != core.KindPurge {
				t.Errorf("emitted %s again", r.ID)
				continue
			}
			want := fmt.Sprintf("%d:purge:%s", r.Purge.ID, strconv.FormatFloat(submits[r.Purge.ID], 'f', -1, 64))
			if r.Purge.Reason != "missing-from-backlog" || r.ID != want || r.Key() != strconv.FormatUint(r.Purge.ID, 10) ||
				r.Purge.TSubmit != submits[r.Purge.ID] || submits[r.Purge.ID] == 0 {
				t.Errorf("purge record %s %+v, want id %s", r.ID, r.Purge, want)
			}
			purged = append(purged, r.Purge.ID)
		}
		switch {
		case !full && len(purged) != 0:
			t.Errorf("full:false reported purges %v", purged)
		case full && len(purged) != 8:
			t.Errorf("full:true reported %d purges, want 8: %v", len(purged), purged)
		}
		if full {
			c.Taken(recs)
		}
		c.Close()
	}
	// Forgotten: a third start reports nothing.
	c3 := NewConsumer(Options{Logger: quiet()}, kv)
	defer c3.Close()
	c3.StartStream(true)
	if recs := feed(c3, lines(t, "journal-backlog-full-after-purge.jsonl")); len(recs) != 0 {
		t.Fatalf("third start emitted %d", len(recs))
	}
	n := 0
	kv.ForEach(func(k, v []byte) error {
		n++
		id := binary.BigEndian.Uint64(k)
		want := binary.BigEndian.AppendUint64([]byte{2, 'D'}, math.Float64bits(submits[id]))
		if !bytes.Equal(v, want) || submits[id] == 0 {
			t.Errorf("entry %d = %q, want %q (done, with its t_submit)", id, v, want)
		}
		return nil
	})
	if n != 15 {
		t.Fatalf("checkpoint holds %d jobs, want the 15 Flux still has", n)
	}
}

func TestCheckpointEncoding(t *testing.T) {
	j := &ckJob{seen: map[eventKey]bool{
		{"submit", 1795394498.456534}:   true,
		{"validate", 1795394498.475177}: true,
		{"depend", 1795394498.4902654}:  false, // in flight: not stored
	}}
	b := encodeCheckpoint(j)
	back := &ckJob{seen: map[eventKey]bool{}}
	if err := decodeCheckpoint(b, back); err != nil {
		t.Fatal(err)
	}
	if len(back.seen) != 2 || !back.seen[eventKey{"submit", 1795394498.456534}] || back.done {
		t.Fatalf("decoded %+v", back)
	}
	for _, bad := range [][]byte{{'Q'}, {'P', 9}, append(append([]byte{'P', 3}, "abc"...), 1, 2)} {
		if err := decodeCheckpoint(bad, &ckJob{seen: map[eventKey]bool{}}); err == nil {
			t.Errorf("decoded garbage %q", bad)
		}
	}
}

// FuzzDecodeCheckpoint: a damaged entry gives an error, never a panic nor
// an allocation out of proportion to its size; what decodes encodes back
// to the same entry. Seeds in testdata/fuzz/FuzzDecodeCheckpoint include
// the 10-byte varint that used to panic (a name length of 2^64-8, whose
// n+8 wrapped to 0 and passed the bounds check).
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte("D"))
	f.Add(encodeCheckpoint(&ckJob{seen: map[eventKey]bool{{"submit", 1.5}: true}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		j := &ckJob{seen: map[eventKey]bool{}}
		if err := decodeCheckpoint(b, j); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(j.seen) > len(b)/9 {
			t.Fatalf("%d events from %d bytes", len(j.seen), len(b))
		}
		if j.done || len(b) == 0 {
			return
		}
		again := &ckJob{seen: map[eventKey]bool{}}
		if err := decodeCheckpoint(encodeCheckpoint(j), again); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if len(again.seen) != len(j.seen) {
			t.Fatalf("round trip: %d events, then %d", len(j.seen), len(again.seen))
		}
		for k := range j.seen {
			if !again.seen[k] && k.ts == k.ts { // NaN keys never compare equal
				t.Fatalf("round trip lost %v", k)
			}
		}
	})
}

// A damaged checkpoint entry does not stop the consumer: it logs the job
// and what happens, treats the job as unknown (its events come again) and
// rewrites the entry once they are taken.
func TestDamagedCheckpointEntry(t *testing.T) {
	kv := core.NewMemKV()
	backlog := lines(t, "journal-backlog-full-before-purge.jsonl")[:1] // job "early", 14 events
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	c1.Taken(feed(c1, backlog))
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	// The 10-byte varint that used to panic the decoder.
	damaged := []byte("P\xf8\xff\xff\xff\xff\xff\xff\xff\xff\x01") // n = 2^64-8: n+8 wrapped to 0
	if err := kv.Commit([]core.KVPut{{Key: jobKey(349066756096), Value: damaged}}); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	c2 := NewConsumer(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, kv)
	c2.StartStream(true)
	recs := feed(c2, backlog)
	if len(recs) != 14 || recs[0].ID != "349066756096:submit:1795394498.456534" {
		t.Fatalf("after a damaged entry: %d records, first %v; want the job's 14 events again", len(recs), recs[0])
	}
	out := logs.String()
	if strings.Count(out, "damaged checkpoint entry") != 1 || !strings.Contains(out, "job=349066756096") ||
		!strings.Contains(out, "jobid=fAApqNHV") || !strings.Contains(out, "emitted again") {
		t.Fatalf("log does not name the job and what happens, once:\n%s", out)
	}
	c2.Taken(recs)
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	v, _ := kv.Get(jobKey(349066756096))
	if j := (&ckJob{seen: map[eventKey]bool{}}); decodeCheckpoint(v, j) != nil || !j.done {
		t.Fatalf("entry not rewritten: %q", v)
	}
}

// FuzzConsumer feeds arbitrary responses and purge payloads: the consumer
// never panics and every input yields records or an invalid record.
func FuzzConsumer(f *testing.F) {
	for _, l := range lines(f, "journal-scenario-live-full.jsonl")[:40] {
		f.Add(l, false)
	}
	f.Add([]byte(`{"jobs":[1,2,3]}`), true)
	f.Add([]byte(`{"id":1,"events":[{"timestamp":1,"name":"submit","context":{"userid":"x"}}]}`), false)
	c := NewConsumer(Options{Logger: quiet()}, nil)
	c.StartStream(true)
	c.Response([]byte(`{"id":-1,"events":[]}`), "")
	f.Fuzz(func(t *testing.T, b []byte, purge bool) {
		if purge {
			c.Purge(b, "fuzz")
			return
		}
		for _, r := range c.Response(b, "fuzz") {
			if _, err := r.JSON(); err != nil {
				t.Fatalf("record %s does not encode: %v", r.ID, err)
			}
		}
	})
}

func TestIncludePolicies(t *testing.T) {
	backlog := lines(t, "journal-backlog-full-before-purge.jsonl")[:1] // job "early", 14 events
	for _, tc := range []struct {
		include                 Include
		jobspecs, rs, eventlogs int
	}{
		{DefaultInclude(), 1, 1, 0},
		{Include{Jobspec: IncludeAlways, R: IncludeAlways, Eventlog: IncludeAlways}, 14, 10, 14},
		{Include{Jobspec: IncludeNever, R: IncludeNever, Eventlog: IncludeNever}, 0, 0, 0},
	} {
		c := NewConsumer(Options{Logger: quiet(), Include: tc.include}, nil)
		c.StartStream(true)
		recs := feed(c, backlog)
		c.Close()
		js, rs, els := 0, 0, 0
		for i, r := range recs {
			if r.Jobspec != nil {
				js++
			}
			if r.R != nil {
				rs++
			}
			if r.Eventlog != nil {
				els++
				if len(r.Eventlog) != i+1 || r.Eventlog[i].Name != r.Event.Name {
					t.Fatalf("record %d carries %d events", i, len(r.Eventlog))
				}
			}
		}
		if js != tc.jobspecs || rs != tc.rs || els != tc.eventlogs {
			t.Errorf("%+v: jobspec on %d, R on %d, eventlog on %d records; want %d, %d, %d", tc.include, js, rs, els, tc.jobspecs, tc.rs, tc.eventlogs)
		}
	}
}

// shifted is a recorded stream as a restarted instance without its old
// KVS would send it: the same job ids, every event dt seconds later.
func shifted(t testing.TB, ls [][]byte, dt float64) [][]byte {
	t.Helper()
	out := make([][]byte, 0, len(ls))
	for _, l := range ls {
		var r struct {
			ID     json.Number `json:"id"`
			Events []struct {
				Timestamp float64         `json:"timestamp"`
				Name      string          `json:"name"`
				Context   json.RawMessage `json:"context,omitempty"`
			} `json:"events"`
			Jobspec json.RawMessage `json:"jobspec,omitempty"`
			R       json.RawMessage `json:"R,omitempty"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		if r.ID != "-1" {
			for i := range r.Events {
				r.Events[i].Timestamp += dt
			}
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// eventIDs lists the record ids of the events of recorded lines.
func eventIDs(t testing.TB, ls [][]byte) []string {
	t.Helper()
	var ids []string
	for _, l := range ls {
		var r struct {
			ID     int64 `json:"id"`
			Events []struct {
				Timestamp float64 `json:"timestamp"`
				Name      string  `json:"name"`
			} `json:"events"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Events {
			ids = append(ids, core.EventID(uint64(r.ID), e.Name, e.Timestamp))
		}
	}
	return ids
}

func recordIDs(recs []*core.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	return ids
}

func entry(t testing.TB, kv core.KV, id uint64) *ckJob {
	t.Helper()
	v, err := kv.Get(jobKey(id))
	if err != nil {
		t.Fatal(err)
	}
	j := newCkJob(0)
	if v == nil {
		return nil
	}
	if err := decodeCheckpoint(v, j); err != nil {
		t.Fatalf("entry of job %d: %v", id, err)
	}
	return j
}

// A backlog job whose id the checkpoint holds with another submit time is
// a new job: the old one gets its purge record (missing-from-backlog,
// JOBID:purge:T_SUBMIT) right before the new one's records, and the new
// one is delivered in full. Keyed by id alone, every job of the second
// instance was skipped.
func TestReusedIDInBacklog(t *testing.T) {
	kv := core.NewMemKV()
	a := lines(t, "journal-backlog-full-before-purge.jsonl")
	b := shifted(t, a, 3600)
	ta, tb := submitTimes(t, "journal-backlog-full-before-purge.jsonl"), map[uint64]float64{}
	for id, ts := range ta {
		tb[id] = ts + 3600
	}
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	c1.Taken(feed(c1, a))
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	// The restarted instance: every job reuses an id.
	var want []string
	for _, l := range b[:len(b)-1] {
		var r struct{ ID uint64 }
		json.Unmarshal(l, &r)
		want = append(want, PurgeID(r.ID, ta[r.ID]))
		want = append(want, eventIDs(t, [][]byte{l})...)
	}
	var logs strings.Builder
	c2 := NewConsumer(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, kv)
	c2.StartStream(true)
	recs := feed(c2, b)
	if got := recordIDs(recs); !slices.Equal(got, want) {
		t.Fatalf("second instance: %d records, want %d (23 purges, 324 events):\n got %v\nwant %v", len(got), len(want), got[:min(5, len(got))], want[:5])
	}
	for _, r := range recs {
		switch r.Kind {
		case core.KindPurge:
			if r.Purge.Reason != "missing-from-backlog" || r.Purge.JobID != jobstate.F58(r.Purge.ID) || r.Purge.TSubmit != ta[r.Purge.ID] {
				t.Fatalf("purge %+v", r.Purge)
			}
		case core.KindEvent:
			if r.Job.TSubmit != tb[r.Job.ID] {
				t.Fatalf("%s: t_submit %v, want the new job's %v", r.ID, r.Job.TSubmit, tb[r.Job.ID])
			}
		}
	}
	if n := strings.Count(logs.String(), "job id reused by a restarted instance"); n != 23 {
		t.Fatalf("%d reuse log lines, want 23:\n%s", n, logs.String())
	}
	c2.Taken(recs)
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	for id, ts := range tb {
		if j := entry(t, kv, id); j == nil || !j.done || j.tsubmit != ts {
			t.Fatalf("job %d: entry %+v, want done with t_submit %v", id, j, ts)
		}
	}

	// The same instance again: nothing new.
	c3 := NewConsumer(Options{Logger: quiet()}, kv)
	c3.StartStream(true)
	if recs := feed(c3, b); len(recs) != 0 {
		t.Fatalf("second instance read again: %d records, first %s", len(recs), recs[0].ID)
	}
	c3.Close()

	// Bad input: the first instance's backlog again, its submits earlier
	// than the checkpoint's. Delivered (and logged), never dropped.
	logs.Reset()
	c4 := NewConsumer(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, kv)
	defer c4.Close()
	c4.StartStream(true)
	recs = feed(c4, a)
	if events, purges := countKinds(recs); events != 324 || purges != 23 {
		t.Fatalf("earlier submits: %d events %d purges, want 324 and 23", events, purges)
	}
	if recs[0].ID != PurgeID(349066756096, tb[349066756096]) || !strings.Contains(logs.String(), "submit time earlier than the checkpointed job's") {
		t.Fatalf("first record %s; log:\n%s", recs[0].ID, logs.String())
	}
}

func countKinds(recs []*core.Record) (events, purges int) {
	for _, r := range recs {
		switch r.Kind {
		case core.KindEvent:
			events++
		case core.KindPurge:
			purges++
		}
	}
	return events, purges
}

// Live: a submit event for an id whose checkpointed or in-flight job has
// another submit time is a new job, with the old one's purge first. Both
// with the old job's records taken and still in flight: a late
// acknowledgement of the old incarnation does not mark the new one.
func TestReusedIDLive(t *testing.T) {
	live := lines(t, "journal-scenario-live-full.jsonl") // sentinel first
	again := shifted(t, live[1:], 7200)
	for _, takenFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("old taken first %v", takenFirst), func(t *testing.T) {
			kv := core.NewMemKV()
			c := NewConsumer(Options{Logger: quiet()}, kv)
			c.StartStream(true)
			first := feed(c, live)
			if len(first) != 373 {
				t.Fatalf("first instance: %d records", len(first))
			}
			if takenFirst {
				c.Taken(first)
				if err := c.Checkpoint().Flush(); err != nil {
					t.Fatal(err)
				}
			}
			second := feed(c, again)
			// Every job of the second run gets the first one's purge
			// record before its submit, except the two invalidated ones:
			// an invalidated job is gone, nothing to purge (once its
			// invalidate was taken; before, its purge is emitted too).
			submits := map[uint64]float64{}
			seenSubmit := map[uint64]bool{}
			for _, r := range first {
				if r.Event.Name == "submit" {
					submits[r.Job.ID] = r.Event.Timestamp
				}
			}
			var events []string
			purges := 0
			for i, r := range second {
				if r.Kind == core.KindPurge {
					purges++
					next := second[i+1]
					if r.ID != PurgeID(r.Purge.ID, submits[r.Purge.ID]) || r.Purge.TSubmit != submits[r.Purge.ID] || next.Job.ID != r.Purge.ID || next.Event.Name != "submit" || seenSubmit[r.Purge.ID] {
						t.Fatalf("purge %s followed by %s", r.ID, next.ID)
					}
					continue
				}
				if r.Event.Name == "submit" {
					seenSubmit[r.Job.ID] = true
				}
				events = append(events, r.ID)
			}
			wantPurges := 25
			if !takenFirst {
				wantPurges = 27
			}
			if !slices.Equal(events, eventIDs(t, again)) || purges != wantPurges {
				t.Fatalf("second instance: %d events (want 373, all of them), %d purges (want %d)", len(events), purges, wantPurges)
			}
			if !takenFirst {
				c.Taken(first) // late: the first instance's records reach the sinks now
			}
			c.Taken(second)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			n := 0
			kv.ForEach(func(k, v []byte) error {
				n++
				id := binary.BigEndian.Uint64(k)
				j := newCkJob(0)
				if err := decodeCheckpoint(v, j); err != nil || !j.done || j.tsubmit != submits[id]+7200 {
					t.Errorf("job %d: entry %q, want done with the second run's t_submit", id, v)
				}
				return nil
			})
			if n != 25 {
				t.Fatalf("%d entries, want 25 (27 jobs, 2 invalidated)", n)
			}
		})
	}
}

// Entries written before t_submit was kept (version 1) are read: a 'P'
// entry that holds the submit event knows the submit time; a 'D' entry
// does not, and matches whatever submit time comes first (documented: the
// job met first is taken for the checkpointed one), then it is rewritten
// in version 2.
func TestLegacyEntries(t *testing.T) {
	a := lines(t, "journal-backlog-full-before-purge.jsonl")[:2] // jobs "early" and "ok-sleep"
	ta := submitTimes(t, "journal-backlog-full-before-purge.jsonl")
	const first, second = 349066756096, 398844755968
	evs := eventIDs(t, a[:1])
	// Version 1 'P': job "early" with its submit and validate taken.
	legacyP := []byte{'P'}
	for _, id := range evs[:2] {
		parts := strings.Split(id, ":")
		ts, _ := strconv.ParseFloat(parts[2], 64)
		legacyP = binary.AppendUvarint(legacyP, uint64(len(parts[1])))
		legacyP = append(legacyP, parts[1]...)
		legacyP = binary.BigEndian.AppendUint64(legacyP, math.Float64bits(ts))
	}
	for _, tc := range []struct {
		name  string
		dt    float64
		input [][]byte
		want  []string
	}{
		// early: the 12 events after submit and validate; ok-sleep: done.
		{"same instance", 0, a, evs[2:]},
		// early: the reuse shows through the submit event of its 'P'
		// entry; ok-sleep: its 'D' entry adopts the new submit time and
		// the job is skipped (the documented limit of version 1 entries).
		{"reused ids", 60, shifted(t, a, 60), append([]string{PurgeID(first, ta[first])}, eventIDs(t, shifted(t, a[:1], 60))...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := core.NewMemKV()
			kv.Commit([]core.KVPut{{Key: jobKey(first), Value: legacyP}, {Key: jobKey(second), Value: []byte("D")}})
			c := NewConsumer(Options{Logger: quiet()}, kv)
			c.StartStream(true)
			recs := feed(c, tc.input)
			if got := recordIDs(recs); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			c.Taken(recs)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			for id, ts := range map[uint64]float64{first: ta[first] + tc.dt, second: ta[second] + tc.dt} {
				v, _ := kv.Get(jobKey(id))
				if j := entry(t, kv, id); !j.done || j.tsubmit != ts || len(v) != 10 || v[0] != 2 {
					t.Fatalf("job %d: entry %q, want version 2, done, t_submit %v", id, v, ts)
				}
			}
		})
	}
}

// A backlog entry without a submit event (an allow filter without submit)
// for a job the checkpoint knows with its submit time: delivered again and
// logged, never dropped; then the entry forgets the submit time, so a
// second restart with the same filter emits nothing.
func TestBacklogWithoutSubmit(t *testing.T) {
	kv := core.NewMemKV()
	a := lines(t, "journal-backlog-full-before-purge.jsonl")
	c1 := NewConsumer(Options{Logger: quiet()}, kv)
	c1.StartStream(true)
	c1.Taken(feed(c1, a))
	c1.Close()
	allow := lines(t, "journal-backlog-full-allow-submit-finish-clean.jsonl")
	var noSubmit [][]byte
	for _, l := range allow {
		noSubmit = append(noSubmit, bytes.ReplaceAll(l, []byte(`"name":"submit"`), []byte(`"name":"submit-not"`)))
	}
	// Drop the renamed events again: what allow:{finish,clean} sends.
	for i, l := range noSubmit {
		var r map[string]json.RawMessage
		json.Unmarshal(l, &r)
		var evs []map[string]any
		json.Unmarshal(r["events"], &evs)
		kept := evs[:0]
		for _, e := range evs {
			if e["name"] != "submit-not" {
				kept = append(kept, e)
			}
		}
		r["events"], _ = json.Marshal(kept)
		noSubmit[i], _ = json.Marshal(r)
	}
	var logs strings.Builder
	c2 := NewConsumer(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, kv)
	c2.StartStream(true)
	recs := feed(c2, noSubmit)
	want := eventIDs(t, noSubmit)
	if len(want) != 43 || !slices.Equal(recordIDs(recs), want) {
		t.Fatalf("%d records, want the %d finish and clean events again", len(recs), len(want))
	}
	out := logs.String()
	if strings.Count(out, "eventlog without a submit event") != maxNoSubmitLogs || !strings.Contains(out, "jobs=23") {
		t.Fatalf("log:\n%s", out)
	}
	c2.Taken(recs)
	c2.Close()
	c3 := NewConsumer(Options{Logger: quiet()}, kv)
	defer c3.Close()
	c3.StartStream(true)
	if recs := feed(c3, noSubmit); len(recs) != 0 {
		t.Fatalf("second restart with the same filter: %d records", len(recs))
	}
}

// include: on-change sends the updated jobspec and R on the records of
// jobspec-update and resource-update: the raw object with the update
// applied, as Flux itself keeps it (the recorded backlog's jobspec and R,
// taken after the updates), and not again on the next record.
func TestOnChangeSendsUpdates(t *testing.T) {
	type raw struct{ jobspec, r json.RawMessage }
	current := map[uint64]raw{}
	for _, l := range lines(t, "journal-backlog-full-before-purge.jsonl") {
		var r struct {
			ID      uint64
			Jobspec json.RawMessage
			R       json.RawMessage
		}
		json.Unmarshal(l, &r)
		current[r.ID] = raw{r.Jobspec, r.R}
	}
	same := func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
	}
	for _, tc := range []struct {
		name string
		file string
	}{
		{"live", "journal-scenario-live-full.jsonl"},
		{"backlog", "journal-backlog-full-before-purge.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConsumer(Options{Logger: quiet()}, nil)
			defer c.Close()
			c.StartStream(true)
			recs := feed(c, lines(t, tc.file))
			updates := map[string]int{}
			for i, r := range recs {
				name := r.Event.Name
				if name != "jobspec-update" && name != "resource-update" {
					continue
				}
				updates[name]++
				want := current[r.Job.ID]
				switch name {
				case "jobspec-update":
					if r.Jobspec == nil || !same(r.Jobspec, want.jobspec) {
						t.Errorf("%s carries jobspec %s\nwant the updated one %s", r.ID, r.Jobspec, want.jobspec)
					}
				case "resource-update":
					if r.R == nil || !same(r.R, want.r) {
						t.Errorf("%s carries R %s\nwant the updated one %s", r.ID, r.R, want.r)
					}
				}
				// Not again on the job's next record.
				for _, n := range recs[i+1:] {
					if n.Job != nil && n.Job.ID == r.Job.ID {
						if name == "jobspec-update" && n.Jobspec != nil && n.Event.Name != "jobspec-update" ||
							name == "resource-update" && n.R != nil && n.Event.Name != "resource-update" {
							t.Errorf("%s after %s carries the raw object again", n.ID, r.ID)
						}
						break
					}
				}
			}
			// held-urgency, nonfatal-exception, held-queue-change: three
			// jobspec updates; nonfatal-exception's resource-update.
			if updates["jobspec-update"] != 3 || updates["resource-update"] != 1 {
				t.Fatalf("updates %v, want 3 jobspec-update and 1 resource-update", updates)
			}
		})
	}
	// The duration of held-urgency really changed on its update record
	// (recorded: flux update duration=5m).
	c := NewConsumer(Options{Logger: quiet()}, nil)
	defer c.Close()
	c.StartStream(true)
	for _, r := range feed(c, lines(t, "journal-scenario-live-full.jsonl")) {
		if r.Job.ID == 464108126208 && (r.Event.Name == "submit" || r.Event.Name == "jobspec-update") {
			var js struct {
				Attributes struct {
					System struct{ Duration float64 }
				}
			}
			json.Unmarshal(r.Jobspec, &js)
			want := map[string]float64{"submit": 0, "jobspec-update": 300}[r.Event.Name]
			if js.Attributes.System.Duration != want {
				t.Errorf("%s: jobspec duration %v, want %v", r.ID, js.Attributes.System.Duration, want)
			}
		}
	}
}

// Purge records carry the purged incarnation's submit time in
// purge.t_submit (left out when not known), and their acknowledgement
// forgets that incarnation by it.
func TestPurgeRecordsCarryTSubmit(t *testing.T) {
	kv := core.NewMemKV()
	c := NewConsumer(Options{Logger: quiet()}, kv)
	c.StartStream(true)
	live := lines(t, "journal-scenario-live-full.jsonl")
	c.Taken(feed(c, live))
	if err := c.Checkpoint().Flush(); err != nil {
		t.Fatal(err)
	}
	const early, unknown = 349066756096, 12345
	submit := submitTimes(t, "journal-scenario-live-full.jsonl")[early]
	recs := c.Purge([]byte(fmt.Sprintf(`{"jobs":[%d,%d]}`, early, unknown)), "event seq 1")
	if len(recs) != 2 {
		t.Fatalf("%d purge records", len(recs))
	}
	for i, want := range []struct {
		id      string
		tsubmit float64
		json    string
	}{
		{PurgeID(early, submit), submit, `"t_submit":` + strconv.FormatFloat(submit, 'f', -1, 64) + `}`},
		{"12345:purge", 0, `"reason":"purge-event","time":`},
	} {
		r := recs[i]
		js, err := r.JSON()
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != want.id || r.Purge.TSubmit != want.tsubmit || !strings.Contains(string(js), want.json) ||
			want.tsubmit == 0 && strings.Contains(string(js), "t_submit") {
			t.Errorf("purge record %s t_submit %v: %s; want id %s t_submit %v", r.ID, r.Purge.TSubmit, js, want.id, want.tsubmit)
		}
	}
	if v, _ := kv.Get(jobKey(early)); v == nil {
		t.Fatal("no entry before the purge was taken")
	}
	c.Taken(recs)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{early, unknown} {
		if v, _ := kv.Get(jobKey(id)); v != nil {
			t.Errorf("job %d: entry %q left after its purge was taken", id, v)
		}
	}
}
