package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fluxstream/fluxstream/internal/jobsfmt"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
)

func init() { moreCommands = append(moreCommands, newJobsCmd) }

// jobsEnv is the clock, zone, user lookup and f58 prefix of `jobs`
// output; tests fix it.
var jobsEnv = jobsfmt.DefaultEnv

// jobsUID is the user `jobs` lists by default (flux jobs: the caller).
var jobsUID = func() uint32 { return uint32(os.Getuid()) }

const jobsUsage = `Usage:
  fluxstream jobs --db FILE [OPTIONS] [JOBID...]
  fluxstream jobs --db FILE info JOBID

List jobs from a job archive (the jobdb sink's database) with flux jobs'
conventions, also jobs Flux has purged. Without options: your pending and
running jobs, in flux jobs order (pending by priority, running by start,
inactive by end, newest first).

Options:
      --db FILE          job archive (default $FLUXSTREAM_JOBDB)
  -a                     jobs in every state (pending, running, inactive)
  -A                     jobs of every user
  -u, --user USER        jobs of USER (name or uid; "all" for every user)
  -f, --filter LIST      states or results, comma-separated: depend, priority,
                         sched, run, cleanup, inactive, pending, running, active,
                         completed, failed, canceled, timeout
      --since WHEN       inactive jobs that ended after WHEN (implies -a unless
                         --filter is given); WHEN is a time (2026-11-23,
                         "2026-11-23 07:30", RFC 3339, epoch seconds) or an
                         offset from now (-6h, -2d, -30m)
      --until WHEN       inactive jobs that ended by WHEN, active ones submitted
                         by WHEN
  -q, --queue LIST       jobs in these queues (comma-separated)
      --name NAME        jobs named NAME
      --node HOST        jobs that ran on HOST (the hosts of their nodelist)
  -c, --count N          at most N jobs (default 1000; 0 for all)
  -o, --format FORMAT    a named format (default, long, deps, endreason) or a
                         format string of flux jobs fields; "-o help" lists both
  -n, --no-header        no heading line (and no truncation warning)
      --json             {"jobs": [...]}: the objects of flux jobs --json
      --stats            counts of the archive before the list
`

type jobsOpts struct {
	db                   string
	all, allUsers        bool
	user                 string
	userSet              bool
	filters, queues      []string
	since, until         string
	name, node           string
	count                int
	format               string
	noHeader, json, stat bool
}

func newJobsCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "jobs --db FILE [OPTIONS] [JOBID...] | jobs --db FILE info JOBID",
		Short: "List archived jobs (jobdb sink) the way flux jobs does, purged ones too",
		// Our own flags: -c is the count here (flux jobs' -c), not the
		// global config flag.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runJobs(g, args)
		},
	}
}

func runJobs(g *globalFlags, args []string) error {
	var o jobsOpts
	fs := pflag.NewFlagSet("jobs", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.StringVar(&o.db, "db", os.Getenv("FLUXSTREAM_JOBDB"), "")
	fs.BoolVarP(&o.all, "all", "a", false, "")
	fs.BoolVarP(&o.allUsers, "all-users", "A", false, "")
	fs.StringVarP(&o.user, "user", "u", "", "")
	fs.StringSliceVarP(&o.filters, "filter", "f", nil, "")
	fs.StringVar(&o.since, "since", "", "")
	fs.StringVar(&o.until, "until", "", "")
	fs.StringSliceVarP(&o.queues, "queue", "q", nil, "")
	fs.StringVar(&o.name, "name", "", "")
	fs.StringVar(&o.node, "node", "", "")
	fs.IntVarP(&o.count, "count", "c", 1000, "")
	fs.StringVarP(&o.format, "format", "o", "default", "")
	fs.BoolVarP(&o.noHeader, "no-header", "n", false, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.BoolVar(&o.stat, "stats", false, "")
	help := fs.BoolP("help", "h", false, "")
	var ignored string
	fs.StringVar(&ignored, "config", "", "") // global flags, no meaning here
	fs.StringVar(&ignored, "log-level", "", "")
	if err := fs.Parse(args); err != nil {
		return configError(fmt.Errorf("jobs: %v\n\n%s", err, jobsUsage))
	}
	if *help {
		fmt.Fprint(g.stdout, jobsUsage)
		return nil
	}
	o.userSet = fs.Changed("user")
	if o.format == "help" {
		fmt.Fprintln(g.stdout, "Named formats (-o NAME):")
		for _, n := range jobsfmt.FormatNames {
			fmt.Fprintf(g.stdout, "  %-10s %s\n", n, jobsfmt.Formats[n])
		}
		fmt.Fprintln(g.stdout, "\nFields:\n  "+strings.Join(jobsfmt.FieldNames(), " "))
		fmt.Fprintln(g.stdout, "  and annotations.KEY..., sched.KEY..., user.KEY...")
		return nil
	}
	if o.db == "" {
		return configError(errors.New("jobs: no archive: pass --db FILE (the path of a jobdb sink)"))
	}
	if o.json && o.stat {
		return configError(errors.New("jobs: --json incompatible with --stats"))
	}
	pos := fs.Args()
	ctx := context.Background()
	if _, err := os.Stat(o.db); err != nil {
		return &exitError{exitFail, fmt.Errorf("jobs: %v", err)}
	}
	db, err := jobdb.Open(ctx, o.db, jobdb.Options{ReadOnly: true})
	if err != nil {
		return &exitError{exitFail, fmt.Errorf("jobs: %v", err)}
	}
	defer db.Close()
	env := jobsEnv()
	if len(pos) > 0 && pos[0] == "info" {
		if len(pos) != 2 {
			return configError(errors.New("jobs info: want one JOBID"))
		}
		return jobsInfo(ctx, g, db, pos[1], &env)
	}
	format, err := jobsfmt.Parse(o.format)
	if err != nil {
		return configError(err)
	}
	if o.stat {
		st, err := db.Stats(ctx, splitList(o.queues))
		if err != nil {
			return &exitError{exitFail, err}
		}
		fmt.Fprintf(g.stdout, "%d running, %d completed, %d failed, %d pending, %d inactive purged\n",
			st.Running, st.Successful, st.Failed, st.Pending, st.Purged)
	}
	var jobs []jobdb.Job
	truncated := false
	if len(pos) > 0 {
		if fs.NFlag() > 1 && !o.json {
			fmt.Fprintln(g.stderr, "flux-jobs: WARNING: Filtering options ignored with jobid list")
		}
		for _, s := range pos {
			id, err := jobdb.ParseJobID(s)
			if err != nil {
				return configError(fmt.Errorf("jobs: %v", err))
			}
			es, err := db.Lookup(ctx, id)
			if err != nil {
				return &exitError{exitFail, err}
			}
			if len(es) == 0 {
				fmt.Fprintf(g.stderr, "%s: job not found in the archive\n", s)
			}
			for i := len(es) - 1; i >= 0; i-- { // newest incarnation first
				jobs = append(jobs, es[i].Job)
			}
		}
		if len(jobs) == 0 {
			return &exitError{exitFail, errors.New("jobs: no such job")}
		}
	} else {
		f, err := jobsFilter(ctx, g, db, &o, env.Now)
		if err != nil {
			return err
		}
		if jobs, truncated, err = db.Query(ctx, f); err != nil {
			return &exitError{exitFail, err}
		}
	}
	infos := make([]*jobsfmt.Info, len(jobs))
	for i := range jobs {
		infos[i] = jobsfmt.NewInfo(&jobs[i], &env)
	}
	if o.json {
		if len(pos) == 1 && len(infos) >= 1 {
			fmt.Fprintln(g.stdout, jobsfmt.JSONOne(infos[0]))
		} else {
			fmt.Fprintln(g.stdout, jobsfmt.JSON(infos))
		}
	} else if err := format.Print(infos, o.noHeader, func(l string) { fmt.Fprintln(g.stdout, l) }); err != nil {
		return configError(err)
	}
	if truncated && !o.noHeader && !o.json {
		fmt.Fprintf(g.stderr, "warning: output truncated at %d jobs.\n", o.count)
		fmt.Fprintln(g.stderr, "Use --count to increase returned results or use filters to alter results.")
	}
	return nil
}

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// jobsFilter turns the options into a query, with flux jobs' rules.
func jobsFilter(ctx context.Context, g *globalFlags, db *jobdb.DB, o *jobsOpts, now time.Time) (jobdb.Filter, error) {
	f := jobdb.Filter{Count: o.count, Queues: splitList(o.queues), Name: o.name, Node: o.node}
	if o.count < 0 {
		return f, configError(errors.New("jobs: --count must not be negative"))
	}
	for _, name := range splitList(o.filters) {
		if err := jobdb.ParseFilter(name, &f.States, &f.Results); err != nil {
			return f, configError(fmt.Errorf("jobs: %v", err))
		}
	}
	filtered := f.States != 0 || f.Results != 0
	if o.since != "" {
		t, err := parseWhen(o.since, now)
		if err != nil {
			return f, configError(fmt.Errorf("jobs: --since: %v", err))
		}
		if t > float64(now.UnixNano())/1e9 {
			return f, configError(fmt.Errorf("jobs: --since=%s appears to be in the future", o.since))
		}
		f.Since = t
		if !filtered {
			o.all = true // --since implies -a unless a filter is set
		}
	}
	if o.until != "" {
		t, err := parseWhen(o.until, now)
		if err != nil {
			return f, configError(fmt.Errorf("jobs: --until: %v", err))
		}
		f.Until = t
	}
	if o.all {
		if filtered {
			fmt.Fprintln(g.stderr, "flux-jobs: WARNING: Both -a and --filter specified, ignoring -a")
		} else {
			f.States = jobdb.StatePending | jobdb.StateRunning | jobdb.StateInactive
		}
	}
	if f.States == 0 && f.Results == 0 {
		f.States = jobdb.StatePending | jobdb.StateRunning
	}
	switch {
	case o.allUsers && !o.userSet, o.user == "all":
	case o.userSet:
		uid, err := resolveUser(ctx, db, o.user)
		if err != nil {
			return f, configError(fmt.Errorf("jobs: %v", err))
		}
		f.UserID = &uid
	default:
		uid := jobsUID()
		f.UserID = &uid
	}
	return f, nil
}

// resolveUser reads a user name or uid: NSS first, then the names the
// archive recorded (users may be gone from NSS), then a number.
func resolveUser(ctx context.Context, db *jobdb.DB, s string) (uint32, error) {
	if u, err := user.Lookup(s); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			return uint32(n), nil
		}
	}
	if uid, ok, err := db.UserID(ctx, s); err != nil {
		return 0, err
	} else if ok {
		return uid, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("Invalid user %s specified", s)
}

// parseWhen reads a time as flux's parse_datetime does for the forms
// that need no natural-language parser: "now", +/-FSD offsets, epoch
// seconds, and absolute dates and times (local time unless a zone is
// given).
func parseWhen(s string, now time.Time) (float64, error) {
	nowF := float64(now.UnixNano()) / 1e9
	switch {
	case s == "now":
		return nowF, nil
	case strings.HasPrefix(s, "+"), strings.HasPrefix(s, "-"):
		d, err := parseFSD(s[1:])
		if err != nil {
			return 0, err
		}
		if s[0] == '-' {
			d = -d
		}
		return nowF + d, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return f, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		var t time.Time
		var err error
		if layout == time.RFC3339Nano {
			t, err = time.Parse(layout, s)
		} else {
			t, err = time.ParseInLocation(layout, s, now.Location())
		}
		if err == nil {
			return float64(t.UnixNano()) / 1e9, nil
		}
	}
	return 0, fmt.Errorf("Invalid datetime: %q", s)
}

// parseFSD reads a Flux Standard Duration (RFC 23): a number with an
// optional unit ms, s, m, h or d.
func parseFSD(s string) (float64, error) {
	mult := 1.0
	num := s
	switch {
	case strings.HasSuffix(s, "ms"):
		mult, num = 1e-3, s[:len(s)-2]
	case strings.HasSuffix(s, "s"):
		num = s[:len(s)-1]
	case strings.HasSuffix(s, "m"):
		mult, num = 60, s[:len(s)-1]
	case strings.HasSuffix(s, "h"):
		mult, num = 3600, s[:len(s)-1]
	case strings.HasSuffix(s, "d"):
		mult, num = 86400, s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) {
		return 0, fmt.Errorf("invalid Flux standard duration %q", s)
	}
	return f * mult, nil
}

// jobsInfo prints every archived incarnation of a job: the snapshot, the
// eventlog, the jobspec and R.
func jobsInfo(ctx context.Context, g *globalFlags, db *jobdb.DB, s string, env *jobsfmt.Env) error {
	id, err := jobdb.ParseJobID(s)
	if err != nil {
		return configError(fmt.Errorf("jobs info: %v", err))
	}
	es, err := db.Lookup(ctx, id)
	if err != nil {
		return &exitError{exitFail, err}
	}
	if len(es) == 0 {
		return &exitError{exitFail, fmt.Errorf("jobs info: %s: job not found in the archive", s)}
	}
	w := g.stdout
	for i, e := range es {
		if i > 0 {
			fmt.Fprintln(w)
		}
		purged := ""
		if e.Purged != 0 {
			purged = fmt.Sprintf(", purged at %s (%s)", strconv.FormatFloat(e.Purged, 'f', -1, 64), e.PurgeReason)
		}
		fmt.Fprintf(w, "job %s%s (id %d, t_submit %s%s)\n", env.F58Prefix, strings.TrimPrefix(e.JobID, "f"), e.ID,
			strconv.FormatFloat(e.TSubmit, 'f', -1, 64), purged)
		snap, _ := json.Marshal(&e.Job.Job)
		fmt.Fprintf(w, "snapshot (at %s %s):\n%s\n", e.EventName, strconv.FormatFloat(e.EventTime, 'f', -1, 64), snap)
		fmt.Fprintln(w, "eventlog:")
		for _, ev := range e.Eventlog {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "%s\n", b)
		}
		for _, part := range []struct {
			name string
			raw  json.RawMessage
		}{{"jobspec", e.Jobspec}, {"R", e.R}} {
			if len(part.raw) == 0 {
				fmt.Fprintf(w, "%s: none archived\n", part.name)
				continue
			}
			fmt.Fprintf(w, "%s:\n%s\n", part.name, part.raw)
		}
	}
	return nil
}
