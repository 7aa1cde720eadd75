package jobdb

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// writeOldSchema writes a file as an older release did: its migrations
// and user_version, then its rows.
func writeOldSchema(t *testing.T, path string, stmts ...string) {
	t.Helper()
	old, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for _, q := range stmts {
		if _, err := old.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
}

// openMigrated opens an older file for writing, which migrates it.
func openMigrated(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if v, _ := db.Version(ctx); v != SchemaVersion {
		t.Fatalf("version %d after the migration", v)
	}
	return db
}

// A file of schema 1 (as the first release wrote it) is migrated on
// open: the JSON data moves to job_data, node rows get their job's
// columns, names land in users, and every query reads it as before.
func TestMigrateFrom1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	writeOldSchema(t, path, migrations[0], "PRAGMA user_version = 1",
		`INSERT INTO jobs (pk, id, t_submit, jobid, userid, username, queue, state, result, name, priority, nodelist, t_run, t_inactive, ev_time, ev_name, snapshot, jobspec, R, eventlog, purged, purge_reason)
			VALUES (1, 7, 100, 'fX', 42, 'alice', 'batch', 'INACTIVE', 'FAILED', 'sim', 16, 'n[1-2]', 101, 150, 150, 'clean',
			'{"id":7,"jobid":"fX","userid":42,"urgency":16,"state":"INACTIVE","result":"FAILED","name":"sim","queue":"batch","nodelist":"n[1-2]","t_submit":100,"t_run":101,"t_inactive":150}',
			'{"v":1}', '{"R":1}', '[{"timestamp":100,"name":"submit"},{"timestamp":150,"name":"clean"}]', 160, 'purge-event'),
			(2, 8, 200, 'fY', 43, '', 'debug', 'RUN', '', 'x', 16, 'n2', 201, 0, 201, 'alloc', '{"id":8,"jobid":"fY","userid":43,"urgency":16,"state":"RUN","nodelist":"n2","t_submit":200,"t_run":201}', NULL, NULL, NULL, NULL, NULL)`,
		"INSERT INTO job_nodes VALUES ('n1', 1), ('n2', 1), ('n2', 2)",
	)
	// A reader refuses the old schema with what to do.
	if _, err := Open(ctx, path, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("needs a migration to %d", SchemaVersion)) {
		t.Errorf("read-only open of schema 1: %v", err)
	}
	db := openMigrated(t, path, Options{Synchronous: "normal"})
	es, err := db.Lookup(ctx, 7)
	if err != nil || len(es) != 1 {
		t.Fatalf("lookup: %v %v", es, err)
	}
	e := es[0]
	if string(e.Jobspec) != `{"v":1}` || string(e.R) != `{"R":1}` || len(e.Eventlog) != 2 || e.Purged != 160 || e.Username != "alice" {
		t.Errorf("migrated job: %+v", e)
	}
	var rows []string
	for _, f := range []Filter{{Node: "n2", States: StateActive | StateInactive}, {Node: "n1", Results: ResultFailed}, {Node: "n1", States: StateRunning}} {
		jobs, _, err := db.Query(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range jobs {
			ids = append(ids, j.JobID)
		}
		rows = append(rows, strings.Join(ids, ","))
	}
	if got := strings.Join(rows, " "); got != "fY,fX fX " {
		t.Errorf("node queries after the migration: %q", got)
	}
	if uid, ok, err := db.UserID(ctx, "alice"); err != nil || !ok || uid != 42 {
		t.Errorf("users: %d %v %v", uid, ok, err)
	}
	// And the writer goes on from there: job 8 ends, a new job comes.
	end := &core.Record{Kind: core.KindEvent, ID: "8:clean:300", Event: &core.Event{Timestamp: 300, Name: "clean"},
		Job: &core.Job{ID: 8, JobID: "fY", UserID: 43, State: "INACTIVE", Result: "COMPLETED", Nodelist: "n2", TSubmit: 200, TRun: 201, TInactive: 300}}
	next := &core.Record{Kind: core.KindEvent, ID: "9:alloc:400", Event: &core.Event{Timestamp: 400, Name: "alloc"},
		Job: &core.Job{ID: 9, JobID: "fZ", UserID: 43, State: "RUN", Nodelist: "n2", TSubmit: 399, TRun: 400}}
	if err := db.Apply(ctx, []*core.Record{end, next}); err != nil {
		t.Fatal(err)
	}
	jobs, _, err := db.Query(ctx, Filter{Node: "n2", States: StateActive | StateInactive})
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.JobID+"/"+j.State)
	}
	if got := strings.Join(ids, " "); err != nil || got != "fZ/RUN fY/INACTIVE fX/INACTIVE" {
		t.Errorf("after writing to the migrated archive: %q %v", got, err)
	}
	var pk int64
	db.SQL().QueryRow("SELECT pk FROM jobs WHERE id = 9").Scan(&pk)
	if pk != 3 {
		t.Errorf("new job's pk %d, want 3 (after the migrated ones)", pk)
	}
}

// A file of schema 2 gets the partial result index (jobs that did not
// complete), and result filters read it as before: through that index
// for the unsuccessful results, along t_inactive for completed jobs.
func TestMigrateFrom2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	var rows []string
	for i, r := range []string{"COMPLETED", "FAILED", "COMPLETED", "TIMEOUT", "CANCELED", "FAILED"} {
		rows = append(rows, fmt.Sprintf(`(%d, %d, %d, 'f%d', 42, 'alice', 'INACTIVE', '%s', %d, %d, 'clean', '{"id":%d,"jobid":"f%d","userid":42,"state":"INACTIVE","result":"%s","t_submit":%d,"t_inactive":%d}')`,
			i+1, 10+i, 100+i, i, r, 200+i, 200+i, 10+i, i, r, 100+i, 200+i))
	}
	writeOldSchema(t, path, migrations[0], migrations[1], "PRAGMA user_version = 2",
		"INSERT INTO jobs (pk, id, t_submit, jobid, userid, username, state, result, t_inactive, ev_time, ev_name, snapshot) VALUES "+strings.Join(rows, ", "),
	)
	db := openMigrated(t, path, Options{})
	var n int
	db.SQL().QueryRow("SELECT count(*) FROM sqlite_schema WHERE name IN ('jobs_result', 'jobs_unsuccessful')").Scan(&n)
	var part int
	db.SQL().QueryRow("SELECT count(*) FROM jobs INDEXED BY jobs_unsuccessful WHERE " + unsuccessful).Scan(&part)
	if n != 1 || part != 4 {
		t.Errorf("indexes %d (want jobs_unsuccessful only), %d rows in it (want 4)", n, part)
	}
	uid := uint32(42)
	for _, c := range []struct {
		f    Filter
		want string
	}{
		{Filter{Results: ResultFailed}, "f5 f1"},
		{Filter{Results: ResultFailed | ResultTimeout, Count: 2}, "f5 f3"},
		{Filter{Results: ResultCompleted, UserID: &uid}, "f2 f0"},
		{Filter{Results: ResultCompleted | ResultCanceled}, "f4 f2 f0"},
	} {
		jobs, _, err := db.Query(ctx, c.f)
		var ids []string
		for _, j := range jobs {
			ids = append(ids, j.JobID)
		}
		if got := strings.Join(ids, " "); err != nil || got != c.want {
			t.Errorf("%+v: %q %v, want %q", c.f, got, err, c.want)
		}
	}
}

// A file of schema 3 keeps its node rows without their copies of the
// job's columns; node queries read them from the job's row, also after a
// change of state that no longer touches the node rows.
func TestMigrateFrom3(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	writeOldSchema(t, path, migrations[0], migrations[1], migrations[2], "PRAGMA user_version = 3",
		`INSERT INTO jobs (pk, id, t_submit, jobid, userid, username, state, result, nodelist, t_run, t_inactive, ev_time, ev_name, snapshot) VALUES
			(1, 7, 100, 'fX', 42, 'alice', 'INACTIVE', 'FAILED', 'n[1-2]', 101, 150, 150, 'clean', '{"id":7,"jobid":"fX","userid":42,"state":"INACTIVE","result":"FAILED","nodelist":"n[1-2]","t_submit":100,"t_run":101,"t_inactive":150}'),
			(2, 8, 200, 'fY', 43, 'bob', 'RUN', '', 'n2', 201, 0, 201, 'alloc', '{"id":8,"jobid":"fY","userid":43,"state":"RUN","nodelist":"n2","t_submit":200,"t_run":201}'),
			(1025, 9, 300, 'fZ', 42, 'alice', 'INACTIVE', 'COMPLETED', 'n1', 301, 350, 350, 'clean', '{"id":9,"jobid":"fZ","userid":42,"state":"INACTIVE","result":"COMPLETED","nodelist":"n1","t_submit":300,"t_run":301,"t_inactive":350}')`,
		`INSERT INTO job_nodes VALUES (0, 'n1', 1, 7, 42, 'INACTIVE', 'FAILED', NULL, 100, 101, 150), (0, 'n2', 1, 7, 42, 'INACTIVE', 'FAILED', NULL, 100, 101, 150),
			(0, 'n2', 2, 8, 43, 'RUN', '', NULL, 200, 201, 0), (1, 'n1', 1025, 9, 42, 'INACTIVE', 'COMPLETED', NULL, 300, 301, 350)`,
	)
	db := openMigrated(t, path, Options{Synchronous: "normal"})
	var cols []string
	rs, err := db.SQL().Query("SELECT name FROM pragma_table_info('job_nodes') ORDER BY cid")
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var c string
		rs.Scan(&c)
		cols = append(cols, c)
	}
	rs.Close()
	var nrows int
	db.SQL().QueryRow("SELECT count(*) FROM job_nodes").Scan(&nrows)
	if got := strings.Join(cols, ","); got != "blk,host,job" || nrows != 4 {
		t.Fatalf("job_nodes after the migration: columns %s, %d rows (want blk,host,job and 4)", got, nrows)
	}
	nodeJobs := func(f Filter) string {
		t.Helper()
		jobs, _, err := db.Query(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range jobs {
			ids = append(ids, j.JobID+"/"+j.State)
		}
		return strings.Join(ids, " ")
	}
	all := StateActive | StateInactive
	for _, c := range []struct {
		f    Filter
		want string
	}{
		{Filter{Node: "n1", States: all}, "fZ/INACTIVE fX/INACTIVE"},
		{Filter{Node: "n2", States: all}, "fY/RUN fX/INACTIVE"},
		{Filter{Node: "n2", States: StateRunning}, "fY/RUN"},
		{Filter{Node: "n1", Results: ResultFailed}, "fX/INACTIVE"},
	} {
		if got := nodeJobs(c.f); got != c.want {
			t.Errorf("%+v after the migration: %q, want %q", c.f, got, c.want)
		}
	}
	// Job 8 ends on the same node: its node row stays as it is, the
	// queries follow its row.
	end := &core.Record{Kind: core.KindEvent, ID: "8:clean:400", Event: &core.Event{Timestamp: 400, Name: "clean"},
		Job: &core.Job{ID: 8, JobID: "fY", UserID: 43, State: "INACTIVE", Result: "FAILED", Nodelist: "n2", TSubmit: 200, TRun: 201, TInactive: 400}}
	if err := db.Apply(ctx, []*core.Record{end}); err != nil {
		t.Fatal(err)
	}
	if got := nodeJobs(Filter{Node: "n2", States: StateRunning}); got != "" {
		t.Errorf("running on n2 after job 8 ended: %q", got)
	}
	if got := nodeJobs(Filter{Node: "n2", Results: ResultFailed}); got != "fY/INACTIVE fX/INACTIVE" {
		t.Errorf("failed on n2 after job 8 ended: %q", got)
	}
}

// The unsuccessful result filters go through the partial index: the
// query repeats its condition as SQLite needs to see it.
func TestResultFilterUsesPartialIndex(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "jobs.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var plan []string
	rs, err := db.SQL().Query("EXPLAIN QUERY PLAN SELECT "+listCols+" FROM jobs j WHERE +j.state = 'INACTIVE' AND j."+unsuccessful+" AND j.result IN (?) ORDER BY j.t_inactive DESC, j.id DESC LIMIT 10", "FAILED")
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id, parent, x int
		var detail string
		rs.Scan(&id, &parent, &x, &detail)
		plan = append(plan, detail)
	}
	rs.Close()
	if p := strings.Join(plan, "; "); !strings.Contains(p, "jobs_unsuccessful") {
		t.Errorf("plan of a failed filter: %s", p)
	}
}

// A new archive gets its page size (set before WAL mode); an existing
// one keeps its own.
func TestNewArchivePageSize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		pre  int // page size of a file made beforehand (0: none)
		want int
	}{{"new.db", 0, pageSize}, {"old.db", 4096, 4096}} {
		path := filepath.Join(dir, c.name)
		if c.pre != 0 {
			old, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.Exec(fmt.Sprintf("PRAGMA page_size = %d; PRAGMA journal_mode = WAL; %s; PRAGMA user_version = 1", c.pre, migrations[0])); err != nil {
				t.Fatal(err)
			}
			old.Close()
		}
		db, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var ps int
		var mode string
		db.SQL().QueryRow("PRAGMA page_size").Scan(&ps)
		db.SQL().QueryRow("PRAGMA journal_mode").Scan(&mode)
		db.Close()
		if ps != c.want || mode != "wal" {
			t.Errorf("%s: page size %d, journal mode %s; want %d, wal", c.name, ps, mode, c.want)
		}
		ro, err := Open(ctx, path, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var mm int64
		ro.SQL().QueryRow("PRAGMA mmap_size").Scan(&mm)
		ro.Close()
		if mm <= 0 {
			t.Errorf("%s: a reader does not map the file (mmap_size %d)", c.name, mm)
		}
	}
}
