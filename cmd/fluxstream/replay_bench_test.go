package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReplayFile is replay -> file with the defaults (disk spool,
// fsync batch, checkpoint) on the 2,000-job bulk journal (22,000 events),
// in-process: for profiles of the whole pipeline (go test -cpuprofile).
// bench/ measures whole processes on larger journals.
func BenchmarkReplayFile(b *testing.B) {
	journal, _ := filepath.Abs(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	for _, buffer := range []string{"disk", "memory"} {
		b.Run(buffer, func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				cfg := filepath.Join(dir, "config.yaml")
				os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir: %[1]s/state
sources:
  journal: {type: replay, path: %[2]s, user_lookup: none}
sinks:
  out: {type: file, inputs: [journal], path: %[1]s/out.jsonl, buffer: {type: %[3]s}}
`, dir, journal, buffer)), 0o600)
				if code := run([]string{"run", "-c", cfg, "--log-level", "error"}, io.Discard, io.Discard); code != 0 {
					b.Fatalf("exit %d", code)
				}
			}
			b.ReportMetric(float64(22000*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
