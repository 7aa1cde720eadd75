// Package stdout is the `stdout` sink: records on standard output, as JSON
// lines or as one human-readable line per event.
package stdout

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the stdout sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("stdout", "records on standard output (JSON lines or one text line per event)", New)
}

// Config is the sink's config.
type Config struct {
	// Format is "json" (the record contract, one per line) or "text".
	Format string `yaml:"format"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	switch c.Format {
	case "json", "text":
		return nil
	}
	return core.Fieldf("format", "unknown format %q (json, text)", c.Format)
}

// Sink writes to standard output (or Out, for tests).
type Sink struct {
	cfg Config
	Out io.Writer
	mu  sync.Mutex
}

var (
	_ core.Sink      = (*Sink)(nil)
	_ core.DryRunner = (*Sink)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{cfg: Config{Format: "json"}, Out: os.Stdout}
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Write prints the batch.
func (s *Sink) Write(_ context.Context, batch []*core.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := bufio.NewWriter(s.Out)
	for _, r := range batch {
		if s.cfg.Format == "text" {
			w.WriteString(Text(r))
			w.WriteByte('\n')
			continue
		}
		js, err := r.JSON()
		if err != nil {
			return core.Permanent(err)
		}
		w.Write(js)
		w.WriteByte('\n')
	}
	return w.Flush()
}

// Close does nothing: stdout stays open.
func (s *Sink) Close(context.Context) error { return nil }

// Text renders a record as one line for people:
// 2026-11-23T21:21:38.456Z ƒAApqNHV early       submit     state=DEPEND user=fluxuser queue=batch
func Text(r *core.Record) string {
	ts := ""
	if t := r.Time(); t > 0 {
		sec := int64(t)
		ts = time.Unix(sec, int64((t-float64(sec))*1e9)).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	switch r.Kind {
	case core.KindInvalid:
		return fmt.Sprintf("%s INVALID %s: %s", ts, r.Invalid.Where, r.Invalid.Error)
	case core.KindPurge:
		return fmt.Sprintf("%s %-10s %-12s %-14s (%s)", ts, r.Purge.JobID, "", "purged", r.Purge.Reason)
	}
	j := r.Job
	line := fmt.Sprintf("%s %-10s %-12s %-14s", ts, jobid(r), j.Name, r.EventName())
	line += " state=" + j.State
	if j.Result != "" {
		line += " result=" + j.Result
		if j.ReturnCode != nil {
			line += " rc=" + strconv.Itoa(*j.ReturnCode)
		}
	}
	user := j.Username
	if user == "" {
		user = strconv.FormatUint(uint64(j.UserID), 10)
	}
	line += " user=" + user
	if j.Queue != "" {
		line += " queue=" + j.Queue
	}
	return line
}

func jobid(r *core.Record) string {
	if r.Job == nil {
		return "-"
	}
	if r.Job.JobID != "" {
		return r.Job.JobID
	}
	return strconv.FormatUint(r.Job.ID, 10)
}

// DryRun prints what Write would print.
func (s *Sink) DryRun(_ context.Context, batch []*core.Record, w io.Writer) error {
	saved := s.Out
	s.Out = w
	defer func() { s.Out = saved }()
	return s.Write(context.Background(), batch)
}
