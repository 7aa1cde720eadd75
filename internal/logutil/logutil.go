// Package logutil has what every component needs to log an outage well:
// a limiter that passes one line per kind every interval (with a count of
// what it held back) and a redactor that takes secrets out of log lines
// and errors.
package logutil

import (
	"context"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// LogEvery is how often a line of one kind may be logged; the lines held
// back in between are counted, and the next line of that kind carries the
// count as "suppressed".
const LogEvery = 10 * time.Second

// Limiter passes at most one log line per kind every interval: a
// destination that keeps failing is reported, not repeated.
type Limiter struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*limitState
}

type limitState struct {
	last       time.Time
	suppressed int
	level      slog.Level
	msg        string
}

// NewLimiter logs to log; now is the clock (time.Now outside tests).
func NewLimiter(log *slog.Logger, every time.Duration, now func() time.Time) *Limiter {
	return &Limiter{log: log, every: every, now: now, kinds: make(map[string]*limitState)}
}

// Log logs msg unless a line of the same kind went out less than the
// interval ago.
func (l *Limiter) Log(level slog.Level, kind, msg string, args ...any) {
	now := l.now()
	l.mu.Lock()
	st := l.kinds[kind]
	if st == nil {
		st = &limitState{}
		l.kinds[kind] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < l.every {
		st.suppressed++
		st.level, st.msg = level, msg
		l.mu.Unlock()
		return
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Flush logs, per kind, how many lines are still held back, so that the
// count of the last burst is not lost at shutdown.
func (l *Limiter) Flush() {
	l.mu.Lock()
	kinds := make([]string, 0, len(l.kinds))
	for k, st := range l.kinds {
		if st.suppressed > 0 {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	type line struct {
		level slog.Level
		msg   string
		n     int
	}
	var lines []line
	for _, k := range kinds {
		st := l.kinds[k]
		lines = append(lines, line{st.level, st.msg, st.suppressed})
		st.suppressed = 0
	}
	l.mu.Unlock()
	for _, ln := range lines {
		l.log.Log(context.Background(), ln.level, ln.msg+" (repeated lines held back until shutdown)", "suppressed", ln.n)
	}
}

// Redactor takes secrets out of text that goes to logs and errors: the
// password part of any user:password@ in URLs and addresses, and every
// configured secret (SASL or registry password) verbatim or URL-escaped.
type Redactor struct {
	secrets []string
}

// Redacted is what stands in for a secret, as net/url's URL.Redacted has it.
const Redacted = "xxxxx"

// NewRedactor redacts userinfo passwords and the given secrets.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	seen := map[string]bool{}
	for _, s := range secrets {
		for _, v := range []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("u", s).String()[2:]} {
			if v != "" && v != Redacted && !seen[v] {
				seen[v] = true
				r.secrets = append(r.secrets, v)
			}
		}
	}
	// Longest first, so that a secret inside another does not leave a tail.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// String returns s with the secrets replaced by xxxxx.
func (r *Redactor) String(s string) string {
	s = redactUserinfo(s)
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Redacted)
	}
	return s
}

// Error returns err with a redacted message; errors.Is and errors.As still
// see the original chain.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := r.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RedactURL returns an address or URL with the password of its userinfo
// replaced: http://user:secret@host:8081 -> http://user:xxxxx@host:8081,
// user:secret@host:9092 -> user:xxxxx@host:9092.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil && u.Host != "" {
		return u.Redacted()
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	pre, scheme := s[:at], ""
	if i := strings.Index(pre, "://"); i >= 0 {
		scheme, pre = pre[:i+3], pre[i+3:]
	}
	user, _, hasPass := strings.Cut(pre, ":")
	if !hasPass {
		return s
	}
	return scheme + user + ":" + Redacted + s[at:]
}

// redactUserinfo redacts every user:password@ in free text (URLs inside
// error messages, quoted or not).
func redactUserinfo(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	for {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			b.WriteString(s)
			return b.String()
		}
		// The userinfo runs back from @ to a delimiter or "://".
		start := at
		for start > 0 && !strings.ContainsRune(" \t\n\"'`<>()[]{},;=", rune(s[start-1])) && !strings.HasSuffix(s[:start], "://") {
			start--
		}
		if colon := strings.IndexByte(s[start:at], ':'); colon >= 0 && at > start+colon+1 {
			b.WriteString(s[:start+colon+1])
			b.WriteString(Redacted)
		} else {
			b.WriteString(s[:at])
		}
		b.WriteByte('@')
		s = s[at+1:]
	}
}
