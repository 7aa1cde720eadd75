package journal

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
)

// failingKV is a store on a full disk: Commit fails while fail is set
// (bbolt writes nothing for an empty transaction, so only commits with
// puts count). Get fails while failGet is set.
type failingKV struct {
	*core.MemKV
	fail, failGet atomic.Bool
	attempts      atomic.Int64 // commits with puts
}

var errDiskFull = errors.New("write state.db: no space left on device")

func (kv *failingKV) Commit(puts []core.KVPut) error {
	if len(puts) == 0 {
		return nil
	}
	kv.attempts.Add(1)
	if kv.fail.Load() {
		return errDiskFull
	}
	return kv.MemKV.Commit(puts)
}

func (kv *failingKV) Get(key []byte) ([]byte, error) {
	if kv.failGet.Load() {
		return nil, errors.New("read state.db: input/output error")
	}
	return kv.MemKV.Get(key)
}

func (kv *failingKV) String() string { return "test.db bucket node:flux" }

// fakeClock is a clock the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// logLine is a captured log line with its attributes, and a value the
// test samples when the line is logged (in the logging goroutine).
type logLine struct {
	level  slog.Level
	msg    string
	attrs  map[string]slog.Value
	sample int64
}

type captureHandler struct {
	sample func() int64
	mu     sync.Mutex
	lines  []logLine
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *captureHandler) WithGroup(string) slog.Handler            { return h }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	l := logLine{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value
		return true
	})
	if h.sample != nil {
		l.sample = h.sample()
	}
	h.mu.Lock()
	h.lines = append(h.lines, l)
	h.mu.Unlock()
	return nil
}

func (h *captureHandler) with(msg string) []logLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logLine
	for _, l := range h.lines {
		if l.msg == msg {
			out = append(out, l)
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

const (
	msgWriteFailed = "checkpoint write failed; will retry"
	msgWrittenBack = "checkpoint written again"
)

// A checkpoint that cannot be written (data_dir full) is retried every
// flush interval, but logged at most once per logutil.LogEvery, the next
// line counting those held back; the recovery is logged once, and Close
// logs what was still held back.
func TestCheckpointWriteFailuresRateLimited(t *testing.T) {
	kv := &failingKV{MemKV: core.NewMemKV()}
	kv.fail.Store(true)
	clock := newFakeClock()
	logs := &captureHandler{sample: kv.attempts.Load}
	c := NewConsumer(Options{Logger: slog.New(logs), Now: clock.Now, FlushInterval: time.Millisecond}, kv)
	c.StartStream(true)
	c.Taken(feed(c, lines(t, "journal-backlog-full-before-purge.jsonl")[:1])) // job "early": something to write

	waitUntil(t, "20 failed writes", func() bool { return kv.attempts.Load() >= 20 })
	first := logs.with(msgWriteFailed)
	if len(first) != 1 || first[0].sample != 1 || first[0].level != slog.LevelError {
		t.Fatalf("after %d failed writes in one instant: %d lines %+v, want one, at the first", kv.attempts.Load(), len(first), first)
	}
	if _, ok := first[0].attrs["suppressed"]; ok || first[0].attrs["error"].String() != "commit checkpoint: "+errDiskFull.Error() ||
		first[0].attrs["store"].String() != "test.db bucket node:flux" {
		t.Fatalf("first line attrs %v", first[0].attrs)
	}

	// Just under the interval: still nothing.
	clock.Advance(logutil.LogEvery - time.Millisecond)
	n := kv.attempts.Load()
	waitUntil(t, "more failed writes", func() bool { return kv.attempts.Load() >= n+10 })
	if got := logs.with(msgWriteFailed); len(got) != 1 {
		t.Fatalf("%d lines before the interval passed", len(got))
	}
	// The interval passed: one line, with the count held back.
	clock.Advance(time.Millisecond)
	waitUntil(t, "the second line", func() bool { return len(logs.with(msgWriteFailed)) == 2 })
	second := logs.with(msgWriteFailed)[1]
	if s := second.attrs["suppressed"].Int64(); s != second.sample-2 || s < 29 {
		t.Fatalf("second line at write %d says %d suppressed, want %d", second.sample, s, second.sample-2)
	}
	n = kv.attempts.Load()
	waitUntil(t, "more failed writes", func() bool { return kv.attempts.Load() >= n+10 })

	// The disk has room again.
	kv.fail.Store(false)
	waitUntil(t, "the recovery line", func() bool { return len(logs.with(msgWrittenBack)) == 1 })
	back := logs.with(msgWrittenBack)[0]
	if f := back.attrs["failed_writes"].Int64(); f != back.sample-1 || back.level != slog.LevelInfo {
		t.Fatalf("recovery at write %d says %d failed writes, want %d", back.sample, f, back.sample-1)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	held := logs.with(msgWriteFailed + " (repeated lines held back until shutdown)")
	if want := back.sample - 1 - second.sample; len(held) != 1 || held[0].attrs["suppressed"].Int64() != want {
		t.Fatalf("at Close: %+v, want one line with %d suppressed", held, want)
	}
	if got := len(logs.with(msgWriteFailed)); got != 2 {
		t.Fatalf("%d write-failed lines in all, want 2", got)
	}
	if j := entry(t, kv.MemKV, 349066756096); j == nil || !j.done {
		t.Fatalf("entry after the disk recovered: %+v", j)
	}
}

// A store whose every read fails: each lookup (a job, then each of its
// events) fails, but the log gets one line per interval; every event is
// still emitted (duplicates at worst, never a loss).
func TestCheckpointLookupFailuresRateLimited(t *testing.T) {
	kv := &failingKV{MemKV: core.NewMemKV()}
	kv.failGet.Store(true)
	logs := &captureHandler{}
	c := NewConsumer(Options{Logger: slog.New(logs), Now: newFakeClock().Now}, kv)
	defer c.Close()
	c.StartStream(true)
	backlog := lines(t, "journal-backlog-full-before-purge.jsonl")
	recs := feed(c, backlog)
	if want := eventIDs(t, backlog); len(recs) != len(want) || len(want) != 324 {
		t.Fatalf("%d records, want the %d events", len(recs), len(want))
	}
	got := logs.with("checkpoint lookup failed; emitting the job's events (duplicates at worst)")
	if len(got) != 1 || got[0].attrs["store"].String() != "test.db bucket node:flux" {
		t.Fatalf("%d lookup-failed lines, want 1: %+v", len(got), got)
	}
}
