package jobdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/fluxstream/fluxstream/core"
)

// ident is a job's identity: ids are reused by a restarted instance, the
// submit time tells the incarnations apart.
type ident struct {
	id      uint64
	tsubmit float64
}

// pending is what one batch changes of one job, merged over its records.
type pending struct {
	ident
	loaded   bool // the stored row was read
	exists   bool
	pk       int64
	evTime   float64 // of the stored or newest snapshot
	hasSnap  bool    // a snapshot newer than the stored one is in job
	job      *core.Job
	snap     []byte // job as JSON
	evName   string
	cluster  string
	jobspec  json.RawMessage // newer jobspec to store (nil: keep)
	r        json.RawMessage // newer R to store (nil: keep)
	hasSpec  bool            // a jobspec is stored or pending
	hasR     bool
	events   []core.Event // merged eventlog (when evDirty)
	evLoaded bool
	evDirty  bool
	nodelist string // stored nodelist
	purged   *float64
	reason   string
	wasPurge bool // stored row already marked
}

// writer holds the prepared statements of one transaction.
type writer struct {
	tx                             *sql.Tx
	sel, selEv, ins, upd, aux      *sql.Stmt
	nodeIns, nodeDel, purgeSel     *sql.Stmt
	purgeIns, purgeDel, latestByID *sql.Stmt
	earlyPurges                    bool // the purges table is not empty
}

const snapCols = `jobid, cluster, userid, username, queue, bank, project, state, result, name,
	urgency, priority, ntasks, nnodes, ncores, nodelist, ranks, t_run, t_inactive, ev_time, ev_name, snapshot`

func (d *DB) begin(ctx context.Context) (*writer, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	w := &writer{tx: tx}
	for _, p := range []struct {
		s **sql.Stmt
		q string
	}{
		{&w.sel, `SELECT pk, ev_time, jobspec IS NOT NULL, R IS NOT NULL, nodelist, purged IS NOT NULL FROM jobs WHERE id = ? AND t_submit = ?`},
		{&w.selEv, `SELECT eventlog FROM jobs WHERE pk = ?`},
		{&w.ins, `INSERT INTO jobs (id, t_submit, ` + snapCols + `, jobspec, R, eventlog, purged, purge_reason)
			VALUES (?,?, ?,?,?,?,?,?,?,?,?,?, ?,?,?,?,?,?,?,?,?,?,?,?, ?,?,?,?,?) RETURNING pk`},
		{&w.upd, `UPDATE jobs SET (` + snapCols + `) = (?,?,?,?,?,?,?,?,?,?, ?,?,?,?,?,?,?,?,?,?,?,?) WHERE pk = ?`},
		{&w.aux, `UPDATE jobs SET jobspec = coalesce(?, jobspec), R = coalesce(?, R), eventlog = coalesce(?, eventlog),
			purged = coalesce(purged, ?), purge_reason = coalesce(purge_reason, ?) WHERE pk = ?`},
		{&w.nodeIns, `INSERT OR IGNORE INTO job_nodes (host, job) VALUES (?, ?)`},
		{&w.nodeDel, `DELETE FROM job_nodes WHERE host = ? AND job = ?`},
		{&w.purgeSel, `SELECT time, reason FROM purges WHERE id = ? AND t_submit = ?`},
		{&w.purgeIns, `INSERT OR REPLACE INTO purges (id, t_submit, time, reason) VALUES (?, ?, ?, ?)`},
		{&w.purgeDel, `DELETE FROM purges WHERE id = ? AND t_submit = ?`},
		{&w.latestByID, `SELECT t_submit FROM jobs WHERE id = ? ORDER BY purged IS NOT NULL, t_submit DESC LIMIT 1`},
	} {
		if *p.s, err = tx.PrepareContext(ctx, p.q); err != nil {
			tx.Rollback()
			return nil, err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM purges)").Scan(&n); err != nil {
		tx.Rollback()
		return nil, err
	}
	w.earlyPurges = n != 0
	return w, nil
}

// Apply stores a batch in one transaction: one row per job (id,
// t_submit), a newer snapshot replacing an older one, never the reverse.
// Records that cannot be stored at all (a snapshot that does not encode)
// are named in a *core.BatchError as permanent; the others are committed.
func (d *DB) Apply(ctx context.Context, batch []*core.Record) error {
	w, err := d.begin(ctx)
	if err != nil {
		return err
	}
	defer w.tx.Rollback()
	var berr core.BatchError
	jobs := map[ident]*pending{}
	var order []*pending
	get := func(k ident) (*pending, error) {
		if p := jobs[k]; p != nil {
			return p, nil
		}
		p := &pending{ident: k}
		if err := w.load(ctx, p); err != nil {
			return nil, err
		}
		jobs[k] = p
		order = append(order, p)
		return p, nil
	}
	for i, r := range batch {
		switch {
		case r.Kind == core.KindEvent && r.Job != nil:
			p, err := get(ident{r.Job.ID, r.Job.TSubmit})
			if err != nil {
				return err
			}
			if err := w.addEvent(ctx, p, r); err != nil {
				if errors.Is(err, errUnencodable) {
					berr.Fail(i, core.Permanent(err))
					continue
				}
				return err
			}
		case r.Kind == core.KindPurge && r.Purge != nil:
			k := ident{r.Purge.ID, r.PurgeTSubmit()}
			if k.tsubmit == 0 {
				// An old-style purge id: the newest unpurged incarnation.
				var ts float64
				switch err := w.latestByID.QueryRowContext(ctx, int64(k.id)).Scan(&ts); {
				case err == nil:
					k.tsubmit = ts
				case !errors.Is(err, sql.ErrNoRows):
					return err
				}
			}
			p, err := get(k)
			if err != nil {
				return err
			}
			if p.purged == nil {
				t := r.Purge.Time
				p.purged, p.reason = &t, r.Purge.Reason
			}
		}
		// invalid records and anything else: nothing to archive
	}
	for _, p := range order {
		if err := w.store(ctx, p); err != nil {
			return err
		}
	}
	if err := w.tx.Commit(); err != nil {
		return err
	}
	return berr.ErrOrNil()
}

var errUnencodable = errors.New("snapshot does not encode as JSON")

func (w *writer) load(ctx context.Context, p *pending) error {
	p.loaded = true
	err := w.sel.QueryRowContext(ctx, int64(p.id), p.tsubmit).Scan(&p.pk, &p.evTime, &p.hasSpec, &p.hasR, &p.nodelist, &p.wasPurge)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		p.evTime = math.Inf(-1)
		return nil
	case err != nil:
		return err
	}
	p.exists = true
	return nil
}

func (w *writer) loadEvents(ctx context.Context, p *pending) error {
	if p.evLoaded {
		return nil
	}
	p.evLoaded = true
	if !p.exists {
		return nil
	}
	var s sql.NullString
	if err := w.selEv.QueryRowContext(ctx, p.pk).Scan(&s); err != nil {
		return err
	}
	if s.Valid && s.String != "" {
		if err := json.Unmarshal([]byte(s.String), &p.events); err != nil {
			p.events = nil // a damaged eventlog is rebuilt from what comes
		}
	}
	return nil
}

func (w *writer) addEvent(ctx context.Context, p *pending, r *core.Record) error {
	t := r.Time()
	newer := t >= p.evTime
	if newer {
		snap, err := json.Marshal(r.Job)
		if err != nil {
			return fmt.Errorf("job %d: %w: %v", r.Job.ID, errUnencodable, err)
		}
		p.snap = snap
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
	if r.Event != nil {
		add = append(add[:len(add):len(add)], *r.Event)
	}
	if len(add) > 0 {
		if err := w.loadEvents(ctx, p); err != nil {
			return err
		}
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
	seen := make(map[key]bool, len(evs))
	for _, e := range evs {
		seen[key{e.Name, e.Timestamp}] = true
	}
	changed := false
	for _, e := range add {
		k := key{e.Name, e.Timestamp}
		if seen[k] {
			continue
		}
		seen[k] = true
		if n := len(evs); n > 0 && evs[n-1].Timestamp > e.Timestamp && !changed {
			evs = append([]core.Event(nil), evs...) // do not sort the caller's slice
		}
		evs = append(evs, e)
		changed = true
	}
	if changed {
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

func rawOrNil(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func (w *writer) snapArgs(p *pending) ([]any, error) {
	j := p.job
	snap := p.snap
	var prio any
	if j.Priority != nil {
		prio = *j.Priority
	}
	return []any{j.JobID, p.cluster, int64(j.UserID), j.Username, j.Queue, j.Bank, j.Project, j.State, j.Result, j.Name,
		int64(j.Urgency), prio, nullInt(j.NTasks), nullInt(j.NNodes), nullInt(j.NCores), j.Nodelist, j.Ranks,
		j.TRun, j.TInactive, p.evTime, p.evName, string(snap)}, nil
}

func (w *writer) store(ctx context.Context, p *pending) error {
	var evlog any
	if p.evDirty {
		b, err := json.Marshal(p.events)
		if err != nil {
			return err
		}
		evlog = string(b)
	}
	var purged, reason any
	if p.purged != nil && !p.wasPurge {
		purged, reason = *p.purged, p.reason
	}
	if !p.exists {
		if !p.hasSnap {
			// A purge before any event of its job (a sink added to a
			// running deployment, a reordered redelivery): kept aside and
			// applied when the job's first snapshot comes.
			if p.purged != nil {
				_, err := w.purgeIns.ExecContext(ctx, int64(p.id), p.tsubmit, *p.purged, p.reason)
				w.earlyPurges = true
				return err
			}
			return nil
		}
		if purged == nil && w.earlyPurges {
			var t float64
			var why string
			switch err := w.purgeSel.QueryRowContext(ctx, int64(p.id), p.tsubmit).Scan(&t, &why); {
			case err == nil:
				purged, reason = t, why
				if _, err := w.purgeDel.ExecContext(ctx, int64(p.id), p.tsubmit); err != nil {
					return err
				}
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		args, err := w.snapArgs(p)
		if err != nil {
			return err
		}
		args = append([]any{int64(p.id), p.tsubmit}, args...)
		args = append(args, rawOrNil(p.jobspec), rawOrNil(p.r), evlog, purged, reason)
		if err := w.ins.QueryRowContext(ctx, args...).Scan(&p.pk); err != nil {
			return err
		}
	} else {
		if p.hasSnap {
			args, err := w.snapArgs(p)
			if err != nil {
				return err
			}
			if _, err := w.upd.ExecContext(ctx, append(args, p.pk)...); err != nil {
				return err
			}
		}
		if p.jobspec != nil || p.r != nil || evlog != nil || purged != nil {
			if _, err := w.aux.ExecContext(ctx, rawOrNil(p.jobspec), rawOrNil(p.r), evlog, purged, reason, p.pk); err != nil {
				return err
			}
		}
	}
	if p.hasSnap && p.job.Nodelist != p.nodelist {
		return w.setNodes(ctx, p.pk, p.nodelist, p.job.Nodelist)
	}
	return nil
}

// setNodes replaces the job's rows of the node table.
func (w *writer) setNodes(ctx context.Context, pk int64, old, cur string) error {
	oldHosts, _ := ExpandHostlist(old)
	newHosts, err := ExpandHostlist(cur)
	if err != nil {
		newHosts = nil // a nodelist we cannot read: the job is not findable by node
	}
	keep := make(map[string]bool, len(newHosts))
	for _, h := range newHosts {
		keep[h] = true
	}
	for _, h := range oldHosts {
		if !keep[h] {
			if _, err := w.nodeDel.ExecContext(ctx, h, pk); err != nil {
				return err
			}
		}
	}
	for len(newHosts) > 0 {
		n := min(len(newHosts), 64)
		if n < 8 {
			for _, h := range newHosts {
				if _, err := w.nodeIns.ExecContext(ctx, h, pk); err != nil {
					return err
				}
			}
			return nil
		}
		args := make([]any, 0, 2*n)
		for _, h := range newHosts[:n] {
			args = append(args, h, pk)
		}
		q := "INSERT OR IGNORE INTO job_nodes (host, job) VALUES (?, ?)" + strings.Repeat(", (?, ?)", n-1)
		if _, err := w.tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		newHosts = newHosts[n:]
	}
	return nil
}
