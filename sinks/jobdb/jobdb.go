// Package jobdb is the `jobdb` sink: a job archive in SQLite (the pure-Go
// modernc.org/sqlite), one row per job, that answers `flux jobs`-style
// queries (`fluxstream jobs`) long after Flux purged the jobs.
//
// A job is (id, t_submit): a restarted instance reuses ids, and each
// incarnation gets its own row. Each row holds the newest snapshot (by the
// timestamp of its event: an older redelivered record never replaces a
// newer one), columns for the filters and sorts of `flux jobs`, the
// latest jobspec and R seen, the eventlog (every event seen, merged), and
// the purge mark. A node table maps hosts of the job's nodelist to jobs.
package jobdb

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/fluxstream/fluxstream/core"
)

// Sample is the sample config shown by docs.
//
//go:embed sample.yaml
var Sample string

// Readme is the sink's documentation.
//
//go:embed README.md
var Readme string

// Register adds the jobdb sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("jobdb", "job archive in SQLite: one row per job, for `fluxstream jobs`", New)
}

// Config is the sink's config.
type Config struct {
	// Path of the SQLite database (WAL mode: Path-wal and Path-shm sit
	// next to it).
	Path string `yaml:"path"`
	// Synchronous is "full" (default: a batch is on disk, WAL fsynced,
	// before it is acknowledged) or "normal" (faster; a power loss can
	// lose the last batches, a crash of fluxstream cannot).
	Synchronous string `yaml:"synchronous"`
	// Mkdir creates the directory of Path when missing (default true).
	Mkdir *bool `yaml:"mkdir"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, core.Fieldf("path", "must be set"))
	}
	switch c.Synchronous {
	case "full", "normal":
	default:
		errs = append(errs, core.Fieldf("synchronous", "unknown mode %q (full, normal)", c.Synchronous))
	}
	return errors.Join(errs...)
}

// Sink archives jobs.
type Sink struct {
	cfg Config
	log *slog.Logger
	db  *DB
}

var (
	_ core.Sink        = (*Sink)(nil)
	_ core.Provisioner = (*Sink)(nil)
	_ core.Validator   = (*Config)(nil)
	_ core.DryRunner   = (*Sink)(nil)
	_ core.BatchSizer  = (*Sink)(nil)
)

// DefaultBatch is the most records a Write gets when the config does not
// set batch.max_records. A batch is one transaction: its commit (the WAL
// frames of ~200 user-index leaves, the checkpoints, the fsync) and the
// in-memory merge of one job's records are shared by more jobs the larger
// it is. A disk buffer keeps buffer.max_records (10000) records in memory
// and a memory buffer holds no more: a batch of half that leaves room for
// the next one to fill while this one is written.
const DefaultBatch = 5000

// DefaultBatchRecords is the batch size the sink asks the runtime for.
func (s *Sink) DefaultBatchRecords() int { return DefaultBatch }

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{cfg: Config{Synchronous: "full"}}
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.Mkdir == nil {
		t := true
		s.cfg.Mkdir = &t
	}
	return s, nil
}

// Provision opens (creating and migrating) the database; not in dry-run.
func (s *Sink) Provision(ctx context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	if nc.DryRun {
		return nil
	}
	if *s.cfg.Mkdir {
		if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o700); err != nil {
			return err
		}
	}
	db, err := Open(ctx, s.cfg.Path, Options{Synchronous: s.cfg.Synchronous})
	if err != nil {
		return err
	}
	s.db = db
	return nil
}

// Write stores the batch in one transaction; it returns once the
// transaction committed.
func (s *Sink) Write(ctx context.Context, batch []*core.Record) error {
	if s.db == nil {
		return errors.New("jobdb: not provisioned")
	}
	return s.db.Apply(ctx, batch)
}

// DryRun says what each record would do to the archive.
func (s *Sink) DryRun(_ context.Context, batch []*core.Record, w io.Writer) error {
	for _, r := range batch {
		switch {
		case r.Kind == core.KindEvent && r.Job != nil:
			fmt.Fprintf(w, "upsert job %s (id %d, t_submit %v) at %s: state %s\n", r.Job.JobID, r.Job.ID, r.Job.TSubmit, r.EventName(), strings.TrimSpace(r.Job.State+" "+r.Job.Result))
		case r.Kind == core.KindPurge && r.Purge != nil:
			fmt.Fprintf(w, "mark purged %s (id %d, t_submit %v)\n", r.Purge.JobID, r.Purge.ID, r.PurgeTSubmit())
		default:
			fmt.Fprintf(w, "skip %s record %s\n", r.Kind, r.ID)
		}
	}
	return nil
}

// Close checkpoints the WAL into the database and closes it.
func (s *Sink) Close(ctx context.Context) error {
	if s.db == nil {
		return nil
	}
	if _, err := s.db.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil && s.log != nil {
		s.log.Warn("jobdb: WAL checkpoint on close failed", "path", s.cfg.Path, "error", err)
	}
	err := s.db.Close()
	s.db = nil
	return err
}
