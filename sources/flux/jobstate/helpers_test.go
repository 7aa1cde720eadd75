package jobstate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fixtures is the recorded flux-core 0.88 data (see its README.md).
const fixtures = "../../../testdata/flux"

func fixture(name string) string { return filepath.Join(fixtures, name) }

// readLines returns the lines of a fixture file, gunzipping .gz files.
func readLines(tb testing.TB, name string) [][]byte {
	tb.Helper()
	f, err := os.Open(fixture(name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			tb.Fatal(err)
		}
		r = zr
	}
	var lines [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return lines
}

// scenarioJob is one labeled job of jobs/jobids.txt.
type scenarioJob struct {
	label string
	f58   string
	id    uint64
}

func scenarioJobs(tb testing.TB) []scenarioJob {
	tb.Helper()
	var jobs []scenarioJob
	for _, l := range readLines(tb, "jobs/jobids.txt") {
		f := strings.Fields(string(l))
		if len(f) != 3 {
			tb.Fatalf("jobids.txt: bad line %q", l)
		}
		id, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		jobs = append(jobs, scenarioJob{f[0], f[1], id})
	}
	return jobs
}

// applied is one event applied to a job, with the snapshot after it.
type applied struct {
	ev   Event
	snap string // JSON of the snapshot
}

// replay feeds journal lines to per-job states the way the journal
// consumer does: jobspec before the events, R just before alloc (or at
// once when the response has no alloc event). trace, if not nil, gets the
// snapshot after every event of every job.
func replay(tb testing.TB, lines [][]byte, trace map[uint64][]applied) map[uint64]*State {
	tb.Helper()
	states := map[uint64]*State{}
	for n, line := range lines {
		resp, err := ParseResponse(line)
		if err != nil {
			tb.Fatalf("line %d: %v", n+1, err)
		}
		if resp.IsSentinel() {
			continue
		}
		id := uint64(resp.ID)
		s := states[id]
		if s == nil {
			s = New(id)
			states[id] = s
		}
		if resp.Jobspec != nil {
			if err := s.SetJobspec(resp.Jobspec); err != nil {
				tb.Errorf("line %d: %v", n+1, err)
			}
		}
		hasAlloc := false
		for _, ev := range resp.Events {
			hasAlloc = hasAlloc || ev.Name == "alloc"
		}
		if resp.R != nil && !hasAlloc {
			if err := s.SetR(resp.R); err != nil {
				tb.Errorf("line %d: %v", n+1, err)
			}
		}
		for _, ev := range resp.Events {
			if ev.Name == "alloc" && resp.R != nil {
				if err := s.SetR(resp.R); err != nil {
					tb.Errorf("line %d: %v", n+1, err)
				}
			}
			if err := s.Apply(ev); err != nil {
				tb.Errorf("line %d: %v", n+1, err)
			}
			if trace != nil {
				trace[id] = append(trace[id], applied{ev, mustJSON(tb, s.Snapshot())})
			}
		}
	}
	return states
}
