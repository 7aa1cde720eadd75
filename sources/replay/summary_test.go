package replay_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// summaryLog keeps the "replay read" lines.
type summaryLog struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (h *summaryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *summaryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *summaryLog) WithGroup(string) slog.Handler            { return h }
func (h *summaryLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "replay read" && r.Message != "journal backlog read" {
		return nil
	}
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, m)
	h.mu.Unlock()
	return nil
}

func (h *summaryLog) take() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.lines
	h.lines = nil
	return out
}

// A replay played twice with its checkpoint says, at the end of each
// file, what it sent and what the checkpoint already had: the second run
// sends nothing and says why, naming the checkpoint.
func TestReplayTwiceSaysWhy(t *testing.T) {
	backlog := filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl")
	for _, tc := range []struct {
		name   string
		path   string
		first  string // jobs events already_delivered done_jobs purges
		second string
	}{
		// The embedded scenario: the sentinel first, then the live
		// part (373 events, 8 purges in one purge event).
		{"scenario", "embedded:scenario", "0 373 0 0 8", "0 0 373 0 0"},
		// A backlog: 23 inactive jobs, 324 events.
		{"backlog", backlog, "23 324 0 0 0", "23 0 324 23 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			logs := &summaryLog{}
			for run, want := range []string{tc.first, tc.second} {
				_, _, wait := pipelineLog(t, fmt.Sprintf("type: replay\npath: %s\nuser_lookup: none\n", tc.path), dir, slog.New(logs))
				if err := wait(); err != nil {
					t.Fatal(err)
				}
				lines := logs.take()
				if len(lines) != 1 {
					t.Fatalf("run %d: %d summary lines %v, want one (per file, none per backlog)", run+1, len(lines), lines)
				}
				l := lines[0]
				got := strings.Join([]string{l["jobs"], l["events"], l["already_delivered"], l["done_jobs"], l["purges"]}, " ")
				store := filepath.Join(dir, "state.db") + " bucket node:src"
				if got != want || l["msg"] != "replay read" || l["level"] != "INFO" || l["path"] != tc.path || l["checkpoint"] != store {
					t.Fatalf("run %d: %v; want counts %s, checkpoint %s", run+1, l, want, store)
				}
				why, said := l["why"]
				if run == 0 && said {
					t.Fatalf("first run says why: %s", why)
				}
				if run == 1 && why != fmt.Sprintf("nothing new to send: %s events already delivered (checkpoint in %s); to send them again, run once with --fresh (the old checkpoint is moved aside) or give the config a data_dir of its own", strings.Fields(want)[2], store) {
					t.Fatalf("second run: why = %q", why)
				}
			}
		})
	}
}

// Without a checkpoint, the line names where the (empty) checkpoint was.
func TestReplaySummaryWithoutCheckpoint(t *testing.T) {
	logs := &summaryLog{}
	_, _, wait := pipelineLog(t, "type: replay\npath: embedded:scenario\nuser_lookup: none\ncheckpoint: false\n", t.TempDir(), slog.New(logs))
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	lines := logs.take()
	if len(lines) != 1 || lines[0]["events"] != "373" || lines[0]["checkpoint"] != "memory (checkpoint: false: nothing is kept after the run)" {
		t.Fatalf("%v", lines)
	}
}
