package journal

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
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
			if r.Purge.Reason != "missing-from-backlog" || r.Key() != r.ID[:len(r.ID)-len(":purge")] {
				t.Errorf("purge record %+v", r.Purge)
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
		if string(v) != "D" {
			t.Errorf("entry %x = %q, want D", k, v)
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
