package jobdb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
	"github.com/fluxstream/fluxstream/sources/replay"
)

// The jobs Flux purged in the scenario (flux job purge --num-limit=15).
var purgedIDs = []uint64{349066756096, 382369529856, 389717950464, 398844755968, 412165865472, 421728878592, 429664501760, 438690643968}

type row struct {
	id                         uint64
	jobid, state, result, name string
	queue, nodelist, ranks     string
	tsubmit, tinactive, evTime float64
	nnodes, ncores, ntasks     sql.NullInt64
	purged                     sql.NullFloat64
	reason, evName             sql.NullString
	nevents                    int
	jobspec, r                 sql.NullString
}

func rows(t testing.TB, db *jobdb.DB) map[string]row {
	t.Helper()
	rs, err := db.SQL().Query(`SELECT id, jobid, state, result, name, queue, nodelist, ranks, t_submit, t_inactive, ev_time,
		nnodes, ncores, ntasks, purged, purge_reason, ev_name, coalesce(json_array_length(d.eventlog), 0), d.jobspec, d.R
		FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]row{}
	for rs.Next() {
		var r row
		var id int64
		if err := rs.Scan(&id, &r.jobid, &r.state, &r.result, &r.name, &r.queue, &r.nodelist, &r.ranks, &r.tsubmit, &r.tinactive, &r.evTime,
			&r.nnodes, &r.ncores, &r.ntasks, &r.purged, &r.reason, &r.evName, &r.nevents, &r.jobspec, &r.r); err != nil {
			t.Fatal(err)
		}
		r.id = uint64(id)
		out[fmt.Sprintf("%s@%v", r.jobid, r.tsubmit)] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func byJobID(rs map[string]row, jobid string) []row {
	var out []row
	for _, r := range rs {
		if r.jobid == jobid {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b row) int { return int(a.tsubmit - b.tsubmit) })
	return out
}

// The whole scenario, through the replay source and the runtime: every
// job is archived with its final state, the purged ones marked, with
// jobspec, R and the full eventlog.
func TestArchiveScenario(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	archive(t, path, "", "embedded:scenario")
	db := open(t, path)
	rs := rows(t, db)
	if len(rs) != 27 {
		t.Fatalf("%d jobs archived, want 27 (25 jobs and 2 rejected submissions)", len(rs))
	}
	states := map[string]int{}
	for _, r := range rs {
		states[r.state+"/"+r.result]++
	}
	// Hand-counted from the fixture README's scenario: 16 completed,
	// 5 failed (exit 3, prolog, signal, fail-later, dependency), 3
	// canceled, 1 timeout; 2 invalidated submissions stay NEW.
	want := map[string]int{"INACTIVE/COMPLETED": 16, "INACTIVE/FAILED": 5, "INACTIVE/CANCELED": 3, "INACTIVE/TIMEOUT": 1, "NEW/": 2}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("states %v, want %v", states, want)
	}
	npurged := 0
	for _, r := range rs {
		isPurged := slices.Contains(purgedIDs, r.id)
		if r.purged.Valid != isPurged {
			t.Errorf("%s: purged %v, want %v", r.jobid, r.purged.Valid, isPurged)
		}
		if r.purged.Valid {
			npurged++
			if r.reason.String != "purge-event" {
				t.Errorf("%s: purge reason %q", r.jobid, r.reason.String)
			}
		}
	}
	if npurged != 8 {
		t.Errorf("%d purged, want 8", npurged)
	}
	// fCHcyt63: `-t 1s sleep 30` (the record example of schemas/record.md).
	tl := byJobID(rs, "fCHcyt63")
	if len(tl) != 1 {
		t.Fatalf("fCHcyt63: %d rows", len(tl))
	}
	r := tl[0]
	if r.state != "INACTIVE" || r.result != "TIMEOUT" || r.name != "tlimit" || r.queue != "batch" || r.nodelist != "vm" || r.ranks != "0" ||
		r.tsubmit != 1795394503.2594483 || r.tinactive != 1795394504.6978364 || r.evName.String != "clean" || r.ncores.Int64 != 1 || !r.purged.Valid {
		t.Errorf("fCHcyt63: %+v", r)
	}
	// 16 events: the 15 of its KVS eventlog and the live-only annotations.
	if r.nevents != 16 {
		t.Errorf("fCHcyt63: %d events, want 16", r.nevents)
	}
	if !strings.Contains(r.jobspec.String, `"sleep","30"`) || !strings.Contains(r.r.String, `"expiration":1795394504.2945993`) {
		t.Errorf("fCHcyt63: jobspec %s, R %s", r.jobspec.String, r.r.String)
	}
	// ok-true -n2: two tasks on two cores of the one node.
	if r := byJobID(rs, "fBEm3N71")[0]; r.ntasks.Int64 != 2 || r.ncores.Int64 != 2 || r.nnodes.Int64 != 1 {
		t.Errorf("fBEm3N71: %+v", r)
	}
	// A job canceled while pending never had R.
	if r := byJobID(rs, "fE2ntsUs")[0]; r.result != "CANCELED" || r.r.Valid || r.nodelist != "" {
		t.Errorf("fE2ntsUs: %+v", r)
	}
	// The node table: the 22 jobs that ran, all on vm.
	got, _, err := db.Query(context.Background(), jobdb.Filter{Node: "vm", States: jobdb.StateInactive})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 22 {
		t.Errorf("--node vm: %d jobs, want 22", len(got))
	}
	if got, _, _ := db.Query(context.Background(), jobdb.Filter{Node: "vm0", States: jobdb.StateInactive}); len(got) != 0 {
		t.Errorf("--node vm0: %d jobs", len(got))
	}
}

// An instance restarted without its KVS reuses the ids: the second stream
// (the same backlog an hour later) is 23 new jobs, and the first 23 stay,
// each marked purged by the purge record the replay emits for it.
func TestArchiveReusedIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	second := shiftJournal(t, "journal-backlog-full-before-purge.jsonl", 3600)
	archive(t, path, "", "journal-backlog-full-before-purge.jsonl", second)
	rs := rows(t, open(t, path))
	if len(rs) != 46 {
		t.Fatalf("%d rows, want 46 (23 jobs twice)", len(rs))
	}
	for _, r := range rs {
		two := byJobID(rs, r.jobid)
		if len(two) != 2 {
			t.Fatalf("%s: %d incarnations", r.jobid, len(two))
		}
		old, cur := two[0], two[1]
		if cur.tsubmit-old.tsubmit < 3599.99 || cur.tsubmit-old.tsubmit > 3600.01 {
			t.Errorf("%s: t_submit %v and %v", r.jobid, old.tsubmit, cur.tsubmit)
		}
		if !old.purged.Valid || cur.purged.Valid {
			t.Errorf("%s: purged old %v new %v, want only the old one", r.jobid, old.purged.Valid, cur.purged.Valid)
		}
		if old.state != cur.state || old.result != cur.result || old.nevents != cur.nevents || cur.evTime-old.evTime < 3599.99 {
			t.Errorf("%s: old %+v, new %+v", r.jobid, old, cur)
		}
	}
}

func collect(t testing.TB, include string, journals ...string) []*core.Record {
	t.Helper()
	reg := core.NewRegistry()
	replay.Register(reg)
	col := &coretest.Collector{}
	col.Register(reg)
	for i, j := range journals {
		if !strings.HasPrefix(j, "embedded:") && !filepath.IsAbs(j) {
			journals[i] = filepath.Join(testdata, j)
		}
	}
	g := coretest.Build(t, reg, fmt.Sprintf("cluster: test\nsources:\n  src: {type: replay, path: [%s], user_lookup: none, include: %s}\nsinks:\n  out: {type: collect, inputs: [src], buffer: {type: memory}}\n",
		strings.Join(journals, ", "), include))
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: coretest.Quiet(), ShutdownTimeout: 5 * time.Second})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return col.All()
}

func dump(t testing.TB, db *jobdb.DB) string {
	t.Helper()
	rs, err := db.SQL().Query(`SELECT id, t_submit, state, result, ev_time, ev_name, snapshot, coalesce(jobspec,''), coalesce(R,''), coalesce(eventlog,''), coalesce(purged,0), coalesce(purge_reason,''),
		(SELECT group_concat(host, ' ') FROM job_nodes n WHERE n.job = j.pk)
		FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk ORDER BY id, t_submit`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var b strings.Builder
	for rs.Next() {
		var v [13]sql.NullString
		ptrs := make([]any, len(v))
		for i := range v {
			ptrs[i] = &v[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, s := range v {
			b.WriteString(s.String + "|")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func applyAll(t testing.TB, path string, recs []*core.Record, batch int) {
	t.Helper()
	db, err := jobdb.Open(context.Background(), path, jobdb.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < len(recs); i += batch {
		if err := db.Apply(context.Background(), recs[i:min(i+batch, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
}

// Whatever order the records come in, and however often (at-least-once
// redelivers, spools replay), the archive ends the same: an older
// snapshot never replaces a newer one, the jobspec and R are the latest
// seen, the eventlog is the union, the purge mark stays.
func TestOrderAndRedeliveryDoNotMatter(t *testing.T) {
	for _, include := range []string{"{jobspec: always, R: always, eventlog: always}", "{jobspec: on-change, R: on-change, eventlog: never}"} {
		t.Run(include, func(t *testing.T) {
			recs := collect(t, include, "embedded:scenario")
			if len(recs) != 373+8 {
				t.Fatalf("%d records", len(recs))
			}
			dir := t.TempDir()
			ref := filepath.Join(dir, "forward.db")
			applyAll(t, ref, recs, 64)
			want := dump(t, open(t, ref))

			rev := slices.Clone(recs)
			slices.Reverse(rev)
			p := filepath.Join(dir, "reverse.db")
			applyAll(t, p, rev, 7)
			if got := dump(t, open(t, p)); got != want {
				t.Errorf("records in reverse order give another archive:\n%s", firstDiff(got, want))
			}

			// Forward, then every record again in batches of another size,
			// then the first half again: redeliveries change nothing.
			p = filepath.Join(dir, "again.db")
			applyAll(t, p, recs, 64)
			applyAll(t, p, recs, 5)
			applyAll(t, p, recs[:len(recs)/2], 1)
			if got := dump(t, open(t, p)); got != want {
				t.Errorf("redelivered records change the archive:\n%s", firstDiff(got, want))
			}
		})
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d:\n got  %.600s\n want %.600s", i, g[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(g), len(w))
}

func intp(i int) *int { return &i }

func ev(id uint64, tsubmit, ts float64, name, state string, jobspec string) *core.Record {
	r := &core.Record{Kind: core.KindEvent, ID: core.EventID(id, name, ts), Event: &core.Event{Timestamp: ts, Name: name},
		Job: &core.Job{ID: id, JobID: "fX", UserID: 1, State: state, TSubmit: tsubmit, NTasks: intp(1)}}
	if jobspec != "" {
		r.Jobspec = json.RawMessage(jobspec)
	}
	if state == "RUN" || state == "INACTIVE" {
		r.Job.Nodelist, r.Job.TRun = "n[1-2]", ts
	}
	return r
}

// The rules one by one, with records built by hand.
func TestUpsertRules(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	db, err := jobdb.Open(ctx, path, jobdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	apply := func(recs ...*core.Record) {
		t.Helper()
		if err := db.Apply(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	get := func(id uint64, ts float64) (state, jobspec, evlog string, purged sql.NullFloat64) {
		t.Helper()
		err := db.SQL().QueryRow("SELECT state, coalesce(jobspec,''), coalesce(eventlog,''), purged FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk WHERE id = ? AND t_submit = ?", int64(id), ts).Scan(&state, &jobspec, &evlog, &purged)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	// A purge that comes first is kept aside, then applied.
	apply(&core.Record{Kind: core.KindPurge, ID: "7:purge:100", Purge: &core.Purge{ID: 7, JobID: "fX", Reason: "purge-event", Time: 500}})
	apply(ev(7, 100, 100, "submit", "NEW", `{"v":1}`), ev(7, 100, 101, "alloc", "RUN", ""))
	if _, _, _, p := get(7, 100); !p.Valid || p.Float64 != 500 {
		t.Errorf("early purge not applied: %v", p)
	}
	// Newest snapshot wins; an older redelivery does not replace it, but
	// its jobspec fills a gap and its event joins the eventlog.
	apply(ev(8, 200, 205, "clean", "INACTIVE", ""))
	apply(ev(8, 200, 201, "alloc", "RUN", `{"v":"old"}`))
	st, spec, evlog, _ := get(8, 200)
	if st != "INACTIVE" || spec != `{"v":"old"}` || !strings.Contains(evlog, `"alloc"`) || !strings.Contains(evlog, `"clean"`) ||
		strings.Index(evlog, "alloc") > strings.Index(evlog, "clean") {
		t.Errorf("after an older redelivery: state %s jobspec %s eventlog %s", st, spec, evlog)
	}
	// A newer jobspec replaces; an older one does not.
	apply(ev(8, 200, 206, "jobspec-update", "INACTIVE", `{"v":"new"}`))
	apply(ev(8, 200, 202, "start", "RUN", `{"v":"older"}`))
	if _, spec, _, _ := get(8, 200); spec != `{"v":"new"}` {
		t.Errorf("jobspec %s, want the newest", spec)
	}
	// Reused id: another t_submit is another job.
	apply(ev(8, 900, 900, "submit", "NEW", ""))
	if st, _, _, _ := get(8, 200); st != "INACTIVE" {
		t.Errorf("the reused id replaced the old job: %s", st)
	}
	if st, _, _, _ := get(8, 900); st != "NEW" {
		t.Errorf("new incarnation: %s", st)
	}
	// An old-style purge id (no submit time) marks the newest unpurged
	// incarnation only.
	apply(&core.Record{Kind: core.KindPurge, ID: "8:purge", Purge: &core.Purge{ID: 8, Reason: "missing-from-backlog", Time: 1000}})
	if _, _, _, p := get(8, 900); !p.Valid {
		t.Error("old-style purge did not mark the newest incarnation")
	}
	if _, _, _, p := get(8, 200); p.Valid {
		t.Error("old-style purge marked an older incarnation")
	}
	// The node table follows the nodelist.
	nodes := func(host string) int {
		jobs, _, err := db.Query(ctx, jobdb.Filter{Node: host, States: jobdb.StateActive | jobdb.StateInactive})
		if err != nil {
			t.Fatal(err)
		}
		return len(jobs)
	}
	if nodes("n1") != 2 || nodes("n2") != 2 || nodes("n3") != 0 {
		t.Errorf("node table: n1 %d n2 %d n3 %d", nodes("n1"), nodes("n2"), nodes("n3"))
	}
	r := ev(8, 200, 300, "resource-update", "INACTIVE", "")
	r.Job.Nodelist = "n[2-3]"
	apply(r)
	if nodes("n1") != 1 || nodes("n2") != 2 || nodes("n3") != 1 {
		t.Errorf("node table after a nodelist change: n1 %d n2 %d n3 %d", nodes("n1"), nodes("n2"), nodes("n3"))
	}
	// Invalid records are taken and not stored. A snapshot with a number
	// JSON cannot hold is stored as the record's JSON form writes it (the
	// number as null, here: no duration), not refused.
	bad := ev(9, 1, 1, "submit", "NEW", "")
	nan := 0.0
	bad.Job.Duration = &nan
	*bad.Job.Duration = nan / nan
	if err := db.Apply(ctx, []*core.Record{{Kind: core.KindInvalid, ID: "invalid:x", Invalid: &core.Invalid{Error: "x"}}, bad, ev(10, 1, 1, "submit", "NEW", "")}); err != nil {
		t.Fatal(err)
	}
	var n int
	db.SQL().QueryRow("SELECT count(*) FROM jobs WHERE id IN (9, 10) AND state = 'NEW'").Scan(&n)
	es, err := db.Lookup(ctx, 9)
	if err != nil || len(es) != 1 || es[0].Duration != nil || n != 2 {
		t.Errorf("NaN duration: %d stored, lookup %+v, %v", n, es, err)
	}
}

// Schema versions: a fresh file is created at the current version, a
// reopen does not migrate again, a newer file is refused, and a reader
// does not create a schema.
func TestSchemaVersions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "jobs.db")
	if _, err := jobdb.Open(ctx, filepath.Join(dir, "none.db"), jobdb.Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "not a job archive") {
		t.Errorf("read-only open of an empty file: %v", err)
	}
	db, err := jobdb.Open(ctx, path, jobdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	db.SQL().QueryRow("PRAGMA journal_mode").Scan(&mode)
	if v, _ := db.Version(ctx); v != jobdb.SchemaVersion || mode != "wal" {
		t.Errorf("version %d, journal mode %s", v, mode)
	}
	db.Close()
	db, err = jobdb.Open(ctx, path, jobdb.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := db.SQL().Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, ro := range []bool{false, true} {
		if _, err := jobdb.Open(ctx, path, jobdb.Options{ReadOnly: ro}); !errors.Is(err, jobdb.ErrNewerSchema) {
			t.Errorf("read-only %v: open of a newer schema: %v", ro, err)
		}
	}
}

func TestParseJobID(t *testing.T) {
	for _, s := range []string{"429664501760", "fCHcyt63", "ƒCHcyt63", "0x640a000000"} {
		if id, err := jobdb.ParseJobID(s); err != nil || id != 429664501760 {
			t.Errorf("ParseJobID(%q) = %d, %v", s, id, err)
		}
	}
	for _, s := range []string{"", "f", "fCHcyt6l", "x12", "0xzz"} {
		if _, err := jobdb.ParseJobID(s); err == nil {
			t.Errorf("ParseJobID(%q) succeeded", s)
		}
	}
}

// genRecord is one generated job's record at one moment of its life.
func genRecord(id uint64, tsubmit, ts float64, state, result, nodelist string, uid uint32, queue, name string) *core.Record {
	prio := int64(id % 7)
	j := &core.Job{ID: id, JobID: fmt.Sprintf("f%d", id), UserID: uid, Username: fmt.Sprintf("u%d", uid), State: state, Result: result,
		TSubmit: tsubmit, Queue: queue, Name: name, Priority: &prio, Urgency: 16, NTasks: intp(1), Nodelist: nodelist}
	if state == "RUN" || state == "CLEANUP" || state == "INACTIVE" {
		j.TRun = tsubmit + 1
	}
	if state == "INACTIVE" {
		j.TInactive = ts
	}
	name2 := map[string]string{"SCHED": "priority", "RUN": "alloc", "CLEANUP": "finish", "INACTIVE": "clean"}[state]
	return &core.Record{Kind: core.KindEvent, ID: core.EventID(id, name2, ts), Event: &core.Event{Timestamp: ts, Name: name2}, Job: j}
}

// generated: 1300 jobs (two blocks of the node table), each with up to
// four records (pending, running, cleanup, inactive) whose nodelist
// changes on the way (a resource shrink), some ids reused, delivered
// shuffled in batches, with redeliveries.
func generated(t *testing.T) []*core.Record {
	rng := rand.New(rand.NewPCG(7, 9))
	var recs []*core.Record
	for i := range 1300 {
		id := uint64(1000 + i)
		if i%100 == 99 {
			id = uint64(1000 + i - 50) // a reused id: another incarnation
		}
		ts := 1e9 + float64(i)*10
		uid := uint32(100 + rng.IntN(5))
		queue := []string{"batch", "debug"}[rng.IntN(2)]
		name := []string{"a", "b", "c"}[rng.IntN(3)]
		a := rng.IntN(20)
		nl := fmt.Sprintf("n[%d-%d]", a, a+rng.IntN(3))
		shrunk := fmt.Sprintf("n%d", a)
		result := []string{"COMPLETED", "COMPLETED", "FAILED", "CANCELED", "TIMEOUT"}[rng.IntN(5)]
		life := []*core.Record{genRecord(id, ts, ts, "SCHED", "", "", uid, queue, name)}
		switch rng.IntN(4) {
		case 0: // still pending
		case 1: // running
			life = append(life, genRecord(id, ts, ts+1, "RUN", "", nl, uid, queue, name))
		default:
			life = append(life, genRecord(id, ts, ts+1, "RUN", "", nl, uid, queue, name),
				genRecord(id, ts, ts+2+rng.Float64(), "CLEANUP", result, shrunk, uid, queue, name),
				genRecord(id, ts, ts+5+rng.Float64()*100, "INACTIVE", result, shrunk, uid, queue, name))
		}
		recs = append(recs, life...)
	}
	// Shuffle within windows (a job's records arrive out of order and
	// land in one batch or several), and redeliver a tenth.
	for w := 0; w < len(recs); w += 200 {
		win := recs[w:min(w+200, len(recs))]
		rng.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
	}
	for i := 0; i < len(recs); i += 10 {
		recs = append(recs, recs[i])
	}
	return recs
}

// Node queries answer exactly what the same query without --node
// answers, kept to the jobs whose nodelist holds the host: the node
// table's copies of state, result, user and times follow every update,
// whatever the batching and order, in every block.
func TestNodeQueryMatchesJobList(t *testing.T) {
	ctx := context.Background()
	recs := generated(t)
	dir := t.TempDir()
	paths := map[string]int{"batch-37.db": 37, "one-batch.db": len(recs)}
	var want string
	for p, n := range paths {
		path := filepath.Join(dir, p)
		applyAll(t, path, recs, n)
		got := dump(t, open(t, path))
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("%s: another archive than another batching:\n%s", p, firstDiff(got, want))
		}
	}
	db := open(t, filepath.Join(dir, "batch-37.db"))
	var nrun, nina, nblocks int
	db.SQL().QueryRow("SELECT count(*) FILTER (WHERE state = 'RUN'), count(*) FILTER (WHERE state = 'INACTIVE'), (SELECT count(DISTINCT blk) FROM job_nodes) FROM jobs").Scan(&nrun, &nina, &nblocks)
	if nrun < 100 || nina < 100 || nblocks < 2 {
		t.Fatalf("generated archive: %d running, %d inactive, %d node blocks", nrun, nina, nblocks)
	}
	uid := uint32(102)
	all := jobdb.StatePending | jobdb.StateRunning | jobdb.StateInactive
	filters := map[string]jobdb.Filter{
		"-a":               {States: all},
		"-a -u":            {States: all, UserID: &uid},
		"running":          {States: jobdb.StateRunning},
		"-f failed":        {Results: jobdb.ResultFailed},
		"-f failed,run":    {States: jobdb.StateRun, Results: jobdb.ResultFailed | jobdb.ResultTimeout},
		"--since --until":  {States: all, Since: 1e9 + 5000, Until: 1e9 + 20000},
		"-q debug":         {States: all, Queues: []string{"debug"}},
		"--name -u":        {States: all, Name: "b", UserID: &uid},
		"-f inactive -q":   {States: jobdb.StateInactive, Queues: []string{"batch"}},
		"--until (active)": {States: jobdb.StateRunning, Until: 1e9 + 10000},
	}
	checked := 0
	for name, f := range filters {
		every, _, err := db.Query(ctx, f) // Count 0: all
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"n0", "n7", "n21", "n9"} {
			for _, count := range []int{0, 1, 25} {
				var exp []string
				for _, j := range every {
					hosts, _ := jobstate.ExpandHostlist(j.Nodelist)
					if slices.Contains(hosts, host) {
						exp = append(exp, fmt.Sprintf("%s@%v", j.JobID, j.TSubmit))
					}
				}
				wantTrunc := count > 0 && len(exp) > count
				if wantTrunc {
					exp = exp[:count]
				}
				nf := f
				nf.Node, nf.Count = host, count
				jobs, trunc, err := db.Query(ctx, nf)
				if err != nil {
					t.Fatalf("%s --node %s: %v", name, host, err)
				}
				var ids []string
				for _, j := range jobs {
					ids = append(ids, fmt.Sprintf("%s@%v", j.JobID, j.TSubmit))
				}
				if !slices.Equal(ids, exp) || trunc != wantTrunc {
					t.Errorf("%s --node %s -c %d: got %v (truncated %v)\nwant %v (%v)", name, host, count, ids, trunc, exp, wantTrunc)
				}
				checked += len(exp)
			}
		}
	}
	if checked < 500 {
		t.Errorf("only %d jobs compared: the generated archive is too thin", checked)
	}
}

// Several records of one job in one batch, in any order, end as their
// newest one; the node table follows the newest nodelist and state.
func TestBatchMergesOneJob(t *testing.T) {
	ctx := context.Background()
	sub := genRecord(50, 100, 100, "SCHED", "", "", 1, "batch", "x")
	run := genRecord(50, 100, 101, "RUN", "", "n[1-3]", 1, "batch", "x")
	fin := genRecord(50, 100, 102, "CLEANUP", "FAILED", "n1", 1, "batch", "x")
	end := genRecord(50, 100, 103, "INACTIVE", "FAILED", "n1", 1, "batch", "x")
	again := genRecord(50, 900, 900, "RUN", "", "n2", 1, "batch", "x") // a reused id, in the same batch
	purge := &core.Record{Kind: core.KindPurge, ID: "50:purge:100", Purge: &core.Purge{ID: 50, Reason: "purge-event", Time: 200, TSubmit: 100}}
	for _, order := range [][]*core.Record{
		{sub, run, fin, end, again, purge},
		{end, purge, again, fin, sub, run},
		{purge, run, again, end, sub, fin},
	} {
		path := filepath.Join(t.TempDir(), "jobs.db")
		db, err := jobdb.Open(ctx, path, jobdb.Options{Synchronous: "normal"})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Apply(ctx, order); err != nil {
			t.Fatal(err)
		}
		nodes := func(host string, states int) []string {
			jobs, _, err := db.Query(ctx, jobdb.Filter{Node: host, States: states})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, j := range jobs {
				out = append(out, fmt.Sprintf("%s/%s@%v", j.State, j.Result, j.TSubmit))
			}
			return out
		}
		all := jobdb.StateActive | jobdb.StateInactive
		if got := fmt.Sprint(nodes("n1", all), nodes("n2", all), nodes("n3", all), nodes("n1", jobdb.StateRunning)); got != "[INACTIVE/FAILED@100] [RUN/@900] [] []" {
			t.Errorf("order %v: node queries %s", order, got)
		}
		var purged sql.NullFloat64
		var evlen int
		db.SQL().QueryRow("SELECT purged, json_array_length(eventlog) FROM jobs j JOIN job_data d ON d.pk = j.pk WHERE id = 50 AND t_submit = 100").Scan(&purged, &evlen)
		if !purged.Valid || purged.Float64 != 200 || evlen != 4 {
			t.Errorf("order %v: purged %v, %d events", order, purged, evlen)
		}
		db.Close()
	}
}
