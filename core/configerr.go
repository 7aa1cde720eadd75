package core

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ConfigError is one problem with a config, located by file, line and the
// dotted key path (e.g. "sinks.out.path").
type ConfigError struct {
	File string // config file, or "env" for FLUXSTREAM_* overrides
	Line int    // 0 when unknown
	Path string // dotted key path
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every problem found in a config, reported at once.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted orders errors by file position, then path, dropping duplicates.
func (es ConfigErrors) sorted() ConfigErrors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Path < es[j].Path
	})
	out := es[:0]
	for i, e := range es {
		if i > 0 && e.Error() == es[i-1].Error() {
			continue
		}
		out = append(out, e)
	}
	return out
}

// AsConfigErrors flattens err into ConfigErrors if it holds any.
func AsConfigErrors(err error) (ConfigErrors, bool) {
	var es ConfigErrors
	if errors.As(err, &es) {
		return es, true
	}
	var e *ConfigError
	if errors.As(err, &e) {
		return ConfigErrors{e}, true
	}
	return nil, false
}
