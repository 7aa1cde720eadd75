// Command jobdb-bench measures the jobdb sink and the `fluxstream jobs`
// queries on a generated archive: N jobs with unique ids (default 1M),
// written through the sink's batch path (jobdb.DB.Apply, what Sink.Write
// calls) in batches of the sink's default size, then the queries of
// `fluxstream jobs`, formatted as the command formats them.
//
//	go run ./bench/jobdb -jobs 1000000 -dir /tmp/jobdb-bench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/jobsfmt"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
)

var (
	njobs    = flag.Int("jobs", 1_000_000, "jobs to archive")
	perJob   = flag.Int("records", 1, "records per job: 1 (each job's final record, as a backlog ends) or 4 (submit, alloc, finish, clean, interleaved as a live stream)")
	batch    = flag.Int("batch", jobdb.DefaultBatch, "records per Write (default: what the sink asks the runtime for when batch.max_records is not set)")
	dir      = flag.String("dir", "", "directory of the database (default: a temporary one, removed)")
	sync     = flag.String("synchronous", "full", "full or normal")
	nodes    = flag.Int("nodes", 1000, "cluster nodes")
	users    = flag.Int("users", 200, "users")
	days     = flag.Float64("days", 30, "the jobs' submit times spread over this many days before now")
	repeats  = flag.Int("repeat", 5, "runs of each query")
	keepOpen = flag.Bool("skip-insert", false, "reuse an existing database in -dir")
	cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the insert")
	qprof    = flag.String("qprofile", "", "write a CPU profile of the queries")
	only     = flag.String("only", "", "run only the queries whose name contains this")
)

const nodeFmt = "node%04d"

func main() {
	flag.Parse()
	d := *dir
	if d == "" {
		var err error
		if d, err = os.MkdirTemp("", "jobdb-bench-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
	}
	path := filepath.Join(d, "jobs.db")
	ctx := context.Background()
	now := float64(time.Now().Unix())
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
	}
	if !*keepOpen {
		os.Remove(path)
		os.Remove(path + "-wal")
		os.Remove(path + "-shm")
		insert(ctx, path, now)
	}
	if *cpuprof != "" {
		pprof.StopCPUProfile()
	}
	if *qprof != "" {
		f, err := os.Create(*qprof)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	query(ctx, path, now)
}

type gen struct {
	rng     *rand.Rand
	jobspec json.RawMessage
}

func (g *gen) job(i int, now float64) (snap core.Job, evs []core.Event, R json.RawMessage) {
	r := g.rng
	id := uint64(1<<36) + uint64(i)*1024 // FLUID-like, unique and growing
	tsub := now - *days*86400*float64(*njobs-i)/float64(*njobs) - r.Float64()
	uid := uint32(1000 + r.IntN(*users))
	nn := 1 + r.IntN(4)
	first := r.IntN(*nodes - nn + 1)
	nodelist := fmt.Sprintf(nodeFmt, first)
	if nn > 1 {
		nodelist = fmt.Sprintf("node[%04d-%04d]", first, first+nn-1)
	}
	run := 1 + r.Float64()*3600
	tRun := tsub + r.Float64()*60
	tClean := tRun + run + 0.5
	result, ws, exc := "COMPLETED", 0, (*core.Exception)(nil)
	switch p := r.IntN(100); {
	case p < 8:
		result, ws = "FAILED", 1<<8
	case p < 12:
		result, exc = "CANCELED", &core.Exception{Occurred: true, Type: "cancel", Severity: 0}
	case p < 15:
		result, ws, exc = "TIMEOUT", 36352, &core.Exception{Occurred: true, Type: "timeout", Severity: 0, Note: "resource allocation expired"}
	}
	success := result == "COMPLETED"
	ncores := nn * 32
	ntasks := ncores
	prio := int64(16)
	dur := 7200.0
	queue := []string{"batch", "batch", "batch", "debug", "gpu"}[r.IntN(5)]
	snap = core.Job{ID: id, JobID: f58(id), UserID: uid, Username: fmt.Sprintf("user%d", uid), Urgency: 16, Priority: &prio,
		State: "INACTIVE", Result: result, Status: result, Name: []string{"lammps", "python3", "a.out", "flux-instance", "sim"}[r.IntN(5)],
		Cwd: "/p/lustre/user", Queue: queue, NTasks: &ntasks, NCores: &ncores, NNodes: &nn, Duration: &dur,
		Expiration: tRun + dur, Nodelist: nodelist, Ranks: fmt.Sprintf("[%d-%d]", first, first+nn-1),
		Success: &success, WaitStatus: &ws, Exception: exc, TSubmit: tsub, TDepend: tsub + 0.01, TPriority: tsub + 0.02,
		TSched: tsub + 0.03, TRun: tRun, TCleanup: tRun + run, TInactive: tClean, Runtime: run,
		Annotations: json.RawMessage(`{"sched":{"resource_summary":"rank[0-3]/core[0-31]"}}`)}
	for k, n := range []string{"submit", "validate", "depend", "priority", "alloc", "start", "finish", "release", "free", "clean"} {
		ts := []float64{tsub, tsub + 0.01, tsub + 0.02, tsub + 0.03, tRun, tRun + 0.1, tRun + run, tRun + run + 0.1, tRun + run + 0.2, tClean}[k]
		evs = append(evs, core.Event{Timestamp: ts, Name: n})
	}
	R = json.RawMessage(fmt.Sprintf(`{"version":1,"execution":{"R_lite":[{"rank":"%d-%d","children":{"core":"0-31"}}],"starttime":%v,"expiration":%v,"nodelist":["%s"]}}`,
		first, first+nn-1, tRun, tRun+dur, nodelist))
	return snap, evs, R
}

const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

func f58(id uint64) string {
	var b []byte
	for id > 0 {
		b = append(b, alphabet[id%58])
		id /= 58
	}
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return "f" + string(b)
}

// records yields the records of job i: its final one, or four along its
// life (submit with the jobspec, alloc with R, finish, clean).
func (g *gen) records(i int, now float64) []*core.Record {
	snap, evs, R := g.job(i, now)
	mk := func(e core.Event, j core.Job) *core.Record {
		return &core.Record{Kind: core.KindEvent, ID: core.EventID(j.ID, e.Name, e.Timestamp), Cluster: "bench", Event: &e, Job: &j}
	}
	if *perJob == 1 {
		r := mk(evs[len(evs)-1], snap)
		r.Jobspec, r.R, r.Eventlog = g.jobspec, R, evs
		return []*core.Record{r}
	}
	sub := snap
	sub.State, sub.Result, sub.Status, sub.Nodelist, sub.Ranks, sub.TRun, sub.TCleanup, sub.TInactive = "DEPEND", "", "DEPEND", "", "", 0, 0, 0
	sub.Success, sub.WaitStatus, sub.Exception = nil, nil, nil
	run := snap
	run.State, run.Result, run.Status, run.TCleanup, run.TInactive = "RUN", "", "RUN", 0, 0
	run.Success, run.WaitStatus, run.Exception = nil, nil, nil
	fin := snap
	fin.State, fin.Status, fin.TInactive = "CLEANUP", "CLEANUP", 0
	a, b, c, d := mk(evs[0], sub), mk(evs[4], run), mk(evs[6], fin), mk(evs[9], snap)
	a.Jobspec, b.R = g.jobspec, R
	return []*core.Record{a, b, c, d}
}

// stream generates the records of -jobs jobs and hands them to apply in
// batches of -batch, interleaving the records of overlapping jobs as a
// live stream would (a window of 250 jobs in flight, each one's records
// in order). It returns the number of records.
func stream(now float64, apply func([]*core.Record)) int {
	g := &gen{rng: rand.New(rand.NewPCG(1, 2)), jobspec: json.RawMessage(`{"resources":[{"type":"node","count":2,"with":[{"type":"slot","count":32,"with":[{"type":"core","count":1}],"label":"task"}]}],"tasks":[{"command":["lmp","-in","in.lj"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":7200.0,"cwd":"/p/lustre/user","queue":"batch","job":{"name":"lammps"},"shell":{"options":{"rlimit":{"cpu":-1,"fsize":-1,"data":-1,"stack":8388608,"core":0,"nofile":1048576,"as":-1}}}}},"version":1}`)}
	var pendingRecs [][]*core.Record
	var buf []*core.Record
	nrec := 0
	flush := func() {
		apply(buf)
		nrec += len(buf)
		buf = buf[:0]
	}
	window := 250
	if *perJob == 1 {
		window = 1
	}
	next := 0
	for next < *njobs || len(pendingRecs) > 0 {
		for len(pendingRecs) < window && next < *njobs {
			pendingRecs = append(pendingRecs, g.records(next, now))
			next++
		}
		k := 0
		if len(pendingRecs) > 1 {
			k = g.rng.IntN(len(pendingRecs))
		}
		buf = append(buf, pendingRecs[k][0])
		if pendingRecs[k] = pendingRecs[k][1:]; len(pendingRecs[k]) == 0 {
			pendingRecs = append(pendingRecs[:k], pendingRecs[k+1:]...)
		}
		if len(buf) == *batch {
			flush()
		}
	}
	if len(buf) > 0 {
		flush()
	}
	return nrec
}

func insert(ctx context.Context, path string, now float64) {
	db, err := jobdb.Open(ctx, path, jobdb.Options{Synchronous: *sync})
	if err != nil {
		log.Fatal(err)
	}
	// The generator alone first (same seed: the same records), so that
	// the sink's own share of the CPU time can be told.
	gcpu0 := cpuTime()
	stream(now, func([]*core.Record) {})
	genCPU := cpuTime() - gcpu0
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start, cpu0, w0 := time.Now(), cpuTime(), writtenBytes()
	nrec := stream(now, func(b []*core.Record) {
		if err := db.Apply(ctx, b); err != nil {
			log.Fatal(err)
		}
	})
	el, cpu := time.Since(start), cpuTime()-cpu0
	wrote := writtenBytes() - w0
	runtime.ReadMemStats(&ms1)
	fmt.Printf("insert: %d jobs, %d records in batches of %d (synchronous=%s): %.1fs, %.0f jobs/s, %.0f records/s\n",
		*njobs, nrec, *batch, *sync, el.Seconds(), float64(*njobs)/el.Seconds(), float64(nrec)/el.Seconds())
	fmt.Printf("insert CPU (user+sys, generating the records included): %.1fs, %.0f jobs per CPU-second, %.0f records per CPU-second\n",
		cpu.Seconds(), float64(*njobs)/cpu.Seconds(), float64(nrec)/cpu.Seconds())
	fmt.Printf("generating the records alone: %.1fs CPU; the sink alone (the difference): %.0f jobs per CPU-second\n",
		genCPU.Seconds(), float64(*njobs)/(cpu-genCPU).Seconds())
	fmt.Printf("insert wrote %.0f bytes/job (write syscalls: WAL, checkpoints); Go heap: %.1f allocations, %.0f bytes a job (generating the records included)\n",
		float64(wrote)/float64(*njobs), float64(ms1.Mallocs-ms0.Mallocs)/float64(*njobs), float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(*njobs))
	if _, err := db.SQL().ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		log.Fatal(err)
	}
	db.Close()
	st, _ := os.Stat(path)
	fmt.Printf("database: %.1f MiB (%.0f bytes/job)\n", float64(st.Size())/(1<<20), float64(st.Size())/float64(*njobs))
}

func query(ctx context.Context, path string, now float64) {
	db, err := jobdb.Open(ctx, path, jobdb.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	env := jobsfmt.Env{Now: time.Unix(int64(now), 0), Location: time.Local, F58Prefix: "ƒ"}
	format, _ := jobsfmt.Parse("default")
	u := uint32(1000 + *users/2)
	all := jobdb.StatePending | jobdb.StateRunning | jobdb.StateInactive
	host := fmt.Sprintf(nodeFmt, *nodes/2)
	for _, q := range []struct {
		name string
		f    jobdb.Filter
	}{
		{"jobs -a -c 100", jobdb.Filter{UserID: &u, States: all, Count: 100}},
		{"jobs -A -a -c 100", jobdb.Filter{States: all, Count: 100}},
		{"jobs -u USER --since -24h", jobdb.Filter{UserID: &u, States: all, Since: now - 86400, Count: 1000}},
		{"jobs -A --node HOST -a", jobdb.Filter{States: all, Node: host, Count: 1000}},
		{"jobs -A --node HOST -a -c 0", jobdb.Filter{States: all, Node: host}},
		{"jobs -A --filter failed", jobdb.Filter{Results: jobdb.ResultFailed, Count: 1000}},
		{"jobs -u USER --filter failed", jobdb.Filter{UserID: &u, Results: jobdb.ResultFailed, Count: 1000}},
	} {
		if !strings.Contains(q.name, *only) {
			continue
		}
		var times, cpus []time.Duration
		n := 0
		for range *repeats {
			t0, c0 := time.Now(), cpuTime()
			jobs, _, err := db.Query(ctx, q.f)
			if err != nil {
				log.Fatal(err)
			}
			infos := make([]*jobsfmt.Info, len(jobs))
			for i := range jobs {
				infos[i] = jobsfmt.NewInfo(&jobs[i], &env)
			}
			if err := format.Print(infos, false, func(s string) { io.WriteString(io.Discard, s) }); err != nil {
				log.Fatal(err)
			}
			times = append(times, time.Since(t0))
			cpus = append(cpus, cpuTime()-c0)
			n = len(jobs)
		}
		first, firstCPU := times[0], cpus[0]
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
		fmt.Printf("%-28s %5d jobs  wall: first %6.1f median %6.1f max %6.1f ms  CPU: first %6.1f median %6.1f max %6.1f ms\n", q.name, n,
			ms(first), ms(times[len(times)/2]), ms(times[len(times)-1]), ms(firstCPU), ms(cpus[len(cpus)/2]), ms(cpus[len(cpus)-1]))
	}
	fmt.Println("(each: the query and the default format, as `fluxstream jobs` runs them, without process start;", strings.TrimSpace(fmt.Sprintf("user uid %d, host %s)", u, host)))
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// cpuTime is the process's user+sys time: on a shared machine, wall time
// measures the neighbours too.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writtenBytes is what the process handed to write syscalls so far
// (/proc/self/io wchar; 0 where there is none).
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
