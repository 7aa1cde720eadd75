package logutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func decodeLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// One line per kind per interval; the next line of the kind counts the
// ones held back; kinds do not hold each other back; Flush reports what
// is still held back.
func TestLogLimiter(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	l := NewLimiter(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, clock.now)
	for i := range 1000 {
		l.Log(slog.LevelWarn, "dial", "unable to open connection", "i", i)
		l.Log(slog.LevelError, "auth", "authentication failed")
		clock.t = clock.t.Add(time.Millisecond) // 1000 calls in 1 s
	}
	lines := decodeLines(t, &buf)
	if len(lines) != 2 || lines[0]["msg"] != "unable to open connection" || lines[0]["i"] != 0.0 || lines[1]["msg"] != "authentication failed" {
		t.Fatalf("first second: %v", lines)
	}
	clock.t = clock.t.Add(9 * time.Second) // 10 s after the first line
	buf.Reset()
	l.Log(slog.LevelWarn, "dial", "unable to open connection", "i", 1000)
	l.Log(slog.LevelWarn, "dial", "unable to open connection", "i", 1001)
	lines = decodeLines(t, &buf)
	if len(lines) != 1 || lines[0]["i"] != 1000.0 || lines[0]["suppressed"] != 999.0 {
		t.Fatalf("after 10 s: %v", lines)
	}
	buf.Reset()
	l.Flush()
	lines = decodeLines(t, &buf)
	if len(lines) != 2 || lines[0]["suppressed"] != 999.0 || !strings.HasPrefix(lines[0]["msg"].(string), "authentication failed") ||
		lines[1]["suppressed"] != 1.0 || lines[0]["level"] != "ERROR" {
		t.Fatalf("flush: %v", lines)
	}
	buf.Reset()
	l.Flush()
	if buf.Len() != 0 {
		t.Fatalf("second flush: %s", buf.String())
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:secret@host:8081":    "http://user:xxxxx@host:8081",
		"https://user:p%40ss@host:8081/x": "https://user:xxxxx@host:8081/x",
		"user:secret@host:9092":           "user:xxxxx@host:9092",
		"kafka://user:secret@host:9092":   "kafka://user:xxxxx@host:9092",
		"http://user@host:8081":           "http://user@host:8081",
		"host:9092":                       "host:9092",
		"http://host:8081":                "http://host:8081",
		"http://u:a:b@c@host:1":           "http://u:xxxxx@host:1",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	r := NewRedactor("pa ss/wd")
	for in, want := range map[string]string{
		`Post "http://user:***@127.0.0.1:1/subjects": refused`: `Post "http://user:xxxxx@127.0.0.1:1/subjects": refused`,
		"dial user:secret@host:9092 and http://a:b@c:1 failed": "dial user:xxxxx@host:9092 and http://a:xxxxx@c:1 failed",
		"password pa ss/wd or pa+ss%2Fwd or pa%20ss%2Fwd":      "password xxxxx or xxxxx or xxxxx",
		"mail bob@example.org stays":                           "mail bob@example.org stays",
	} {
		if got := r.String(in); got != want {
			t.Errorf("redact %q = %q, want %q", in, got, want)
		}
	}
	err := r.Error(fmt.Errorf("auth with pa ss/wd: %w", kerr.SaslAuthenticationFailed))
	if strings.Contains(err.Error(), "pa ss") || !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("redacted error %v lost its chain or kept the secret", err)
	}
}

// franz-go's warnings reach the node's log redacted and rate-limited, and
// the last error is kept for Write's message.
