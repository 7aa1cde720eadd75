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

// franz-go's lines come through the limiter (50 alike within one interval
// make one line, see logutil's tests for the rest), prefixed, with the
// secrets out; the last error is kept for a timed-out Write.
func TestKgoLogger(t *testing.T) {
	var buf bytes.Buffer
	stopped := func() time.Time { return time.Unix(1e9, 0) } // no time passes
	l := &kgoLogger{limit: logutil.NewLimiter(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, stopped), redact: logutil.NewRedactor("hunter22")}
	for range 50 {
		l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1", "err", errors.New("sasl hunter22 refused"))
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d lines, want 1:\n%s", n, buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["msg"] != "kafka client: unable to open connection to broker" || line["error"] != "sasl xxxxx refused" || line["level"] != "WARN" {
		t.Fatalf("line: %v", line)
	}
	if l.LastError() != "sasl xxxxx refused" {
		t.Fatalf("last error %q", l.LastError())
	}
}
