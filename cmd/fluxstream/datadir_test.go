package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// Two configs without data_dir never share a checkpoint: the second
// delivers everything too. --fresh starts one over, keeping the old
// checkpoint aside.
func TestDefaultDataDirPerConfig(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("STATE_DIRECTORY", "")
	const config = `
sources:
  journal: {type: replay, path: embedded:scenario, user_lookup: none}
sinks:
  out: {type: file, inputs: [journal], path: OUT}
`
	var outs []string
	for _, site := range []string{"site-a", "site-b"} {
		dir := filepath.Join(t.TempDir(), site)
		os.MkdirAll(dir, 0o700)
		out := filepath.Join(dir, "events.jsonl")
		cfg := writeFile(t, dir, "config.yaml", strings.Replace(config, "OUT", out, 1))
		if code, _, stderr := runCLI(t, "run", "-c", cfg); code != 0 {
			t.Fatalf("%s: exit %d: %s", site, code, stderr)
		}
		outs = append(outs, out)
	}
	n := countLines(t, outs[0])
	if n < 100 || countLines(t, outs[1]) != n {
		t.Fatalf("the two configs delivered %d and %d records; want the same, all of the journal", n, countLines(t, outs[1]))
	}
	dirs, _ := filepath.Glob(filepath.Join(state, "fluxstream", "config-*", "state.db"))
	if len(dirs) != 2 {
		t.Fatalf("want one state dir per config under %s, have %v", state, dirs)
	}

	// The same config again sends nothing; with --fresh, all again.
	cfgB := filepath.Join(filepath.Dir(outs[1]), "config.yaml")
	if code, _, stderr := runCLI(t, "run", "-c", cfgB, "--log-level", "info"); code != 0 || countLines(t, outs[1]) != n ||
		!strings.Contains(stderr, "nothing new to send") || !strings.Contains(stderr, "--fresh") {
		t.Fatalf("second run: exit %d, %d lines (want %d), log:\n%s", code, countLines(t, outs[1]), n, stderr)
	}
	code, _, stderr := runCLI(t, "run", "-c", cfgB, "--fresh")
	if code != 0 || countLines(t, outs[1]) != 2*n || !strings.Contains(stderr, "checkpoint moved aside") {
		t.Fatalf("--fresh: exit %d, %d lines (want %d), log:\n%s", code, countLines(t, outs[1]), 2*n, stderr)
	}
	if aside, _ := filepath.Glob(filepath.Join(state, "fluxstream", "config-*", "state.db.replaced-*")); len(aside) != 1 {
		t.Fatalf("the old checkpoint is not kept aside: %v", aside)
	}
}
