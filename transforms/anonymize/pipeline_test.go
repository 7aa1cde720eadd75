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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	core.NewPipeline(build(), core.RunOptions{Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 500 * time.Millisecond}).Run(ctx)

	if n := grepTree(t, filepath.Join(data), "data dir (spools, dead letters, state)"); n == 0 {
		t.Fatal("no files in the data dir")
	}
	dl, err := os.ReadFile(filepath.Join(data, "deadletter", "fails.jsonl"))
	if err != nil || bytes.Count(dl, []byte("\n")) < 100 {
		t.Fatalf("dead-letter file: %v, %d lines", err, bytes.Count(dl, []byte("\n")))
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
