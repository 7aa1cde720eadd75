package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/coretest"
)

// A jobspec any user may submit (65536 slots of one core, 65536 tasks per
// slot, per-resource core 65536) gives 2^32 tasks. Its records survive a sink outage and a
// restart: they wait in the spool and are delivered, every event, with
// the counts exact. (In the first milestone the spool refused to read
// them back and acknowledged them: lost for good.)
func TestExtremeJobspecSurvivesOutageAndRestart(t *testing.T) {
	dir := t.TempDir()
	journal, err := filepath.Abs(filepath.Join(testdata, "journal-extreme-ntasks.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "events.jsonl")
	cfg := writeFile(t, dir, "fluxstream.yaml", `
data_dir: `+filepath.Join(dir, "data")+`
shutdown_timeout: 1s
sources:
  journal: {type: replay, path: [`+journal+`], user_lookup: none}
sinks:
  file:
    type: file
    inputs: [journal]
    path: `+out+`
    mkdir: false
    retry: {initial_backoff: 10ms, max_backoff: 50ms}
`)
	// First run: the sink's directory is missing, so every write fails
	// and the records wait in the spool.
	p := fluxstreamCmd(t, dir, "run", "-c", cfg)
	log := &coretest.SyncBuffer{}
	p.Stdout, p.Stderr = log, log
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), "write failed; retrying") || !strings.Contains(log.String(), "source finished") {
		if time.Now().After(deadline) {
			p.Process.Kill()
			t.Fatalf("no write failure logged:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Process.Signal(syscall.SIGTERM)
	p.Wait()
	// Stopped by the shutdown timeout with records spooled: exit 3.
	if code := p.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("first run exited %d, want 3 (undelivered records wait):\n%s", code, log)
	}
	if !strings.Contains(log.String(), "records wait undelivered") {
		t.Fatalf("no word of the waiting records:\n%s", log)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s exists after the first run", out)
	}

	// Second run: the directory is there; the spool drains.
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, "run", "-c", cfg); code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s\nfirst run:\n%s", code, stdout, stderr, log)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			Event struct{ Name string }
			Job   struct {
				NTasks    int64 `json:"ntasks"`
				NCores    int64 `json:"ncores"`
				Requested struct {
					NSlots int64 `json:"nslots"`
					NTasks int64 `json:"ntasks"`
					NCores int64 `json:"ncores"`
				} `json:"requested"`
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		// The submit snapshot has no counts yet (job-list reads the
		// jobspec from DEPEND on); every later one has them exactly.
		q := r.Job.Requested
		if r.Event.Name != "submit" && (r.Job.NTasks != 1<<32 || q.NTasks != 1<<32 || q.NSlots != 1<<16 || q.NCores != 1<<16) {
			t.Fatalf("counts changed on the way: %s", sc.Bytes())
		}
		events[r.Event.Name] = true
	}
	if len(events) != 14 {
		t.Fatalf("delivered %d distinct events of 14: %v", len(events), events)
	}
}
