package kafka

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger hands franz-go's warnings and errors to the node's logger,
// rate-limited per message, with secrets taken out. It remembers the last
// error franz-go reported, for the error a timed-out Write returns.
type kgoLogger struct {
	limit   *logutil.Limiter
	redact  *logutil.Redactor
	lastErr atomic.Pointer[string]
}

func (l *kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	args := make([]any, 0, len(keyvals))
	for i := 0; i+1 < len(keyvals); i += 2 {
		k, _ := keyvals[i].(string)
		v := l.redact.String(fmt.Sprint(keyvals[i+1]))
		if k == "err" {
			l.lastErr.Store(&v)
			k = "error"
		}
		args = append(args, k, v)
	}
	sl := slog.LevelWarn
	if level == kgo.LogLevelError {
		sl = slog.LevelError
	}
	l.limit.Log(sl, "kgo:"+msg, "kafka client: "+l.redact.String(msg), args...)
}

// LastError is the last error franz-go logged, "" if none.
func (l *kgoLogger) LastError() string {
	if p := l.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}
