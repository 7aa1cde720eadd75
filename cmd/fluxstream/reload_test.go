package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

// waitLog polls the process log until it holds want n times.
func (r *deliveryRig) waitLog(want string, n int, d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for strings.Count(r.proc.log.String(), want) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("no %q (x%d) in the log within %s:\n%s", want, n, d, r.proc.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIGHUP with a sink added: the running sink loses and repeats nothing
// across the restart, the new sink gets every event from the reload on
// and none from before, and a broken config on a later SIGHUP is refused
// while the pipeline goes on.
func TestSIGHUPAddsSink(t *testing.T) {
	r := newDeliveryRig(t, "")
	a := filepath.Join(r.dir, "a.jsonl")
	b := filepath.Join(r.dir, "b.jsonl")
	sinkA := fmt.Sprintf(`
  a:
    type: file
    inputs: [flux]
    path: %s
`, a)
	sinkB := fmt.Sprintf(`
  b:
    type: file
    inputs: [flux]
    path: %s
`, b)
	base := string(mustRead(t, r.config))
	r.config = writeFile(t, r.dir, "config.yaml", base+sinkA)
	purgeAt := r.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)
	k1 := purgeAt / 2

	r.start()
	r.stepTo(k1, 0)
	before := r.backlogEvents(k1)
	r.waitFor(a, before, 20*time.Second)

	writeFile(t, r.dir, "config.yaml", base+sinkA+sinkB)
	r.proc.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog("config reloaded; pipeline restarted", 1, 20*time.Second)

	r.stepTo(purgeAt, 0)
	upToPurge := r.backlogEvents(purgeAt)
	after := map[string]bool{}
	for id := range upToPurge {
		if !before[id] {
			after[id] = true
		}
	}
	if len(after) == 0 {
		t.Fatal("the scenario has no events between the reload and the purge")
	}
	r.waitFor(a, upToPurge, 20*time.Second)
	r.waitFor(b, after, 20*time.Second)

	// A config that does not load: refused, the pipeline goes on.
	writeFile(t, r.dir, "config.yaml", base+sinkA+sinkB+"  c: {type: nosuchsink, inputs: [flux]}\n")
	r.proc.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog("reload refused; the running config stays in effect", 1, 20*time.Second)
	if !strings.Contains(r.proc.log.String(), "nosuchsink") {
		t.Errorf("the refusal does not say what is wrong:\n%s", r.proc.log)
	}
	// What a running process cannot change: refused too.
	writeFile(t, r.dir, "config.yaml", "http: {listen: \"127.0.0.1:0\"}\n"+base+sinkA+sinkB)
	r.proc.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog("reload refused; the running config stays in effect", 2, 20*time.Second)
	if !strings.Contains(r.proc.log.String(), "http changed") {
		t.Errorf("the refusal does not name the http change:\n%s", r.proc.log)
	}
	r.stepTo(r.in.Len(), 0)
	committed, _ := r.expected()
	r.waitFor(a, committed, 20*time.Second)
	r.stop()

	gotA, _ := r.readOutput(a)
	for id, n := range gotA {
		if n != 1 {
			t.Errorf("sink a has %s %d times across the reload", id, n)
		}
	}
	gotB, _ := r.readOutput(b)
	for id := range gotB {
		if before[id] {
			t.Errorf("the added sink got %s, delivered before it existed", id)
		}
	}
	if strings.Count(r.proc.log.String(), "config reloaded") != 1 {
		t.Errorf("want exactly one reload in the log:\n%s", r.proc.log)
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatal(err)
	}
}
