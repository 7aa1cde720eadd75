package jobdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, "sqlite"
)

// SchemaVersion is the schema this code writes (PRAGMA user_version).
// A database of an older version is migrated on open; a newer one is
// refused, so an old binary never writes a layout it does not know.
const SchemaVersion = 4

// migrations[i] takes the schema from version i to i+1, in one
// transaction with the version bump.
var migrations = []string{
	// 0 -> 1: jobs, the node table, early purges.
	`
CREATE TABLE jobs (
	pk           INTEGER PRIMARY KEY,
	id           INTEGER NOT NULL,            -- job id (FLUID) as a signed 64-bit integer
	t_submit     REAL    NOT NULL,            -- with id, the job's identity (ids are reused)
	jobid        TEXT    NOT NULL,            -- f58
	cluster      TEXT    NOT NULL DEFAULT '',
	userid       INTEGER NOT NULL,
	username     TEXT    NOT NULL DEFAULT '',
	queue        TEXT    NOT NULL DEFAULT '',
	bank         TEXT    NOT NULL DEFAULT '',
	project      TEXT    NOT NULL DEFAULT '',
	state        TEXT    NOT NULL DEFAULT '',
	result       TEXT    NOT NULL DEFAULT '',
	name         TEXT    NOT NULL DEFAULT '',
	urgency      INTEGER,
	priority     INTEGER,
	ntasks       INTEGER,
	nnodes       INTEGER,
	ncores       INTEGER,
	nodelist     TEXT    NOT NULL DEFAULT '',
	ranks        TEXT    NOT NULL DEFAULT '',
	t_run        REAL    NOT NULL DEFAULT 0,
	t_inactive   REAL    NOT NULL DEFAULT 0,
	ev_time      REAL    NOT NULL,            -- timestamp of the event of the snapshot
	ev_name      TEXT    NOT NULL,
	snapshot     TEXT    NOT NULL,            -- core.Job as JSON
	jobspec      TEXT,                        -- latest jobspec seen (JSON)
	R            TEXT,                        -- latest R seen (JSON)
	eventlog     TEXT,                        -- every event seen, by time (JSON array)
	purged       REAL,                        -- when Flux purged it (NULL: not purged)
	purge_reason TEXT
);
CREATE UNIQUE INDEX jobs_ident    ON jobs(id, t_submit);
CREATE INDEX jobs_inactive        ON jobs(t_inactive, id);
CREATE INDEX jobs_user            ON jobs(userid, t_inactive, id);
CREATE INDEX jobs_result          ON jobs(result, t_inactive, id);
CREATE INDEX jobs_state           ON jobs(state, t_run);
CREATE TABLE job_nodes (
	host TEXT    NOT NULL,
	job  INTEGER NOT NULL,                    -- jobs.pk
	PRIMARY KEY (host, job)
) WITHOUT ROWID;
CREATE TABLE purges (                         -- purges that came before any event of their job
	id       INTEGER NOT NULL,
	t_submit REAL    NOT NULL,
	time     REAL    NOT NULL,
	reason   TEXT    NOT NULL,
	PRIMARY KEY (id, t_submit)
) WITHOUT ROWID;
`,
	// 1 -> 2: the large JSON columns move to job_data (the jobs table
	// stays narrow: queries read it row by row); the node table is
	// grouped in blocks of 1024 jobs (a batch touches a few of its pages,
	// not one per host) and carries the columns node queries filter and
	// sort on (they need not join the jobs table but for the rows they
	// print); users maps names to uids.
	`
CREATE TABLE job_data (
	pk       INTEGER PRIMARY KEY,             -- jobs.pk
	jobspec  TEXT,                            -- latest jobspec seen (JSON)
	R        TEXT,                            -- latest R seen (JSON)
	eventlog TEXT                             -- every event seen, by time (JSON array)
);
INSERT INTO job_data (pk, jobspec, R, eventlog)
	SELECT pk, jobspec, R, eventlog FROM jobs WHERE coalesce(jobspec, R, eventlog) IS NOT NULL;
ALTER TABLE jobs DROP COLUMN jobspec;
ALTER TABLE jobs DROP COLUMN R;
ALTER TABLE jobs DROP COLUMN eventlog;
CREATE TABLE nodes (
	blk        INTEGER NOT NULL,              -- job >> 10
	host       TEXT    NOT NULL,
	job        INTEGER NOT NULL,              -- jobs.pk
	id         INTEGER NOT NULL,              -- the rest: copies of the job's columns
	userid     INTEGER NOT NULL,
	state      TEXT    NOT NULL,
	result     TEXT    NOT NULL,
	priority   INTEGER,
	t_submit   REAL    NOT NULL,
	t_run      REAL    NOT NULL,
	t_inactive REAL    NOT NULL,
	PRIMARY KEY (blk, host, job)
) WITHOUT ROWID;
INSERT INTO nodes SELECT n.job >> 10, n.host, n.job, j.id, j.userid, j.state, j.result, j.priority, j.t_submit, j.t_run, j.t_inactive
	FROM job_nodes n JOIN jobs j ON j.pk = n.job;
DROP TABLE job_nodes;
ALTER TABLE nodes RENAME TO job_nodes;
CREATE TABLE users (
	username TEXT PRIMARY KEY,
	userid   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO users SELECT username, min(userid) FROM jobs WHERE username != '' GROUP BY username;
-- Pending and running jobs are few: an index of them only (inactive
-- jobs, nearly all rows, cost it nothing).
DROP INDEX jobs_state;
CREATE INDEX jobs_active ON jobs(state, t_run) WHERE state != 'INACTIVE';
`,
	// 2 -> 3: the result index holds the jobs that did not complete only
	// (most jobs complete: they cost it nothing). A result filter that
	// names completed jobs walks the t_inactive index instead, where
	// they are most of the rows.
	`
DROP INDEX jobs_result;
CREATE INDEX jobs_unsuccessful ON jobs(result, t_inactive, id) WHERE ` + unsuccessful + `;
`,
	// 3 -> 4: node rows are the host and the job only. Their copies of
	// the job's columns made every change of state a rewrite of the
	// job's node rows; a node query reads the job's row instead (a few
	// thousand rows a host at 1M jobs).
	`
CREATE TABLE nodes (
	blk  INTEGER NOT NULL,                    -- job >> 10
	host TEXT    NOT NULL,
	job  INTEGER NOT NULL,                    -- jobs.pk
	PRIMARY KEY (blk, host, job)
) WITHOUT ROWID;
INSERT INTO nodes SELECT blk, host, job FROM job_nodes;
DROP TABLE job_nodes;
ALTER TABLE nodes RENAME TO job_nodes;
`,
}

// unsuccessful is the condition of the partial result index; a query
// repeats it verbatim so that SQLite may use the index.
const unsuccessful = "result IN ('FAILED', 'CANCELED', 'TIMEOUT')"

// blockShift groups node rows by job: blk = pk >> blockShift.
const blockShift = 10

// Options tune Open.
type Options struct {
	// ReadOnly opens for queries: no migration, no writes.
	ReadOnly bool
	// Synchronous is SQLite's synchronous pragma: "full" (default; a
	// committed batch survives power loss) or "normal" (survives a crash
	// of the process, a power loss can lose the last commits).
	Synchronous string
}

// DB is an open job archive.
type DB struct {
	db   *sql.DB
	path string
	w    *writeState // the writer's prepared statements and caches (nil: read-only)
}

// ErrNewerSchema says the file was written by a newer fluxstream.
var ErrNewerSchema = errors.New("job archive has a newer schema")

// Open opens (and, unless read-only, creates and migrates) the archive at
// path, in WAL mode.
func Open(ctx context.Context, path string, opt Options) (*DB, error) {
	sync := strings.ToUpper(opt.Synchronous)
	if sync == "" {
		sync = "FULL"
	}
	if !opt.ReadOnly {
		if err := create(ctx, path); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "cache_size(-65536)") // 64 MiB: a batch of 1000 jobs touches many index pages
	q.Add("_pragma", "temp_store(MEMORY)") // statement journals: no temporary files
	q.Add("_pragma", "journal_mode(WAL)")
	// A checkpoint every 40 MiB of WAL, not every 4: the pages every
	// batch touches (index tails) are copied once per checkpoint.
	q.Add("_pragma", "wal_autocheckpoint(10000)")
	q.Add("_pragma", "journal_size_limit(67108864)")
	q.Add("_pragma", "synchronous("+sync+")")
	if opt.ReadOnly {
		q.Add("_pragma", "query_only(1)")
		// Reads map the file instead of copying each page: a query of
		// `fluxstream jobs` (one process each) runs cold, 15-30% less CPU
		// on 1M jobs. (SQLite caps it at its compile-time maximum.)
		q.Add("_pragma", "mmap_size(2147418112)")
	} else {
		q.Add("_txlock", "immediate")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	if !opt.ReadOnly {
		db.SetMaxOpenConns(1) // one writer; batches are serial anyway
	}
	d := &DB{db: db, path: path}
	if err := d.migrate(ctx, opt.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	if !opt.ReadOnly {
		d.w = newWriteState()
		if err := d.w.prepareAll(ctx, db); err != nil {
			d.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return d, nil
}

// Close closes the database.
func (d *DB) Close() error {
	if d.w != nil {
		d.w.close()
	}
	return d.db.Close()
}

// SQL returns the underlying handle (for tests and tools).
func (d *DB) SQL() *sql.DB { return d.db }

// Version reads the schema version of the file.
func (d *DB) Version(ctx context.Context) (int, error) {
	var v int
	err := d.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func (d *DB) migrate(ctx context.Context, readOnly bool) error {
	v, err := d.Version(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", d.path, err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("%s: %w (version %d; this fluxstream knows up to %d)", d.path, ErrNewerSchema, v, SchemaVersion)
	}
	if v == SchemaVersion {
		return nil
	}
	if readOnly {
		if v == 0 {
			return fmt.Errorf("%s: not a job archive (no schema); a jobdb sink creates it", d.path)
		}
		return fmt.Errorf("%s: job archive of schema version %d needs a migration to %d: run the jobdb sink once", d.path, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		if err := d.step(ctx, v); err != nil {
			return fmt.Errorf("%s: migrate schema %d -> %d: %w", d.path, v, v+1, err)
		}
	}
	return nil
}

func (d *DB) step(ctx context.Context, from int) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Another process may have migrated meanwhile (the transaction is
	// immediate: it holds the write lock now).
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v != from {
		return tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, migrations[from]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", from+1)); err != nil {
		return err
	}
	return tx.Commit()
}

// pageSize is the page size of a new archive.
const pageSize = 8192 // 4096 (the default) wastes more of a page on rows of ~1 KB: 12% larger files, 10% more bytes written, ~8% more CPU a job

// create makes a new, empty archive with its page size: it must be set
// before the file turns to WAL mode, which the driver's connection
// pragmas do first.
func create(ctx context.Context, path string) error {
	if st, err := os.Stat(path); err == nil && st.Size() > 0 || err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size = %d; PRAGMA journal_mode = WAL", pageSize))
	return err
}
