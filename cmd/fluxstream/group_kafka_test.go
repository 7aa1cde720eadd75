package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
)

// groupLines reads a file sink's output in order: record ids and the
// records' keys (job ids). A last line cut by a kill is skipped.
func groupLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r struct{ ID string }
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.ID != "" {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// Three fluxstream processes consume a 12-partition topic in one group,
// each into its own file. The first half of the records is consumed, one
// process is killed with SIGKILL, a fourth joins, the second half is
// produced: the union of the files holds every record, each job's events
// keep their order within every file, and a record comes twice only when
// its job's partition changed hands (what was in flight then).
func TestKafkaGroupKill9(t *testing.T) {
	a := kafkatest.SharedApache(t)
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 12, nil)
	dir := t.TempDir()

	// The records the flux source emits for the bulk journal (the replay
	// source's, which are the same), as the kafka sink writes them.
	want := filepath.Join(dir, "want.jsonl")
	cfg := writeFile(t, dir, "produce.yaml", fmt.Sprintf(`
data_dir: %s/produce
cluster: test
sources:
  journal: {type: replay, path: %s/journal-bulk2000-live.jsonl.gz, user_lookup: none}
sinks:
  want: {type: file, inputs: [journal], path: %s}
`, dir, testdata, want))
	if code, _, errOut := runCLI(t, "run", "-c", cfg); code != 0 {
		t.Fatalf("produce run: %d\n%s", code, errOut)
	}
	f, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*kgo.Record
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		var r struct {
			ID  string
			Job struct{ ID uint64 }
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%d", r.Job.ID), Value: []byte(line)})
		order = append(order, r.ID)
	}
	pos := map[string]int{}
	for i, id := range order {
		pos[id] = i
	}
	half := len(msgs) / 2
	cl := a.Client(t)
	ctx := context.Background()
	produceMsgs := func(ms []*kgo.Record) {
		if err := cl.ProduceSync(ctx, ms...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	group := topic + "-g"
	type worker struct {
		out  string
		proc *process
	}
	var workers []*worker
	startWorker := func(i int) *worker {
		out := filepath.Join(dir, fmt.Sprintf("out%d.jsonl", i))
		cfg := writeFile(t, dir, fmt.Sprintf("worker%d.yaml", i), fmt.Sprintf(`
data_dir: %s/worker%d
shutdown_timeout: 5s
sources:
  kafka:
    type: kafka
    brokers: [%s]
    topics: [%s]
    group: %s
    session_timeout: 2s
    heartbeat_interval: 200ms
    rebalance_timeout: 10s
    commit_interval: 100ms
    max_batch: 200
sinks:
  out: {type: file, inputs: [kafka], path: %s}
`, dir, i, strings.Join(a.Addrs(), ", "), topic, group, out))
		cmd := fluxstreamCmd(t, dir, "run", "-c", cfg)
		log := &coretest.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		w := &worker{out: out, proc: &process{t: t, cmd: cmd, log: log}}
		workers = append(workers, w)
		return w
	}
	union := func() map[string]int {
		n := map[string]int{}
		for _, w := range workers {
			for _, id := range groupLines(t, w.out) {
				n[id]++
			}
		}
		return n
	}
	waitFor := func(what string, ids []string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			u := union()
			missing := 0
			for _, id := range ids {
				if u[id] == 0 {
					missing++
				}
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				for i, w := range workers {
					t.Logf("worker %d log:\n%s", i, w.proc.log)
				}
				t.Fatalf("%s: %d of %d records missing after 3 minutes", what, missing, len(ids))
			}
			time.Sleep(50 * time.Millisecond) // polling the files' state
		}
	}
	for i := 0; i < 3; i++ {
		startWorker(i)
	}
	// The first half goes out once all three share the partitions: before,
	// one worker that joined late under load found nothing left to take.
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		described, err := adm.DescribeGroups(ctx, group)
		g := described[group]
		spread := err == nil && g.State == "Stable" && len(g.Members) == 3
		for _, m := range g.Members {
			c, ok := m.Assigned.AsConsumer()
			spread = spread && ok && len(c.Topics) == 1 && len(c.Topics[0].Partitions) > 0
		}
		if spread {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group never spread the partitions over 3 members: %+v (%v)", g, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the group's state
	}
	produceMsgs(msgs[:half])
	waitFor("first half", order[:half])
	// Each of the three has partitions (cooperative-sticky spreads 12
	// over 3); the one killed had records of its own.
	for i, w := range workers {
		if len(groupLines(t, w.out)) == 0 {
			t.Fatalf("worker %d consumed nothing of the first half", i)
		}
	}
	killed := workers[1]
	killed.proc.cmd.Process.Signal(syscall.SIGKILL)
	killed.proc.cmd.Wait()
	startWorker(3)
	produceMsgs(msgs[half:])
	waitFor("everything", order)

	// Every offset committed, then the survivors stop cleanly.
	deadline = time.Now().Add(time.Minute)
	for {
		ends, err1 := adm.ListEndOffsets(ctx, topic)
		com, err2 := adm.FetchOffsets(ctx, group)
		ok := err1 == nil && err2 == nil
		if ok {
			ends.Each(func(e kadm.ListedOffset) {
				c, found := com.Lookup(topic, e.Partition)
				ok = ok && found && c.At == e.Offset
			})
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("offsets not all committed: %v vs %v", com, ends)
		}
		time.Sleep(50 * time.Millisecond) // polling the group's state
	}
	for i, w := range workers {
		if w == killed {
			continue
		}
		w.proc.cmd.Process.Signal(syscall.SIGTERM)
		if err := w.proc.cmd.Wait(); err != nil {
			t.Errorf("worker %d: exit %v after SIGTERM\n%s", i, err, w.proc.log)
		}
	}

	// Per job, order holds in every file (first occurrences); a
	// duplicate's job is in more than one file (its partition moved).
	filesOfJob := map[string]map[int]bool{}
	for i, w := range workers {
		ids := groupLines(t, w.out)
		for _, id := range ids {
			if _, ok := pos[id]; !ok {
				t.Fatalf("worker %d wrote %s, which was never produced", i, id)
			}
			job, _, _ := strings.Cut(id, ":")
			if filesOfJob[job] == nil {
				filesOfJob[job] = map[int]bool{}
			}
			filesOfJob[job][i] = true
		}
		checkFileOrder(t, i, ids, pos)
	}
	u := union()
	dups := 0
	for _, id := range order {
		if u[id] == 0 {
			t.Errorf("%s missing", id)
		}
		if u[id] > 1 {
			dups += u[id] - 1
			job, _, _ := strings.Cut(id, ":")
			if len(filesOfJob[job]) < 2 {
				t.Errorf("%s came %d times, but its job stayed with one worker", id, u[id])
			}
		}
	}
	t.Logf("%d records over %d workers (one kill -9, one added): %d duplicates; per worker %d %d %d %d",
		len(order), len(workers), dups, len(groupLines(t, workers[0].out)), len(groupLines(t, workers[1].out)),
		len(groupLines(t, workers[2].out)), len(groupLines(t, workers[3].out)))
}

// checkFileOrder: within one output, each job's records, duplicates set
// aside, come in journal order.
func checkFileOrder(t *testing.T, worker int, ids []string, pos map[string]int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		job, _, _ := strings.Cut(id, ":")
		if l, ok := last[job]; ok && pos[id] < l {
			t.Errorf("worker %d: job %s: %s after a later event", worker, job, id)
		}
		last[job] = pos[id]
	}
}
