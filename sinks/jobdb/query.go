package jobdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"math/big"
	"strconv"
	"strings"

	"github.com/fluxstream/fluxstream/core"
)

// Job state bits, as flux-core numbers them (flux/job.h).
const (
	StateNew      = 1
	StateDepend   = 2
	StatePriority = 4
	StateSched    = 8
	StateRun      = 16
	StateCleanup  = 32
	StateInactive = 64

	StatePending = StateDepend | StatePriority | StateSched
	StateRunning = StateRun | StateCleanup
	StateActive  = StatePending | StateRunning
)

// Result bits (flux/job.h).
const (
	ResultCompleted = 1
	ResultFailed    = 2
	ResultCanceled  = 4
	ResultTimeout   = 8
)

var stateNames = []struct {
	bit  int
	name string
}{{StateNew, "NEW"}, {StateDepend, "DEPEND"}, {StatePriority, "PRIORITY"}, {StateSched, "SCHED"},
	{StateRun, "RUN"}, {StateCleanup, "CLEANUP"}, {StateInactive, "INACTIVE"}}

var resultNames = []struct {
	bit  int
	name string
}{{ResultCompleted, "COMPLETED"}, {ResultFailed, "FAILED"}, {ResultCanceled, "CANCELED"}, {ResultTimeout, "TIMEOUT"}}

// ParseFilter adds one `flux jobs --filter` name (a state, a state group
// or a result, any case) to the masks.
func ParseFilter(name string, states, results *int) error {
	switch strings.ToLower(name) {
	case "depend":
		*states |= StateDepend
	case "priority":
		*states |= StatePriority
	case "sched":
		*states |= StateSched
	case "run":
		*states |= StateRun
	case "cleanup":
		*states |= StateCleanup
	case "inactive":
		*states |= StateInactive
	case "pending":
		*states |= StatePending
	case "running":
		*states |= StateRunning
	case "active":
		*states |= StateActive
	case "completed":
		*results |= ResultCompleted
	case "failed":
		*results |= ResultFailed
	case "canceled":
		*results |= ResultCanceled
	case "timeout":
		*results |= ResultTimeout
	default:
		return fmt.Errorf("invalid filter specified: %s", name)
	}
	return nil
}

// Filter selects jobs, as job-list's constraints do.
type Filter struct {
	UserID  *uint32  // nil: every user
	States  int      // state bits; with Results, a job matching either is listed
	Results int      // result bits (inactive jobs)
	Since   float64  // inactive jobs only if t_inactive > Since (0: no limit)
	Until   float64  // inactive jobs only if t_inactive <= Until, active ones if t_submit <= Until (0: no limit)
	Queues  []string // any of these queues
	Name    string   // exact job name
	Node    string   // jobs whose nodelist holds this host
	Count   int      // at most this many (0: all)
}

// Job is one archived job.
type Job struct {
	core.Job
	Cluster     string
	Purged      float64 // when Flux purged it; 0 if it has not
	PurgeReason string
	EventTime   float64 // timestamp of the snapshot's event
	EventName   string
}

// Entry is a job with its raw data, for `fluxstream jobs info`.
type Entry struct {
	Job
	Jobspec, R json.RawMessage
	Eventlog   []core.Event
}

func inList(col string, vals []string, args *[]any) string {
	ph := make([]string, len(vals))
	for i, v := range vals {
		ph[i] = "?"
		*args = append(*args, v)
	}
	return col + " IN (" + strings.Join(ph, ",") + ")"
}

func names(mask int, tab []struct {
	bit  int
	name string
}) []string {
	var out []string
	for _, e := range tab {
		if mask&e.bit != 0 {
			out = append(out, e.name)
		}
	}
	return out
}

const listCols = `j.snapshot, j.username, j.cluster, coalesce(j.purged, 0), coalesce(j.purge_reason, ''), j.ev_time, j.ev_name`

// Query lists the jobs f selects in `flux jobs` order: pending jobs by
// priority (higher first) then id, running jobs by t_run (newest first),
// inactive jobs by t_inactive (newest first) then id (higher first). The
// second result says there were more than f.Count.
func (d *DB) Query(ctx context.Context, f Filter) ([]Job, bool, error) {
	limit := -1
	if f.Count > 0 {
		limit = f.Count + 1
	}
	var out []Job
	groups := []struct {
		states  int
		order   string
		results bool
	}{
		{StatePending, "coalesce(j.priority, -1) DESC, j.id ASC", false},
		{StateRunning, "j.t_run DESC, j.id DESC", false},
		{StateInactive, "j.t_inactive DESC, j.id DESC", true},
	}
	for _, g := range groups {
		if limit >= 0 && len(out) >= limit {
			break
		}
		var args []any
		var where []string
		st := names(f.States&g.states, stateNames)
		switch {
		case len(st) > 0 && g.states == StateInactive:
			// Unary +: not through the state index (most rows are
			// inactive), but along the ordered t_inactive scan.
			where = append(where, "+j.state = 'INACTIVE'")
		case len(st) > 0:
			// The literal term lets SQLite use the partial index of
			// active jobs.
			where = append(where, "j.state != 'INACTIVE'", inList("j.state", st, &args))
		case g.results && f.Results&ResultCompleted != 0:
			// Completed jobs are most of the rows: along t_inactive (or
			// the user's index), not through a result index.
			where = append(where, "+j.state = 'INACTIVE'", inList("+j.result", names(f.Results, resultNames), &args))
		case g.results && f.Results != 0:
			// The literal condition of the partial index lets SQLite use it.
			where = append(where, "+j.state = 'INACTIVE'", "j."+unsuccessful, inList("j.result", names(f.Results, resultNames), &args))
		default:
			continue
		}
		// Pending and running jobs are few: find them by state, not along
		// another index (unary + keeps a column off the index choice).
		plus := "+"
		if g.states == StateInactive {
			plus = ""
		}
		if f.UserID != nil {
			where = append(where, plus+"j.userid = ?")
			args = append(args, int64(*f.UserID))
		}
		if len(f.Queues) > 0 {
			where = append(where, inList(plus+"j.queue", f.Queues, &args))
		}
		if f.Name != "" {
			where = append(where, plus+"j.name = ?")
			args = append(args, f.Name)
		}
		if g.states == StateInactive {
			if f.Since > 0 {
				where = append(where, "j.t_inactive > ?")
				args = append(args, f.Since)
			}
			if f.Until > 0 {
				where = append(where, "j.t_inactive <= ?")
				args = append(args, f.Until)
			}
		} else if f.Until > 0 {
			where = append(where, "j.t_submit <= ?")
			args = append(args, f.Until)
		}
		var q string
		if f.Node != "" {
			q, args = nodeQuery(f, g.order, where, args, limit, len(out))
		} else {
			q = "SELECT " + listCols + " FROM jobs j WHERE " + strings.Join(where, " AND ") + " ORDER BY " + g.order
			if limit >= 0 {
				q += " LIMIT ?"
				args = append(args, limit-len(out))
			}
		}
		rows, err := d.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, false, err
		}
		out, err = scanJobs(rows, out)
		if err != nil {
			return nil, false, err
		}
	}
	truncated := false
	if f.Count > 0 && len(out) > f.Count {
		out, truncated = out[:f.Count], true
	}
	return out, truncated, nil
}

// nodeQuery selects the jobs of the node table's rows for the host: the
// blocks of the node table (pk >> blockShift) are walked one by one, each
// a short range of (blk, host), and each job's row is read for the
// filters and the sort.
func nodeQuery(f Filter, order string, where []string, args []any, limit, have int) (string, []any) {
	q := `WITH RECURSIVE b(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM b WHERE x < (SELECT coalesce(max(pk), 0) >> ` + fmt.Sprint(blockShift) + ` FROM jobs))
		SELECT ` + listCols + ` FROM b CROSS JOIN job_nodes n CROSS JOIN jobs j ON j.pk = n.job WHERE n.blk = b.x AND n.host = ?`
	qargs := append([]any{f.Node}, args...)
	if len(where) > 0 {
		q += " AND " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order
	if limit >= 0 {
		q += " LIMIT ?"
		qargs = append(qargs, limit-have)
	}
	return q, qargs
}

func scanJobs(rows *sql.Rows, out []Job) ([]Job, error) {
	defer rows.Close()
	for rows.Next() {
		var snap string
		var j Job
		if err := rows.Scan(&snap, &j.Username, &j.Cluster, &j.Purged, &j.PurgeReason, &j.EventTime, &j.EventName); err != nil {
			return nil, err
		}
		user := j.Username
		if err := decodeSnapshot(snap, &j.Job); err != nil {
			return nil, err
		}
		if user != "" {
			j.Username = user
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// decodeSnapshot reads a snapshot as the record's JSON form wrote it:
// {"occurred": false} is no exception (as Record.UnmarshalJSON reads it).
func decodeSnapshot(snap string, j *core.Job) error {
	if err := json.Unmarshal([]byte(snap), j); err != nil {
		return fmt.Errorf("archived snapshot: %w", err)
	}
	if j.Exception != nil && !j.Exception.Occurred {
		j.Exception = nil
	}
	return nil
}

// Lookup returns every archived incarnation of job id, oldest first.
func (d *DB) Lookup(ctx context.Context, id uint64) ([]Entry, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+listCols+", coalesce(d.jobspec, ''), coalesce(d.R, ''), coalesce(d.eventlog, '') FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk WHERE j.id = ? ORDER BY j.t_submit", int64(id))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var snap, spec, r, evlog string
		var e Entry
		if err := rows.Scan(&snap, &e.Username, &e.Cluster, &e.Purged, &e.PurgeReason, &e.EventTime, &e.EventName, &spec, &r, &evlog); err != nil {
			return nil, err
		}
		user := e.Username
		if err := decodeSnapshot(snap, &e.Job.Job); err != nil {
			return nil, err
		}
		if user != "" {
			e.Username = user
		}
		if spec != "" {
			e.Jobspec = json.RawMessage(spec)
		}
		if r != "" {
			e.R = json.RawMessage(r)
		}
		if evlog != "" {
			if err := json.Unmarshal([]byte(evlog), &e.Eventlog); err != nil {
				return nil, fmt.Errorf("archived eventlog: %w", err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// UserID finds the uid of a user name among the archived jobs.
func (d *DB) UserID(ctx context.Context, name string) (uint32, bool, error) {
	var uid int64
	err := d.db.QueryRowContext(ctx, "SELECT userid FROM users WHERE username = ?", name).Scan(&uid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return uint32(uid), err == nil, err
}

// Stats counts the archived jobs as `flux jobs --stats` does: pending
// (depend, priority, sched), running (run, cleanup), successful
// (completed), failed (failed, canceled, timeout), and the purged ones.
type Stats struct {
	Pending, Running, Successful, Failed, Inactive, Purged int
}

// Stats counts jobs, in queues if any are given.
func (d *DB) Stats(ctx context.Context, queues []string) (Stats, error) {
	var args []any
	where := ""
	if len(queues) > 0 {
		where = " WHERE " + inList("queue", queues, &args)
	}
	rows, err := d.db.QueryContext(ctx, "SELECT state, result, purged IS NOT NULL, count(*) FROM jobs"+where+" GROUP BY 1, 2, 3", args...)
	if err != nil {
		return Stats{}, err
	}
	defer rows.Close()
	var s Stats
	for rows.Next() {
		var state, result string
		var purged bool
		var n int
		if err := rows.Scan(&state, &result, &purged, &n); err != nil {
			return s, err
		}
		switch state {
		case "DEPEND", "PRIORITY", "SCHED":
			s.Pending += n
		case "RUN", "CLEANUP":
			s.Running += n
		case "INACTIVE":
			s.Inactive += n
			if result == "COMPLETED" {
				s.Successful += n
			} else {
				s.Failed += n
			}
		}
		if purged {
			s.Purged += n
		}
	}
	return s, rows.Err()
}

const f58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// ParseJobID reads a job id as Flux prints it: decimal, f58 (prefix f or
// ƒ), or hexadecimal (0x...).
func ParseJobID(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "ƒ"), strings.HasPrefix(s, "f"):
		rest := strings.TrimPrefix(strings.TrimPrefix(s, "ƒ"), "f")
		if rest == "" {
			break
		}
		n := new(big.Int)
		for i := 0; i < len(rest); i++ {
			k := strings.IndexByte(f58Alphabet, rest[i])
			if k < 0 {
				return 0, fmt.Errorf("invalid job id %q", s)
			}
			n.Mul(n, big.NewInt(58)).Add(n, big.NewInt(int64(k)))
		}
		if !n.IsUint64() {
			return 0, fmt.Errorf("invalid job id %q: too large", s)
		}
		return n.Uint64(), nil
	case strings.HasPrefix(s, "0x"):
		return strconv.ParseUint(s[2:], 16, 64)
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid job id %q", s)
	}
	return id, nil
}
