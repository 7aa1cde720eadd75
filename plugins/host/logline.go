package host

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
)

// line logs one line (l.mu held).
func (l *lineLogger) line(s string) {
	s = strings.TrimRight(s, "\r")
	if strings.TrimSpace(s) == "" {
		return
	}
	if len(l.last) == 8 {
		l.last = l.last[1:]
	}
	l.last = append(l.last, clip(s, 300))
	attrs := []any{"stream", l.stream}
	if l.pid != 0 {
		attrs = append(attrs, "pid", l.pid)
	}
	if lvl, msg, fields, ok := parseJSONLog(s); ok {
		l.inErr = false
		l.log.Log(context.Background(), lvl, "plugin: "+msg, append(attrs, fields...)...)
		return
	}
	lvl := slog.LevelInfo
	switch {
	case strings.HasPrefix(s, "panic: "), strings.HasPrefix(s, "fatal error: "), strings.HasPrefix(s, "Traceback "):
		l.inErr = true
		lvl = slog.LevelError
	case l.inErr:
		lvl = slog.LevelError
	}
	l.log.Log(context.Background(), lvl, "plugin output", append(attrs, "line", s)...)
}

// parseJSONLog reads a JSON log line: slog's (level, msg), hclog's
// (@level, @message) and the Python SDK's (the same as slog's).
func parseJSONLog(s string) (slog.Level, string, []any, bool) {
	if !strings.HasPrefix(s, "{") {
		return 0, "", nil, false
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return 0, "", nil, false
	}
	var level, msg string
	for _, k := range []string{"level", "@level"} {
		if v, ok := m[k].(string); ok {
			level = v
			delete(m, k)
		}
	}
	for _, k := range []string{"msg", "@message"} {
		if v, ok := m[k].(string); ok {
			msg = v
			delete(m, k)
		}
	}
	if level == "" || msg == "" {
		return 0, "", nil, false
	}
	delete(m, "time")
	delete(m, "@timestamp")
	var lvl slog.Level
	switch strings.ToLower(level) {
	case "trace", "debug":
		lvl = slog.LevelDebug
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error", "critical", "fatal":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	fields := make([]any, 0, 2*len(m))
	for k, v := range m {
		fields = append(fields, k, v)
	}
	return lvl, msg, fields, true
}
