package flux_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// logEntry is one log record of the pipeline, with its attributes.
type logEntry struct {
	Level slog.Level
	Msg   string
	Attrs map[string]slog.Value
}

// logRecorder is a slog.Handler that keeps every record, so tests can
// assert on what the source reported (the backoff it chose, the error it
// described) instead of on wall time.
type logRecorder struct {
	mu      sync.Mutex
	entries []logEntry
	changed chan struct{}
	attrs   []slog.Attr
	root    *logRecorder
}

func newLogRecorder() *logRecorder {
	r := &logRecorder{changed: make(chan struct{})}
	r.root = r
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	e := logEntry{Level: rec.Level, Msg: rec.Message, Attrs: map[string]slog.Value{}}
	for _, a := range r.attrs {
		e.Attrs[a.Key] = a.Value.Resolve()
	}
	rec.Attrs(func(a slog.Attr) bool {
		e.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	root := r.root
	root.mu.Lock()
	root.entries = append(root.entries, e)
	close(root.changed)
	root.changed = make(chan struct{})
	root.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{root: r.root, attrs: append(append([]slog.Attr(nil), r.attrs...), attrs...)}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// match returns the entries with message msg.
func (r *logRecorder) match(msg string) []logEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logEntry
	for _, e := range r.entries {
		if e.Msg == msg {
			out = append(out, e)
		}
	}
	return out
}

// waitFor blocks until at least n entries have message msg and returns
// them all.
func (r *logRecorder) waitFor(t *testing.T, msg string, n int) []logEntry {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if got := r.match(msg); len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("waited for %d log entries %q, got %d", n, msg, len(r.match(msg)))
		}
	}
}

func retryIn(t *testing.T, e logEntry) time.Duration {
	t.Helper()
	v, ok := e.Attrs["retry_in"]
	if !ok || v.Kind() != slog.KindDuration {
		t.Fatalf("log entry %q has no retry_in duration: %v", e.Msg, e.Attrs)
	}
	return v.Duration()
}
