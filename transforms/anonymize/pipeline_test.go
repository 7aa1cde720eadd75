package anonymize_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/transformtest"
	"github.com/fluxstream/fluxstream/transforms/where"
)

// personal values of the scenario as the replay source yields them
// (user_lookup none: no user name; the unit tests cover one).
var scenarioPersonal = []string{`"/tmp/fx"`, "/tmp/fx", `"userid":6001`, "ok-hostname", "failprolog", "held-queue-change",
	"waits-for-resources", "raise-nonfatal", `"sleep 1; exit 1"`, `"exit 3"`, `"hostname"`, "waiting on admin", "volatile-value"}

func grepTree(t *testing.T, dir string, what string) (files int) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files++
		for _, v := range scenarioPersonal {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s %s holds %q", what, p, v)
			}
		}
		return nil
	})
	return files
}

// A real pipeline: replay -> anonymize -> (where that fails on most
// records: dead-letter file) and -> avro -> file sinks, one of which
// cannot write (its records stay in the disk spool). Nothing personal in
// the spool, the dead-letter file, the delivered files; the same config in
// dry-run prints nothing personal either.
func TestPipelineSpoolDeadLetterDryRun(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "anon.key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	data := filepath.Join(dir, "data")
	cfg := `data_dir: ` + data + `
sources:
  journal: {type: replay, path: ../../testdata/flux/journal-scenario-live-full.jsonl, user_lookup: none,
            include: {jobspec: always, R: always, eventlog: always}}
transforms:
  anon: {type: anonymize, inputs: [journal], key_file: ` + key + `}
  fails: {type: where, inputs: [anon], expr: 'int(event.context.urgency) > 100'}
  avro: {type: avro, inputs: [anon], encoding: single-object}
sinks:
  json: {type: file, inputs: [anon], path: ` + dir + `/out/records.jsonl}
  avrofile: {type: file, inputs: [anon], path: ` + dir + `/out/records.avro, format: avro}
  kafkalike: {type: file, inputs: [avro], path: ` + dir + `/out/encoded.jsonl}
  stuck: {type: file, inputs: [anon, fails], path: ` + dir + `/missing/dir/x.jsonl, mkdir: false}
`
	build := func() *core.Graph {
		loaded, err := core.LoadConfig(filepath.Join(dir, "p.yaml"), []byte(cfg), core.LoadOptions{Environ: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		g, err := core.Build(loaded, builtin.Registry())
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// The stuck sink never drains, so the run is stopped once the others
	// delivered everything and the dead-letter file is complete (polled:
	// no guess of how long that takes on a loaded machine).
	lines := func(p string) int {
		b, _ := os.ReadFile(p)
		return bytes.Count(b, []byte("\n"))
	}
	// What the failing where dead-letters: the records it errs on, found
	// by running it on them.
	fails := transformtest.Node[core.Transform](t, "fails", "expr: 'int(event.context.urgency) > 100'\n", where.New)
	wantDead := 0
	for _, r := range transformtest.Records(t, transformtest.Scenario, transformtest.IncludeDefault) {
		if _, err := fails.Process(context.Background(), r); err != nil {
			wantDead++
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- core.NewPipeline(build(), core.RunOptions{Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 500 * time.Millisecond}).Run(ctx)
	}()
	for lines(filepath.Join(dir, "out", "records.jsonl")) < 373 || lines(filepath.Join(dir, "out", "encoded.jsonl")) < 373 ||
		lines(filepath.Join(data, "deadletter", "fails.jsonl")) < wantDead {
		select {
		case err := <-done:
			t.Fatalf("the pipeline ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	<-done

	if n := grepTree(t, filepath.Join(data), "data dir (spools, dead letters, state)"); n == 0 {
		t.Fatal("no files in the data dir")
	}
	if n := lines(filepath.Join(data, "deadletter", "fails.jsonl")); n != wantDead || n < 100 {
		t.Fatalf("dead-letter file: %d lines, want %d", n, wantDead)
	}
	spooled := 0
	filepath.Walk(data, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, "stuck") {
			spooled += int(fi.Size())
		}
		return nil
	})
	if spooled < 10000 {
		t.Fatalf("the stuck sink's spool holds %d bytes", spooled)
	}
	if n := grepTree(t, filepath.Join(dir, "out"), "delivered file"); n != 3 {
		t.Fatalf("%d delivered files", n)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "out", "records.jsonl"))
	if c := bytes.Count(out, []byte("\n")); c != 373 {
		t.Fatalf("%d records delivered, want 373", c)
	}

	// dry-run: stdout and kafka sinks print what they would send.
	cfg = strings.Replace(cfg, "data_dir: "+data, "data_dir: "+filepath.Join(dir, "dry"), 1)
	cfg = cfg[:strings.Index(cfg, "sinks:")] + `sinks:
  print: {type: stdout, inputs: [anon, fails]}
  kafka: {type: kafka, inputs: [avro], brokers: [127.0.0.1:1], topic: flux-jobs}
`
	var buf bytes.Buffer
	if err := core.NewPipeline(build(), core.RunOptions{Logger: slog.New(slog.DiscardHandler), DryRun: true, DryRunOut: &buf}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "[kafka] topic=flux-jobs key=") || !strings.Contains(buf.String(), "[fails] error: record") || bytes.Count(buf.Bytes(), []byte("\n")) < 700 {
		t.Fatalf("dry-run output:\n%.2000s", buf.String())
	}
	for _, v := range scenarioPersonal {
		if strings.Contains(buf.String(), v) {
			t.Errorf("dry-run output holds %q", v)
		}
	}
}
