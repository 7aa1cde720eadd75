package flux_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	msgLost      = "flux connection lost; reconnecting (the backlog is read again, only new events are emitted)"
	msgBacklog   = "backlog read; following live events"
	msgSSHFailed = "cannot reach flux over ssh; retrying after max_backoff"
)

// The backoff starts again from initial_backoff once a connection has
// delivered its backlog: a second broker restart soon after the first
// waits initial_backoff, not what the first outage had grown to.
func TestBackoffRestartsAfterBacklog(t *testing.T) {
	h := newHarness(t)
	h.logs = newLogRecorder()
	h.in.SeekTo(100)
	h.reconnect = "{initial_backoff: 10ms, max_backoff: 1s}"
	h.start("")
	h.logs.waitFor(t, msgBacklog, 1)

	// First outage: the broker stays down for three failed attempts, so
	// the backoff grows 10ms, 20ms, 40ms.
	h.broker.Stop()
	lost := h.logs.waitFor(t, msgLost, 3)
	if err := h.broker.Restart(); err != nil {
		t.Fatal(err)
	}
	h.logs.waitFor(t, msgBacklog, 2)
	before := len(h.logs.match(msgLost))

	// Second outage, right after the broker came back.
	h.broker.Stop()
	after := h.logs.waitFor(t, msgLost, before+1)
	if err := h.broker.Restart(); err != nil {
		t.Fatal(err)
	}
	h.logs.waitFor(t, msgBacklog, 3)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	for i, want := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		if got := retryIn(t, lost[i]); got != want {
			t.Errorf("first outage, retry %d: retry_in %v, want %v", i+1, got, want)
		}
	}
	if got := retryIn(t, after[before]); got != 10*time.Millisecond {
		t.Errorf("second outage after a delivered backlog: retry_in %v, want the initial 10ms (all: %v)", got, durations(t, after))
	}
}

// A connection that breaks before its backlog is complete does not reset
// the backoff: a broker that keeps failing mid-backlog is backed off.
func TestBackoffGrowsWithoutBacklog(t *testing.T) {
	h := newHarness(t)
	h.logs = newLogRecorder()
	h.in.SeekTo(h.in.PosAfterResponses(200))
	h.broker.CloseAfter(3) // the backlog has more than 3 jobs
	h.reconnect = "{initial_backoff: 10ms, max_backoff: 40ms}"
	h.start("")
	lost := h.logs.waitFor(t, msgLost, 4)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if len(h.logs.match(msgBacklog)) != 0 {
		t.Fatal("a backlog was read to its end despite CloseAfter(3)")
	}
	got := durations(t, lost[:4])
	if want := "[10ms 20ms 40ms 40ms]"; got != want {
		t.Fatalf("retry_in = %s, want %s", got, want)
	}
}

// ssh that cannot run `flux relay` (no flux on the remote PATH, login
// refused) is reported as that, with ssh's stderr, and retried after
// max_backoff from the first failure on.
func TestSSHPermanentFailure(t *testing.T) {
	for _, tc := range []struct {
		script, want string
	}{
		{"ssh-not-found.sh", `the remote command "flux" was not found (exit status 127); set FLUX_SSH_RCMD to the path of flux on that host`},
		{"ssh-denied.sh", "ssh failed (exit status 255: authentication refused, host key, or host unreachable)"},
	} {
		t.Run(tc.script, func(t *testing.T) {
			script, err := filepath.Abs(filepath.Join("connector", "testdata", tc.script))
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("FLUX_SSH", script)
			h := newHarness(t)
			h.logs = newLogRecorder()
			h.uri = "ssh://login1/run/flux/local"
			h.reconnect = "{initial_backoff: 10ms, max_backoff: 30ms}"
			h.start("")
			failed := h.logs.waitFor(t, msgSSHFailed, 2)
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			if n := len(h.logs.match(msgLost)); n != 0 {
				t.Fatalf("%d generic connection-lost warnings for an ssh failure", n)
			}
			stderr := map[string]string{"ssh-not-found.sh": "stderr: bash: flux: command not found",
				"ssh-denied.sh": "stderr: login1: Permission denied (publickey)."}[tc.script]
			for _, e := range failed[:2] {
				if got := retryIn(t, e); got != 30*time.Millisecond {
					t.Errorf("retry_in %v, want max_backoff 30ms", got)
				}
				msg := e.Attrs["error"].String()
				if !strings.Contains(msg, tc.want) || !strings.HasSuffix(msg, stderr) || strings.Contains(msg, "broker refused") {
					t.Errorf("error = %s\nwant it to say %q and end with %q", msg, tc.want, stderr)
				}
			}
		})
	}
}

func durations(t *testing.T, es []logEntry) string {
	t.Helper()
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = retryIn(t, e).String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}
