package main

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// progressConfig replays the 2,000-job bulk journal at 60x its recorded
// pace: about 3 s of catch-up.
func progressConfig(t *testing.T) (dir, cfg string) {
	dir = t.TempDir()
	journal, _ := filepath.Abs(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	cfg = writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %[1]s/state
sources:
  journal: {type: replay, path: %[2]s, pace: recorded, speed: 60, user_lookup: none}
sinks:
  out: {type: file, inputs: [journal], path: %[1]s/out.jsonl}
`, dir, journal))
	return dir, cfg
}

var progressValue = regexp.MustCompile(`(events|events_per_s|done|eta|took)=("[^"]*"|\S+)`)

// Not on a terminal: an INFO line every interval while the replay catches
// up (events and done only grow), then one "caught up" line with the
// exact count.
func TestProgressLogLines(t *testing.T) {
	t.Setenv("FLUXSTREAM_PROGRESS_EVERY", "400ms")
	_, cfg := progressConfig(t)
	code, _, stderr := runCLI(t, "run", "-c", cfg, "--log-level", "info")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	var lines []string
	var lastEvents int64
	var lastDone float64
	caughtUp := ""
	for _, l := range strings.Split(stderr, "\n") {
		if !strings.Contains(l, `msg="catching up"`) && !strings.Contains(l, `msg="caught up"`) {
			continue
		}
		vals := map[string]string{}
		for _, m := range progressValue.FindAllStringSubmatch(l, -1) {
			vals[m[1]] = strings.Trim(m[2], `"`)
		}
		ev, _ := strconv.ParseInt(vals["events"], 10, 64)
		if ev < lastEvents {
			t.Errorf("events went down: %d then %d", lastEvents, ev)
		}
		lastEvents = ev
		if strings.Contains(l, "caught up") {
			caughtUp = vals["events"]
		} else {
			done, err := strconv.ParseFloat(strings.TrimSuffix(vals["done"], "%"), 64)
			if err != nil || done < lastDone || done > 100 {
				t.Errorf("done=%q after %.1f%%", vals["done"], lastDone)
			}
			lastDone = done
		}
		norm := progressValue.ReplaceAllString(l[strings.Index(l, "level="):], "$1=_")
		if len(lines) == 0 || lines[len(lines)-1] != norm {
			lines = append(lines, norm)
		}
	}
	if caughtUp != "22000" {
		t.Errorf("caught up with events=%q, want the journal's 22000", caughtUp)
	}
	if n := strings.Count(stderr, `msg="catching up"`); n < 2 {
		t.Errorf("%d catching-up lines in a ~3 s replay at a 400ms interval:\n%s", n, stderr)
	}
	golden(t, "progress-log.txt", strings.Join(lines, "\n")+"\n")
}

// On a terminal: a bar with the events, the rate and bytes, cleared at
// the end.
func TestProgressBarOnPTY(t *testing.T) {
	dir, cfg := progressConfig(t)
	cmd := fluxstreamCmd(t, dir, "run", "-c", cfg, "--log-level", "warn")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, f); close(copied) }()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("fluxstream: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("replay did not end")
	}
	f.Close()
	<-copied
	screen := out.String()
	for _, want := range []string{"catching up: ", " events, ", "/s", "%", "kB"} {
		if !strings.Contains(screen, want) {
			t.Errorf("no %q on the terminal:\n%q", want, screen)
		}
	}
	if !regexp.MustCompile(`catching up: [1-9][0-9]* events`).MatchString(screen) {
		t.Errorf("the bar never counted events:\n%q", screen)
	}
}
