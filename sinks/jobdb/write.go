package jobdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
)

// A batch is written with a few statements, not a few per job: one
// lookup of every job it touches (SELECT ... IN), then multi-row upserts
// of the jobs, their data and their node rows. Row ids (pk) are handed
// out here: the writer holds the write lock for the whole transaction.

// ident is a job's identity: ids are reused by a restarted instance, the
// submit time tells the incarnations apart.
type ident struct {
	id      uint64
	tsubmit float64
}

// stored is what the batch reads of a job's row.
type stored struct {
	evTime                float64
	hasSpec, hasR, purged bool
	hasEvlog              bool
	evlog                 string
	nodelist              string
	username              string
	existsData            bool
}

// pending is what one batch changes of one job, merged over its records.
type pending struct {
	ident
	exists   bool
	pk       int64
	st       stored
	evTime   float64 // of the stored or newest snapshot
	hasSnap  bool    // a snapshot newer than the stored one is in job
	job      *core.Job
	evName   string
	cluster  string
	jobspec  json.RawMessage // newer jobspec to store (nil: keep)
	r        json.RawMessage // newer R to store (nil: keep)
	hasSpec  bool            // a jobspec is stored or pending
	hasR     bool
	events   []core.Event // merged eventlog (when evDirty)
	evLoaded bool
	evDirty  bool
	purged   *float64
	reason   string
}

// multi is a multi-row statement: head, then n groups of cols
// placeholders, then tail; prepared once per row count.
type multi struct {
	head, tail string
	cols       int
	stmts      map[int]*sql.Stmt
}

// maxRows bounds the rows of one multi-row statement (SQLite takes up to
// 32766 parameters; 64 rows of the jobs table are 1728).
const maxRows = 64

const jobCols = `pk, id, t_submit, jobid, cluster, userid, username, queue, bank, project, state, result, name,
	urgency, priority, ntasks, nnodes, ncores, nodelist, ranks, t_run, t_inactive, ev_time, ev_name, snapshot, purged, purge_reason`

// writeState is the writer's statements and caches, kept across batches.
type writeState struct {
	mu                 sync.Mutex
	jobs, data, nodes  multi
	newJobs, newData   multi             // plain inserts of rows not stored yet
	sel                map[int]*sql.Stmt // the batch lookup, by id count
	purgeSel           map[int]*sql.Stmt
	users              map[string]bool // names in the users table
	all                []*sql.Stmt
	markPurge, nodeDel string
	purgeIns, purgeDel string
	usr                string
}

func newWriteState() *writeState {
	set := func(cols string) string {
		var b strings.Builder
		for i, c := range strings.Split(cols, ",") {
			c = strings.TrimSpace(c)
			if c == "pk" || c == "id" || c == "t_submit" || c == "purged" || c == "purge_reason" {
				continue
			}
			if i > 0 && b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(c + " = excluded." + c)
		}
		return b.String()
	}
	return &writeState{
		jobs: multi{head: "INSERT INTO jobs (" + jobCols + ") VALUES ", cols: 27,
			// A row in the batch only when its snapshot is newer (decided
			// above, under the write lock); the purge mark is never undone.
			tail: " ON CONFLICT (pk) DO UPDATE SET " + set(jobCols) +
				", purge_reason = CASE WHEN purged IS NULL THEN excluded.purge_reason ELSE purge_reason END" +
				", purged = coalesce(purged, excluded.purged)"},
		data: multi{head: "INSERT INTO job_data (pk, jobspec, R, eventlog) VALUES ", cols: 4,
			tail: " ON CONFLICT (pk) DO UPDATE SET jobspec = coalesce(excluded.jobspec, jobspec), R = coalesce(excluded.R, R), eventlog = coalesce(excluded.eventlog, eventlog)"},
		// Node rows: two parameters a job (its pk and its hosts as a
		// JSON array), not two a host.
		nodes: multi{head: "INSERT OR IGNORE INTO job_nodes (blk, host, job) " +
			"SELECT v.column1 >> " + strconv.Itoa(blockShift) + ", h.value, v.column1 FROM (VALUES ", cols: 2,
			tail: ") v CROSS JOIN json_each(v.column2) h"},
		sel: map[int]*sql.Stmt{}, purgeSel: map[int]*sql.Stmt{}, users: map[string]bool{},
		markPurge: "UPDATE jobs SET purge_reason = CASE WHEN purged IS NULL THEN ? ELSE purge_reason END, purged = coalesce(purged, ?) WHERE pk = ?",
		nodeDel:   "DELETE FROM job_nodes WHERE blk = ? AND host = ? AND job = ?",
		purgeIns:  "INSERT OR REPLACE INTO purges (id, t_submit, time, reason) VALUES (?, ?, ?, ?)",
		purgeDel:  "DELETE FROM purges WHERE id = ? AND t_submit = ?",
		usr:       "INSERT OR IGNORE INTO users (username, userid) VALUES (?, ?)",
	}
}

func (ws *writeState) close() {
	for _, s := range ws.all {
		s.Close()
	}
	ws.all = nil
}

// prepareAll prepares, before any transaction holds the one connection,
// every statement shape the writer uses; a transaction takes them with
// tx.StmtContext, which reuses them on that connection.
func (ws *writeState) prepareAll(ctx context.Context, db *sql.DB) error {
	prep := func(cache map[int]*sql.Stmt, n int, q string) error {
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		cache[n] = s
		ws.all = append(ws.all, s)
		return nil
	}
	ws.newJobs = multi{head: ws.jobs.head, cols: ws.jobs.cols}
	ws.newData = multi{head: ws.data.head, cols: ws.data.cols}
	for _, m := range []*multi{&ws.jobs, &ws.data, &ws.nodes, &ws.newJobs, &ws.newData} {
		m.stmts = map[int]*sql.Stmt{}
		for n := 1; n <= maxRows; n *= 2 {
			if err := prep(m.stmts, n, m.head+placeholders(n, m.cols)+m.tail); err != nil {
				return err
			}
		}
	}
	for n := 1; n <= maxIDs; n *= 2 {
		in := strings.TrimSuffix(strings.Repeat("?,", n), ",")
		if err := prep(ws.sel, n, selQuery+"("+in+")"); err != nil {
			return err
		}
		if err := prep(ws.purgeSel, n, "SELECT id, t_submit, time, reason FROM purges WHERE id IN ("+in+")"); err != nil {
			return err
		}
	}
	return nil
}

// maxIDs bounds the ids of one lookup.
const maxIDs = 256

// chunk is the rows of the next statement for rows left: a power of two.
func chunk(rows, max int) int { return min(max, 1<<(bits.Len(uint(rows))-1)) }

const selQuery = `SELECT j.pk, j.id, j.t_submit, j.ev_time, j.purged IS NOT NULL, j.username, j.nodelist,
	d.pk IS NOT NULL, d.jobspec IS NOT NULL, d.R IS NOT NULL, coalesce(d.eventlog, '')
	FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk WHERE j.id IN `

func placeholders(n, cols int) string {
	group := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	return strings.TrimSuffix(strings.Repeat(group+",", n), ",")
}

// exec runs m over rows of args (len(args) = rows * m.cols), in chunks
// of powers of two (few distinct statements to prepare).
func (ws *writeState) exec(ctx context.Context, d *DB, tx *sql.Tx, m *multi, args []any) error {
	for rows := len(args) / m.cols; rows > 0; {
		n := chunk(rows, maxRows)
		if _, err := tx.StmtContext(ctx, m.stmts[n]).ExecContext(ctx, args[:n*m.cols]...); err != nil {
			return err
		}
		args, rows = args[n*m.cols:], rows-n
	}
	return nil
}

// Apply stores a batch in one transaction: one row per job (id,
// t_submit), a newer snapshot replacing an older one, never the reverse.
// It returns once the transaction committed.
func (d *DB) Apply(ctx context.Context, batch []*core.Record) error {
	ws := d.w
	if ws == nil {
		return errors.New("jobdb: archive opened read-only")
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	b := &batchWriter{d: d, ws: ws, tx: tx, jobs: map[ident]*pending{}}
	if err := b.load(ctx, batch); err != nil {
		return err
	}
	for _, r := range batch {
		switch {
		case r.Kind == core.KindEvent && r.Job != nil:
			if err := b.addEvent(b.jobs[ident{r.Job.ID, r.Job.TSubmit}], r); err != nil {
				return err
			}
		case r.Kind == core.KindPurge && r.Purge != nil:
			k := ident{r.Purge.ID, r.PurgeTSubmit()}
			if k.tsubmit == 0 {
				k = b.latest(r.Purge.ID)
			}
			p := b.get(k)
			if p.purged == nil {
				t := r.Purge.Time
				p.purged, p.reason = &t, r.Purge.Reason
			}
		}
		// invalid records and anything else: nothing to archive
	}
	if err := b.store(ctx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, u := range b.newUsers {
		ws.users[u] = true
	}
	return nil
}

type batchWriter struct {
	d     *DB
	ws    *writeState
	tx    *sql.Tx
	jobs  map[ident]*pending
	order []*pending
	ids   map[uint64][]*pending // loaded rows by id
	// names added to the users table (known to be there once committed)
	newUsers []string
	hostBuf  []byte // the node rows' host arrays, appended only
	// the batch's snapshots and eventlogs, appended only: each parameter
	// a string over its part, no copy per job
	arena []byte
}

// since is the arena's bytes from at on, as a string that shares them
// (the arena is only appended to: they never change).
func (b *batchWriter) since(at int) string {
	return unsafe.String(&b.arena[at], len(b.arena)-at)
}

func (b *batchWriter) get(k ident) *pending {
	if p := b.jobs[k]; p != nil {
		return p
	}
	p := &pending{ident: k, evTime: math.Inf(-1)}
	for _, s := range b.ids[k.id] {
		if s.tsubmit == k.tsubmit {
			p = s
			break
		}
	}
	b.jobs[k] = p
	b.order = append(b.order, p)
	return p
}

// load reads, in one query per few hundred ids, the stored rows of every
// job the batch touches, and creates their pending entries in the order
// of the batch.
func (b *batchWriter) load(ctx context.Context, batch []*core.Record) error {
	var ids []uint64
	seen := map[uint64]bool{}
	for _, r := range batch {
		var id uint64
		switch {
		case r.Kind == core.KindEvent && r.Job != nil:
			id = r.Job.ID
		case r.Kind == core.KindPurge && r.Purge != nil:
			id = r.Purge.ID
		default:
			continue
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	b.ids = make(map[uint64][]*pending, len(ids))
	for len(ids) > 0 {
		n := chunk(len(ids), maxIDs)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = int64(id)
		}
		ids = ids[n:]
		rows, err := b.tx.StmtContext(ctx, b.ws.sel[n]).QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			p := &pending{exists: true}
			var id int64
			st := &p.st
			if err := rows.Scan(&p.pk, &id, &p.tsubmit, &st.evTime, &st.purged, &st.username, &st.nodelist,
				&st.existsData, &st.hasSpec, &st.hasR, &st.evlog); err != nil {
				rows.Close()
				return err
			}
			p.id = uint64(id)
			p.evTime, p.hasSpec, p.hasR, st.hasEvlog = st.evTime, st.hasSpec, st.hasR, st.evlog != ""
			b.ids[p.id] = append(b.ids[p.id], p)
		}
		if err := rows.Close(); err != nil {
			return err
		}
	}
	// Pending entries in batch order (the order rows are written in).
	for _, r := range batch {
		switch {
		case r.Kind == core.KindEvent && r.Job != nil:
			b.get(ident{r.Job.ID, r.Job.TSubmit})
		case r.Kind == core.KindPurge && r.Purge != nil && r.PurgeTSubmit() != 0:
			b.get(ident{r.Purge.ID, r.PurgeTSubmit()})
		}
	}
	return nil
}

// latest is the newest unpurged incarnation of id, for an old-style purge
// id without a submit time: among the stored rows and the jobs of this
// batch.
func (b *batchWriter) latest(id uint64) ident {
	best := ident{id: id}
	bestPurged := true
	consider := func(ts float64, purged bool) {
		if (bestPurged && !purged) || (purged == bestPurged && ts > best.tsubmit) {
			best.tsubmit, bestPurged = ts, purged
		}
	}
	for _, p := range b.ids[id] {
		consider(p.tsubmit, p.st.purged)
	}
	for k, p := range b.jobs {
		if k.id == id && !p.exists {
			consider(k.tsubmit, p.purged != nil)
		}
	}
	return best
}

func (b *batchWriter) loadEvents(p *pending) {
	if p.evLoaded {
		return
	}
	p.evLoaded = true
	if p.st.hasEvlog {
		if err := json.Unmarshal([]byte(p.st.evlog), &p.events); err != nil {
			p.events = nil // a damaged eventlog is rebuilt from what comes
		}
	}
}

func (b *batchWriter) addEvent(p *pending, r *core.Record) error {
	t := r.Time()
	newer := t >= p.evTime
	if newer {
		p.evTime, p.job, p.evName, p.cluster, p.hasSnap = t, r.Job, r.EventName(), r.Cluster, true
	}
	// The latest non-empty jobspec and R: records carry them only when
	// they change, so an older one fills a gap but never replaces.
	if len(r.Jobspec) > 0 && (newer || !p.hasSpec) {
		p.jobspec, p.hasSpec = r.Jobspec, true
	}
	if len(r.R) > 0 && (newer || !p.hasR) {
		p.r, p.hasR = r.R, true
	}
	add := r.Eventlog
	if e := r.Event; e != nil && (len(add) == 0 || add[len(add)-1].Timestamp != e.Timestamp || add[len(add)-1].Name != e.Name) {
		// (a backlog record's event is its eventlog's last: no copy then)
		add = append(add[:len(add):len(add)], *e)
	}
	if len(add) > 0 {
		b.loadEvents(p)
		if merged, changed := mergeEvents(p.events, add); changed {
			p.events, p.evDirty = merged, true
		}
	}
	return nil
}

// mergeEvents adds the events of add that evs lacks (an event is its name
// and timestamp), keeping the log in time order.
func mergeEvents(evs, add []core.Event) ([]core.Event, bool) {
	type key struct {
		name string
		ts   float64
	}
	has := func(k key) bool {
		for i := len(evs) - 1; i >= 0; i-- { // short logs: a scan beats a map
			if evs[i].Timestamp == k.ts && evs[i].Name == k.name {
				return true
			}
		}
		return false
	}
	own := false // evs is an array of ours, not the caller's
	if len(evs) == 0 && len(add) <= 64 {
		// A job's first events (the common case): one allocation.
		evs, own = make([]core.Event, 0, len(add)), true
	}
	var seen map[key]bool
	if len(evs)+len(add) > 64 {
		seen = make(map[key]bool, len(evs)+len(add))
		for _, e := range evs {
			seen[key{e.Name, e.Timestamp}] = true
		}
		has = func(k key) bool { return seen[k] }
	}
	changed, sorted := false, true
	for _, e := range add {
		k := key{e.Name, e.Timestamp}
		if has(k) {
			continue
		}
		if seen != nil {
			seen[k] = true
		}
		if !changed && !own {
			evs = slices.Clip(evs) // do not write into the caller's array
		}
		if n := len(evs); n > 0 && evs[n-1].Timestamp > e.Timestamp {
			sorted = false
		}
		evs = append(evs, e)
		changed = true
	}
	if !sorted {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Timestamp < evs[j].Timestamp })
	}
	return evs, changed
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

// rawOrNil passes b without a copy: the driver copies parameters into
// SQLite's memory, and records are not changed while a batch is written.
func rawOrNil(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return unsafe.String(&b[0], len(b))
}

func (b *batchWriter) store(ctx context.Context) error {
	ws := b.ws
	var next int64
	if err := b.tx.QueryRowContext(ctx, "SELECT coalesce(max(pk), 0) FROM jobs").Scan(&next); err != nil {
		return err
	}
	// Purges kept aside for jobs that had not come yet.
	var early map[ident]*pending
	var newIDs []any
	for _, p := range b.order {
		if !p.exists && p.hasSnap {
			newIDs = append(newIDs, int64(p.id))
		}
	}
	if len(newIDs) > 0 {
		var n int
		if err := b.tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM purges)").Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			early = map[ident]*pending{}
			for len(newIDs) > 0 {
				k := chunk(len(newIDs), maxIDs)
				rows, err := b.tx.StmtContext(ctx, ws.purgeSel[k]).QueryContext(ctx, newIDs[:k]...)
				if err != nil {
					return err
				}
				for rows.Next() {
					var id int64
					var ts, t float64
					var why string
					if err := rows.Scan(&id, &ts, &t, &why); err != nil {
						rows.Close()
						return err
					}
					if p := b.jobs[ident{uint64(id), ts}]; p != nil && !p.exists && p.hasSnap {
						if p.purged == nil {
							p.purged, p.reason = &t, why
						}
						early[p.ident] = p
					}
				}
				if err := rows.Close(); err != nil {
					return err
				}
				newIDs = newIDs[k:]
			}
		}
	}
	b.arena = make([]byte, 0, 1536*len(b.order)) // a snapshot and an eventlog a job, mostly
	jobArgs := make([]any, 0, len(b.order)*ws.jobs.cols)
	dataArgs := make([]any, 0, len(b.order)*ws.data.cols)
	newJobArgs := make([]any, 0, len(b.order)*ws.jobs.cols)
	newDataArgs := make([]any, 0, len(b.order)*ws.data.cols)
	nodeArgs := make([]any, 0, len(b.order)*ws.nodes.cols)
	for _, p := range b.order {
		if !p.exists && !p.hasSnap {
			// A purge before any event of its job (a sink added to a
			// running deployment, a reordered redelivery): kept aside and
			// applied when the job's first snapshot comes.
			if p.purged != nil {
				if _, err := b.tx.ExecContext(ctx, ws.purgeIns, int64(p.id), p.tsubmit, *p.purged, p.reason); err != nil {
					return err
				}
			}
			continue
		}
		if !p.exists {
			next++
			p.pk = next
		}
		var purged, reason any
		if p.purged != nil && !p.st.purged {
			purged, reason = *p.purged, p.reason
		}
		if p.hasSnap {
			j := p.job
			var prio any
			if j.Priority != nil {
				prio = *j.Priority
			}
			at := len(b.arena)
			b.arena = j.AppendJSON(b.arena)
			args := &jobArgs
			if !p.exists {
				args = &newJobArgs
			}
			*args = append(*args, p.pk, int64(p.id), p.tsubmit, j.JobID, p.cluster, int64(j.UserID), j.Username, j.Queue, j.Bank, j.Project,
				j.State, j.Result, j.Name, int64(j.Urgency), prio, nullInt(j.NTasks), nullInt(j.NNodes), nullInt(j.NCores), j.Nodelist, j.Ranks,
				j.TRun, j.TInactive, p.evTime, p.evName, b.since(at), purged, reason)
			if j.Username != "" && j.Username != p.st.username {
				if err := b.user(ctx, j.Username, j.UserID); err != nil {
					return err
				}
			}
			if !p.exists || j.Nodelist != p.st.nodelist {
				var err error
				if nodeArgs, err = b.nodes(ctx, nodeArgs, p); err != nil {
					return err
				}
			}
		} else if purged != nil {
			if _, err := b.tx.ExecContext(ctx, ws.markPurge, reason, purged, p.pk); err != nil {
				return err
			}
		}
		var evlog any
		if p.evDirty {
			at := len(b.arena)
			b.arena = append(b.arena, '[')
			for i := range p.events {
				if i > 0 {
					b.arena = append(b.arena, ',')
				}
				b.arena = p.events[i].AppendJSON(b.arena)
			}
			b.arena = append(b.arena, ']')
			evlog = b.since(at)
		}
		if p.jobspec != nil || p.r != nil || evlog != nil {
			if p.exists && p.st.existsData {
				dataArgs = append(dataArgs, p.pk, rawOrNil(p.jobspec), rawOrNil(p.r), evlog)
			} else {
				newDataArgs = append(newDataArgs, p.pk, rawOrNil(p.jobspec), rawOrNil(p.r), evlog)
			}
		}
	}
	for _, e := range []struct {
		m    *multi
		args []any
	}{{&ws.newJobs, newJobArgs}, {&ws.jobs, jobArgs}, {&ws.newData, newDataArgs}, {&ws.data, dataArgs}} {
		if err := ws.exec(ctx, b.d, b.tx, e.m, e.args); err != nil {
			return err
		}
	}
	if err := ws.exec(ctx, b.d, b.tx, &ws.nodes, nodeArgs); err != nil {
		return err
	}
	for _, p := range early {
		if _, err := b.tx.ExecContext(ctx, ws.purgeDel, int64(p.id), p.tsubmit); err != nil {
			return err
		}
	}
	return nil
}

// nodes appends the node rows of the job (one per host of its nodelist)
// and deletes those of hosts it no longer lists.
func (b *batchWriter) nodes(ctx context.Context, args []any, p *pending) ([]any, error) {
	blk := p.pk >> blockShift
	hosts, err := jobstate.ExpandHostlist(p.job.Nodelist)
	if err != nil {
		hosts = nil // a nodelist we cannot read: the job is not findable by node
	}
	if p.exists && p.st.nodelist != "" && p.st.nodelist != p.job.Nodelist {
		old, _ := jobstate.ExpandHostlist(p.st.nodelist)
		keep := make(map[string]bool, len(hosts))
		for _, h := range hosts {
			keep[h] = true
		}
		for _, h := range old {
			if !keep[h] {
				if _, err := b.tx.ExecContext(ctx, b.ws.nodeDel, blk, h, p.pk); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(hosts) == 0 {
		return args, nil
	}
	buf := append(b.hostBuf, '[')
	for i, h := range hosts {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, h)
	}
	buf = append(buf, ']')
	// One string for the batch's hosts; each job's array a slice of it
	// (the driver copies parameters before the statement runs).
	args = append(args, p.pk, unsafe.String(&buf[len(b.hostBuf)], len(buf)-len(b.hostBuf)))
	b.hostBuf = buf
	return args, nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// user records a user name (for `-u NAME` of users NSS no longer knows).
func (b *batchWriter) user(ctx context.Context, name string, uid uint32) error {
	ws := b.ws
	if ws.users[name] {
		return nil
	}
	if slices.Contains(b.newUsers, name) {
		return nil
	}
	if _, err := b.tx.ExecContext(ctx, ws.usr, name, int64(uid)); err != nil {
		return err
	}
	b.newUsers = append(b.newUsers, name)
	return nil
}
