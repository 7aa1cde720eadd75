// Package replay is the `replay` source: it reads recorded
// job-manager.events-journal streams (JSON lines, plain or gzip) and yields
// exactly the records the flux source would yield for the same stream,
// as fast as possible or at the recorded pace.
//
// Each line is one response payload of the journal RPC, or a broker event
// {"topic":"job-purge-inactive","payload":{"jobs":[...]}}. Each file is
// one stream (a restart in between), so a list of files replays a
// consumer that reconnects.
package replay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
	"github.com/fluxstream/fluxstream/sources/flux/journal"
	"github.com/fluxstream/fluxstream/sources/flux/users"
)

//go:embed embedded/scenario.jsonl
var embedded embed.FS

// EmbeddedScenario names the journal shipped in the binary.
const EmbeddedScenario = "embedded:scenario"

// Register adds the replay source to r.
func Register(r *core.Registry) {
	r.RegisterSource("replay", "recorded journal streams (JSONL, .gz), as fast as possible or at the recorded pace", New)
}

// Config is the source's config.
type Config struct {
	// Path is one recorded stream, or a list (each one a new stream, as
	// after a reconnect). "embedded:scenario" is the journal shipped in
	// the binary.
	Path []string `yaml:"path"`
	// Pace is "max" (as fast as the pipeline takes it) or "recorded" (the
	// original timing of the live part, divided by Speed).
	Pace  string  `yaml:"pace"`
	Speed float64 `yaml:"speed"`
	// Full says each stream's backlog lists every job the instance held
	// when it was recorded (full:true, recorded in order), so jobs known
	// from an earlier stream but missing from a later backlog were purged
	// in between. Off by default: a recording played twice is not a later
	// state of the instance.
	Full       bool            `yaml:"full"`
	Cluster    string          `yaml:"cluster"`
	Include    journal.Include `yaml:"include"`
	UserLookup string          `yaml:"user_lookup"` // getent | files | none
	// Checkpoint skips events already delivered by an earlier run.
	Checkpoint bool `yaml:"checkpoint"`
	// MaxLine bounds one line (one journal response); a longer line stops
	// the replay with an error after everything before it was delivered.
	MaxLine core.ByteSize `yaml:"max_line"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Path) == 0 {
		errs = append(errs, core.Fieldf("path", "must name a recorded journal (or %s)", EmbeddedScenario))
	}
	switch c.Pace {
	case "max", "recorded":
	default:
		errs = append(errs, core.Fieldf("pace", "unknown pace %q (max, recorded)", c.Pace))
	}
	if c.Speed <= 0 || math.IsInf(c.Speed, 0) || math.IsNaN(c.Speed) {
		errs = append(errs, core.Fieldf("speed", "must be a positive number"))
	}
	if err := users.CheckMode(c.UserLookup); err != nil {
		errs = append(errs, core.Fieldf("user_lookup", "%v", err))
	}
	if err := c.Include.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxLine < 1<<10 {
		errs = append(errs, core.Fieldf("max_line", "must be at least 1KiB"))
	}
	return errors.Join(errs...)
}

// Source replays journals.
type Source struct {
	cfg  Config
	name string
	log  *slog.Logger
	cons *journal.Consumer

	sleep func(ctx context.Context, d time.Duration) error
	prog  progress
}

var (
	_ core.Source      = (*Source)(nil)
	_ core.Provisioner = (*Source)(nil)
	_ io.Closer        = (*Source)(nil)

	_ journal.StatsReporter = (*Source)(nil)
	_ core.CheckpointStager = (*Source)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Source, error) {
	s := &Source{cfg: Config{Pace: "max", Speed: 1, Include: journal.DefaultInclude(),
		UserLookup: users.ModeGetent, Checkpoint: true, MaxLine: DefaultMaxLine}, name: nc.Name, sleep: sleepCtx}
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.Cluster == "" {
		s.cfg.Cluster = nc.Global().Cluster
	}
	return s, nil
}

// Provision sets up the consumer and its checkpoint.
func (s *Source) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	kv := nc.State
	if !s.cfg.Checkpoint || kv == nil {
		kv = memKV{core.NewMemKV()}
	}
	s.cons = journal.NewConsumer(journal.Options{
		Source: nc.Name, Cluster: s.cfg.Cluster, Include: s.cfg.Include,
		Users: users.New(s.cfg.UserLookup), Logger: nc.Logger, KeepGone: true, JournalClock: true,
		SummaryPerStream: true,
	}, kv)
	return nil
}

// StageCheckpoint marks recs delivered and commits the checkpoint: an
// exactly-once sink calls it inside the transaction that carries both.
func (s *Source) StageCheckpoint(recs []*core.Record) error { return s.cons.Stage(recs) }

// memKV is the checkpoint of a replay without one: it names itself in
// messages.
type memKV struct{ *core.MemKV }

func (memKV) String() string { return "memory (checkpoint: false: nothing is kept after the run)" }

// Stats reports what the replay did so far (journal.StatsReporter).
func (s *Source) Stats() journal.Stats {
	if s.cons == nil {
		return journal.Stats{}
	}
	return s.cons.Stats()
}

// Close writes the checkpoint one last time.
func (s *Source) Close() error {
	if s.cons == nil {
		return nil
	}
	return s.cons.Close()
}

const maxBatch = 512

// DefaultMaxLine bounds a line (one journal response) by default.
const DefaultMaxLine = 256 << 20

// Run replays every stream in order.
func (s *Source) Run(ctx context.Context, out core.Emitter) error {
	s.prog.start(s.cfg.Path)
	defer s.prog.finish()
	for _, path := range s.cfg.Path {
		if err := s.replay(ctx, path, out); err != nil {
			return err
		}
	}
	return nil
}

func (s *Source) replay(ctx context.Context, path string, out core.Emitter) error {
	rc, err := open(path, &s.prog.read)
	if err != nil {
		return err
	}
	defer rc.Close()
	s.cons.StartStream(s.cfg.Full)
	defer s.prog.fileDone(path)
	lr := newLineReader(rc, int(s.cfg.MaxLine))
	// Lines are read and parsed ahead on a goroutine of their own: the
	// consumer's reduction is the serial part of a replay, parsing needs
	// no state.
	chunks := make(chan readChunk, readAhead)
	done := make(chan struct{})
	go readLines(lr, chunks, done)
	defer func() {
		close(done)
		for range chunks { // wait for the reader: rc closes after it
		}
	}()
	var batch []*core.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		recs := batch
		batch = nil
		return out.Emit(ctx, recs, func() { s.cons.Taken(recs) })
	}
	var start time.Time
	var base float64
	for chunk := range chunks {
		for i := range chunk.items {
			it := &chunk.items[i]
			var recs []*core.Record
			var ts float64
			if it.purge {
				recs = s.cons.Purge(it.payload, fmt.Sprintf("%s:%d", path, it.line))
			} else {
				recs = s.cons.ParsedAt(it.payload, it.resp, it.perr, path, it.line)
				ts = lastTimestamp(recs)
			}
			*it = readItem{} // the chunk is kept until its end; its lines need not be
			if s.cfg.Pace == "recorded" && !s.cons.InBacklog() && ts > 0 {
				if start.IsZero() {
					start, base = time.Now(), ts
				}
				if err := flush(); err != nil {
					return err
				}
				due := start.Add(time.Duration((ts - base) / s.cfg.Speed * float64(time.Second)))
				if err := s.sleep(ctx, time.Until(due)); err != nil {
					return err
				}
			}
			batch = append(batch, recs...)
			s.prog.records.Add(int64(len(recs)))
			if len(batch) >= maxBatch || s.cfg.Pace == "recorded" && !s.cons.InBacklog() {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := chunk.err; err != nil {
			// Everything before the damage goes out first.
			if ferr := flush(); ferr != nil {
				return ferr
			}
			if err == io.EOF {
				// One line per file: a replay that sends nothing
				// says why (a checkpoint that has it all).
				s.cons.LogSummary("replay read", s.cons.Stats().Stream, "path", path)
				return nil
			}
			return fmt.Errorf("read %s: line %d (byte offset %d%s): %w; the %d lines before it were delivered",
				path, chunk.errLine, chunk.errOff, lr.offsetOf(), err, chunk.errLine-1)
		}
	}
	return ctx.Err() // not reached: the last chunk carries io.EOF or the error
}

// readAhead is how many chunks of read and parsed lines may wait for the
// consumer; linesPerChunk how many lines a chunk holds.
const (
	readAhead     = 4
	linesPerChunk = 256
)

// readItem is one journal line, read and parsed.
type readItem struct {
	line    int
	payload []byte // its own copy: the line reader reuses its buffer
	purge   bool   // a job-purge-inactive broker event (payload is its payload)
	resp    jobstate.Response
	perr    error
}

// readChunk is a run of lines, and the read error that ended the input
// after them (io.EOF at its end), with the line and byte offset of the
// damage.
type readChunk struct {
	items   []readItem
	err     error
	errLine int
	errOff  int64
}

// readLines reads and parses lines into chunks until the input ends or
// done is closed; it closes out when it returns.
func readLines(lr *lineReader, out chan<- readChunk, done <-chan struct{}) {
	defer close(out)
	for {
		chunk := readChunk{items: make([]readItem, 0, linesPerChunk)}
		for len(chunk.items) < linesPerChunk {
			raw, err := lr.next()
			if err != nil {
				chunk.err, chunk.errLine, chunk.errOff = err, lr.line, lr.off
				break
			}
			line := bytes.TrimSpace(raw)
			if len(line) == 0 {
				continue
			}
			if topic, payload, ok := brokerEvent(line); ok {
				if topic == "job-purge-inactive" {
					chunk.items = append(chunk.items, readItem{line: lr.line, payload: payload, purge: true})
				}
				continue
			}
			payload := bytes.Clone(line)
			resp, perr := jobstate.ParseResponse(payload)
			chunk.items = append(chunk.items, readItem{line: lr.line, payload: payload, resp: resp, perr: perr})
		}
		select {
		case out <- chunk:
		case <-done:
			return
		}
		if chunk.err != nil {
			return
		}
	}
}

// ErrLineTooLong says a line is longer than max_line.
var ErrLineTooLong = errors.New("line longer than max_line")

// lineReader reads newline-terminated lines of at most max bytes and
// keeps the position, so an error can say where the damage starts.
type lineReader struct {
	r    *bufio.Reader
	max  int
	buf  []byte
	line int   // number of the line last returned (or that failed)
	off  int64 // byte offset where that line starts
	pos  int64 // byte offset of the next line
	gzip bool  // offsets count decompressed bytes
}

func newLineReader(rc io.ReadCloser, max int) *lineReader {
	gz := false
	if r, ok := rc.(readCloser); ok {
		_, gz = r.Reader.(*gzip.Reader)
	}
	return &lineReader{r: bufio.NewReaderSize(rc, 64<<10), max: max, gzip: gz}
}

// offsetOf qualifies the offset of gzip input.
func (lr *lineReader) offsetOf() string {
	if lr.gzip {
		return " of the decompressed data"
	}
	return ""
}

// next returns the next line without its newline. A last line without a
// newline is returned at the end of the input; one cut by a read error is
// not (it is incomplete), and the error is returned instead. The returned
// slice is valid until the next call.
func (lr *lineReader) next() ([]byte, error) {
	lr.line++
	lr.off = lr.pos
	lr.buf = lr.buf[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		n := len(lr.buf) + len(chunk)
		if err == nil {
			n-- // the newline
		}
		if n > lr.max {
			return nil, fmt.Errorf("%w (%d bytes)", ErrLineTooLong, lr.max)
		}
		lr.buf = append(lr.buf, chunk...)
		switch {
		case err == nil:
			lr.pos += int64(len(lr.buf))
			return lr.buf[:len(lr.buf)-1], nil
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(lr.buf) > 0:
			lr.pos += int64(len(lr.buf))
			return lr.buf, nil
		case err == io.EOF:
			return nil, io.EOF
		default:
			if len(lr.buf) > 0 {
				return nil, fmt.Errorf("incomplete line of %d bytes: %w", len(lr.buf), err)
			}
			return nil, err
		}
	}
}

func lastTimestamp(recs []*core.Record) float64 {
	ts := 0.0
	for _, r := range recs {
		if r.Event != nil && r.Event.Timestamp > ts {
			ts = r.Event.Timestamp
		}
	}
	return ts
}

// brokerEvent recognises an event line {"topic":...,"payload":{...}}.
func brokerEvent(line []byte) (string, []byte, bool) {
	if bytes.HasPrefix(line, []byte(`{"id"`)) || !bytes.Contains(line, []byte(`"topic"`)) {
		return "", nil, false
	}
	var ev struct {
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(line, &ev); err != nil || ev.Topic == "" {
		return "", nil, false
	}
	return ev.Topic, ev.Payload, true
}

// Open opens a recorded journal: a path (gzip is detected by its magic
// bytes, not its name) or the embedded scenario.
func Open(path string) (io.ReadCloser, error) { return open(path, nil) }

// open is Open counting the input's bytes (compressed, for gzip) into read.
func open(path string, read *atomic.Int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	if name, ok := strings.CutPrefix(path, "embedded:"); ok {
		f, err := embedded.Open("embedded/" + name + ".jsonl")
		if err != nil {
			return nil, fmt.Errorf("no embedded journal %q (have: scenario)", name)
		}
		rc = f
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err) // err names the path
		}
		rc = f
	}
	br := bufio.NewReaderSize(rc, 256<<10)
	// Progress counts what the decoder took (compressed bytes for gzip):
	// counting the file's reads would jump by the read-ahead.
	var in io.Reader = br
	if read != nil {
		in = countingReader{br, read}
	}
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(in)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return readCloser{zr, rc}, nil
	}
	return readCloser{in, rc}, nil
}

type readCloser struct {
	io.Reader
	c io.Closer
}

func (r readCloser) Close() error { return r.c.Close() }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
