// Package file is the `file` sink: records as JSON lines (the record
// contract of schemas/record.md, one per line), with size and time
// rotation, optional gzip and an fsync policy.
package file

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/durable"
)

// Sample is the sample config shown by docs and `fluxstream`.
//
//go:embed sample.yaml
var Sample string

// Register adds the file sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("file", "JSON lines (or Avro container files) on local disk, with rotation", New)
}

// Config is the sink's config.
type Config struct {
	// Path of the active file. Rotated files get a UTC timestamp inserted
	// before the extension: events.2026-11-25T07-37-49Z.jsonl.
	Path string `yaml:"path"`
	// Format is "json" (JSON lines) or "avro" (an Avro object container
	// file per rotation, see schemas/).
	Format string `yaml:"format"`
	// Compression is "none" or "gzip" (json only; avro files compress
	// their blocks with deflate instead).
	Compression string `yaml:"compression"`
	Rotate      struct {
		MaxBytes core.ByteSize `yaml:"max_bytes"` // 0 = no size rotation
		Interval time.Duration `yaml:"interval"`  // 0 = no time rotation
		MaxFiles int           `yaml:"max_files"` // rotated files kept, 0 = all
	} `yaml:"rotate"`
	// Fsync is "batch" (fsync before a batch is acknowledged: nothing
	// acknowledged is lost, even on power loss), "interval" (every
	// fsync_interval: faster, a power loss can lose the last interval) or
	// "never" (leave it to the OS).
	Fsync         string        `yaml:"fsync"`
	FsyncInterval time.Duration `yaml:"fsync_interval"`
	// Mkdir creates the directory of Path when missing.
	Mkdir *bool `yaml:"mkdir"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, core.Fieldf("path", "must be set"))
	}
	switch c.Format {
	case "json", "avro":
	default:
		errs = append(errs, core.Fieldf("format", "unknown format %q (json, avro)", c.Format))
	}
	switch c.Compression {
	case "none", "gzip":
	default:
		errs = append(errs, core.Fieldf("compression", "unknown compression %q (none, gzip)", c.Compression))
	}
	if c.Format == "avro" && c.Compression == "gzip" {
		errs = append(errs, core.Fieldf("compression", "gzip applies to json; avro files are deflate-compressed inside"))
	}
	switch c.Fsync {
	case "batch", "interval", "never":
	default:
		errs = append(errs, core.Fieldf("fsync", "unknown policy %q (batch, interval, never)", c.Fsync))
	}
	if c.Rotate.MaxBytes < 0 || c.Rotate.Interval < 0 || c.Rotate.MaxFiles < 0 {
		errs = append(errs, core.Fieldf("rotate", "values must not be negative"))
	}
	if c.FsyncInterval <= 0 {
		errs = append(errs, core.Fieldf("fsync_interval", "must be positive"))
	}
	return errors.Join(errs...)
}

// Sink writes records to a file.
type Sink struct {
	cfg Config
	log *slog.Logger
	fs  durable.FS // tests put a faultfs here

	mu     sync.Mutex
	f      durable.File
	bw     *bufio.Writer
	gz     *gzip.Writer
	enc    recordWriter
	size   int64
	opened time.Time
	dirty  bool // written since the last fsync
	// dirDirty: the directory has an entry not yet fsynced (a file
	// created or rotated): the file's data alone would not survive.
	dirDirty bool
	// syncedSize is the file's size at its last good fsync. After a
	// failed one the bytes beyond it may never reach the disk (the kernel
	// can drop them, "fsyncgate") and would sit, as zeros, before the
	// retried batch: the file is cut back to it before the retry
	// (cutPending).
	syncedSize int64
	cutPending bool
	stopSync   chan struct{}
	syncDone   chan struct{}
	now        func() time.Time
}

var (
	_ core.Sink        = (*Sink)(nil)
	_ core.Provisioner = (*Sink)(nil)
)

// recordWriter encodes records onto the open file.
type recordWriter interface {
	write(w io.Writer, r *core.Record) (int, error)
	flush(w io.Writer) error // end of a batch
	close(w io.Writer) error // before the file closes
}

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{now: time.Now, fs: durable.OS}
	s.cfg.Format = "json"
	s.cfg.Compression = "none"
	s.cfg.Fsync = "batch"
	s.cfg.FsyncInterval = time.Second
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.Mkdir == nil {
		t := true
		s.cfg.Mkdir = &t
	}
	return s, nil
}

// Provision keeps the logger and starts the fsync timer if asked for.
func (s *Sink) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	if s.cfg.Fsync == "interval" && !nc.DryRun {
		s.stopSync, s.syncDone = make(chan struct{}), make(chan struct{})
		go s.syncLoop()
	}
	return nil
}

func (s *Sink) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.cfg.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
			s.mu.Lock()
			if s.f != nil && s.dirty {
				if err := s.sync(); err != nil {
					// fsync: interval promises nothing per batch; the
					// file stays open, so there is nothing to cut.
					s.cutPending = false
					s.log.Error("fsync failed", "path", s.cfg.Path, "error", err)
				}
				s.dirty = false
			}
			s.mu.Unlock()
		}
	}
}

// Write appends the batch and, with fsync: batch, makes it durable before
// returning. A failed write closes the file so the retry starts clean
// (duplicates, never holes).
func (s *Sink) Write(_ context.Context, batch []*core.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rotateIfDue(); err != nil {
		return err
	}
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	out := io.Writer(s.bw)
	if s.gz != nil {
		out = s.gz
	}
	for _, r := range batch {
		n, err := s.enc.write(out, r)
		if err != nil {
			if errors.Is(err, errUnencodable) {
				return core.Permanent(err)
			}
			s.abandon()
			return fmt.Errorf("write %s: %w", s.cfg.Path, err)
		}
		s.size += int64(n)
	}
	if err := s.enc.flush(out); err != nil {
		s.abandon()
		return fmt.Errorf("write %s: %w", s.cfg.Path, err)
	}
	if s.gz != nil {
		if err := s.gz.Flush(); err != nil {
			s.abandon()
			return fmt.Errorf("write %s: %w", s.cfg.Path, err)
		}
	}
	if err := s.bw.Flush(); err != nil {
		s.abandon()
		return fmt.Errorf("write %s: %w", s.cfg.Path, err)
	}
	s.dirty = true
	if s.cfg.Fsync == "batch" {
		// A failed fsync fails the batch: the runtime writes it again,
		// which can repeat some of its lines (at-least-once).
		if err := s.sync(); err != nil {
			s.abandon()
			return err
		}
		s.dirty = false
	}
	return nil
}

// rotatedName is RotatedName, unique: two rotations within a millisecond
// must not replace one rotated file with the other.
func (s *Sink) rotatedName(suffix string) string {
	t := s.now()
	for {
		name := RotatedName(s.cfg.Path, t) + suffix
		if _, err := s.fs.Stat(name); errors.Is(err, fs.ErrNotExist) {
			return name
		}
		t = t.Add(time.Millisecond)
	}
}

// sync fsyncs the file and, when it was created or rotated since, its
// directory.
func (s *Sink) sync() error {
	if err := s.f.Sync(); err != nil {
		s.cutPending = true
		return fmt.Errorf("fsync %s: %w", s.cfg.Path, err)
	}
	if st, err := s.f.Stat(); err == nil {
		s.syncedSize = st.Size()
	}
	if s.dirDirty {
		dir := filepath.Dir(s.cfg.Path)
		if err := s.fs.SyncDir(dir); err != nil {
			return fmt.Errorf("fsync directory %s: %w", dir, err)
		}
		s.dirDirty = false
	}
	return nil
}

var errUnencodable = errors.New("record cannot be encoded")

func (s *Sink) open() error {
	dir := filepath.Dir(s.cfg.Path)
	if *s.cfg.Mkdir {
		if err := durable.MkdirAllSync(s.fs, dir, 0o700); err != nil {
			return fmt.Errorf("create directory for %s: %w", s.cfg.Path, err)
		}
	}
	if s.cutPending {
		if err := s.fs.Truncate(s.cfg.Path, s.syncedSize); err != nil {
			return fmt.Errorf("cut %s back to the %d bytes of its last good fsync: %w", s.cfg.Path, s.syncedSize, err)
		}
		s.cutPending = false
		if s.log != nil {
			s.log.Warn("cut the file back to its last good fsync before writing the batch again", "file", s.cfg.Path, "bytes", s.syncedSize)
		}
	}
	if err := s.repairTail(); err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if s.cfg.Format == "avro" {
		flags = os.O_RDWR | os.O_CREATE | os.O_APPEND // appending reads the header first
	}
	if _, err := s.fs.Stat(s.cfg.Path); errors.Is(err, fs.ErrNotExist) {
		s.dirDirty = true // created now
	}
	f, err := s.fs.OpenFile(s.cfg.Path, flags, 0o600)
	if err != nil {
		return err // a *fs.PathError: it names the file
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", s.cfg.Path, err)
	}
	s.f, s.size, s.opened, s.syncedSize = f, st.Size(), s.now(), st.Size()
	s.bw = bufio.NewWriterSize(f, 256<<10)
	if s.cfg.Compression == "gzip" {
		// Appending a new gzip member to an existing file is valid gzip:
		// readers see one stream.
		s.gz, _ = gzip.NewWriterLevel(s.bw, gzip.BestSpeed)
	}
	switch s.cfg.Format {
	case "avro":
		enc, err := newAvroWriter(f, st.Size())
		if err != nil && st.Size() > 0 {
			// A crash mid-block leaves a file that cannot be continued.
			// Its complete blocks hold everything acknowledged: keep it
			// aside and start a new one. A file of another schema is
			// sound: it is rotated as usual.
			f.Close()
			suffix := ".damaged"
			if errors.Is(err, errOtherSchema) {
				suffix = ""
			}
			aside := s.rotatedName(suffix)
			s.f = nil
			if rerr := s.fs.Rename(s.cfg.Path, aside); rerr != nil {
				return fmt.Errorf("%w; moving it aside: %v", err, rerr)
			}
			s.dirDirty = true
			if s.log != nil {
				s.log.Warn("avro file could not be continued; moved aside, starting a new one", "file", aside, "error", err)
			}
			return s.open()
		}
		if err != nil {
			f.Close()
			s.f = nil
			return err
		}
		s.enc = enc
	default:
		s.enc = jsonWriter{line: new([]byte)}
	}
	return nil
}

// repairTail makes an existing file safe to append to after an unclean
// stop. A JSON file may end inside a line that belonged to a batch never
// acknowledged (it is written again): cut it, or the next record would be
// glued to it. A gzip file may end inside a member, which would hide what
// follows from readers: it is rotated away and a new file started. (Avro
// files are checked when opened.)
func (s *Sink) repairTail() error {
	st, err := s.fs.Stat(s.cfg.Path)
	if err != nil || st.Size() == 0 || s.cfg.Format != "json" {
		return nil
	}
	if s.cfg.Compression == "gzip" {
		rotated := s.rotatedName("")
		if err := s.fs.Rename(s.cfg.Path, rotated); err != nil {
			return fmt.Errorf("rotate %s at start: %w", s.cfg.Path, err)
		}
		s.dirDirty = true
		if s.log != nil {
			s.log.Info("rotated the gzip file left by the last run (a new member cannot follow a torn one)", "file", rotated)
		}
		return s.prune()
	}
	f, err := s.fs.OpenFile(s.cfg.Path, os.O_RDWR, 0)
	if err != nil {
		return err // a *fs.PathError: it names the file
	}
	defer f.Close()
	end := st.Size()
	buf := make([]byte, 64<<10)
	for pos := end; pos > 0; {
		n := int64(len(buf))
		if pos < n {
			n = pos
		}
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil {
			return fmt.Errorf("read %s: %w", s.cfg.Path, err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			keep := pos + int64(i) + 1
			if keep == end {
				return nil
			}
			return s.cut(f, keep, end)
		}
	}
	return s.cut(f, 0, end)
}

func (s *Sink) cut(f durable.File, keep, end int64) error {
	if err := f.Truncate(keep); err != nil {
		return fmt.Errorf("cut the unfinished last line of %s: %w", s.cfg.Path, err)
	}
	if s.log != nil {
		s.log.Warn("cut an unfinished line left by an unclean stop (its batch was not acknowledged and is written again)",
			"file", s.cfg.Path, "bytes", end-keep)
	}
	return f.Sync()
}

// abandon closes the file after a failed write without flushing.
func (s *Sink) abandon() {
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.bw, s.gz, s.enc = nil, nil, nil, nil
}

func (s *Sink) closeFile() error {
	if s.f == nil {
		return nil
	}
	out := io.Writer(s.bw)
	if s.gz != nil {
		out = s.gz
	}
	err := s.enc.close(out)
	if s.gz != nil {
		err = errors.Join(err, s.gz.Close())
	}
	err = errors.Join(err, s.bw.Flush())
	if s.cfg.Fsync != "never" {
		err = errors.Join(err, s.sync())
	}
	err = errors.Join(err, s.f.Close())
	s.f, s.bw, s.gz, s.enc = nil, nil, nil, nil
	return err
}

func (s *Sink) rotateIfDue() error {
	due := false
	if s.f != nil {
		due = (s.cfg.Rotate.MaxBytes > 0 && s.size >= int64(s.cfg.Rotate.MaxBytes)) ||
			(s.cfg.Rotate.Interval > 0 && s.now().Sub(s.opened) >= s.cfg.Rotate.Interval)
	}
	if !due {
		return nil
	}
	if err := s.closeFile(); err != nil {
		return fmt.Errorf("close %s for rotation: %w", s.cfg.Path, err)
	}
	rotated := s.rotatedName("")
	if err := s.fs.Rename(s.cfg.Path, rotated); err != nil {
		return fmt.Errorf("rotate %s: %w", s.cfg.Path, err)
	}
	s.dirDirty = true // synced with the next batch, with the new file
	if s.log != nil {
		s.log.Info("rotated", "file", rotated)
	}
	return s.prune()
}

// RotatedName inserts a UTC timestamp before the extensions of path:
// /x/events.jsonl.gz -> /x/events.2026-11-25T07-37-49.123Z.jsonl.gz.
func RotatedName(path string, t time.Time) string {
	dir, base := filepath.Split(path)
	stem, ext := base, ""
	if i := strings.IndexByte(base, '.'); i > 0 {
		stem, ext = base[:i], base[i:]
	}
	return filepath.Join(dir, stem+"."+t.UTC().Format("2006-01-02T15-04-05.000Z")+ext)
}

// prune deletes the oldest rotated files beyond max_files.
func (s *Sink) prune() error {
	if s.cfg.Rotate.MaxFiles <= 0 {
		return nil
	}
	dir, base := filepath.Split(s.cfg.Path)
	stem, ext := base, ""
	if i := strings.IndexByte(base, '.'); i > 0 {
		stem, ext = base[:i], base[i:]
	}
	ents, err := s.fs.ReadDir(filepath.Clean(dir))
	if err != nil {
		return err
	}
	var rotated []string
	for _, e := range ents {
		if ok, _ := filepath.Match(stem+".*"+ext, e.Name()); ok && e.Name() != base {
			rotated = append(rotated, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(rotated) // timestamps sort chronologically
	// No directory fsync: a removal lost in a crash only keeps an old file.
	for len(rotated) > s.cfg.Rotate.MaxFiles {
		if err := s.fs.Remove(rotated[0]); err != nil {
			return err
		}
		rotated = rotated[1:]
	}
	return nil
}

// Close flushes, syncs and closes the file.
func (s *Sink) Close(context.Context) error {
	if s.stopSync != nil {
		close(s.stopSync)
		<-s.syncDone
		s.stopSync = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeFile()
}

// jsonWriter writes JSON lines, each encoded into a scratch buffer that
// is reused (the file's buffered writer copies it).
type jsonWriter struct{ line *[]byte }

func (j jsonWriter) write(w io.Writer, r *core.Record) (int, error) {
	b := append(r.AppendCachedJSON((*j.line)[:0]), '\n')
	*j.line = b
	if cap(b) > 1<<20 {
		*j.line = nil // a huge record's buffer is not kept
	}
	return w.Write(b)
}

func (jsonWriter) flush(io.Writer) error { return nil }
func (jsonWriter) close(io.Writer) error { return nil }
