package kafka

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/twmb/franz-go/pkg/kgo"
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
func TestKgoLogger(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	l := &kgoLogger{limit: logutil.NewLimiter(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, clock.now), redact: logutil.NewRedactor("hunter22")}
	for range 50 {
		l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1", "err", errors.New("sasl hunter22 refused"))
	}
	lines := decodeLines(t, &buf)
	if len(lines) != 1 || lines[0]["msg"] != "kafka client: unable to open connection to broker" || lines[0]["error"] != "sasl xxxxx refused" {
		t.Fatalf("lines: %v", lines)
	}
	if l.LastError() != "sasl xxxxx refused" {
		t.Fatalf("last error %q", l.LastError())
	}
}
