package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/jobsfmt"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
)

// The fixed environment of the jobs goldens: a clock a minute after the
// scenario, UTC, no NSS lookups (uid 6001 prints as a number), ƒ ids,
// and the fixture's user as the caller.
func fixJobsEnv(t *testing.T) {
	oldEnv, oldUID := jobsEnv, jobsUID
	jobsEnv = func() jobsfmt.Env {
		return jobsfmt.Env{Now: time.Unix(1795394600, 0), Location: time.UTC, F58Prefix: "ƒ"}
	}
	jobsUID = func() uint32 { return 6001 }
	t.Cleanup(func() { jobsEnv, jobsUID = oldEnv, oldUID })
}

// jobsArchive builds an archive with `fluxstream run` of a replay source
// into a jobdb sink.
func jobsArchive(t *testing.T, name string, journals ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	db := filepath.Join(dir, "jobs.db")
	cfg := writeFile(t, mkdir(t, dir), "config.yaml", fmt.Sprintf(`
data_dir: %s/state
cluster: test
sources:
  src:
    type: replay
    path: [%s]
    user_lookup: none
sinks:
  db:
    type: jobdb
    inputs: [src]
    path: %s
    synchronous: normal
`, dir, strings.Join(journals, ", "), db))
	if code, _, errOut := runCLI(t, "run", "-c", cfg); code != 0 {
		t.Fatalf("run: %d %s", code, errOut)
	}
	return db
}

func mkdir(t *testing.T, d string) string {
	t.Helper()
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// headJournal writes the first n lines of the live scenario: jobs caught
// pending and running.
func headJournal(t *testing.T, n int) string {
	t.Helper()
	f, err := os.Open(filepath.Join(testdata, "journal-scenario-live-full.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for i := 0; i < n && sc.Scan(); i++ {
		b.WriteString(sc.Text() + "\n")
	}
	return writeFile(t, t.TempDir(), "head.jsonl", b.String())
}

func scenarioArchive(t *testing.T) string { return jobsArchive(t, "scenario", "embedded:scenario") }

// Each output format on the final scenario (every job inactive, 8 of
// them purged) and on two moments of the live scenario (jobs pending and
// running), against goldens; a few lines are checked by hand below.
func TestJobsGoldens(t *testing.T) {
	fixJobsEnv(t)
	scen := scenarioArchive(t)
	mid152 := jobsArchive(t, "mid152", headJournal(t, 152))
	mid250 := jobsArchive(t, "mid250", headJournal(t, 250))
	for _, tc := range []struct {
		golden string
		db     string
		args   []string
	}{
		{"scenario-default", scen, []string{"-a"}},
		{"scenario-long", scen, []string{"-a", "-o", "long"}},
		{"scenario-deps", scen, []string{"-a", "-o", "deps"}},
		{"scenario-endreason", scen, []string{"-a", "-o", "endreason"}},
		{"scenario-json", scen, []string{"-a", "--json"}},
		{"scenario-json-one", scen, []string{"--json", "fCHcyt63"}},
		{"scenario-stats", scen, []string{"-a", "--stats", "-c", "3"}},
		{"scenario-custom", scen, []string{"-a", "-o", "{id.f58plain:<10} {id.dec:>14} {t_submit!D} {runtime!H:>8} {returncode:>4} {success} {exception.type:<8} {sched.resource_summary:<12} ?:{bank} ?+:{project} {annotations}"}},
		{"scenario-node", scen, []string{"-a", "--node", "vm", "-f", "failed", "-o", "{id.f58:>12} {name:<12} {nodelist} {ranks} {purged!D}"}},
		{"scenario-info", scen, []string{"info", "fCHcyt63"}},
		{"mid152-default", mid152, nil},
		{"mid152-deps", mid152, []string{"-o", "deps"}},
		{"mid152-json", mid152, []string{"--json"}},
		{"mid250-default", mid250, nil},
		{"mid250-long", mid250, []string{"-o", "long"}},
		{"mid250-all", mid250, []string{"-a", "-c", "4"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"jobs", "--db", tc.db}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if errOut != "" {
				out += "--- stderr\n" + errOut
			}
			golden(t, "jobs/"+tc.golden+".golden", out)
		})
	}
}

// Lines checked by hand from the fixtures (testdata/flux/README.md and
// the journal), independently of the goldens.
func TestJobsHandChecked(t *testing.T) {
	fixJobsEnv(t)
	scen := scenarioArchive(t)
	mid152 := jobsArchive(t, "mid152", headJournal(t, 152))
	mid250 := jobsArchive(t, "mid250", headJournal(t, 250))
	lines := func(db string, args ...string) []string {
		t.Helper()
		code, out, errOut := runCLI(t, append([]string{"jobs", "--db", db}, args...)...)
		if code != 0 {
			t.Fatalf("jobs %v: exit %d: %s", args, code, errOut)
		}
		return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	}
	has := func(ls []string, want string) {
		t.Helper()
		for _, l := range ls {
			if l == want {
				return
			}
		}
		t.Errorf("no line %q in:\n%s", want, strings.Join(ls, "\n"))
	}
	def := lines(scen, "-a")
	// The queue column stays (every job has one); USER is 8 wide (the
	// spec), NAME truncated to 10 with a +.
	has(def, "       JOBID QUEUE    USER     NAME       ST NTASKS NNODES     TIME INFO")
	// -t 1s sleep 30: runtime t_cleanup - t_run = 1795394504.5644674 -
	// 1795394503.3063302 = 1.258s.
	has(def, "    ƒCHcyt63 batch    6001     tlimit     TO      1      1   1.258s vm")
	// Canceled while pending: no nodes, no runtime ("-" from the h
	// suffix), no nodelist (a trailing space, as flux prints it).
	has(def, "    ƒE2ntsUs batch    6001     cancel-pe+ CA      1      -        - ")
	// -n2 true: two tasks on one node.
	has(def, "    ƒBEm3N71 batch    6001     ok-true    CD      2      1   0.444s vm")
	// flux jobs order: inactive jobs by t_inactive, newest first.
	if !strings.HasPrefix(def[1], "    ƒm2qZqf5 ") || !strings.HasPrefix(def[len(def)-1], "    ƒAApqNHV ") || len(def) != 26 {
		t.Errorf("order: first %q last %q, %d lines", def[1], def[len(def)-1], len(def))
	}
	end := lines(scen, "-a", "-o", "endreason")
	// SIGKILL: the shell exits 128+9 = 137, inactive_reason strsignal(9).
	has(end, "    ƒFks4Pks batch    6001     sigkill     F  Nov23 00:41 Killed")
	has(end, "    ƒE2ntsUs batch    6001     cancel-pe+ CA  Nov23 00:41 Canceled: no longer needed")
	has(end, "    ƒC5Xjjnw batch    6001     fail3       F  Nov23 00:41 Exit 3")
	// The live scenario after 152 responses: `--begin-time=+3s` waits
	// in DEPEND (duration unset: "-"), the held job in SCHED.
	mid := lines(mid152)
	has(mid, "    ƒDC6eTdy batch    6001     held        S      1      -       5m held")
	// begin-time=T shows as begin@HH:MM:SS (same day as the clock).
	has(mid, "    ƒD3yCQ2K batch    6001     begin       D      1      -        - depends:begin@00:41:47")
	if len(mid) != 3 || !strings.Contains(mid[1], " held ") {
		t.Errorf("mid152: pending by priority (the held job's 0 before DEPEND's none): %q", mid)
	}
	// After 250: raise-nonfatal runs (runtime from the fixed clock) and
	// busy waits.
	m250 := lines(mid250)
	if len(m250) != 3 || !strings.Contains(m250[1], " S ") || !strings.Contains(m250[2], " R ") {
		t.Errorf("mid250: pending first, then running: %q", m250)
	}
}

// Filters and their combinations, on the final scenario.
func TestJobsFilters(t *testing.T) {
	fixJobsEnv(t)
	scen := scenarioArchive(t)
	all := "fm2qZqf5 fkvJ31Wo fNyuuPhy fNpQPzsh fNeyLZtT fNSaJaDD fNBoPjKu fGAP1127 fG3FNTPu fFPYcijH fFks4Pks fEoq942T fEbwkoz7 fD3yCQ2K fE2ntsUs fDC6eTdy fCipmfx3 fCHcyt63 fCXNbDhZ fC5Xjjnw fBpxgoAP fBUfYdQb fBEm3N71 fB3Zgnfy fAApqNHV"
	for _, tc := range []struct {
		name string
		uid  uint32
		args []string
		want string // job ids in order; "exit N" for an error
	}{
		{"default: pending and running only", 6001, nil, ""},
		{"-a: every state", 6001, []string{"-a"}, all},
		{"-a of another user", 0, []string{"-a"}, ""},
		{"-A -a", 0, []string{"-A", "-a"}, all},
		{"-A alone: active jobs of all users", 0, []string{"-A"}, ""},
		{"-u uid", 0, []string{"-a", "-u", "6001"}, all},
		{"-u all", 0, []string{"-a", "-u", "all"}, all},
		{"-u other", 6001, []string{"-a", "-u", "42"}, ""},
		{"-u unknown name", 6001, []string{"-a", "-u", "no-such-user-here"}, "exit 2"},
		{"-f failed", 6001, []string{"-f", "failed"}, "fNeyLZtT fNSaJaDD fFks4Pks fCXNbDhZ fC5Xjjnw"},
		{"--filter failed,timeout", 6001, []string{"--filter", "failed,timeout"}, "fNeyLZtT fNSaJaDD fFks4Pks fCHcyt63 fCXNbDhZ fC5Xjjnw"},
		{"-f canceled -f TIMEOUT", 6001, []string{"-f", "canceled", "-f", "TIMEOUT"}, "fkvJ31Wo fEoq942T fE2ntsUs fCHcyt63"},
		{"-f completed", 6001, []string{"-f", "completed", "-c", "3"}, "fm2qZqf5 fNyuuPhy fNpQPzsh"},
		{"-f inactive", 6001, []string{"-f", "inactive"}, all},
		{"-f pending,running", 6001, []string{"-f", "pending,running"}, ""},
		{"-f bogus", 6001, []string{"-f", "bogus"}, "exit 2"},
		{"-a -f failed ignores -a", 6001, []string{"-a", "-f", "timeout"}, "fCHcyt63"},
		{"-c 3", 6001, []string{"-a", "-c", "3"}, "fm2qZqf5 fkvJ31Wo fNyuuPhy"},
		{"-c 0: all", 6001, []string{"-a", "-c", "0"}, all},
		{"-q debug", 6001, []string{"-a", "-q", "debug"}, "fNyuuPhy fNBoPjKu"},
		{"-q batch,debug", 6001, []string{"-a", "--queue", "batch,debug", "-c", "2"}, "fm2qZqf5 fkvJ31Wo"},
		{"--name", 6001, []string{"-a", "--name", "tlimit"}, "fCHcyt63"},
		{"--name of a rejected submission", 6001, []string{"-a", "--name", "dep-bad"}, "fNeyLZtT"},
		{"--since epoch implies -a", 6001, []string{"--since", "1795394528"}, "fm2qZqf5 fkvJ31Wo fNyuuPhy fNpQPzsh"},
		{"--since -60s", 6001, []string{"--since", "-60s"}, "fm2qZqf5 fkvJ31Wo"},
		{"--since -6h", 6001, []string{"--since", "-6h", "-c", "0"}, all},
		{"--since absolute", 6001, []string{"--since", "2026-11-23T00:42:08Z"}, "fm2qZqf5 fkvJ31Wo fNyuuPhy fNpQPzsh"},
		{"--since with a filter", 6001, []string{"--since", "1795394520", "-f", "failed"}, "fNeyLZtT fNSaJaDD"},
		{"--since in the future", 6001, []string{"--since", "+1h"}, "exit 2"},
		{"--until", 6001, []string{"-a", "--until", "1795394502.5"}, "fBUfYdQb fBEm3N71 fB3Zgnfy fAApqNHV"},
		{"--since --until", 6001, []string{"--since", "1795394504", "--until", "1795394505"}, "fCipmfx3 fCHcyt63 fCXNbDhZ"},
		{"--node vm", 6001, []string{"-a", "--node", "vm", "-c", "2"}, "fm2qZqf5 fNyuuPhy"},
		{"--node vm -f failed", 6001, []string{"--node", "vm", "-f", "failed"}, "fNSaJaDD fFks4Pks fCXNbDhZ fC5Xjjnw"},
		{"--node other", 6001, []string{"-a", "--node", "vm1"}, ""},
		{"job ids", 6001, []string{"fCHcyt63", "429664501760"}, "fCHcyt63 fCHcyt63"},
		{"unknown job id", 6001, []string{"fCHcyt64"}, "exit 1"},
		{"bad format", 6001, []string{"-a", "-o", "{nosuchfield}"}, "exit 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobsUID = func() uint32 { return tc.uid }
			code, out, errOut := runCLI(t, append([]string{"jobs", "--db", scen, "-n", "-o", "{id.f58plain}"}, tc.args...)...)
			if tc.name == "bad format" {
				code, out, errOut = runCLI(t, append([]string{"jobs", "--db", scen}, tc.args...)...)
			}
			if strings.HasPrefix(tc.want, "exit ") {
				if fmt.Sprintf("exit %d", code) != tc.want {
					t.Fatalf("exit %d, want %s; %s%s", code, tc.want, out, errOut)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if got := strings.Join(strings.Fields(out), " "); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	// Truncation is reported on stderr, as flux jobs does.
	_, _, errOut := runCLI(t, "jobs", "--db", scen, "-a", "-c", "3")
	if !strings.Contains(errOut, "warning: output truncated at 3 jobs.") {
		t.Errorf("no truncation warning: %q", errOut)
	}
}

// kill -9 of `fluxstream run` while it archives 2000 jobs, twice, then a
// run to the end: the archive has every job with its final state, the
// same as a run that was never killed.
func TestJobsArchiveSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	journal, _ := filepath.Abs(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	mk := func(name string, pace string) (cfg, db string) {
		d := mkdir(t, filepath.Join(dir, name))
		db = filepath.Join(d, "jobs.db")
		cfg = writeFile(t, d, "config.yaml", fmt.Sprintf(`
data_dir: %s/state
cluster: test
shutdown_timeout: 2s
sources:
  src: {type: replay, path: [%s], user_lookup: none, %s}
sinks:
  db:
    type: jobdb
    inputs: [src]
    path: %s
`, d, journal, pace, db))
		return cfg, db
	}
	refCfg, refDB := mk("ref", "pace: max")
	if out, err := fluxstreamCmd(t, dir, "run", "-c", refCfg).CombinedOutput(); err != nil {
		t.Fatalf("reference run: %v\n%s", err, out)
	}
	// 178 s recorded, at 60x: about 3 s a run, time enough to kill it.
	cfg, path := mk("killed", "pace: recorded, speed: 60")
	count := func() int {
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			return 0
		}
		defer db.Close()
		var n int
		db.QueryRow("SELECT count(*) FROM jobs WHERE state = 'INACTIVE'").Scan(&n)
		return n
	}
	for _, at := range []int{300, 1200} {
		cmd := fluxstreamCmd(t, dir, "run", "-c", cfg)
		log := &coretest.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for count() < at {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("archive stuck at %d jobs; log:\n%s", count(), log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if n := count(); n >= 2000 {
			t.Fatalf("the run finished before the kill (%d jobs)", n)
		}
	}
	if out, err := fluxstreamCmd(t, dir, "run", "-c", cfg).CombinedOutput(); err != nil {
		t.Fatalf("last run: %v\n%s", err, out)
	}
	q := `SELECT id, t_submit, state, result, ev_time, ev_name, snapshot, json_array_length(d.eventlog), nodelist FROM jobs j LEFT JOIN job_data d ON d.pk = j.pk ORDER BY id, t_submit`
	read := func(p string) []string {
		db, err := jobdb.Open(context.Background(), p, jobdb.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rs, err := db.SQL().Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		var out []string
		for rs.Next() {
			var v [9]sql.NullString
			if err := rs.Scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]); err != nil {
				t.Fatal(err)
			}
			if v[2].String != "INACTIVE" || v[3].String != "COMPLETED" || v[5].String != "clean" || v[7].String != "11" || v[8].String != "vm" {
				t.Fatalf("%s: not its final state: %v", p, v)
			}
			out = append(out, fmt.Sprint(v))
		}
		return out
	}
	ref, got := read(refDB), read(path)
	if len(ref) != 2000 || len(got) != 2000 {
		t.Fatalf("%d jobs after kills, %d in the reference, want 2000", len(got), len(ref))
	}
	for i := range ref {
		if ref[i] != got[i] {
			t.Fatalf("job %d differs after kill -9:\n got %s\nwant %s", i, got[i], ref[i])
		}
	}
}
