package elasticsearch

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/estest"
	"github.com/fluxstream/fluxstream/sources/replay"
)

// checkFinal checks that the indices hold exactly the events of recs and
// every job's last snapshot.
func checkFinal(t *testing.T, node *estest.Node, prefix string, recs []*core.Record) {
	t.Helper()
	last, events := lastOf(recs)
	purged := map[string]bool{}
	for _, r := range recs {
		if r.Kind == core.KindPurge {
			purged[jobKeyOf(r)] = true
			events[r.ID] = true // native: the purge record is in the events index too
		}
	}
	if len(purged) == 0 {
		t.Fatal("no purge records")
	}
	if got := node.Count(t, prefix+"events-*", ""); got != len(events) {
		t.Errorf("events index: %d documents, want %d (one per record id)", got, len(events))
	}
	if got := node.Count(t, prefix+"jobs", ""); got != len(last) {
		t.Errorf("jobs index: %d documents, want %d", got, len(last))
	}
	if got := node.Count(t, prefix+"jobs", "purged:true"); got != len(purged) {
		t.Errorf("jobs index: %d purged, want %d", got, len(purged))
	}
	bad := 0
	for key, r := range last {
		doc, version := getDoc(t, node, prefix+"jobs", key)
		want := Version(r.Event.Timestamp)
		if purged[key] {
			want++ // the purge's compare-and-set
		}
		if doc["id"] != r.ID || version != want || (doc["purged"] == true) != purged[key] {
			if bad++; bad <= 5 {
				t.Errorf("jobs/%s holds %v (version %d, purged %v), want the last record %s (version %d, purged %v)", key, doc["id"], version, doc["purged"], r.ID, want, purged[key])
			}
		}
	}
}

// Every fault of the proxy, again and again: nothing lost, no duplicate.
func TestFaultsNothingLost(t *testing.T) {
	node := estest.Start(t)
	recs := scenario(t)
	var plan []fault
	for range 4 {
		plan = append(plan, fail429, fail429, fail429, items429, fail500, fail413, resetBefore, resetAfter, stall, items503, pass)
	}
	px := newProxy(t, node.URL, false, plan...)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	s := newSink(t, px.URL(), sinkYAML(prefix, "native", "in_flight: 3\nrequest_timeout: 1s\nflush: {max_records: 40, interval: 0s}\n"))
	perm, writes := deliver(t, s, recs, 60)
	if len(perm) > 0 {
		t.Fatalf("%d records refused for good, e.g. %s", len(perm), first(perm))
	}
	px.mu.Lock()
	left, seen := len(px.plan), px.seen
	px.mu.Unlock()
	if left > 0 {
		t.Fatalf("%d faults of the plan not used (%v)", left, seen)
	}
	t.Logf("%d writes, %d bulk requests, faults %v", writes, px.bulks, seen)
	checkFinal(t, node, prefix, recs)
}

// Snapshots delivered out of order, twice, in random batches: every job
// document ends as the job's last snapshot.
func TestOutOfOrderRedelivered(t *testing.T) {
	node := estest.Start(t)
	recs := scenario(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var mixed, purges []*core.Record
	for _, r := range recs {
		if r.Kind == core.KindPurge {
			purges = append(purges, r)
		} else {
			mixed = append(mixed, r, r)
		}
	}
	rng.Shuffle(len(mixed), func(i, j int) { mixed[i], mixed[j] = mixed[j], mixed[i] })
	// A purge comes after its job's records in any stream the runtime
	// delivers (redeliveries keep the order): snapshots may come in any
	// order among themselves, purges last.
	mixed = append(mixed, purges...)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	s := newSink(t, node.URL, sinkYAML(prefix, "native", "in_flight: 4\nflush: {max_records: 7, interval: 0s}\n"))
	if perm, _ := deliver(t, s, mixed, 50); len(perm) > 0 {
		t.Fatalf("refused: %s", first(perm))
	}
	checkFinal(t, node, prefix, recs)
	// Old snapshots again, after the newest: refused by version, counted
	// as delivered, nothing changes.
	var old []*core.Record
	for _, r := range recs {
		if r.Event != nil && r.Event.Name == "submit" {
			old = append(old, r)
		}
	}
	if err := s.Write(context.Background(), old); err != nil {
		t.Fatalf("stale snapshots: %v", err)
	}
	checkFinal(t, node, prefix, recs)
}

func purgeOf(r *core.Record, at float64) *core.Record {
	return &core.Record{Kind: core.KindPurge, ID: strconv.FormatUint(r.Job.ID, 10) + ":purge:" + strconv.FormatFloat(r.Job.TSubmit, 'f', -1, 64),
		Cluster: r.Cluster, Source: r.Source,
		Purge: &core.Purge{ID: r.Job.ID, JobID: r.Job.JobID, Reason: "purge-event", Time: at}}
}

// A purge marks the job document and keeps it; later stale snapshots do
// not unmark it; a purge of a job never indexed leaves a marked stub; a
// reused job id is a document of its own.
func TestPurgeMarksNeverDeletes(t *testing.T) {
	node := estest.Start(t)
	for _, profile := range []string{"native", "ecs", "slurm"} {
		t.Run(profile, func(t *testing.T) {
			var recs []*core.Record
			for _, r := range scenario(t) {
				if r.Kind == core.KindEvent { // the scenario's own purges left out
					recs = append(recs, r)
				}
			}
			last, _ := lastOf(recs)
			prefix := estest.Prefix()
			node.Cleanup(t, prefix)
			s := newSink(t, node.URL, sinkYAML(prefix, profile, ""))
			// The whole scenario and a purge for every finished job, in one
			// batch: a purge waits for its job's snapshots.
			batch := append([]*core.Record{}, recs...)
			var purges []*core.Record
			for _, r := range last {
				if r.Job.State == "INACTIVE" {
					p := purgeOf(r, r.Event.Timestamp+10)
					purges = append(purges, p)
					batch = append(batch, p)
				}
			}
			if err := s.Write(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			// Stale snapshots and the purges again.
			var again []*core.Record
			for _, r := range recs {
				if r.Event != nil && (r.Event.Name == "alloc" || r.Event.Name == "submit") {
					again = append(again, r)
				}
			}
			again = append(again, purges...)
			if err := s.Write(context.Background(), again); err != nil {
				t.Fatal(err)
			}
			for _, p := range purges {
				key := jobKeyOf(p)
				r := last[key]
				doc, version := getDoc(t, node, prefix+"jobs", key)
				checkFields(t, "jobs/"+key, doc, map[string]any{"purged": true, "purged_at": r.Event.Timestamp + 10, "purge_reason": "purge-event", "@timestamp": r.Event.Timestamp})
				if version != Version(r.Event.Timestamp)+1 {
					t.Errorf("jobs/%s: version %d, want %d (the last snapshot's, +1 for the purge, once)", key, version, Version(r.Event.Timestamp)+1)
				}
			}
			// A job never indexed: a stub, marked.
			ghost := purgeOf(&core.Record{Cluster: "test", Job: &core.Job{ID: 42, JobID: "f2", TSubmit: 1795394000.5}}, 1795394999)
			if err := s.Write(context.Background(), []*core.Record{ghost}); err != nil {
				t.Fatal(err)
			}
			doc, _ := getDoc(t, node, prefix+"jobs", "test.f2.1795394000.5")
			checkFields(t, "ghost", doc, map[string]any{"purged": true, "purged_at": 1795394999.0})
			if got, want := node.Count(t, prefix+"jobs", "purged:true"), len(purges)+1; got != want {
				t.Errorf("%d purged job documents, want %d", got, want)
			}
			if got, want := node.Count(t, prefix+"jobs", ""), len(last)+1; got != want {
				t.Errorf("%d job documents, want %d (none deleted)", got, want)
			}
		})
	}
}

// The same job id submitted again (a restarted instance): two documents.
func TestReusedJobID(t *testing.T) {
	node := estest.Start(t)
	recs := scenario(t)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	s := newSink(t, node.URL, sinkYAML(prefix, "native", ""))
	var reborn []*core.Record
	for _, r := range recs {
		if r.Job != nil && r.Job.JobID == recs[0].Job.JobID {
			c := r.Clone()
			c.Job.TSubmit += 1000
			c.Event.Timestamp += 1000
			c.ID = core.EventID(c.Job.ID, c.Event.Name, c.Event.Timestamp)
			reborn = append(reborn, c)
		}
	}
	if perm, _ := deliver(t, s, append(append([]*core.Record{}, recs...), reborn...), 100); len(perm) > 0 {
		t.Fatal(first(perm))
	}
	if got := node.Count(t, prefix+"jobs", "job.jobid:"+recs[0].Job.JobID); got != 2 {
		t.Errorf("%d documents for the reused id, want 2", got)
	}
}

// A document the index refuses (its mapping says job.name is a number)
// goes to the dead-letter file with the reason; the rest is delivered.
func TestMappingRejectionDeadLetter(t *testing.T) {
	node := estest.Start(t)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	recs := scenario(t)
	day := formatIndex(prefix+"events-%Y.%m.%d", recs[0].Time())
	for _, r := range recs {
		if formatIndex(prefix+"events-%Y.%m.%d", r.Time()) != day {
			t.Fatalf("scenario spans several days")
		}
	}
	// The day's index made by hand, before the sink, with a strict,
	// conflicting mapping: our template does not apply to it.
	if err := node.Do(context.Background(), "PUT", "/"+day, `{"mappings":{"dynamic":"strict","properties":{"kind":{"type":"keyword"}}}}`, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgYAML := "data_dir: " + dir + "\ncluster: test\nsources:\n  src: {type: replay, path: \"embedded:scenario\", user_lookup: none}\nsinks:\n  es:\n    type: elasticsearch\n    inputs: [src]\n    addresses: [" + node.URL + "]\n" +
		indent(sinkYAML(prefix, "native", ""), "    ") + "    buffer: {type: disk}\n    retry: {initial_backoff: 10ms, max_backoff: 50ms}\n"
	cfg, err := core.LoadConfig("test.yaml", []byte(cfgYAML), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	reg := core.NewRegistry()
	replay.Register(reg)
	Register(reg)
	g, err := core.Build(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: quiet()}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "deadletter", "es.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(recs) {
		t.Errorf("%d dead letters, want %d (every event of the day)", len(lines), len(recs))
	}
	for _, l := range lines[:1] {
		if !strings.Contains(l, "strict_dynamic_mapping_exception") || !strings.Contains(l, day) {
			t.Errorf("dead letter without the reason: %s", l)
		}
	}
	// The jobs index got everything: the refusal was the event's alone
	// but the record as a whole is dead-lettered (its job document is
	// already written).
	last, _ := lastOf(recs)
	if got := node.Count(t, prefix+"jobs", ""); got != len(last) {
		t.Errorf("jobs index: %d, want %d", got, len(last))
	}
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pre + l + "\n")
	}
	return b.String()
}

// flavor: elasticsearch against OpenSearch behind a proxy that says it
// is Elasticsearch; and refused without the proxy.
func TestElasticsearchFlavorThroughProxy(t *testing.T) {
	node := estest.Start(t)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	yaml := strings.Replace(sinkYAML(prefix, "ecs", "object_fields: disabled\n"), "flavor: opensearch", "flavor: elasticsearch", 1)
	px := newProxy(t, node.URL, true)
	s := newSink(t, px.URL(), yaml)
	recs := scenario(t)
	if perm, _ := deliver(t, s, recs, 100); len(perm) > 0 {
		t.Fatal(first(perm))
	}
	last, events := lastOf(recs)
	if got := node.Count(t, prefix+"events-*", ""); got != len(events) {
		t.Errorf("events: %d, want %d", got, len(events))
	}
	if got := node.Count(t, prefix+"jobs", ""); got != len(last) {
		t.Errorf("jobs: %d, want %d", got, len(last))
	}
	// Straight to OpenSearch, the elasticsearch flavor is refused at start.
	nc, _ := core.ParseNodeConfig(core.KindSink, "es", []byte("addresses: ["+node.URL+"]\n"+yaml))
	sk, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sk.(*Sink).Provision(context.Background(), core.NodeContext{Logger: quiet()})
	err = sk.(*Sink).Prepare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "OpenSearch 2.19") || !strings.Contains(err.Error(), "flavor: opensearch") {
		t.Fatalf("Prepare against OpenSearch with flavor elasticsearch: %v", err)
	}
}

// Events into a data stream: create-only, @timestamp, 409 on redelivery.
func TestEventsDataStream(t *testing.T) {
	node := estest.Start(t)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	yaml := strings.Replace(sinkYAML(prefix, "native", ""), `events: {index: "`+prefix+`events-%Y.%m.%d"}`, `events: {index: "`+prefix+`events-flux", data_stream: true}`, 1)
	s := newSink(t, node.URL, yaml)
	recs := scenario(t)
	for range 2 {
		if perm, _ := deliver(t, s, recs, 100); len(perm) > 0 {
			t.Fatal(first(perm))
		}
	}
	var ds struct {
		DataStreams []struct {
			Name string `json:"name"`
		} `json:"data_streams"`
	}
	if err := node.Do(context.Background(), "GET", "/_data_stream/"+prefix+"events-flux", nil, &ds); err != nil || len(ds.DataStreams) != 1 {
		t.Fatalf("data stream: %v %+v", err, ds)
	}
	_, events := lastOf(recs)
	for _, r := range recs {
		if r.Kind == core.KindPurge {
			events[r.ID] = true
		}
	}
	if got := node.Count(t, prefix+"events-flux", ""); got != len(events) {
		t.Errorf("data stream: %d documents, want %d", got, len(events))
	}
}
