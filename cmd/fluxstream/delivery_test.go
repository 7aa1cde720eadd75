package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

const testdata = "../../testdata/flux"

// process is one fluxstream process under test.
type process struct {
	t   *testing.T
	cmd *exec.Cmd
	log *coretest.SyncBuffer
}

type deliveryRig struct {
	t      *testing.T
	dir    string
	config string
	in     *fluxtest.Instance
	broker *fluxtest.Broker
	proc   *process
	rng    *rand.Rand
	kills  int
	// every process's log, for debugging
	allLogs bytes.Buffer
}

func newDeliveryRig(t *testing.T, sinks string) *deliveryRig {
	t.Helper()
	b, in := fluxtest.StartScenario(t, testdata)
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FXS_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("random kill points from seed %d (FXS_TEST_SEED=%d to repeat)", seed, seed)
	r := &deliveryRig{t: t, dir: dir, in: in, broker: b, rng: rand.New(rand.NewPCG(seed, 1))}
	r.config = writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %s/state
cluster: test
shutdown_timeout: 2s
sources:
  flux:
    type: flux
    uri: %s
    user_lookup: none
    reconnect: {initial_backoff: 20ms, max_backoff: 100ms}
sinks:
%s`, dir, b.URI(), sinks))
	return r
}

func (r *deliveryRig) start() {
	r.t.Helper()
	cmd := fluxstreamCmd(r.t, r.dir, "run", "-c", r.config)
	log := &coretest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.proc = &process{t: r.t, cmd: cmd, log: log}
	r.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
}

// kill9 kills the process with SIGKILL: no flush, no cleanup.
func (r *deliveryRig) kill9() {
	r.t.Helper()
	r.proc.cmd.Process.Signal(syscall.SIGKILL)
	r.proc.cmd.Wait()
	r.kills++
	fmt.Fprintf(&r.allLogs, "=== killed at instance position %d\n%s", r.in.Pos(), r.proc.log.String())
}

// stop ends the process with SIGTERM and expects a clean exit.
func (r *deliveryRig) stop() {
	r.t.Helper()
	// A SIGTERM in the first milliseconds, before the Go runtime has run
	// the package inits, is the default action's kill: wait until this
	// process is running its pipeline (1 failure in ~10 suite runs).
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(r.proc.log.String(), "connected; reading the journal backlog") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	r.proc.cmd.Process.Signal(syscall.SIGTERM)
	if err := r.proc.cmd.Wait(); err != nil {
		r.t.Fatalf("fluxstream exited with %v after SIGTERM; log:\n%s", err, r.proc.log)
	}
}

// stepTo advances the instance to position k, one item every 2ms, killing
// and restarting fluxstream at random moments on the way (kills times).
func (r *deliveryRig) stepTo(k, kills int) {
	killAt := map[int]bool{}
	from := r.in.Pos()
	for range kills {
		if k > from {
			killAt[from+r.rng.IntN(k-from)] = true
		}
	}
	for r.in.Pos() < k {
		if killAt[r.in.Pos()] {
			r.kill9()
			time.Sleep(time.Duration(r.rng.IntN(20)) * time.Millisecond)
			r.start()
		}
		r.in.Step(1)
		time.Sleep(2 * time.Millisecond)
	}
}

// randomKill kills and restarts after a random delay of up to d.
func (r *deliveryRig) randomKill(d time.Duration) {
	time.Sleep(time.Duration(r.rng.Int64N(int64(d))))
	r.kill9()
	r.start()
}

type line struct {
	Kind  string `json:"kind"`
	ID    string `json:"id"`
	Event *struct {
		Name      string  `json:"name"`
		Timestamp float64 `json:"timestamp"`
	} `json:"event"`
	Job struct {
		ID uint64 `json:"id"`
	} `json:"job"`
	Purge *struct {
		ID     uint64 `json:"id"`
		Reason string `json:"reason"`
	} `json:"purge"`
}

// readOutput parses a file sink's output: record id -> count, and the
// purged job ids.
func (r *deliveryRig) readOutput(path string) (map[string]int, map[uint64]bool) {
	r.t.Helper()
	ids, purged := map[string]int{}, map[uint64]bool{}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) || errors.Is(err, syscall.ENOTDIR) {
		return ids, purged
	}
	if err != nil {
		r.t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			// A kill mid-write may leave a torn last line, but only at the
			// very end: the next start cuts it before appending.
			if !bytes.HasSuffix(b, append(sc.Bytes(), '\n')) && !bytes.HasSuffix(b, sc.Bytes()) {
				r.t.Fatalf("%s: a broken line in the middle of the file: %q", filepath.Base(path), sc.Text())
			}
			continue
		}
		switch l.Kind {
		case "event":
			if want := core.EventID(l.Job.ID, l.Event.Name, l.Event.Timestamp); l.ID != want {
				r.t.Fatalf("record id %q does not match its event %q", l.ID, want)
			}
		case "purge":
			purged[l.Purge.ID] = true
		}
		ids[l.ID]++
	}
	return ids, purged
}

// committed is every event that reaches the KVS eventlog of its job, over
// the whole scenario (purged jobs included), and every event at all.
func (r *deliveryRig) expected() (committed, all map[string]bool) {
	committed, all = map[string]bool{}, map[string]bool{}
	purgeAt := r.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)
	for _, k := range []int{purgeAt, r.in.Len()} {
		for _, resp := range r.in.Backlog(k, true) {
			for _, e := range resp.Events {
				committed[core.EventID(uint64(resp.ID), e.Name, e.Timestamp)] = true
			}
		}
	}
	items, _ := fluxtest.LoadTimeline(filepath.Join(testdata, "journal-scenario-live-full.jsonl"))
	for _, it := range items {
		if it.Response != nil {
			for _, e := range it.Response.Events {
				all[core.EventID(uint64(it.Response.ID), e.Name, e.Timestamp)] = true
			}
		}
	}
	return committed, all
}

// waitFor polls until every committed event of the given set is in path.
func (r *deliveryRig) waitFor(path string, want map[string]bool, d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, _ := r.readOutput(path)
		missing := 0
		for id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s still misses %d of %d events; log of the last process:\n%s", path, missing, len(want), r.proc.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *deliveryRig) backlogEvents(k int) map[string]bool {
	out := map[string]bool{}
	for _, resp := range r.in.Backlog(k, true) {
		for _, e := range resp.Events {
			out[core.EventID(uint64(resp.ID), e.Name, e.Timestamp)] = true
		}
	}
	return out
}

// checkUnion asserts the sink holds every committed event of every job and
// nothing that was never in the journal, and reports duplicates.
func (r *deliveryRig) checkUnion(path string) {
	r.t.Helper()
	committed, all := r.expected()
	got, purged := r.readOutput(path)
	dups := 0
	for id, n := range got {
		if n > 1 {
			dups += n - 1
		}
		if !all[id] && !bytes.Contains([]byte(id), []byte(":purge")) { // purge ids: JOBID:purge:T_SUBMIT
			r.t.Errorf("%s holds %s, which the journal never had", filepath.Base(path), id)
		}
	}
	var missing []string
	for id := range committed {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		r.t.Errorf("%s lost %d committed events, e.g. %v", filepath.Base(path), len(missing), missing[:min(5, len(missing))])
	}
	if os.Getenv("FXS_TEST_DEBUG") != "" {
		b, _ := os.ReadFile(path)
		os.WriteFile("/tmp/fxs-debug-out.jsonl", b, 0o600)
		os.WriteFile("/tmp/fxs-debug-log.txt", r.allLogs.Bytes(), 0o600)
		exec.Command("rm", "-rf", "/tmp/fxs-debug-state").Run()
		exec.Command("cp", "-r", filepath.Join(r.dir, "state"), "/tmp/fxs-debug-state").Run()
	}
	for _, id := range []uint64{349066756096, 382369529856, 389717950464, 398844755968, 412165865472, 421728878592, 438690643968, 429664501760} {
		if !purged[id] {
			r.t.Errorf("%s has no purge record for job %d", filepath.Base(path), id)
		}
	}
	r.t.Logf("%s: %d committed events all present after %d kill -9; %d records in all, %d duplicates (same id: they overwrite)",
		filepath.Base(path), len(committed), r.kills, len(got), dups)
}

// Nothing committed is lost across kill -9 at random points: during the
// live scenario, while the restart reads the before-purge backlog, and
// right after the purge, when the restart reads the after-purge backlog.
func TestKill9NothingLost(t *testing.T) {
	out := ""
	r := newDeliveryRig(t, "")
	out = filepath.Join(r.dir, "out", "events.jsonl")
	r.config = writeFile(t, r.dir, "config.yaml", string(mustRead(t, r.config))+fmt.Sprintf(`
  archive:
    type: file
    inputs: [flux]
    path: %s
    # A long fsync interval widens the window in which a kill finds
    # records in the spool but not yet on disk: they must come again.
    buffer: {sync_interval: 400ms}
`, out))
	purgeAt := r.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)

	r.start()
	r.stepTo(purgeAt, 3) // the live scenario, three kills on the way
	r.randomKill(300 * time.Millisecond)
	// The restart reads the before-purge backlog (23 jobs).
	r.waitFor(out, r.backlogEvents(purgeAt), 20*time.Second)

	r.stepTo(purgeAt+1, 0) // the purge
	r.randomKill(100 * time.Millisecond)
	// The restart reads the after-purge backlog (15 jobs); then the rest
	// of the scenario, with two more kills.
	r.stepTo(r.in.Len(), 2)
	committed, _ := r.expected()
	r.waitFor(out, committed, 20*time.Second)
	r.stop()
	r.checkUnion(out)
}

// A sink that is down for the whole run of the purge still delivers the
// purged jobs afterwards: they were in its spool, because Flux no longer
// has them.
func TestDownSinkKeepsPurgedJobs(t *testing.T) {
	r := newDeliveryRig(t, "")
	up := filepath.Join(r.dir, "up", "events.jsonl")
	blocker := filepath.Join(r.dir, "nfs")
	os.WriteFile(blocker, []byte("mount point not there"), 0o600)
	down := filepath.Join(blocker, "events.jsonl")
	r.config = writeFile(t, r.dir, "config.yaml", string(mustRead(t, r.config))+fmt.Sprintf(`
  up:
    type: file
    inputs: [flux]
    path: %s
  down:
    type: file
    inputs: [flux]
    path: %s
    retry: {initial_backoff: 20ms, max_backoff: 100ms}
    buffer: {sync_interval: 100ms}
`, up, down))
	purgeAt := r.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)
	r.start()
	r.stepTo(purgeAt, 2) // up to the purge, with kills
	// Every job to be purged has finished and sits in both sinks' spools
	// (the up sink delivered it; the down sink's spool syncs within its
	// interval) before Flux purges it, as it would on any real instance.
	r.waitFor(up, r.backlogEvents(purgeAt), 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	r.stepTo(purgeAt+1, 0) // the purge, while the down sink is down
	r.randomKill(100 * time.Millisecond)
	r.stepTo(r.in.Len(), 1)
	committed, _ := r.expected()
	r.waitFor(up, committed, 20*time.Second)
	r.randomKill(100 * time.Millisecond) // the down sink's spool must survive this
	time.Sleep(200 * time.Millisecond)
	if got, _ := r.readOutput(down); len(got) != 0 {
		t.Fatalf("the down sink delivered %d records", len(got))
	}
	os.Remove(blocker) // the mount comes back
	r.waitFor(down, committed, 20*time.Second)
	r.stop()
	r.checkUnion(up)
	r.checkUnion(down)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
